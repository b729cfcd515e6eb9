"""`lsnet records import`: stream a JSON Lines or CSV file into the local resource database.

Rows are validated one by one; valid rows are written in chunks, each chunk one transaction that
holds the records and their change-log entries. With all-or-nothing, a first pass validates the
whole file and a second pass writes it in a single transaction, so a bad row or a crash leaves
nothing behind. Memory stays bounded by the chunk size. A running node picks the new changes up
on its next sync round.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hierarchy_config.model import NodeConfig
from hierarchy_config.standards import Issue
from node.clock import SystemClock
from node.db import Database
from node.ingest_files import RowError, count_rows, read_csv, read_jsonl
from node.records import RecordInvalid, ValidRecord
from node.stats.replication import local_record_types
from node.store import IngestResult, ingest_txn, read_meta_txn
from node.validation import RecordValidator, release_in_force

PROGRESS_THRESHOLD = 5000


class ImportFailed(Exception):
    """The import could not be completed; nothing from the failing transaction was stored."""


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: int = 0
    changed: int = 0
    unchanged: int = 0
    warnings: int = 0
    warning_rows: list[RowError] = field(default_factory=list)
    standards: str = ""
    aborted: bool = False
    errors: list[RowError] = field(default_factory=list)


def _rows(
    path: Path, fmt: str, record_type: str | None
) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    if fmt == "csv":
        assert record_type is not None
        return read_csv(path, record_type)
    return read_jsonl(path)


def _validated(
    path: Path,
    fmt: str,
    record_type: str | None,
    report: ImportReport,
    validator: RecordValidator,
    max_errors: int = 1000,
) -> Iterator[tuple[int, ValidRecord | None, tuple[Issue, ...]]]:
    for row, item in _rows(path, fmt, record_type):
        if isinstance(item, RowError):
            report.rejected += 1
            if len(report.errors) < max_errors:
                report.errors.append(item)
            yield row, None, ()
            continue
        if record_type is not None and fmt == "jsonl" and "type" not in item:
            item = {"type": record_type, **item}
        try:
            rec, warned = validator.validate(item)
            report.warnings += len(warned)
            for w in warned:
                if len(report.warning_rows) < max_errors:
                    report.warning_rows.append(RowError(row, w.field, w.message))
        except RecordInvalid as exc:
            report.rejected += 1
            if len(report.errors) < max_errors:
                report.errors.append(RowError(row, exc.field, exc.reason))
            yield row, None, ()
            continue
        yield row, rec, warned


def _add(report: ImportReport, result: IngestResult) -> None:
    report.changed += result.changed
    report.unchanged += result.unchanged


def import_file(
    config: NodeConfig,
    path: Path,
    *,
    fmt: str,
    record_type: str | None,
    all_or_nothing: bool,
    chunk: int = 1000,
    show_progress: bool = True,
) -> ImportReport:
    db = Database(config.node.database)
    clock = SystemClock()
    try:
        db.check_schema()
        db.read_sync(read_meta_txn)
        total = count_rows(path)
        validator = release_in_force(config)
        local = local_record_types(validator)  # replication mode `local`: not sent upward
        report = ImportReport(standards=validator.standards_id)
        progress = Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),  # stdout carries only the result line
            disable=not show_progress or total < PROGRESS_THRESHOLD,
            transient=True,
        )
        with progress:
            task = progress.add_task("import", total=total)
            if all_or_nothing:
                for _ in _validated(path, fmt, record_type, report, validator):
                    progress.advance(task, 0.5)
                if report.rejected:
                    report.aborted = True
                    return report
                check = ImportReport()
                std = validator.standards_id
                rows = _validated(path, fmt, record_type, check, validator)
                with db.writer.begin() as conn:
                    for batch, warns in _chunks(rows, chunk):
                        _add(report, ingest_txn(conn, batch, clock.time_ms(), std, warns, local))
                        report.accepted += len(batch)
                        progress.advance(task, 0.5 * len(batch))
                    if check.rejected:  # the file changed between the passes
                        raise ImportFailed(
                            f"{path} changed during the import; nothing was imported"
                        )
            else:
                std = validator.standards_id
                rows = _validated(path, fmt, record_type, report, validator)
                for batch, warns in _chunks(rows, chunk):
                    _add(
                        report,
                        db.write_sync(ingest_txn, batch, clock.time_ms(), std, warns, local),
                    )
                    report.accepted += len(batch)
                    progress.update(task, completed=report.accepted + report.rejected)
        return report
    finally:
        db.close()


Chunk = tuple[list[ValidRecord], list[tuple[Issue, ...]]]


def _chunks(
    items: Iterator[tuple[int, ValidRecord | None, tuple[Issue, ...]]], size: int
) -> Iterator[Chunk]:
    recs: list[ValidRecord] = []
    warns: list[tuple[Issue, ...]] = []
    for _, rec, warned in items:
        if rec is None:
            continue
        recs.append(rec)
        warns.append(warned)
        if len(recs) >= size:
            yield recs, warns
            recs, warns = [], []
    if recs:
        yield recs, warns
