"""`lsnet simulate`: the national-scale simulation as a command (the work is in node.simulate).

It prints the report as a table (or one JSON object with --json) and exits 0 when the ministry
converged and holds exactly every city's records, 1 otherwise. It does not keep the network
running afterwards (see `lsnet demo --keep-running` for that).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hierarchy_config.network_init import NetworkInitError
from node.cli import CliFailure, friendly, main
from node.simulate import MAINLAND, SimOptions, SimulationError, run_simulation


@main.command()
@click.option(
    "--provinces",
    type=click.IntRange(1, MAINLAND),
    default=MAINLAND,
    show_default=True,
    help="Mainland provinces in the tree (largest first).",
)
@click.option(
    "--cities",
    type=click.IntRange(1, 400),
    default=330,
    show_default=True,
    help="Cities in total, spread over the provinces (at least one each).",
)
@click.option(
    "--records",
    "records_per_city",
    type=click.IntRange(1, 1_000_000),
    default=100,
    show_default=True,
    help="Records generated in each city (employers, persons, enrollments, contributions).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1, 24 * 3600),
    default=1800,
    show_default=True,
    help="Seconds to wait for the ministry to converge.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the network's data in this (empty) folder instead of a temporary one.",
)
@click.option(
    "--no-standards",
    is_flag=True,
    help="Validate with the built-in schemas instead of rolling out a standards release.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@friendly
def simulate(
    provinces: int,
    cities: int,
    records_per_city: int,
    timeout_s: float,
    seed: int,
    data_dir: Path | None,
    no_standards: bool,
    as_json: bool,
) -> None:
    """Run a national network (1 ministry, provinces, cities) in this one process on
    127.0.0.1, fill every city with realistic records, and report the time for the ministry to
    hold everything, records/s at each level, peak memory and open files. Exit 0 when every
    city's records arrived intact at its province and at the ministry."""
    console = Console(stderr=True)
    opts = SimOptions(
        provinces=provinces,
        cities=cities,
        records_per_city=records_per_city,
        timeout_s=timeout_s,
        seed=seed,
        data_dir=data_dir,
        standards=not no_standards,
    )
    try:
        # Hundreds of nodes' schedulers in one process: their "job skipped" notes are noise.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        report = asyncio.run(run_simulation(opts, progress=lambda m: console.print(m)))
    except (SimulationError, NetworkInitError) as exc:
        raise CliFailure(str(exc)) from None
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        table = Table(title="lsnet simulate")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in report.items():
            table.add_row(key, str(value))
        Console().print(table)
    sys.exit(0 if report["converged"] else 1)
