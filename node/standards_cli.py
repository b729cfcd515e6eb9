"""`lsnet standards …`: the administrators' commands for coding-standards releases.

init (keys, repository, release 1 from the default pack, the root to pin), build (a release from
a folder of CSV/TOML files), publish (sign with a threshold of administrator keys and put it in
the repository the ministry node serves — at once, or staged: `publish --stage`, then `sign` by
each administrator, in place or offline on a copy merged back with `publish --merge`, then
`publish --commit`), staged, status, show, diff and dry-run. Parsing and printing
only: the work is done by `hierarchy_config.standards`, `security.standards_admin` and
`security.tuf_publish`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import click

from hierarchy_config.loader import load_config
from hierarchy_config.standards import (
    CodeEntry,
    EffectiveStandards,
    Extension,
    InvalidStandards,
    Release,
    build_release,
    default_release,
    diff,
    dry_run,
)
from node.cli import CliFailure, friendly, main
from node.tls import client_context
from node.validation import release_in_force
from security.keys import KeyFileError, load_signing_key
from security.standards_admin import AdminFolder, init_admin_folder
from security.standards_trust import PublishError, StandardsTrustError, tuf_keyid
from security.tuf_staging import StagedRelease, sign_staged_file
from sync.transport import client_session


def _release_from(source: str) -> Release:
    if source == "default":
        return default_release(1)
    path = Path(source)
    try:
        if path.is_dir():
            now = datetime.now(UTC)
            return build_release(
                path, version=1, expires=now + timedelta(days=365), note="", created=now
            )
        return Release.from_bytes(path.read_bytes())
    except (InvalidStandards, OSError) as exc:
        raise CliFailure(f"{source}: {exc}") from None


@main.group()
def standards() -> None:
    """Coding-standards releases: code tables and record schemas from the ministry."""


@standards.command("init")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="New, empty admin folder.",
)
@click.option("--admins", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--threshold", type=click.IntRange(1, 9), default=2, show_default=True)
@friendly
def standards_init(folder: Path, admins: int, threshold: int) -> None:
    """Create administrator keys, the TUF repository with release 1 (default pack) and root.json."""
    now = datetime.now(UTC)
    try:
        admin = init_admin_folder(
            folder,
            admins=admins,
            threshold=threshold,
            first_release=default_release(1, created=now).to_bytes(),
            now=now,
        )
    except PublishError as exc:
        raise CliFailure(str(exc)) from None
    click.echo(f"admin folder {admin.root}: {admins} administrator keys (threshold {threshold})")
    click.echo(f"pin {admin.root_file} as [standards] trusted_root in every node.toml;")
    click.echo(f"the ministry serves [standards] repository = {admin.repository_dir}")


@standards.command("build")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--version", "version", type=click.IntRange(1), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--note", default="", help="Release note.")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=365, show_default=True)
@friendly
def standards_build(folder: Path, version: int, out: Path, note: str, expires_days: int) -> None:
    """Build a release file from a folder of tables.toml, tables/*.csv and schemas/*.toml."""
    now = datetime.now(UTC)
    try:
        release = build_release(
            folder,
            version=version,
            expires=now + timedelta(days=expires_days),
            note=note,
            created=now,
        )
    except InvalidStandards as exc:
        raise CliFailure(str(exc)) from None
    out.write_bytes(release.to_bytes())
    click.echo(
        f"release {release.version}: {len(release.tables)} tables, "
        f"{len(release.schemas)} record types -> {out}"
    )


@standards.command("publish")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Admin folder.",
)
@click.option(
    "--release",
    "release_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Release file to publish (with --key) or to stage (with --stage).",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="Administrator key (name like admin-1 or a path); repeat to reach the threshold.",
)
@click.option("--stage", is_flag=True, help="Only stage the release for separate signing.")
@click.option(
    "--merge",
    "merges",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Merge the signatures of a staged file signed elsewhere; repeatable.",
)
@click.option("--commit", is_flag=True, help="Publish the staged release (threshold met).")
@click.option("--discard", is_flag=True, help="Throw the staged release and its signatures away.")
@friendly
def standards_publish(
    folder: Path,
    release_file: Path | None,
    keys: tuple[str, ...],
    stage: bool,
    merges: tuple[Path, ...],
    commit: bool,
    discard: bool,
) -> None:
    """Publish a release: in one step with a threshold of --key, or in steps.

    \b
    --release FILE --key admin-1 --key admin-2   sign and publish at once
    --release FILE --stage                       stage it; then each administrator runs
                                                 `lsnet standards sign`
    --merge FILE                                 merge a staged copy signed offline
    --commit                                     publish once the threshold is met
    --discard                                    drop the staged release
    """
    admin = AdminFolder(folder)
    repo = admin.repository()
    if discard:
        if release_file or keys or stage or merges or commit:
            raise CliFailure("--discard takes no other option")
        gone = _refusing(repo.discard_staged)
        what = f"release {gone.version} ({gone.signatures} signatures)" if gone else "files"
        click.echo(f"discarded the staged {what}")
        return
    if release_file is not None:
        if merges or commit:
            raise CliFailure(
                "--release stages or publishes a new release; --merge and --commit "
                "act on the staged one: run them separately"
            )
        data = release_file.read_bytes()
        try:
            release = Release.from_bytes(data)
        except InvalidStandards as exc:
            raise CliFailure(f"{release_file}: {exc}") from None
        if stage:
            _stage(admin, release.version, data, keys)
            return
        if not keys:
            raise CliFailure(
                "give --key for a threshold of administrators to publish at once, "
                "or --stage to have them sign separately"
            )
        name = _refusing(
            lambda: repo.add_release(
                release.version,
                data,
                targets_keys=admin.admin_keys(keys),
                online=admin.online(),
                now=datetime.now(UTC),
            )
        )
        click.echo(
            f"published release {release.version} as {name}; nodes pick it up on their next poll"
        )
        return
    if stage or keys:
        raise CliFailure(
            "--stage and --key need --release FILE (to sign what is staged, run "
            "`lsnet standards sign`)"
        )
    if not (merges or commit):
        raise CliFailure("nothing to do: give --release FILE, --merge FILE, --commit or --discard")
    for copy in merges:
        before = _refusing(repo.staged)
        info = _refusing(partial(repo.add_staged_signatures, copy))
        added = len(set(info.signers) - set(before.signers if before else ()))
        click.echo(f"merged {added} signature(s) from {copy}: {_count(info)}")
    if commit:
        name = _refusing(lambda: repo.commit_staged(online=admin.online(), now=datetime.now(UTC)))
        click.echo(f"published the staged release as {name}; nodes pick it up on their next poll")
    elif merges:
        click.echo(_next_step(admin, _refusing(repo.staged)))


def _stage(admin: AdminFolder, version: int, data: bytes, keys: tuple[str, ...]) -> None:
    repo, signing_keys = admin.repository(), admin.admin_keys(keys)  # load keys before staging
    staged = _refusing(lambda: repo.stage_release(version, data, now=datetime.now(UTC)))
    click.echo(f"staged release {version} ({staged.target}, sha256 {staged.sha256}); not published")
    for key in signing_keys:
        _refusing(partial(repo.sign_staged, key))
    click.echo(_next_step(admin, _refusing(repo.staged)))


def _next_step(admin: AdminFolder, info: StagedRelease | None) -> str:
    if info is None:
        return "nothing is staged"
    if info.ready:
        return f"{_count(info)}: publish with `lsnet standards publish --dir {admin.root} --commit`"
    return (
        f"{_count(info)}. Each administrator signs with `lsnet standards sign --dir {admin.root} "
        f"--key admin-N`, or offline: copy {info.path}, run `lsnet standards sign --staged FILE "
        f"--key PATH`, copy it back and `lsnet standards publish --dir {admin.root} --merge FILE`"
    )


def _count(info: StagedRelease) -> str:
    if info.threshold is None:
        return f"{info.signatures} signature(s), not checked (no root given)"
    return f"{info.signatures} of {info.threshold} signatures"


T = TypeVar("T")


def _refusing(action: Callable[[], T]) -> T:
    """Run a repository step; its refusal becomes one line on stderr and exit code 2."""
    try:
        return action()
    except (PublishError, StandardsTrustError) as exc:
        raise CliFailure(str(exc)) from None


def _signer_names(admin: AdminFolder) -> dict[str, str]:
    """TUF key id -> `admin-N` for the administrator keys present in this folder (best effort)."""
    names = {}
    for path in sorted(admin.keys_dir.glob("admin-*.key")):
        try:
            names[tuf_keyid(load_signing_key(path).verify_key)] = path.stem
        except KeyFileError:
            continue
    return names


def _describe(info: StagedRelease, names: dict[str, str]) -> list[str]:
    signers = ", ".join(f"{names.get(k, 'key')} {k[:16]}" for k in info.signers) or "nobody yet"
    return [
        f"staged release {info.version}: {info.target} ({info.length} bytes, sha256 {info.sha256})",
        f"targets v{info.targets_version}, expires {info.expires.isoformat()}",
        f"{_count(info)}; signed by {signers}",
        f"file to sign: {info.path}",
    ]


@standards.command("sign")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Admin folder: sign its staged release in place.",
)
@click.option(
    "--staged",
    "staged_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A copy of staging/targets.json to sign offline (in place).",
)
@click.option("--key", required=True, help="Your administrator key (admin-N with --dir, or path).")
@click.option(
    "--root",
    "root_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="With --staged: the pinned root.json, to check the key and count valid signatures.",
)
@click.option(
    "--release",
    "release_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="With --staged: the release file you reviewed; refuse unless it is what is staged.",
)
@friendly
def standards_sign(
    folder: Path | None,
    staged_file: Path | None,
    key: str,
    root_file: Path | None,
    release_file: Path | None,
) -> None:
    """Add one administrator's signature to the staged release (in place, or on a copy)."""
    if (folder is None) == (staged_file is None):
        raise CliFailure("give either --dir ADMIN (sign in place) or --staged FILE (a copy)")
    if folder is not None:
        if root_file or release_file:
            raise CliFailure("--root and --release go with --staged; --dir uses its own root")
        admin = AdminFolder(folder)
        (signing_key,) = admin.admin_keys([key])
        repo = admin.repository()
        _refusing(lambda: repo.sign_staged(signing_key))
        info = _refusing(repo.staged)
        assert info is not None
        click.echo(f"signed staged release {info.version} with {key}")
        click.echo(_next_step(admin, info))
        return
    assert staged_file is not None
    key_path = Path(key)
    if not key_path.is_file():
        raise CliFailure(f"{key}: no such key file (with --staged, --key is a path)")
    info = _refusing(
        lambda: sign_staged_file(
            staged_file,
            load_signing_key(key_path),
            root=root_file.read_bytes() if root_file else None,
            release=release_file.read_bytes() if release_file else None,
        )
    )
    for line in _describe(info, {}):
        click.echo(line)
    click.echo(
        f"signed {staged_file} with {key_path.name}; copy it back and run "
        f"`lsnet standards publish --dir ADMIN --merge {staged_file.name}`"
    )


@standards.command("staged")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="Admin folder.",
)
@friendly
def standards_staged(folder: Path) -> None:
    """Show the staged release, how many administrators signed it, and who."""
    admin = AdminFolder(folder)
    info = _refusing(admin.repository().staged)
    if info is None:
        click.echo("nothing is staged")
        return
    for line in _describe(info, _signer_names(admin)):
        click.echo(line)
    click.echo(_next_step(admin, info))


@standards.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def standards_status(config_path: Path) -> None:
    """The release in force here and, when the node runs, at every node below it."""
    import asyncio

    import aiohttp

    config = load_config(config_path)
    validator = release_in_force(config)
    click.echo(f"{config.node_id}: standards in force {validator.standards_id}")

    async def fetch() -> dict[str, object] | None:
        timeout = aiohttp.ClientTimeout(total=3)
        url = config.node.url + "/v1/standards/rollout"
        try:
            session = client_session(timeout, client_context(config))
            async with session as s, s.get(url) as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    doc = asyncio.run(fetch())
    if doc is None:
        click.echo("(node not running: no view of the nodes below)")
        return
    nodes = doc["nodes"]
    assert isinstance(nodes, dict)
    for node_id, entry in nodes.items():
        if entry is None:
            click.echo(f"  {node_id}  not reporting")
        else:
            flag = "  BEHIND" if entry["behind"] else ""
            click.echo(f"  {node_id}  {entry['release']}  ({entry['age_seconds']}s ago){flag}")


@standards.command("show")
@click.argument("table")
@click.argument("code", required=False)
@click.option(
    "--release",
    "source",
    default="default",
    show_default=True,
    help="Release file, pack folder or 'default'.",
)
@friendly
def standards_show(table: str, code: str | None, source: str) -> None:
    """Show a code table, or one code with its validity and replacement."""
    release = _release_from(source)
    found = release.tables.get(table)
    if found is None:
        raise CliFailure(f"no table {table!r}; tables: {', '.join(sorted(release.tables))}")
    entries = [e for e in found.entries if code is None or e.code == code]
    if code is not None and not entries:
        raise CliFailure(f"table {table} has no code {code!r}")
    click.echo(f"{found.id} {found.name} ({found.standard}); extensible: {found.extensible}")
    for e in entries[:200]:
        valid = f"{e.valid_from or ''}..{e.valid_to or ''}"
        repl = f" -> {e.replacement}" if e.replacement else ""
        click.echo(f"  {e.code}  {e.name}  [{valid}]{repl}")
    if len(entries) > 200:
        click.echo(f"  ... {len(entries) - 200} more")


@standards.command("diff")
@click.argument("a")
@click.argument("b")
@friendly
def standards_diff(a: str, b: str) -> None:
    """What changes from release A to release B (files, pack folders or 'default')."""
    click.echo(diff(_release_from(a), _release_from(b)).render())


@standards.command("dry-run")
@click.option("--release", "source", default="default", show_default=True)
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@friendly
def standards_dry_run(source: str, file: Path) -> None:
    """Validate a JSON Lines data set against a candidate release, changing nothing."""
    release = _release_from(source)
    objs = [
        json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    report = dry_run(EffectiveStandards(release, ()), objs)
    click.echo(report.render())


@standards.command("delegate")
@click.option("--dir", "folder", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--province", required=True, help="Province id, e.g. 330000.")
@click.option("--public-key", required=True, help="The province's extension key (ed25519:…).")
@click.option("--key", "keys", multiple=True, required=True, help="Administrator key; repeat.")
@friendly
def standards_delegate(folder: Path, province: str, public_key: str, keys: tuple[str, ...]) -> None:
    """Delegate local codes of a province (its `province-<id>/*` namespace) to its key."""
    from security.keys import parse_public_key

    admin = AdminFolder(folder)
    try:
        admin.repository().delegate_province(
            province,
            parse_public_key(public_key),
            targets_keys=admin.admin_keys(keys),
            online=admin.online(),
            now=datetime.now(UTC),
        )
    except (PublishError, StandardsTrustError, ValueError) as exc:
        raise CliFailure(str(exc)) from None
    click.echo(f"province {province} may now publish local codes for its subtree")


@standards.command("extend")
@click.option("--dir", "folder", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--province", required=True)
@click.option("--province-key", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--version", "version", type=click.IntRange(1), required=True)
@click.option("--release-version", type=click.IntRange(1), required=True)
@click.argument("codes", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@friendly
def standards_extend(
    folder: Path, province: str, province_key: Path, version: int, release_version: int, codes: Path
) -> None:
    """Publish a province's local codes from a CSV: table,code,name[,valid_from,valid_to].

    Codes must carry the province's reserved prefix and go only into extensible tables; they can
    never change or shadow a ministry code."""
    from security.keys import load_signing_key

    ext = extension_from_csv(codes, province, version, release_version)
    admin = AdminFolder(folder)
    try:
        _ = EffectiveStandards(Release.from_bytes(_current_release_bytes(admin)), (ext,))
        name = admin.repository().add_extension(
            province,
            version,
            ext.to_bytes(),
            province_key=load_signing_key(province_key),
            online=admin.online(),
            now=datetime.now(UTC),
        )
    except (PublishError, StandardsTrustError, InvalidStandards, ValueError) as exc:
        raise CliFailure(str(exc)) from None
    click.echo(f"published {name}: {sum(len(v) for v in ext.tables.values())} local codes")


def extension_from_csv(path: Path, province: str, version: int, release_version: int) -> Extension:
    import csv
    from datetime import date

    tables: dict[str, list[CodeEntry]] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), start=2):
            try:
                table, code, name = row["table"].strip(), row["code"].strip(), row["name"].strip()
                start = (row.get("valid_from") or "").strip()
                end = (row.get("valid_to") or "").strip()
                entry = CodeEntry(
                    code=code,
                    name=name,
                    level=1,
                    valid_from=date.fromisoformat(start) if start else None,
                    valid_to=date.fromisoformat(end) if end else None,
                )
            except (KeyError, AttributeError, ValueError) as exc:
                raise CliFailure(f"{path}: row {row_no}: {exc}") from None
            tables.setdefault(table, []).append(entry)
    return Extension(
        province=province,
        version=version,
        release_version=release_version,
        tables={k: tuple(v) for k, v in tables.items()},
    )


def _current_release_bytes(admin: AdminFolder) -> bytes:
    """The newest release in the admin repository (to check an extension against it)."""
    targets = sorted(
        (admin.repository_dir / "targets" / "releases").glob("*.release-*.json"),
        key=lambda p: int(p.stem.rsplit("-", 1)[1]),
    )
    if not targets:
        raise CliFailure(f"{admin.repository_dir}: no release published yet")
    return targets[-1].read_bytes()


@standards.command("rotate-root")
@click.option("--dir", "folder", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--new-keys", "new_keys", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--threshold", type=click.IntRange(1, 9), default=2, show_default=True)
@click.option("--key", "keys", multiple=True, required=True, help="Current root key; repeat.")
@friendly
def standards_rotate_root(
    folder: Path, new_keys: int, threshold: int, keys: tuple[str, ...]
) -> None:
    """Replace the root keys: root N+1 signed by a threshold of the old and of the new keys.

    Nodes follow the chain from the root they pinned (old signatures stay verifiable for what
    they signed); afterwards the old keys alone can no longer change the root."""
    from security.keys import NodeKey, write_key_file

    admin = AdminFolder(folder)
    old = admin.admin_keys(keys)
    existing = len(list(admin.keys_dir.glob("root-*.key")))
    fresh = [NodeKey.generate() for _ in range(new_keys)]
    try:
        version = admin.repository().rotate_root(
            new_root_keys=fresh,
            new_threshold=threshold,
            old_signing_keys=old,
            new_signing_keys=fresh[:threshold],
            now=datetime.now(UTC),
        )
    except (PublishError, StandardsTrustError, ValueError) as exc:
        raise CliFailure(str(exc)) from None
    names = []
    for i, key in enumerate(fresh, start=existing + 1):
        write_key_file(admin.keys_dir / f"root-{i}.key", key)
        names.append(f"root-{i}")
    admin.root_file.write_bytes(admin.repository().root_bytes())
    click.echo(
        f"root v{version}: new root keys {', '.join(names)} (threshold {threshold}); "
        f"{admin.root_file} updated for new nodes — running nodes follow on their own"
    )
