"""Real `lsnet` nodes as operating-system processes, for kill -9 / SIGTERM / restart tests.

`run_lsnet(...)` runs one CLI command to completion. `NodeProc` runs `lsnet node run --config X`
with stdout/stderr appended to a log file, waits (polling GET /healthz with a deadline) until the
node answers, and can kill -9 it, stop it with SIGTERM, and restart it. `ProcNetwork` builds a
whole network with `lsnet network init` + `lsnet node init` and drives it over HTTP on 127.0.0.1
(`POST /v1/records` with the node's bearer token, `GET /v1/status`).

Nothing here sleeps to wait for a condition: every wait polls with a deadline. `ProcNetwork.close`
kills every process it started, so a fixture can call it in teardown even after a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from click.testing import CliRunner, Result

from hierarchy_config.loader import load_config
from hierarchy_config.model import Level, NodeConfig
from hierarchy_config.network_init import NetworkLayout
from node.cli import main
from node.demo import free_port_range

T = TypeVar("T")

LSNET_SCRIPT = Path(sys.executable).with_name("lsnet")
READY_TIMEOUT_S = 90.0  # a deadline, not a timing: generous for loaded CI machines
HTTP_TIMEOUT_S = 15.0


def lsnet_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m node.cli`."""
    if LSNET_SCRIPT.exists():
        return [str(LSNET_SCRIPT)]
    return [sys.executable, "-m", "node.cli"]


def child_env() -> dict[str, str]:
    """Environment for child processes: no colours, no terminal width, unbuffered output."""
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    for name in ("COLUMNS", "LINES"):  # as under systemd: no terminal, rich falls back to 80x25
        env.pop(name, None)
    env.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_lsnet(
    *args: str | os.PathLike[str], timeout_s: float = 120.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one `lsnet` command to completion and capture its output."""
    return subprocess.run(
        [*lsnet_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=child_env(),
        cwd=cwd,
        check=False,
    )


def invoke_ok(*args: str) -> Result:
    """Run one `lsnet` command in this process (CliRunner) and require exit code 0."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"lsnet {' '.join(args)} -> {result.exit_code}: {result.output}"
    return result


def poll(
    probe: Callable[[], T | None],
    timeout_s: float,
    message: str | Callable[[], str],
    interval_s: float = 0.02,
) -> T:
    """Call `probe` until it returns something other than None/False; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout_s}s)")
        time.sleep(interval_s)  # the polling interval, not a wait for the condition itself


# -- HTTP ------------------------------------------------------------------------------------------


class RequestFailed(Exception):
    """The request got no HTTP answer (connection refused or reset, timeout): its fate is
    unknown, e.g. because the node was killed while handling it."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: Any


def http_json(
    method: str,
    url: str,
    payload: Any = None,
    *,
    token: str | None = None,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> HttpAnswer:
    """One JSON request to 127.0.0.1. Any HTTP status is an answer; no answer is RequestFailed."""
    data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return HttpAnswer(resp.status, _decode(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException) as inner:
            raise RequestFailed(f"{method} {url}: answer cut off: {inner!r}") from None
        return HttpAnswer(exc.code, _decode(body))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise RequestFailed(f"{method} {url}: {exc!r}") from None


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


# -- configuration -------------------------------------------------------------------------------


def tune_config(path: Path, **sections: Mapping[str, Any]) -> None:
    """Merge settings into sections of a node.toml (e.g. sync={...}, limits={...}).

    The file keeps its 0600 mode (it is rewritten in place)."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    with path.open("wb") as fh:
        fh.write(tomli_w.dumps(doc).encode("utf-8"))


# -- one node --------------------------------------------------------------------------------------


class NodeProc:
    """`lsnet node run --config X` as a subprocess, restartable."""

    def __init__(self, config_path: Path, log_dir: Path) -> None:
        self.config_path = Path(config_path)
        self.config: NodeConfig = load_config(self.config_path)
        self.node_id = self.config.node_id
        self.url = self.config.node.url
        self.token = self.config.api.ingest_tokens[0] if self.config.api.ingest_tokens else None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.env: dict[str, str] = {}  # extra environment for the next starts

    def __repr__(self) -> str:
        return f"NodeProc({self.node_id} {self.config.level.value} {self.url})"

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to answer."""
        assert not self.running, f"{self} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.node_id} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*lsnet_command(), "node", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**child_env(), **self.env},
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll GET /healthz until this process (not a stranger on the port) answers."""

        def ready() -> bool | None:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise AssertionError(
                    f"{self} exited with code {code} before answering:\n{self.log_tail()}"
                )
            return self.healthy()

        poll(ready, timeout_s, lambda: f"{self} did not answer /healthz:\n{self.log_tail()}")

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def kill9(self) -> None:
        """SIGKILL: no clean-up of any kind in the node."""
        assert self.proc is not None and self.running, f"{self} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def terminate(self, timeout_s: float = 15.0) -> tuple[int, float]:
        """SIGTERM and wait for the exit; (exit code, seconds it took)."""
        assert self.proc is not None and self.running, f"{self} is not running"
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self} did not exit within {timeout_s}s of SIGTERM:\n{self.log_tail()}"
            ) from None
        return code, time.monotonic() - started

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        if self.running:
            self.terminate()
        self.start(timeout_s)

    def close(self) -> None:
        """Kill the process if it is still running (teardown; never raises for a dead one)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP ------------------------------------------------------------------------------------
    def post_records(
        self, records: Sequence[Mapping[str, Any]], timeout_s: float = HTTP_TIMEOUT_S
    ) -> HttpAnswer:
        """POST /v1/records with this node's ingest token. RequestFailed if no answer."""
        assert self.token is not None, f"{self} has no ingest token"
        return http_json(
            "POST", self.url + "/v1/records", list(records), token=self.token, timeout_s=timeout_s
        )

    def status(self, timeout_s: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
        answer = http_json("GET", self.url + "/v1/status", timeout_s=timeout_s)
        assert answer.status == 200, f"{self}: GET /v1/status -> {answer}"
        assert isinstance(answer.body, dict)
        return answer.body

    def healthy(self) -> bool:
        """True if a node with this id answers GET /healthz (no check of our process handle)."""
        try:
            answer = http_json("GET", self.url + "/healthz", timeout_s=2.0)
        except RequestFailed:
            return False
        return (
            answer.status == 200
            and isinstance(answer.body, dict)
            and answer.body.get("node") == self.node_id
        )

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status(timeout_s=5.0)
        except RequestFailed:
            return None

    def watermark(self, origin: str, epoch: str) -> int:
        """Highest seq of `origin` (epoch `epoch`) this node has applied, from /v1/status."""
        return int(self.status()["watermarks"].get(origin, {}).get(epoch, 0))


# -- a whole network -------------------------------------------------------------------------------


@dataclass
class ProcNetwork:
    layout: NetworkLayout
    log_dir: Path
    nodes: dict[str, NodeProc] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        provinces: int = 1,
        cities_per_province: int = 2,
        tune: Mapping[str, Mapping[str, Any]] | None = None,
        database_for: Callable[[str, Level], str | None] | None = None,
    ) -> ProcNetwork:
        """`lsnet network init` on free ports, optional config tuning, `lsnet node init` each.

        The set-up commands run in this process (click's CliRunner on `node.cli.main`); only the
        nodes themselves run as separate processes."""
        count = 1 + provinces * (1 + cities_per_province)
        out = root / "net"
        invoke_ok(
            "network",
            "init",
            "--out",
            str(out),
            "--provinces",
            str(provinces),
            "--cities-per-province",
            str(cities_per_province),
            "--base-port",
            str(free_port_range(count)),
        )
        layout = NetworkLayout.load(out)
        for entry in layout.nodes:
            if tune:
                tune_config(entry.config_path, **tune)
            url = database_for(entry.id, entry.level) if database_for else None
            if url is not None:
                tune_config(entry.config_path, node={"database": url})
            result = invoke_ok("node", "init", "--config", str(entry.config_path))
            assert "database created" in result.output, result.output
        net = cls(layout=layout, log_dir=root / "logs")
        for entry in layout.nodes:
            net.nodes[entry.id] = NodeProc(entry.config_path, net.log_dir)
        return net

    # -- who is who ------------------------------------------------------------------------------
    @property
    def ministry(self) -> NodeProc:
        return self.nodes[self.layout.ministry().id]

    def cities(self) -> list[NodeProc]:
        return [self.nodes[c.id] for c in self.layout.cities()]

    def provinces(self) -> list[NodeProc]:
        return [self.nodes[p.id] for p in self.layout.provinces()]

    def parent_of(self, node_id: str) -> NodeProc:
        parent = self.layout.by_id(node_id).parent_id
        assert parent is not None
        return self.nodes[parent]

    def by_level(self, level: Level) -> list[NodeProc]:
        return [self.nodes[e.id] for e in self.layout.nodes if e.level is level]

    # -- life cycle ------------------------------------------------------------------------------
    def start_all(self) -> None:
        """Spawn every node at once, then wait for each to answer."""
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_ready()

    def terminate_all(self) -> dict[str, int]:
        """SIGTERM every running node, cities first; their exit codes."""
        codes = {}
        for node in reversed(list(self.nodes.values())):
            if node.running:
                codes[node.node_id] = node.terminate()[0]
        return codes

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    # -- convergence -----------------------------------------------------------------------------
    def city_targets(self) -> dict[str, tuple[str, int]]:
        """(epoch, local_last_seq) of every city, read from its /v1/status."""
        out = {}
        for city in self.cities():
            doc = city.status()
            out[city.node_id] = (doc["epoch"], int(doc["local_last_seq"]))
        return out

    def lagging(self, targets: Mapping[str, tuple[str, int]]) -> list[str]:
        """Which (holder, city) pairs have not yet applied the city's changes up to its target
        seq. A holder may be further: end-to-end probes keep taking seqs after the target."""
        behind = []
        for city_id, (epoch, last) in targets.items():
            for holder in (self.parent_of(city_id), self.ministry):
                doc = holder.try_status()
                have = 0 if doc is None else doc["watermarks"].get(city_id, {}).get(epoch, 0)
                if have < last:
                    behind.append(f"{holder.node_id} has {city_id} up to {have}/{last}")
        return behind

    def wait_converged(self, timeout_s: float = 60.0) -> dict[str, tuple[str, int]]:
        """Poll until the province and the ministry hold every city change; the targets."""
        targets = self.city_targets()
        last: list[list[str]] = [[]]

        def done() -> bool:
            last[0] = self.lagging(targets)
            return not last[0]

        poll(done, timeout_s, lambda: f"network did not converge: {last[0]}", interval_s=0.05)
        return targets


def chunked(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
