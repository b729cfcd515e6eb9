"""Checkers of the replication promise (reliability.md C4, properties P1–P5), judged on a history
of write attempts (`tests.support.history`) and the final read of every node
(`tests.support.snapshot`) after healing and quiescence.

- `check_sets`: per level (origin, every ancestor): lost = accepted − held, unexpected = held −
  attempted, digest mismatch = an (origin, epoch, seq) whose content differs from the origin's.
- `check_exactly_once`: the apply log counts 'push' applies per (origin, epoch, seq) — more than
  one is a double apply; a stored batch never applied is reported; record versions equal the
  change log replayed once (a double-applied delta shows as a version too high).
- `check_contiguity`: per holder and (origin, epoch): stored batches cover 1..N without gap or
  overlap, the watermark is N, N is the origin's last seq, applies never go backwards.
- `check_convergence`: per-origin content digests equal at the origin and every ancestor; no
  holder holds an origin outside its subtree.
- `check_scrub`: every stored batch re-verifies against its origin's key and chain.

End-to-end probes (`network_mgmt.probe`) are change-log entries, never records: the set and
exactly-once checkers leave them out (they are no write attempt of the history), while
contiguity and content-per-seq include them (they take seqs and travel in signed batches). A
holder may lag its origin by trailing probes only: probes keep coming after quiescence.

The checkers only read; they repair nothing and never talk to nodes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from network_mgmt.probe import is_probe
from sync.scrub import ScrubReport
from tests.support.history import History, Written
from tests.support.snapshot import NodeSnapshot

SAMPLE = 5


@dataclass
class Verdict:
    name: str
    problems: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str) -> None:
        self.problems.append(message)


@dataclass
class CheckReport:
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def by_name(self, name: str) -> Verdict:
        return next(v for v in self.verdicts if v.name == name)

    def summary(self) -> str:
        lines = []
        for v in self.verdicts:
            state = "ok" if v.ok else f"{len(v.problems)} PROBLEMS"
            stats = " ".join(f"{k}={n}" for k, n in sorted(v.stats.items()))
            lines.append(f"{v.name:16} {state:12} {stats}")
            lines.extend(f"    {p}" for p in v.problems[:10])
        return "\n".join(lines)

    def assert_green(self) -> None:
        assert self.ok, "checkers failed:\n" + self.summary()


def ancestors(node: str, parents: Mapping[str, str | None]) -> list[str]:
    out = []
    current = parents.get(node)
    while current is not None:
        out.append(current)
        current = parents.get(current)
    return out


def _sample(items: set[Written] | set[str]) -> str:
    shown = sorted(str(i) for i in items)[:SAMPLE]
    return ", ".join(shown) + (" ..." if len(items) > SAMPLE else "")


def check_sets(
    history: History, snaps: Mapping[str, NodeSnapshot], parents: Mapping[str, str | None]
) -> Verdict:
    v = Verdict("set")
    accepted, attempted = history.accepted(), history.attempted()
    info_only = {
        w for op in history.ops if op.status in ("info", "invoke") for w in op.records
    } - accepted
    held_by: dict[str, set[Written]] = {}
    for node_id, snap in snaps.items():
        held = {
            Written(c.origin, c.record_type, c.key, c.digest)
            for c in snap.held
            if not is_probe(c.record_type)
        }
        held |= {
            Written(node_id, c.record_type, c.key, c.digest)
            for c in snap.own_changes.values()
            if not is_probe(c.record_type)
        }
        held_by[node_id] = held
        for problem in snap.undecodable:
            v.add(f"{node_id}: {problem}")
        unexpected = held - attempted
        if unexpected:
            v.add(f"{node_id}: {len(unexpected)} unexpected records: {_sample(unexpected)}")
    recovered: set[Written] = set()
    for origin in sorted(history.origins()):
        want = {w for w in accepted if w.origin == origin}
        for holder in [origin, *ancestors(origin, parents)]:
            if holder not in snaps:
                continue
            lost = want - held_by[holder]
            if lost:
                v.add(f"{holder}: lost {len(lost)} accepted records of {origin}: {_sample(lost)}")
            recovered |= {w for w in info_only if w.origin == origin} & held_by[holder]
    # Content per (origin, epoch, seq) must be what the origin made.
    for node_id, snap in snaps.items():
        for c in snap.held:
            src = snaps.get(c.origin)
            if src is None or src.epoch != c.epoch:
                continue
            own = src.own_changes.get(c.seq)
            if own is None or own.digest != c.digest or own.key != c.key:
                v.add(f"{node_id}: {c.origin} seq {c.seq} differs from what {c.origin} made")
    v.stats = {"accepted": len(accepted), "attempted": len(attempted), "recovered": len(recovered)}
    return v


def check_exactly_once(
    history: History, snaps: Mapping[str, NodeSnapshot], parents: Mapping[str, str | None]
) -> Verdict:
    v = Verdict("exactly-once")
    applies = 0
    for node_id, snap in snaps.items():
        pushes: Counter[tuple[str, str, int]] = Counter()
        any_apply: set[tuple[str, str, int]] = set()
        for row in snap.applied:
            for seq in range(row.first_seq, row.last_seq + 1):
                any_apply.add((row.origin, row.epoch, seq))
                if row.kind == "push":
                    pushes[(row.origin, row.epoch, seq)] += 1
                    applies += 1
        doubles = sorted(k for k, n in pushes.items() if n > 1)
        if doubles:
            o, e, s = doubles[0]
            v.add(
                f"{node_id}: {len(doubles)} changes applied more than once "
                f"(first: {o} epoch {e[:8]} seq {s}, {pushes[doubles[0]]} times)"
            )
        for b in snap.batches:
            if b.source != "relay":
                continue
            missing = [
                s
                for s in range(b.first_seq, b.last_seq + 1)
                if (b.origin, b.epoch, s) not in any_apply
            ]
            if missing:
                v.add(f"{node_id}: batch of {b.origin} [{b.first_seq}, {b.last_seq}] never applied")
    # Model: each origin's change log replayed once gives every record's version; every holder's
    # record must carry that version and the origin's content hash.
    for origin, src in snaps.items():
        if not src.own_changes:
            continue
        model: dict[tuple[str, str], int] = {}
        for seq in sorted(src.own_changes):
            c = src.own_changes[seq]
            if is_probe(c.record_type):
                continue  # a probe is no record: its version is its seq
            ident = (c.record_type, c.key)
            model[ident] = model.get(ident, 0) + 1
            if c.version != model[ident]:
                v.add(
                    f"{origin}: seq {seq} has version {c.version}, replay once gives {model[ident]}"
                )
        for holder in [origin, *ancestors(origin, parents)]:
            held = snaps.get(holder)
            if held is None:
                continue
            for (rtype, key), version in model.items():
                rec = held.records.get((origin, rtype, key))
                own = src.records.get((origin, rtype, key))
                if rec is None:
                    continue  # a missing record is the set checker's finding
                if rec.version != version or (own is not None and rec.hash != own.hash):
                    v.add(
                        f"{holder}: {origin} {rtype} {key} is version {rec.version}, "
                        f"replaying {origin}'s change log once gives {version}"
                    )
    v.stats = {"push_applies": applies}
    return v


def data_top(snap: NodeSnapshot) -> int:
    """The origin's last seq, not counting trailing end-to-end probes (they need not have
    arrived yet); the whole last seq when the change log is not at hand."""
    seq = snap.last_seq
    while seq > 0 and seq in snap.own_changes and is_probe(snap.own_changes[seq].record_type):
        seq -= 1
    return seq


def check_contiguity(
    snaps: Mapping[str, NodeSnapshot], parents: Mapping[str, str | None]
) -> Verdict:
    v = Verdict("contiguity")
    for node_id, snap in snaps.items():
        ranges: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for b in snap.batches:
            if b.origin != node_id:
                ranges[(b.origin, b.epoch)].append((b.first_seq, b.last_seq))
        for origin, epoch in snap.watermarks:
            ranges.setdefault((origin, epoch), [])
        for (origin, epoch), spans in sorted(ranges.items()):
            spans.sort()
            expect = 1
            for first, last in spans:
                if first > expect:
                    v.add(f"{node_id}: {origin} gap: seqs {expect}..{first - 1} missing")
                elif first < expect:
                    v.add(f"{node_id}: {origin} overlap at seq {first}")
                expect = last + 1
            top = expect - 1
            src = snaps.get(origin)
            want = 0 if src is None else data_top(src)
            if src is not None and src.epoch == epoch and top < want:
                v.add(f"{node_id}: {origin} gap: seqs {top + 1}..{want} missing")
            mark = snap.watermarks.get((origin, epoch), 0)
            if mark != top:
                v.add(f"{node_id}: watermark of {origin} is {mark}, stored batches end at {top}")
            if src is not None and src.epoch == epoch and top > src.last_seq:
                v.add(f"{node_id}: holds {origin} up to seq {top}, {origin} is at {src.last_seq}")
        last_first: dict[tuple[str, str], int] = {}
        for row in snap.applied:
            if row.kind != "push":
                continue
            k = (row.origin, row.epoch)
            if row.first_seq <= last_first.get(k, 0):
                v.add(f"{node_id}: applies of {row.origin} went back to seq {row.first_seq}")
            last_first[k] = row.first_seq
    for origin, src in snaps.items():
        for holder in ancestors(origin, parents):
            if (
                holder in snaps
                and src.last_seq
                and (origin, src.epoch) not in snaps[holder].watermarks
            ):
                v.add(f"{holder}: holds nothing of {origin}'s epoch {src.epoch[:8]}")
    return v


def check_convergence(
    snaps: Mapping[str, NodeSnapshot], parents: Mapping[str, str | None]
) -> Verdict:
    v = Verdict("convergence")
    compared = 0
    for origin, src in snaps.items():
        own = src.digests.get(origin)
        if own is None:
            continue
        for holder in ancestors(origin, parents):
            if holder not in snaps:
                continue
            compared += 1
            got = snaps[holder].digests.get(origin)
            if got != own:
                v.add(f"{holder}: copy of {origin} differs ({got} vs {own})")
    for holder, snap in snaps.items():
        for origin in snap.digests:
            if origin != holder and holder not in ancestors(origin, parents):
                v.add(f"{holder}: holds records of {origin}, which is not in its subtree")
    v.stats = {"compared": compared}
    return v


def check_scrub(reports: Mapping[str, ScrubReport]) -> Verdict:
    v = Verdict("scrub")
    total = 0
    for node_id, report in sorted(reports.items()):
        total += report.batches
        for p in report.problems[:SAMPLE]:
            v.add(f"{node_id}: {p}")
    v.stats = {"batches": total}
    return v


def check_all(
    history: History,
    snaps: Mapping[str, NodeSnapshot],
    parents: Mapping[str, str | None],
    scrubs: Mapping[str, ScrubReport],
) -> CheckReport:
    return CheckReport(
        [
            check_sets(history, snaps, parents),
            check_exactly_once(history, snaps, parents),
            check_contiguity(snaps, parents),
            check_convergence(snaps, parents),
            check_scrub(scrubs),
        ]
    )
