"""The `lsnet` command line: what an operator types and reads.

Most commands run in this process through click's CliRunner on `node.cli.main`; where the real
process matters (no traceback on stderr, the installed entry point, output without a terminal),
the installed `lsnet` runs as a subprocess; those tests are marked `process`.
"""

from __future__ import annotations

import csv
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import NetworkLayout
from node.cli import main
from node.datagen import generate_records
from node.demo import free_port_range
from security.keys import encode_public_key, load_signing_key
from tests.support.procs import NodeProc, run_lsnet

ERROR_ROW_RE = re.compile(r"^row (\d+) field '([a-z_]+)': (.+)$")


@pytest.fixture(autouse=True)
def plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """No colours, no forced terminal: what a script or a log file sees."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


def lsnet(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    """The single stderr line of a failed command (no traceback, no wrapping)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def make_network(out: Path, provinces: int = 1, cities: int = 1) -> NetworkLayout:
    count = 1 + provinces * (1 + cities)
    result = lsnet(
        "network",
        "init",
        "--out",
        out,
        "--provinces",
        provinces,
        "--cities-per-province",
        cities,
        "--base-port",
        free_port_range(count),
    )
    assert result.exit_code == 0, result.output
    return NetworkLayout.load(out)


@pytest.fixture
def layout(tmp_path: Path) -> NetworkLayout:
    """1 ministry, 1 province, 1 city; nothing running, the city's database initialised."""
    net = make_network(tmp_path / "net")
    result = lsnet("node", "init", "--config", net.cities()[0].config_path)
    assert result.exit_code == 0, result.output
    return net


@pytest.fixture
def city(layout: NetworkLayout) -> Path:
    return layout.cities()[0].config_path


def status(config: Path) -> dict[str, Any]:
    result = lsnet("status", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def person_with_bad_check_digit(city_id: str) -> dict[str, Any]:
    person = next(r for r in generate_records(city_id, 20, seed=2) if r["type"] == "person")
    digits = "0123456789X"
    pid = person["person_id"]
    wrong = digits[(digits.index(pid[17]) + 1) % len(digits)]
    return {**person, "person_id": pid[:17] + wrong}


def mixed_file(tmp_path: Path, city_id: str) -> tuple[Path, list[dict[str, Any]]]:
    """5 rows: 3 good (rows 1, 3, 5); row 2 a person id with a wrong check digit; row 4 an
    employer with an unknown field."""
    good = generate_records(city_id, 3, seed=1)
    unknown = {**good[0], "colour": "red"}
    rows = [good[0], person_with_bad_check_digit(city_id), good[1], unknown, good[2]]
    return write_jsonl(tmp_path / "mixed.jsonl", rows), good


# -- keys ------------------------------------------------------------------------------------------


def test_keys_generate_prints_public_key_and_key_id_and_writes_0600(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "node.key"
    result = lsnet("keys", "generate", "--out", out)
    assert result.exit_code == 0, result.output
    public = re.search(r"^public key: (ed25519:\S+)$", result.stdout, re.M)
    kid = re.search(r"^key id:\s+([0-9a-f]{16})$", result.stdout, re.M)
    assert public is not None and kid is not None, result.stdout
    key = load_signing_key(out)
    assert key.public == public.group(1)
    assert key.kid == kid.group(1)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keys_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "node.key"
    assert lsnet("keys", "generate", "--out", out).exit_code == 0
    before = out.read_bytes()
    refused = lsnet("keys", "generate", "--out", out)
    assert refused.exit_code == 2
    assert "refusing to overwrite" in one_line_error(refused)
    assert out.read_bytes() == before
    forced = lsnet("keys", "generate", "--out", out, "--force")
    assert forced.exit_code == 0, forced.output
    assert out.read_bytes() != before
    assert load_signing_key(out).public in forced.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


# -- network init ----------------------------------------------------------------------------------


def test_network_init_writes_a_loadable_network(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net", provinces=1, cities=2)
    assert [n.level.value for n in net.nodes] == ["ministry", "province", "city", "city"]
    keys = {}
    for entry in net.nodes:
        config = load_config(entry.config_path)
        assert config.node_id == entry.id
        assert config.node.url == entry.url
        assert config.node.host == "127.0.0.1"
        keys[entry.id] = load_signing_key(config.node.key_file).public
        for path in (entry.config_path, config.node.key_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for entry in net.nodes:
        config = load_config(entry.config_path)
        if entry.parent_id is not None:
            assert config.parent is not None
            assert config.parent.public_key == keys[entry.parent_id]
    ministry = load_config(net.ministry().config_path)
    enrolled = {k: encode_public_key(v) for k, v in ministry.subtree_keys().items()}
    assert enrolled == {k: v for k, v in keys.items() if k != ministry.node_id}


def test_network_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    result = lsnet("network", "init", "--out", out, "--base-port", free_port_range(7))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "not an empty folder" in line
    assert str(out) in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# -- node init -------------------------------------------------------------------------------------


def test_node_init_is_idempotent(tmp_path: Path) -> None:
    net = make_network(tmp_path / "net")
    config = net.cities()[0].config_path
    first = lsnet("node", "init", "--config", config)
    assert first.exit_code == 0, first.output
    created = re.search(r"database created; epoch ([0-9a-f]{32})$", first.stdout.strip())
    assert created is not None, first.stdout
    again = lsnet("node", "init", "--config", config)
    assert again.exit_code == 0, again.output
    assert "already initialised" in again.stdout
    assert again.stdout.strip().endswith(f"epoch {created.group(1)}")
    assert status(config)["epoch"] == created.group(1)


# -- records import --------------------------------------------------------------------------------


def test_import_reports_accepted_and_rejected_rows(tmp_path: Path, city: Path) -> None:
    city_id = load_config(city).node_id
    path, _good = mixed_file(tmp_path, city_id)
    result = lsnet("records", "import", "--config", city, path)
    assert result.exit_code == 1, result.output
    assert "accepted 3, rejected 2" in result.stdout
    errors = [ERROR_ROW_RE.match(line) for line in result.stderr.strip().splitlines()]
    assert all(errors), result.stderr  # one line per bad row, nothing else
    found = {(int(m.group(1)), m.group(2)): m.group(3) for m in errors if m}
    assert set(found) == {(2, "person_id"), (4, "colour")}
    assert "check digit" in found[(2, "person_id")]
    assert "is not a field of a employer record" in found[(4, "colour")]
    doc = status(city)
    assert doc["records_by_origin"] == {city_id: 3}
    assert doc["local_last_seq"] == 3


def test_import_all_or_nothing_with_a_bad_row_imports_nothing(tmp_path: Path, city: Path) -> None:
    path, _ = mixed_file(tmp_path, load_config(city).node_id)
    result = lsnet("records", "import", "--config", city, "--all-or-nothing", path)
    assert result.exit_code == 2, result.output
    assert "nothing imported" in result.stdout
    assert "row 2 field 'person_id'" in result.stderr
    doc = status(city)
    assert doc["records_total"] == 0
    assert doc["records_by_origin"] == {}
    assert doc["local_last_seq"] == 0
    assert doc["backlog"] == 0


def test_import_all_or_nothing_with_good_rows_imports_all(tmp_path: Path, city: Path) -> None:
    city_id = load_config(city).node_id
    path = write_jsonl(tmp_path / "good.jsonl", generate_records(city_id, 40, seed=4))
    result = lsnet("records", "import", "--config", city, "--all-or-nothing", path)
    assert result.exit_code == 0, result.output
    assert "accepted 40, rejected 0 (40 changed" in result.stdout
    assert status(city)["local_last_seq"] == 40


def test_import_csv_with_type(tmp_path: Path, city: Path) -> None:
    city_id = load_config(city).node_id
    persons = [r for r in generate_records(city_id, 200, seed=3) if r["type"] == "person"]
    assert len(persons) >= 5
    fields = sorted({k for p in persons for k in p if k != "type"})
    path = tmp_path / "persons.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for p in persons:
            writer.writerow({k: v for k, v in p.items() if k != "type"})
    untyped = lsnet("records", "import", "--config", city, path)
    assert untyped.exit_code == 2
    assert "--type" in one_line_error(untyped)
    result = lsnet("records", "import", "--config", city, "--type", "person", path)
    assert result.exit_code == 0, result.output
    assert f"accepted {len(persons)}, rejected 0 ({len(persons)} changed" in result.stdout
    assert status(city)["records_by_origin"] == {city_id: len(persons)}


def test_reimporting_the_same_file_changes_nothing(tmp_path: Path, city: Path) -> None:
    city_id = load_config(city).node_id
    path = write_jsonl(tmp_path / "r.jsonl", generate_records(city_id, 120, seed=5))
    first = lsnet("records", "import", "--config", city, path)
    assert first.exit_code == 0, first.output
    assert "(120 changed, 0 unchanged)" in first.stdout
    before = status(city)
    again = lsnet("records", "import", "--config", city, path)
    assert again.exit_code == 0, again.output
    assert "accepted 120, rejected 0 (0 changed, 120 unchanged)" in again.stdout
    after = status(city)
    assert after["local_last_seq"] == before["local_last_seq"] == 120
    assert after["backlog"] == 120


@pytest.fixture
def big_file(tmp_path: Path, city: Path) -> Iterator[tuple[Path, int]]:
    rows = generate_records(load_config(city).node_id, 6000, seed=6)
    yield write_jsonl(tmp_path / "big.jsonl", rows), len(rows)


def test_import_6000_rows_shows_progress_on_stderr(
    big_file: tuple[Path, int], city: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, n = big_file
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws the bar as on a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    result = lsnet("records", "import", "--config", city, "--chunk", "700", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"accepted {n}, rejected 0 ({n} changed, 0 unchanged)"]
    assert "importing" in result.stderr  # the progress bar was drawn, on stderr
    doc = status(city)
    assert doc["local_last_seq"] == n
    assert doc["records_total"] == n


@pytest.mark.process
def test_import_6000_rows_without_a_terminal_prints_only_the_result(
    big_file: tuple[Path, int], city: Path
) -> None:
    path, n = big_file
    done = run_lsnet("records", "import", "--config", city, path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"accepted {n}, rejected 0 ({n} changed, 0 unchanged)"]
    assert "Traceback" not in done.stderr


# -- status ----------------------------------------------------------------------------------------


def test_status_json_counts_the_backlog_and_sees_the_parent_down(
    tmp_path: Path, city: Path
) -> None:
    config = load_config(city)
    path = write_jsonl(tmp_path / "s.jsonl", generate_records(config.node_id, 75, seed=8))
    imported = lsnet("records", "import", "--config", city, path)
    assert "(75 changed" in imported.stdout
    doc = status(city)
    assert {"node", "level", "records_by_origin", "watermarks", "backlog", "parent"} <= set(doc)
    assert doc["node"] == config.node_id
    assert doc["level"] == "city"
    assert doc["records_by_origin"] == {config.node_id: 75}
    assert doc["watermarks"] == {config.node_id: {doc["epoch"]: 75}}
    assert doc["backlog"] == 75  # nothing acknowledged: no parent is running
    assert config.parent is not None
    assert doc["parent"]["id"] == config.parent.id
    assert doc["parent"]["reachable"] is False
    text = lsnet("status", "--config", city)
    assert text.exit_code == 0, text.output
    assert "unreachable" in text.stdout


@pytest.mark.process
def test_status_sees_a_running_parent(tmp_path: Path, layout: NetworkLayout, city: Path) -> None:
    province = layout.provinces()[0].config_path
    assert lsnet("node", "init", "--config", province).exit_code == 0
    proc = NodeProc(province, tmp_path / "logs")
    try:
        proc.start()
        doc = status(city)
        assert doc["parent"]["reachable"] is True
        assert doc["parent"]["probe"] == "HTTP 200"
    finally:
        proc.close()


def test_status_of_the_ministry_has_no_parent(tmp_path: Path, layout: NetworkLayout) -> None:
    ministry = layout.ministry().config_path
    assert lsnet("node", "init", "--config", ministry).exit_code == 0
    doc = status(ministry)
    assert doc["level"] == "ministry"
    assert doc["parent"] is None
    assert doc["backlog"] == 0


# -- bad configuration -----------------------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param(r'^listen = ".*"$', 'listen = "nope"', "node.listen", id="listen"),
    pytest.param(r"^\[api\]$", "[api]\ncolour = 1", "api.colour", id="unknown-field"),
    pytest.param(r'^level = "city"$', 'level = "town"', "node.level", id="level"),
    pytest.param(r"^public_key = .*$", 'public_key = "ed25519:abc"', "parent.public_key", id="key"),
]


def break_config(config: Path, pattern: str, replacement: str) -> Path:
    text, count = re.subn(
        pattern, replacement, config.read_text(encoding="utf-8"), count=1, flags=re.M
    )
    assert count == 1, pattern
    bad = config.with_name("bad.toml")
    bad.write_text(text, encoding="utf-8")
    return bad


@pytest.mark.parametrize(("pattern", "replacement", "field"), BAD_CONFIGS)
@pytest.mark.parametrize(
    "command",
    [["status"], ["node", "init"], ["verify"], ["records", "import"]],
    ids=["status", "node-init", "verify", "records-import"],
)
def test_bad_config_is_one_line_naming_file_and_field(
    tmp_path: Path, city: Path, pattern: str, replacement: str, field: str, command: list[str]
) -> None:
    bad = break_config(city, pattern, replacement)
    extra = [str(write_jsonl(tmp_path / "x.jsonl", []))] if command[0] == "records" else []
    result = lsnet(*command, "--config", bad, *extra)
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert str(bad) in line
    assert f"field '{field}'" in line


@pytest.mark.process
def test_bad_config_stops_a_real_node_without_traceback(city: Path) -> None:
    bad = break_config(city, r'^listen = ".*"$', 'listen = "nope"')
    done = run_lsnet("node", "run", "--config", bad, timeout_s=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(bad) in lines[0]
    assert "field 'node.listen'" in lines[0]


# -- demo ------------------------------------------------------------------------------------------


@pytest.mark.process
def test_demo_json_verifies_a_two_by_two_network() -> None:
    done = run_lsnet("demo", "--records", "50", "--json", "--timeout", "60", timeout_s=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verified"] is True
    assert summary["problems"] == []
    nodes = summary["nodes"]
    levels = {nid: n["level"] for nid, n in nodes.items()}
    assert sorted(levels.values()) == ["city"] * 4 + ["ministry"] + ["province"] * 2
    ministry = next(n for n in nodes.values() if n["level"] == "ministry")
    assert ministry["records"] == 4 * 50
    cities = [nid for nid, level in levels.items() if level == "city"]
    assert ministry["records_by_origin"] == dict.fromkeys(sorted(cities), 50)
    for nid, n in nodes.items():
        if n["level"] == "province":
            assert n["records"] == 100
            assert set(n["records_by_origin"]) == {c for c in cities if nodes[c]["parent"] == nid}
        if n["level"] == "city":
            assert n["records_by_origin"] == {nid: 50}
            assert n["backlog"] == 0
    assert summary["changes_verified"] == 200


def test_demo_one_province_one_city() -> None:
    result = lsnet(
        "demo", "--records", "30", "--provinces", "1", "--cities-per-province", "1", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["verified"] is True
    assert len(summary["nodes"]) == 3
    ministry = next(n for n in summary["nodes"].values() if n["level"] == "ministry")
    assert ministry["records"] == 30


def test_demo_refuses_a_non_empty_dir_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    result = lsnet("demo", "--records", "5", "--dir", tmp_path, "--json")
    assert result.exit_code == 2, result.output
    assert "not an empty folder" in one_line_error(result)
    assert result.stdout == ""


def test_demo_keeps_its_data_in_dir(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = lsnet(
        "demo", "--records", "10", "--provinces", "1", "--cities-per-province", "1", "--dir", out
    )
    assert result.exit_code == 0, result.output
    assert "verified" in result.stdout
    layout = NetworkLayout.load(out)
    assert len(layout.nodes) == 3
    assert all((e.config_path.parent / "node.db").exists() for e in layout.nodes)
