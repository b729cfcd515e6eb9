"""`lsnet standards …`: the administrators' commands for coding-standards releases.

init (keys, repository, release 1 from the default pack, the root to pin), build (a release from
a folder of CSV/TOML files), publish (sign with a threshold of administrator keys and put it in
the repository the ministry node serves), status, show, diff and dry-run. Parsing and printing
only: the work is done by `hierarchy_config.standards`, `security.standards_admin` and
`security.tuf_publish`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from hierarchy_config.loader import load_config
from hierarchy_config.standards import (
    InvalidStandards,
    Release,
    build_release,
    default_release,
    diff,
    dry_run,
)
from node.cli import CliFailure, friendly, main
from node.validation import release_in_force
from security.standards_admin import AdminFolder, init_admin_folder
from security.standards_trust import PublishError, StandardsTrustError


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
    required=True,
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    help="Administrator key (name like admin-1 or a path); repeat to reach the threshold.",
)
@friendly
def standards_publish(folder: Path, release_file: Path, keys: tuple[str, ...]) -> None:
    """Sign a release with a threshold of administrator keys and publish it to the repository."""
    data = release_file.read_bytes()
    try:
        release = Release.from_bytes(data)
    except InvalidStandards as exc:
        raise CliFailure(f"{release_file}: {exc}") from None
    admin = AdminFolder(folder)
    try:
        name = admin.repository().add_release(
            release.version,
            data,
            targets_keys=admin.admin_keys(keys),
            online=admin.online(),
            now=datetime.now(UTC),
        )
    except (PublishError, StandardsTrustError) as exc:
        raise CliFailure(str(exc)) from None
    click.echo(
        f"published release {release.version} as {name}; nodes pick it up on their next poll"
    )


@standards.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def standards_status(config_path: Path) -> None:
    """The standards release in force at this node (from its verified state)."""
    validator = release_in_force(load_config(config_path))
    click.echo(f"standards in force: {validator.standards_id}")


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
    from hierarchy_config.standards import EffectiveStandards

    release = _release_from(source)
    objs = [
        json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    report = dry_run(EffectiveStandards(release, ()), objs)
    click.echo(report.render())
