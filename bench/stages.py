"""Hot-path stages of one hop, in one process, without HTTP: cut + sign at a city, verify at a
province, apply at the province — each timed on its own (and optionally under cProfile).

What it is for: finding where per-record CPU goes (the profiling pass of issue 8) and giving
per-stage µs/record figures that do not depend on two processes sharing the CPU. It uses the
real code (`sync.store.cut_batch_txn`, `sync.verify.verify_batch`, `sync.store.apply_push_txn`)
on real SQLite files (or a PostgreSQL database for the apply stage, `--pg-url`).

What it does not do: no HTTP, no envelopes, no scheduling — `bench/one_hop.py` measures those.

    python -m bench.stages [--records 20000] [--profile cut|verify|apply] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hierarchy_config.loader import load_config
from hierarchy_config.network_init import init_network
from node.app import Node
from node.datagen import generate_records
from node.demo import free_port_range
from node.records import validate_record
from node.validation import RecordValidator, _effective
from security.keys import NodeKey
from security.signing import sign, verify
from sync.store import apply_push_txn, cut_batch_txn, next_transfer_txn
from sync.verify import VerifiedBatch, verify_batch
from sync.wire import PURPOSE_BATCH, PURPOSE_PUSH, Push, Sealed, SignedBatch, sha256

T = TypeVar("T")
INGEST_CHUNK = 2000


@dataclass
class StageResult:
    records: int
    cut_us: float
    verify_us: float
    apply_us: float
    batches: int
    wire_bytes: int = 0
    json_bytes: int = 0
    signature_us: float = 0.0
    apply_wall_us: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "batches": self.batches,
            "cut_sign_us_per_record": round(self.cut_us, 2),
            "verify_us_per_record": round(self.verify_us, 2),
            "apply_us_per_record": round(self.apply_us, 2),
            "apply_wall_us_per_record": round(self.apply_wall_us, 2),
            "hop_cpu_us_per_record": round(self.cut_us + self.verify_us + self.apply_us, 2),
            "wire_bytes_per_record": round(self.wire_bytes / self.records, 1),
            "json_bytes_per_record": round(self.json_bytes / self.records, 1),
            "signature_us_per_record": round(self.signature_us, 3),
        }


def wire_and_json_bytes(
    signed: list[SignedBatch], verified: list[VerifiedBatch], per_push: int, key: NodeKey
) -> tuple[int, int]:
    """Bytes of the sealed pushes that carry these batches, and of the same records as JSON
    (one array of objects: type, owner, key, version, deleted, seq, standards and the fields)."""
    wire = 0
    for i in range(0, len(signed), per_push):
        push = Push("a", "b", 0, b"\0" * 16, tuple(signed[i : i + per_push]))
        env = push.to_bytes()
        wire += len(Sealed(env, sign(key, PURPOSE_PUSH, env)).to_bytes())
    objs = [
        {
            "type": c.record_type,
            "owner": vb.header.origin,
            "key": c.key,
            "version": c.version,
            "deleted": c.deleted,
            "seq": c.seq,
            "standards": c.standards,
            **c.payload,
        }
        for vb in verified
        for c in vb.changes
    ]
    as_json = json.dumps(objs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return wire, len(as_json)


def signature_seconds(signed: list[SignedBatch], per_push: int, key: NodeKey) -> float:
    """CPU time of every signature operation of a hop over these batches: the origin signs each
    header, the sender signs each push envelope, the receiver verifies both, and the body
    digests are checked (SHA-256)."""
    vk = key.verify_key
    t0 = time.process_time()
    for s in signed:
        sig = sign(key, PURPOSE_BATCH, s.header_bytes)
        verify(vk, PURPOSE_BATCH, s.header_bytes, sig)
        sha256(s.body)
    for i in range(0, len(signed), per_push):
        env = Push("a", "b", 0, b"\0" * 16, tuple(signed[i : i + per_push])).to_bytes()
        sig = sign(key, PURPOSE_PUSH, env)
        verify(vk, PURPOSE_PUSH, env, sig)
    return time.process_time() - t0


def _timed(fn: Callable[[], T], profile: bool, top: int = 25) -> tuple[T, float]:
    prof = cProfile.Profile() if profile else None
    t0 = time.process_time()  # CPU, not wall: the machine is shared
    if prof is not None:
        prof.enable()
    out = fn()
    if prof is not None:
        prof.disable()
    dt = time.process_time() - t0
    if prof is not None:
        order = os.environ.get("LSNET_PROFILE_SORT", "cumulative")  # or tottime
        pstats.Stats(prof).sort_stats(order).print_stats(top)
    return out, dt


def release_rules(builtin: bool) -> Callable[[str], RecordValidator] | None:
    """The rules the province re-validates with: by default the default standards release (what
    running nodes of a laid-out network have in force), else the built-in schemas."""
    if builtin:
        return None
    from hierarchy_config.standards.build import default_release

    validator = _effective(default_release(1).to_bytes(), None)
    return lambda origin: validator


async def run_stages(
    n: int,
    root: Path,
    *,
    profile: str = "",
    pg_url: str | None = None,
    seed: int = 1,
    builtin_rules: bool = False,
) -> StageResult:
    layout = init_network(
        root / "net", provinces=1, cities_per_province=1, base_port=free_port_range(3)
    )
    city_entry, prov_entry = layout.cities()[0], layout.provinces()[0]
    city = Node.open(load_config(city_entry.config_path))
    pconf = load_config(prov_entry.config_path)
    if pg_url is not None:
        pconf = pconf.model_copy(
            update={"node": pconf.node.model_copy(update={"database": pg_url})}
        )
    province = Node.open(pconf)
    try:
        await city.init_database()
        await province.init_database()
        recs = [validate_record(o) for o in generate_records(city_entry.id, n, seed=seed)]
        # The cut is timed below as a stage of its own: not at ingest, as a node would.
        city.store.cut = None
        for i in range(0, len(recs), INGEST_CHUNK):
            await city.store.ingest(recs[i : i + INGEST_CHUNK], city.clock.time_ms())
        limits = city.config.limits
        now = city.clock.time_ms()

        def cut_all() -> int:
            made = 0
            while city.db.write_sync(
                cut_batch_txn, city.key, limits.max_batch_changes, limits.max_batch_bytes, now
            ):
                made += 1
            return made

        made, cut_s = _timed(cut_all, profile == "cut")
        pending = city.db.read_sync(next_transfer_txn, made + 1, 1 << 40)
        signed: list[SignedBatch] = [p.signed for p in pending]
        keys = province.config.subtree_keys()
        rules_for = release_rules(builtin_rules) or province.validator_for_origin

        def verify_all() -> list[VerifiedBatch]:
            return [
                verify_batch(
                    s,
                    sender=city_entry.id,
                    receiver=prov_entry.id,
                    keys=keys,
                    route_of=province.config.route_of,
                    limits=province.config.limits,
                    validate_records=province.config.sync.revalidate_records,
                    rules_for=rules_for,
                )
                for s in signed
            ]

        verified, verify_s = _timed(verify_all, profile == "verify")
        per_push = province.config.limits.max_batches_per_transfer

        def apply_all() -> None:
            for i in range(0, len(verified), per_push):
                province.db.write_sync(
                    apply_push_txn, verified[i : i + per_push], now, True, [city_entry.id]
                )

        wall0 = time.perf_counter()
        _, apply_s = _timed(apply_all, profile == "apply")
        apply_wall_s = time.perf_counter() - wall0
        total = sum(len(v.changes) for v in verified)
        if total != n:
            raise RuntimeError(f"verified {total} changes, expected {n}")
        wire, as_json = wire_and_json_bytes(signed, verified, per_push, city.key)
        sig_s = signature_seconds(signed, per_push, city.key)
        return StageResult(
            n,
            cut_s / n * 1e6,
            verify_s / n * 1e6,
            apply_s / n * 1e6,
            made,
            wire,
            as_json,
            sig_s / n * 1e6,
            apply_wall_s / n * 1e6,
        )
    finally:
        await city.stop()
        await province.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--profile", choices=("", "cut", "verify", "apply"), default="")
    ap.add_argument("--pg-url", default=None, help="apply into this PostgreSQL database instead")
    ap.add_argument(
        "--builtin-rules",
        action="store_true",
        help="re-validate with the built-in schemas instead of the default standards release",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lsnet-stages-") as tmp:
        res = asyncio.run(
            run_stages(
                args.records,
                Path(tmp),
                profile=args.profile,
                pg_url=args.pg_url,
                builtin_rules=args.builtin_rules,
            )
        )
    print(json.dumps(res.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
