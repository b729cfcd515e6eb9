"""Clean shutdown (SIGTERM) of real node processes, and refusals to start.

SIGTERM while a backlog is being sent must end the process with exit code 0 within a few
seconds; after a restart the sync completes with nothing lost or duplicated. A node must refuse
to start, with one clear line and no traceback, when its key file is readable by others or its
database was never initialised.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from hierarchy_config.loader import load_config
from hierarchy_config.model import Level
from hierarchy_config.network_init import NetworkLayout
from node.datagen import generate_records
from node.demo import free_port_range
from tests.process.conftest import FAST_RETRY, SMALL_TRANSFERS, MakeNet
from tests.process.consistency import assert_network_holds_exactly
from tests.support.procs import chunked, invoke_ok, poll, run_lsnet

pytestmark = pytest.mark.process

BACKLOG = 1000
# A node bounds its stop at about 4 s (in-flight transfer abandoned after 2 s, HTTP server
# drained for 2 s); the rest is margin for a loaded CI machine, not a performance figure.
SIGTERM_EXIT_S = 15.0


@pytest.mark.parametrize("victim_level", [Level.CITY, Level.PROVINCE])
def test_sigterm_during_backlog_exits_0_and_sync_resumes(
    make_procnet: MakeNet, victim_level: Level
) -> None:
    net = make_procnet(tune={"sync": FAST_RETRY, "limits": SMALL_TRANSFERS})
    net.start_all()
    province = net.provinces()[0]
    city, other = net.cities()
    # A backlog builds up while the province is cleanly stopped ...
    code, _ = province.terminate()
    assert code == 0
    for c, n in ((city, BACKLOG), (other, 200)):
        for chunk in chunked(generate_records(c.node_id, n, seed=31), 100):
            answer = c.post_records(chunk)
            assert answer.status == 200, answer
    doc = city.status()
    epoch, last = doc["epoch"], doc["local_last_seq"]
    # The backlog counts changes: the records plus the probes written meanwhile.
    assert BACKLOG <= doc["backlog"] <= last, doc["backlog"]
    # ... and is being sent once the province is back.
    province.start()

    def sending() -> bool:
        mark = province.watermark(city.node_id, epoch)
        assert mark < last, "the whole backlog arrived before the SIGTERM"
        return mark > 0

    poll(sending, 30, "the city never started sending its backlog", interval_s=0.005)
    victim = city if victim_level is Level.CITY else province
    code, took = victim.terminate()
    assert code == 0, victim.log_tail()
    assert took < SIGTERM_EXIT_S, f"{victim} took {took:.1f}s to stop"
    # The shutdown really interrupted the transfer of the backlog.
    holder = province if victim is city else net.ministry
    assert holder.watermark(city.node_id, epoch) < last
    log = victim.log_path.read_text(encoding="utf-8")
    assert "stopping" in log
    assert "Traceback" not in log
    victim.start()
    assert_network_holds_exactly(net, {city.node_id: BACKLOG, other.node_id: 200})


def one_city(tmp_path: Path) -> Path:
    """Lay out a 1-province, 1-city network; the city's node.toml (database not initialised)."""
    invoke_ok(
        "network",
        "init",
        "--out",
        str(tmp_path / "net"),
        "--provinces",
        "1",
        "--cities-per-province",
        "1",
        "--base-port",
        str(free_port_range(3)),
    )
    return NetworkLayout.load(tmp_path / "net").cities()[0].config_path


@pytest.mark.parametrize("mode", [0o644, 0o640], ids=["0644", "0640"])
def test_refuses_a_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    config = one_city(tmp_path)
    invoke_ok("node", "init", "--config", str(config))
    key = config.parent / "node.key"
    key.chmod(mode)
    done = run_lsnet("node", "run", "--config", config, timeout_s=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "chmod 600" in lines[0]
    assert str(key) in lines[0]
    assert f"{mode:04o}" in lines[0]
    assert stat.S_IMODE(key.stat().st_mode) == mode  # the node does not "fix" it silently


def test_refuses_an_uninitialised_database(tmp_path: Path) -> None:
    config = one_city(tmp_path)
    done = run_lsnet("node", "run", "--config", config, timeout_s=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "lsnet node init" in errors[0]
    assert "running on" not in done.stderr


def test_refuses_a_taken_port_in_one_line(tmp_path: Path) -> None:
    config = one_city(tmp_path)
    invoke_ok("node", "init", "--config", str(config))
    port = load_config(config).node.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        done = run_lsnet("node", "run", "--config", config, timeout_s=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "address already in use" in errors[0]
    assert str(port) in errors[0]
