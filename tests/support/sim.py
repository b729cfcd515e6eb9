"""Deterministic in-process simulation of a network (reliability.md C5 L0, FoundationDB style).

All nodes live in one event loop with one `FakeClock` and talk through `SimTransport`, an
in-memory transport that hands each request straight to the target node's handler — no sockets.
Nothing runs in the background: the schedule drives every step itself (a city writes, a node
makes one transfer to its parent, one anti-entropy comparison, time advances, a delayed request
arrives, a link is cut or healed, a node crashes and restarts), each chosen by one seeded
`random.Random`. The faults of the transport come from the same generator: drop the request,
drop the answer after the parent committed, duplicate the request, delay it (it arrives later,
after newer ones: reordering), and partitions. So a seed fixes the whole run; a failing seed is
replayed by running it again (LSNET_SIM_SEED).

Nodes keep their data in SQLite files, copied per run from a template initialised once
(`SimTemplate`: configs, keys, migrated databases); their transactions run on the loop's thread
with a shared statement cache and no fsync (`tests.support.simdb`), so a schedule costs a
fraction of a second and the default run affords hundreds of them.
This module does not check anything; `tests.support.checkers` judges the end state.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import random
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from hierarchy_config.model import NodeConfig
from node.app import Node
from node.clock import FakeClock
from node.datagen import generate_records, generate_updates
from node.records import validate_record
from security.keys import NodeKey, load_signing_key
from sync.ae_wire import REPAIR_PATH, SUMMARY_PATH
from sync.errors import PeerRejected, PeerUnavailable
from sync.sender import PUSH_PATH
from sync.transport import _error_fields
from tests.support.history import History
from tests.support.simdb import FastSQL

Handler = Callable[[Any], Awaitable[web.StreamResponse]]


class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_chunked(self, n: int) -> Any:
        for i in range(0, len(self._body), n):
            yield self._body[i : i + n]


class SimRequest:
    """What the sync handlers read from a request: the body, its length, the caller's address."""

    def __init__(self, body: bytes, remote: str) -> None:
        self.content = _Content(body)
        self.content_length = len(body)
        self.remote = remote


@dataclass
class Faults:
    drop_request: float = 0.10
    drop_answer: float = 0.12
    duplicate: float = 0.08
    delay: float = 0.08


@dataclass
class Delayed:
    sender: str
    target: str
    path: str
    body: bytes


@dataclass
class SimTemplate:
    """What every schedule starts from and nothing changes: the configs of an initialised
    network (databases migrated once), the nodes' keys, the shared SQL machinery."""

    configs: dict[str, NodeConfig]
    keys: dict[str, NodeKey]
    sql: FastSQL

    @classmethod
    def of(cls, configs: dict[str, NodeConfig]) -> SimTemplate:
        keys = {n: load_signing_key(c.node.key_file) for n, c in configs.items()}
        return cls(configs, keys, FastSQL())


@dataclass
class SimNet:
    configs: dict[str, NodeConfig]
    rng: random.Random
    clock: FakeClock
    template: SimTemplate
    faults: Faults = field(default_factory=Faults)
    nodes: dict[str, Node] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # child ids whose uplink is cut
    delayed: list[Delayed] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.injected[what] = self.injected.get(what, 0) + 1

    # -- transport -------------------------------------------------------------------------------
    def _handler(self, target: str, path: str) -> Handler | None:
        node = self.nodes.get(target)
        if node is None:
            return None
        if path == PUSH_PATH:
            return node.receiver.handle
        if node.ae_server is not None and path == SUMMARY_PATH:
            return node.ae_server.handle_summary
        if node.ae_server is not None and path == REPAIR_PATH:
            return node.ae_server.handle_repair
        return None

    async def deliver(self, sender: str, target: str, path: str, body: bytes) -> bytes:
        handler = self._handler(target, path)
        if handler is None:
            raise PeerUnavailable(target, "node is down")
        resp = await handler(SimRequest(body, f"sim:{sender}"))
        assert isinstance(resp, web.Response)
        data = resp.body if isinstance(resp.body, bytes) else b""
        if resp.status >= 400:
            code, message, index = _error_fields(data)
            raise PeerRejected(target, resp.status, code, message, index)
        return data

    async def post(self, sender: str, peer: str, url: str, body: bytes) -> bytes:
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else url
        if sender in self.blocked:
            self.note("partitioned")
            raise PeerUnavailable(peer, "partitioned")
        roll = self.rng.random()
        f = self.faults
        if roll < f.drop_request:
            self.note("drop_request")
            raise PeerUnavailable(peer, "request lost")
        roll -= f.drop_request
        if roll < f.delay:
            self.note("delay")
            self.delayed.append(Delayed(sender, peer, path, body))
            raise PeerUnavailable(peer, "timed out (the request is still on its way)")
        roll -= f.delay
        answer = await self.deliver(sender, peer, path, body)
        if roll < f.duplicate:
            self.note("duplicate")
            with contextlib.suppress(PeerUnavailable):
                await self.deliver(sender, peer, path, body)
        elif roll < f.duplicate + f.drop_answer:
            self.note("drop_answer")
            raise PeerUnavailable(peer, "answer lost after the parent committed")
        return answer

    async def deliver_one_delayed(self) -> None:
        if not self.delayed:
            return
        d = self.delayed.pop(self.rng.randrange(len(self.delayed)))
        # Refused (replayed, stale) or the node is down: nobody waits for its answer anyway.
        with contextlib.suppress(PeerUnavailable):
            await self.deliver(d.sender, d.target, d.path, d.body)

    # -- nodes -----------------------------------------------------------------------------------
    def open(self, node_id: str) -> Node:
        node = Node.open(
            self.configs[node_id],
            clock=self.clock,
            transport=SimTransport(self, node_id),
            key=self.template.keys[node_id],
        )
        return self.template.sql.adopt(node)

    async def start_all(self) -> None:
        for node_id in self.configs:
            self.nodes[node_id] = self.open(node_id)

    async def crash_restart(self, node_id: str) -> None:
        """Lose everything in memory (queue state, nonce cache) and come back from the database."""
        node = self.nodes.pop(node_id)
        await node.stop()
        self.nodes[node_id] = self.open(node_id)

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.nodes.pop(node_id).stop()

    def cities(self) -> list[str]:
        return [n for n, c in self.configs.items() if not c.children]

    def children_first(self) -> list[str]:
        return sorted(self.configs, key=lambda n: -len(_ancestors(self.configs, n)))

    async def transfer(self, node_id: str) -> None:
        queue = self.nodes[node_id].upstream
        if queue is None:
            return
        with contextlib.suppress(PeerUnavailable):
            await queue.transfer_once()

    async def anti_entropy(self, node_id: str) -> None:
        ae = self.nodes[node_id].anti_entropy
        if ae is not None:
            await ae.run_once()

    async def converged(self) -> bool:
        for city in self.cities():
            meta = await self.nodes[city].store.meta()
            for holder in _ancestors(self.configs, city):
                marks = await self.nodes[holder].sync_store.watermarks_for([city])
                if {w.epoch: w.seq for w in marks}.get(meta.epoch, 0) < meta.last_seq:
                    return False
        return True


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Leave the objects that exist now (the test session, the template, caches) out of the
    cycle collector's passes and run them less often while schedules play: the collector took
    about 8% of a schedule's time. Garbage is still collected; settings are restored after."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _ancestors(configs: dict[str, NodeConfig], node_id: str) -> list[str]:
    out = []
    parent = configs[node_id].parent
    while parent is not None:
        out.append(parent.id)
        parent = configs[parent.id].parent
    return out


class SimTransport:
    def __init__(self, net: SimNet, sender: str) -> None:
        self.net = net
        self.sender = sender

    async def post(self, peer: str, url: str, body: bytes) -> bytes:
        return await self.net.post(self.sender, peer, url, body)

    async def close(self) -> None:
        return None


def copy_databases(template: SimTemplate, into: Path) -> dict[str, NodeConfig]:
    """Fresh copies of the template's initialised SQLite databases; configs pointing at them."""
    into.mkdir(parents=True, exist_ok=True)
    out = {}
    for node_id, cfg in template.configs.items():
        src = Path(cfg.node.database.removeprefix("sqlite:///"))
        dst = into / f"{node_id}.db"
        shutil.copy2(src, dst)
        node = cfg.node.model_copy(update={"database": f"sqlite:///{dst}"})
        out[node_id] = cfg.model_copy(update={"node": node})
    return out


# Fresh records per city and schedule: one of VARIANTS generated sets of POOL records, each made
# once per process (generating them took about 5% of a schedule's time). A city writes about 20
# fresh records in 60 steps; a set of 60 is 1 employer, 6 persons, 14 enrollments, then
# contributions, so a busy city writes every record type (in the set of 400 used before,
# contributions began at the 141st record, which a city practically never reached). A city that
# uses up its set only updates from then on.
POOL = 60
VARIANTS = 16


@functools.cache
def fresh_records(city: str, variant: int) -> tuple[dict[str, Any], ...]:
    """A generated set of records of `city`; callers copy the tuple and never change the dicts."""
    return tuple(generate_records(city, POOL, seed=variant))


@dataclass
class Workload:
    """What each city writes: new records, sometimes updates of ones written before."""

    rng: random.Random
    history: History
    written: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pool: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def write(self, net: SimNet, city: str) -> None:
        if city not in self.pool:
            self.pool[city] = list(fresh_records(city, self.rng.randrange(VARIANTS)))
            self.written[city] = []
        fresh = self.pool[city]
        if self.written[city] and self.rng.random() < 0.3:
            objs = generate_updates(
                self.written[city],
                min(3, len(self.written[city])),
                seed=self.rng.randrange(1 << 30),
            )
        else:
            n = self.rng.randint(1, 12)
            objs, self.pool[city] = fresh[:n], fresh[n:]
            self.written[city].extend(objs)
        if not objs:
            return
        recs = [validate_record(o) for o in objs]
        op = self.history.invoke_valid("sim", city, recs)
        result = await net.nodes[city].ingest(recs)
        self.history.ok(op, result.seqs)
