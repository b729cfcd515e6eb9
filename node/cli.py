"""The `lsnet` command: keys, network set-up, node life cycle, record import, status, demo.

Every command turns our own errors into one clear line on stderr and a non-zero exit code;
nobody running a centre should see a traceback. Business logic lives in the packages; this
module only parses arguments, calls them and prints.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from hierarchy_config.loader import ConfigError, load_config
from hierarchy_config.model import NodeConfig
from hierarchy_config.standards.model import StandardsError
from node.db import DatabaseError
from node.importer import ImportFailed
from node.store import NodeStateError
from node.tls import TlsError
from security.keys import (
    PASSPHRASE_ENV,
    KeyError_,
    NodeKey,
    is_sealed_key_file,
    load_signing_key,
    write_key_file,
)

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrap
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    TlsError,
    StandardsError,
    ImportFailed,
    ConfigError,
    KeyError_,
    DatabaseError,
    NodeStateError,
    OSError,
)

#: `gc.set_threshold` of a running node's first generation (Python's default is 700).
GC_YOUNG_THRESHOLD = 20_000


class CliFailure(click.ClickException):
    """A failure explained in one line; exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {self.message}", highlight=False)


def friendly(fn: F) -> F:
    """Wrap a command so expected errors become one clear line instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EXPECTED_ERRORS as exc:
            raise CliFailure(str(exc)) from None
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            if isinstance(exc, SQLAlchemyError):
                raise CliFailure(f"database error: {getattr(exc, 'orig', exc)}") from None
            raise

    return wrapper  # type: ignore[return-value]


def _load(config: Path) -> NodeConfig:
    return load_config(config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Library chatter (migration context, every scheduled job run) is not for operators.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="lsnet")
def main() -> None:
    """lsnet: the data backbone of the labour and social-insurance information system.

    City, province and ministry centres run the same node program. Cities keep their resource
    database and push every change upward as signed batches; provinces keep a copy and relay
    their cities' batches unchanged; the ministry holds the national copy and can verify every
    record back to the city that wrote it.
    """


# -- keys ------------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Node signing keys (Ed25519)."""


def _passphrase_from_env(var: str) -> bytes:
    value = os.environ.get(var, "")
    if not value:
        raise CliFailure(
            f"environment variable {var} is not set or empty; it must hold the passphrase"
        )
    return value.encode("utf-8")


def _passphrase_from_file(path: Path) -> bytes:
    try:
        value = path.read_bytes()
    except OSError as exc:
        raise CliFailure(f"{path}: cannot read passphrase file: {exc.strerror}") from None
    value = value.removesuffix(b"\n").removesuffix(b"\r")
    if not value:
        raise CliFailure(f"{path}: passphrase file is empty")
    return value


def _node_passphrase() -> bytes | None:
    """The node key's passphrase from LSNET_KEY_PASSPHRASE, or None when it is not set."""
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode("utf-8") if value else None


def _node_key(config: NodeConfig) -> NodeKey:
    return load_signing_key(config.node.key_file, _node_passphrase())


@keys.command("generate")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Key file to write (mode 0600).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@click.option(
    "--passphrase-env",
    metavar="VAR",
    default=None,
    help="Seal the key with the passphrase held in this environment variable "
    f"(nodes read it from {PASSPHRASE_ENV}).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Seal the key with the passphrase in this file (one trailing newline is ignored).",
)
@friendly
def keys_generate(
    out: Path, force: bool, passphrase_env: str | None, passphrase_file: Path | None
) -> None:
    """Generate a node key; print its public key and key id for enrollment at the parent.

    With --passphrase-env or --passphrase-file the seed is sealed (argon2id + XSalsa20-Poly1305).
    A passphrase is never taken on the command line, where other users could see it."""
    if passphrase_env is not None and passphrase_file is not None:
        raise CliFailure("give --passphrase-env or --passphrase-file, not both")
    passphrase: bytes | None = None
    if passphrase_env is not None:
        passphrase = _passphrase_from_env(passphrase_env)
    elif passphrase_file is not None:
        passphrase = _passphrase_from_file(passphrase_file)
    key = NodeKey.generate()
    write_key_file(out, key, overwrite=force, passphrase=passphrase)
    click.echo(f"key file:   {out}" + (" (passphrase-protected)" if passphrase else ""))
    click.echo(f"public key: {key.public}")
    click.echo(f"key id:     {key.kid}")


@keys.command("passphrase")
@click.option(
    "--file",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Key file to change (rewritten atomically, mode 0600).",
)
@click.option(
    "--old-env", metavar="VAR", default=None, help="Variable holding the current passphrase."
)
@click.option(
    "--new-env",
    metavar="VAR",
    default=None,
    help="Variable holding the new passphrase; without it, protection is removed.",
)
@friendly
def keys_passphrase(key_file: Path, old_env: str | None, new_env: str | None) -> None:
    """Add, change or remove the passphrase of a key file; the key itself does not change."""
    if old_env is None and new_env is None:
        raise CliFailure(
            "nothing to do: give --new-env to add a passphrase, --old-env to remove it"
        )
    sealed = is_sealed_key_file(key_file)
    if sealed and old_env is None:
        raise CliFailure(f"{key_file}: key file is passphrase-protected; give --old-env")
    if not sealed and new_env is None:
        raise CliFailure(f"{key_file}: key file has no passphrase; nothing to remove")
    old = _passphrase_from_env(old_env) if sealed and old_env is not None else None
    new = _passphrase_from_env(new_env) if new_env is not None else None
    key = load_signing_key(key_file, old)
    write_key_file(key_file, key, overwrite=True, passphrase=new)
    action = "removed" if new is None else ("changed" if sealed else "added")
    click.echo(f"{key_file}: passphrase {action}; key id {key.kid} unchanged")


# -- network ---------------------------------------------------------------------------------------


@main.group()
def network() -> None:
    """Whole local networks (for trials, training and tests)."""


@network.command("init")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Empty folder to create the network in.",
)
@click.option("--provinces", type=click.IntRange(1, 34), default=2, show_default=True)
@click.option("--cities-per-province", type=click.IntRange(1, 50), default=2, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000), default=18400, show_default=True)
@friendly
def network_init(out: Path, provinces: int, cities_per_province: int, base_port: int) -> None:
    """Write a ready-to-run network on 127.0.0.1: one folder per node with node.toml and key."""
    from hierarchy_config.network_init import NetworkInitError, init_network

    try:
        layout = init_network(
            out, provinces=provinces, cities_per_province=cities_per_province, base_port=base_port
        )
    except NetworkInitError as exc:
        raise CliFailure(str(exc)) from None
    for entry in layout.nodes:
        click.echo(
            f"{entry.level.value:9} {entry.id} {entry.name:12} {entry.url}  {entry.config_path}"
        )
    click.echo(
        "\nNext: 'lsnet node init --config <node.toml>', then "
        "'lsnet node run --config <node.toml>' "
        f"for each of the {len(layout.nodes)} nodes."
    )


# -- node ------------------------------------------------------------------------------------------


@main.group("node")
def node_group() -> None:
    """Initialise and run a node."""


@node_group.command("init")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def node_init(config_path: Path) -> None:
    """Create or upgrade the resource database (Alembic migrations) and its epoch."""
    from node.app import Node

    config = _load(config_path)
    key = _node_key(config)

    async def run() -> tuple[bool, str]:
        node = Node.open(config, key=key)
        try:
            created = await node.init_database()
            meta = await node.store.meta()
            return created, meta.epoch
        finally:
            await asyncio.to_thread(node.db.close)

    created, epoch = asyncio.run(run())
    state = "created" if created else "already initialised; schema upgraded"
    click.echo(f"node {config.node_id}: database {state}; epoch {epoch}")


@node_group.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@friendly
def node_run(config_path: Path, log_level: str) -> None:
    """Run the node until SIGTERM or SIGINT.

    On shutdown the in-flight transfer finishes or is safely abandoned (it is resent later).
    """
    from node.app import Node

    _setup_logging(log_level)
    config = _load(config_path)
    key = _node_key(config)

    async def run() -> None:
        node = Node.open(config, key=key)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await node.start(apply_process_default=True)
        except BaseException:
            await node.stop()
            raise
        click.echo(f"node {config.node_id} running on {config.node.url}; Ctrl-C to stop", err=True)
        # What start-up made (modules, the parsed standards release, configuration) lives as long
        # as the process: move it out of the collector's sight, so collections triggered by the
        # many short-lived objects of each received batch no longer walk it (issue 8: it saves
        # two thirds of a receiving node's collection time, ~5 % of its CPU during a catch-up).
        gc.freeze()
        # Collect the young generation every 20,000 new objects instead of 700: a received
        # batch makes thousands (changes, payloads, rows) that live until it is handed over,
        # and were scanned, promoted and scanned again on the way (a 100,000-record hop: 262
        # young collections taking 33-38 ms of the verifying process, now 2 taking 7 ms).
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        await stop.wait()
        logging.getLogger("lsnet.node").info("stopping")
        await node.stop()

    asyncio.run(run())


@node_group.command("enroll")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="The parent's node.toml.",
)
@click.option("--child-id", required=True, help="The child's 6-digit GB/T 2260 code.")
@click.option(
    "--public-key", required=True, help="The child's 'ed25519:...' from 'lsnet keys generate'."
)
@click.option("--name", default=None, help="Display name (default: the GB/T 2260 name).")
@click.option(
    "--under",
    default=None,
    help="Ministry only: the enrolled province the new city belongs to.",
)
@friendly
def node_enroll(
    config_path: Path, child_id: str, public_key: str, name: str | None, under: str | None
) -> None:
    """Enroll a child node in the parent's node.toml and record it in the audit log.

    A province adds a city; the ministry adds a province, or with --under a city below one of
    its provinces. Everything is checked before the file is replaced atomically (mode 0600);
    on any refusal the file is left as it was. The file is rewritten from its data: comments
    and layout in node.toml are lost. The running node accepts the child after a restart.
    """
    from hierarchy_config.enroll import enroll_child
    from node.clock import SystemClock
    from node.db import Database
    from security.audit import AuditError, AuditKind, AuditLog

    config = _load(config_path)
    db: Database | None = None
    note = ""
    try:
        db = Database(config.node.database)
        db.check_schema()
    except DatabaseError as exc:
        note = f"audit entry not written: the node's database is not initialised ({exc})"
        if db is not None:
            db.close()
        db = None
    try:
        key = _node_key(config) if db is not None else None  # before writing: it may fail
        enrollment = enroll_child(
            config_path, child_id=child_id, public_key=public_key, name=name, under=under
        )
        click.echo(f"enrolled {enrollment.describe()} in {config_path}")
        if db is not None and key is not None:
            audit = AuditLog(db, key, config.node_id, SystemClock())
            detail = {"key_id": enrollment.kid, "under": under or ""}
            try:
                seq = asyncio.run(
                    audit.record(
                        AuditKind.ENROLLMENT, peer=child_id, code="enrolled", detail=detail
                    )
                )
            except AuditError as exc:
                raise CliFailure(
                    f"{child_id} was enrolled in {config_path}, but the audit entry failed: {exc}"
                ) from None
            click.echo(f"audit entry {seq} recorded")
    finally:
        if db is not None:
            db.close()
    if note:
        err_console.print(f"note: {note}", highlight=False, markup=False)
    if enrollment.under:
        click.echo(f"province {enrollment.under} must enroll {child_id} in its own node.toml too")
    click.echo(f"restart node {config.node_id} to accept traffic from {child_id}")


# -- records ---------------------------------------------------------------------------------------


@main.group()
def records() -> None:
    """Business records in the local resource database."""


@records.command("import")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--type", "record_type", default=None, help="Record type of every row (CSV files).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv"]),
    default="auto",
    show_default=True,
)
@click.option("--all-or-nothing", is_flag=True, help="Import nothing if any row is invalid.")
@click.option(
    "--chunk",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Rows per transaction.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly
def records_import(
    config_path: Path,
    file: Path,
    record_type: str | None,
    fmt: str,
    all_or_nothing: bool,
    chunk: int,
    quiet: bool,
) -> None:
    """Import records from JSON Lines (one object with "type" per line) or CSV (with --type).

    Each record and its change-log entry are written in one transaction. Invalid rows are listed
    with row number, field and reason. Exit code 0 if every row was accepted, 1 if some were
    rejected, 2 if nothing could be imported.
    """
    from node.importer import import_file

    config = _load(config_path)
    if fmt == "auto":
        fmt = "csv" if file.suffix.lower() == ".csv" else "jsonl"
    if fmt == "csv" and not record_type:
        raise CliFailure("CSV files need --type (e.g. --type person)")
    report = import_file(
        config,
        file,
        fmt=fmt,
        record_type=record_type,
        all_or_nothing=all_or_nothing,
        chunk=chunk,
        show_progress=not quiet,
    )
    for err in report.errors[:50]:
        field = f" field '{err.field}'" if err.field else ""
        err_console.print(f"row {err.row}{field}: {err.reason}", highlight=False, markup=False)
    for warn in report.warning_rows[:20]:
        err_console.print(
            f"warning: row {warn.row} field '{warn.field}': {warn.reason}",
            highlight=False,
            markup=False,
        )
    if len(report.errors) > 50:
        err_console.print(f"... and {len(report.errors) - 50} more invalid rows", highlight=False)
    click.echo(
        f"accepted {report.accepted}, rejected {report.rejected} "
        f"({report.changed} changed, {report.unchanged} unchanged)"
        + (f"; {report.warnings} warnings" if report.warnings else "")
        + (" - nothing imported (--all-or-nothing)" if report.aborted else "")
    )
    if report.aborted:
        sys.exit(2)
    if report.rejected:
        sys.exit(1)


@records.command("warnings")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@friendly
def records_warnings(config_path: Path, limit: int, as_json: bool) -> None:
    """Validation warnings stored with local records (newest first)."""
    from node.db import Database
    from node.store import NodeStore

    config = _load(config_path)

    async def run() -> list[dict[str, Any]]:
        db = Database(config.node.database)
        try:
            db.check_schema()
            return await NodeStore(db).warnings(limit)
        finally:
            await asyncio.to_thread(db.close)

    rows = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        click.echo(
            f"{r['record_type']} {r['key']} v{r['version']} field '{r['field']}' "
            f"[{r['rule_id']}, {r['standards']}]: {r['message']}"
        )
    click.echo(f"{len(rows)} warnings shown")


# -- status / verify -------------------------------------------------------------------------------


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--tree",
    is_flag=True,
    help="The whole subtree from the running node: health, lag, backlog, release per node.",
)
@friendly
def status(config_path: Path, as_json: bool, tree: bool) -> None:
    """Node id and level, epoch, records per origin, watermarks, backlog, parent link.
    With --tree: every node of this node's subtree, as the running node sees it."""
    from node.status_cli import collect_status, render_status

    config = _load(config_path)
    if tree:
        from node.network_cli import show_tree

        show_tree(config, as_json)
        return
    doc = asyncio.run(collect_status(config))
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        render_status(doc, Console())


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@friendly
def verify(config_path: Path) -> None:
    """Re-verify every stored batch against its origin's key and hash chain."""
    from node.db import Database
    from sync.scrub import scrub
    from sync.store import SyncStore

    config = _load(config_path)
    keys_by_origin = dict(config.subtree_keys())
    from security.keys import load_signing_key

    key_file = config.node.key_file
    keys_by_origin[config.node_id] = load_signing_key(key_file, _node_passphrase()).verify_key
    from node.key_sync import apply_stored
    from security.keyring import KeyEntry, KeyRing
    from security.keys import retired_verify_keys

    ring = KeyRing.from_keys(keys_by_origin)
    # This node's own keys before a rotation (`lsnet keys rotate` keeps them beside the key).
    for kid, old in retired_verify_keys(key_file, _node_passphrase()).items():
        ring.put(KeyEntry(config.node_id, kid, old))

    async def run() -> Any:
        db = Database(config.node.database)
        try:
            db.check_schema()
            await apply_stored(db, ring, config.node_id)
            return await scrub(SyncStore(db), ring)
        finally:
            await asyncio.to_thread(db.close)

    report = asyncio.run(run())
    for problem in report.problems[:50]:
        err_console.print(problem, highlight=False, markup=False)
    click.echo(
        f"{report.batches} batches, {report.changes} changes checked; "
        f"{len(report.problems)} problems"
    )
    if report.problems:
        sys.exit(1)


# -- demo ------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--records",
    "records_per_city",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Records generated in each city.",
)
@click.option("--provinces", type=click.IntRange(1, 10), default=2, show_default=True)
@click.option("--cities-per-province", type=click.IntRange(1, 10), default=2, show_default=True)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the network's data in this (empty) folder.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--keep-running", is_flag=True, help="Leave the network up until Ctrl-C.")
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=300, show_default=True
)
@click.option("--seed", type=int, default=1, show_default=True)
@friendly
def demo(
    records_per_city: int,
    provinces: int,
    cities_per_province: int,
    data_dir: Path | None,
    as_json: bool,
    keep_running: bool,
    timeout_s: float,
    seed: int,
) -> None:
    """Build a local network (1 ministry, provinces, cities), fill the cities with realistic
    records, sync until the ministry has everything, then verify counts, content digests and
    every signature. Exit 0 when verified."""
    from hierarchy_config.network_init import NetworkInitError
    from node.demo import DemoOptions, run_demo

    opts = DemoOptions(
        records_per_city=records_per_city,
        provinces=provinces,
        cities_per_province=cities_per_province,
        data_dir=data_dir,
        as_json=as_json,
        keep_running=keep_running,
        timeout_s=timeout_s,
        seed=seed,
    )
    try:
        code = asyncio.run(run_demo(opts))
    except NetworkInitError as exc:  # e.g. --dir is not empty
        raise CliFailure(str(exc)) from None
    sys.exit(code)


# Command groups that live in their own modules register themselves on `main`.
from node import (  # noqa: E402, F401
    audit_cli,
    keys_cli,
    links_cli,
    network_cli,
    recover_cli,
    simulate_cli,
    standards_cli,
    tokens_cli,
)
from node.stats import cli as stats_cli  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
