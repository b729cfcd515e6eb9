"""`lsnet stats …`: list the indicators of the standards in force and compute one.

`lsnet stats run` reads the node's own database (the node may be running or stopped). With
`--federated` it also sends a signed query down the tree (signed with this node's key) and
combines the children's answers; the output then lists the nodes that did not answer. Parsing
and printing only: the work is done by `node.stats.service`.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from hierarchy_config.loader import load_config
from node.cli import CliFailure, friendly, main
from node.stats.request import StatsError, StatsRequest


def _console() -> Console:
    """A console made when the command prints, so its width is the terminal's (or COLUMNS) at
    that moment. A module-level Console would fix the width when the module is imported."""
    return Console()


def _open(config_path: Path) -> Any:
    from node.app import Node
    from node.validation import release_in_force

    config = load_config(config_path)
    node = Node.open(config)
    node.validator = release_in_force(config)
    node.db.check_schema()
    return node


async def _close(node: Any) -> None:
    await node.transport.close()
    await asyncio.to_thread(node.db.close)


@main.group()
def stats() -> None:
    """Statistical indicators of the standards release (insured persons, contributions, …),
    computed from this node's database or, with --federated, from the whole subtree."""


_CONFIG = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default="node.toml",
    show_default=True,
    help="The node's configuration file.",
)


@stats.command("list")
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly
def list_cmd(config_path: Path, as_json: bool) -> None:
    """List the indicators this node can compute, with their dimensions and replication."""

    async def go() -> list[dict[str, Any]]:
        node = _open(config_path)
        try:
            assert node.stats is not None
            return list(node.stats.catalogue())
        finally:
            await _close(node)

    items = asyncio.run(go())
    if as_json:
        click.echo(json.dumps(items, ensure_ascii=False, indent=2))
        return
    # The indicator name is what `lsnet stats run` takes: never wrapped, so it can be copied.
    table = Table(
        Column("indicator", no_wrap=True),
        "ref",
        "kind",
        "measure",
        "dimensions",
        "records",
        "title",
    )
    for item in items:
        modes = ", ".join(f"{t} ({m})" for t, m in item["replication"].items())
        table.add_row(
            item["name"],
            item["ref"],
            item["kind"],
            item["measure"],
            ", ".join(item["dimensions"]),
            modes,
            item["title"],
        )
    _console().print(table)


@stats.command("run")
@click.argument("indicator")
@_CONFIG
@click.option(
    "--by",
    default="region",
    show_default=True,
    help="Group by: region, period and "
    "the indicator's dimensions, comma-separated (e.g. region,period,insurance_type).",
)
@click.option(
    "--period",
    default=None,
    help="Month, quarter or year, or a range: 2025-01..2025-12, "
    "2025Q1..2025Q4, 2024..2025. Default: the current year.",
)
@click.option(
    "--region", default=None, help="Only this GB/T 2260 region and below (330000 = Zhejiang)."
)
@click.option(
    "--level",
    "region_level",
    type=click.Choice(["province", "prefecture", "county"]),
    default=None,
    help="Region level to group at (default: one below --region).",
)
@click.option(
    "--federated",
    is_flag=True,
    help="Ask the whole subtree with a signed query "
    "(needed for record types kept 'local' at the cities).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the subtree's answers (federated).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@friendly
def run_cmd(
    indicator: str,
    config_path: Path,
    by: str,
    period: str | None,
    region: str | None,
    region_level: str | None,
    federated: bool,
    timeout_s: float,
    fmt: str,
) -> None:
    """Compute INDICATOR (see `lsnet stats list`)."""
    period = period or str(dt.datetime.now(dt.UTC).year)

    async def go() -> dict[str, Any]:
        node = _open(config_path)
        try:
            assert node.stats is not None
            request = StatsRequest.parse(indicator, by, period, region, region_level)
            doc: dict[str, Any] = await node.stats.run(
                request, federated=federated, timeout_s=timeout_s
            )
            return doc
        finally:
            await _close(node)

    try:
        doc = asyncio.run(go())
    except StatsError as exc:
        raise CliFailure(exc.message) from None
    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        click.echo(to_csv(doc), nl=False)
    else:
        render(doc)
    if doc["missing"]:
        raise CliFailure(
            f"incomplete answer: {len(doc['missing'])} node(s) did not answer "
            "(listed above); the figures cover only the nodes that did"
        )


HIDDEN = {
    "primary": "suppressed (small cell)",
    "secondary": "suppressed (complement)",
    "withheld": "withheld by its node",
}


def to_csv(doc: dict[str, Any]) -> str:
    """One row per cell; `suppressed` is empty or primary / secondary / withheld."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*doc["by"], "value", "n", "suppressed", "estimated"])
    for cell in doc["cells"]:
        writer.writerow(
            [
                *(cell[b] for b in doc["by"]),
                "" if cell["value_text"] is None else cell["value_text"],
                "" if cell["n"] is None else cell["n"],
                cell["suppressed"] or "",
                int(cell["estimated"]),
            ]
        )
    return out.getvalue()


def render(doc: dict[str, Any]) -> None:
    console = _console()
    scope = "federated over the subtree" if doc["federated"] else "this node's database"
    console.print(
        f"[bold]{doc['indicator']}[/] {doc['title']} ({doc['kind']}, {doc['unit']}); "
        f"{doc['period']}; {scope} at {doc['node']}"
    )
    labels = doc["labels"]
    table = Table(*doc["by"], "value", "n")
    for cell in doc["cells"]:
        keys = [f"{cell[b]} {labels.get(b, {}).get(cell[b], '')}".strip() for b in doc["by"]]
        if cell["suppressed"]:
            value = f"[dim]{HIDDEN.get(cell['suppressed'], 'suppressed')}[/]"
        else:
            value = "-" if cell["value_text"] is None else cell["value_text"]
            value += " ~" if cell["estimated"] else ""
        table.add_row(*keys, value, "" if cell["n"] is None else str(cell["n"]))
    console.print(table)
    notes = [f"cells under {doc['min_cell']} records are suppressed"]
    if doc["disclosure"]["secondary"]:
        notes.append(
            "'suppressed (complement)' cells are hidden so that a small cell cannot be "
            "recovered by subtraction from other cells and totals"
        )
    if doc["estimated"]:
        notes.append("~ = estimate (distinct counts merged across nodes with HyperLogLog)")
    console.print("; ".join(notes))
    for m in doc["missing"]:
        console.print(f"[red]no answer[/] from {m['node']}: {m['reason']}")
