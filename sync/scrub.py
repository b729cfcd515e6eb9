"""Signature scrub: re-verify every stored batch against its origin's key and hash chain.

Used by `lsnet demo` and `lsnet verify` at the ministry (and any node) to prove that every batch
it holds was made by the node it names and that each origin's batches chain without a break.
Reads only; repairs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nacl.signing import VerifyKey

from security.keyring import KeyRefused, KeyRing
from security.signing import SignatureInvalid, verify
from sync.store import SyncStore
from sync.wire import PURPOSE_BATCH, ZERO_HASH, BatchHeader, Code, WireError, header_hash, sha256


@dataclass
class ScrubReport:
    batches: int = 0
    changes: int = 0
    by_origin: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def scrub(
    store: SyncStore, keys: Mapping[str, VerifyKey] | KeyRing, *, page: int = 500
) -> ScrubReport:
    """Re-verify every stored batch with the key it names (a rotated key for what it signed
    before the rotation; a revoked key is reported)."""
    ring = keys if isinstance(keys, KeyRing) else KeyRing.from_keys(keys)
    report = ScrubReport()
    chain: dict[tuple[str, str], tuple[int, bytes]] = {}
    after = 0
    while True:
        rows = await store.stored_batches(after, page)
        if not rows:
            break
        for batch_id, origin, signed in rows:
            after = batch_id
            report.batches += 1
            where = f"batch #{batch_id} of {origin}"
            if not ring.knows(origin):
                report.problems.append(f"{where}: no enrolled key for origin {origin}")
                continue
            try:
                header = BatchHeader.from_bytes(signed.header_bytes)
                if header.origin != origin:
                    raise WireError(Code.MALFORMED, "header names another origin")
                try:
                    key = ring.check_at(origin, header.kid, header.created_ms)
                except KeyRefused as exc:
                    raise SignatureInvalid(exc.message) from None
                verify(key, PURPOSE_BATCH, signed.header_bytes, signed.signature)
                if sha256(signed.body) != header.digest:
                    raise SignatureInvalid("body does not match the signed digest")
            except (WireError, SignatureInvalid) as exc:
                report.problems.append(f"{where}: {exc}")
                continue
            prev_seq, prev_hash = chain.get((origin, header.epoch), (0, ZERO_HASH))
            if header.first_seq != prev_seq + 1 or header.prev != prev_hash:
                report.problems.append(
                    f"{where}: chain broken at seq {header.first_seq} "
                    f"(previous ended at {prev_seq})"
                )
            chain[(origin, header.epoch)] = (header.last_seq, header_hash(signed.header_bytes))
            report.changes += header.count
            report.by_origin[origin] = report.by_origin.get(origin, 0) + header.count
    return report
