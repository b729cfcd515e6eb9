"""Statistics use cases of a running node: list indicators, run one locally or federated, and
answer a federated query from the parent.

The indicators (and replication policies, minimum cell sizes) are those of the standards release
in force at this node, or of the shipped default pack while no release has been verified.

* Local run (`federated=False`): every record held here, whoever owns it; at a province or the
  ministry that includes the replicated copies of `replicate` record types (modes 1/2).
* Federated run: each node of the subtree computes its **own** records (`owner` = itself), so
  nothing is counted twice; the answers are combined on the way up (`node.stats.cells`). Nodes
  whose records are `local` blank the cells that disclosure control hides in their own part
  (primary and secondary, `node.stats.disclosure`) before they leave; the final answer is
  protected the same way at the querying node, on the combined cells. Children that do not
  answer in time are listed as missing, with their subtrees, and the answer says it is not
  complete.

Every federated query is audited where it is issued and at every node it reaches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from hierarchy_config.model import ChildConfig
from hierarchy_config.standards.indicators import Indicator
from hierarchy_config.standards.model import Release
from node.stats.cells import Partial, combine, decimal_value
from node.stats.compute import (
    compute_part_txn,
    compute_with_family_txn,
    ratio_cells,
    result_document,
)
from node.stats.disclosure import Protected, protect_in_family, withhold
from node.stats.family import Family, family_of
from node.stats.federated import (
    MAX_ANSWER_BYTES,
    QUERY_PATH,
    Answer,
    NonceCache,
    QueryRejected,
    ReceivedQuery,
    check_answer,
    check_hop,
    make_answer,
    make_hop,
    make_query,
)
from node.stats.metrics import StatsMetrics
from node.stats.regions import rollup_for
from node.stats.replication import policy_release
from node.stats.request import StatsError, StatsRequest
from security.audit import AuditKind
from sync.errors import PeerUnavailable
from sync.wire import Code, packb

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["DEFAULT_TIMEOUT_S", "StatsService"]

log = logging.getLogger("lsnet.stats")
DEFAULT_TIMEOUT_S = 10.0
_MARGIN = 0.8  # a node waits for its children this share of its own remaining time
MAX_WAIT_S = 120.0  # whatever deadline a query names, no node waits longer for a child


class StatsService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.nonces = NonceCache()
        self.metrics = StatsMetrics(node.registry)

    # -- indicators --------------------------------------------------------------------------
    def release(self) -> Release:
        return policy_release(self.node.validator)

    def indicator(self, name: str) -> Indicator:
        found = self.release().indicators.get(name)
        if found is None:
            known = ", ".join(sorted(self.release().indicators)) or "none"
            raise StatsError("not_found", f"no indicator {name!r} in the standards; known: {known}")
        return found

    def components(self, indicator: Indicator) -> list[Indicator]:
        if indicator.kind == "ratio":
            assert indicator.numerator is not None and indicator.denominator is not None
            return [self.indicator(indicator.numerator), self.indicator(indicator.denominator)]
        return [indicator]

    def dimension_names(self, indicator: Indicator) -> tuple[str, ...]:
        parts = [c.dimension_names for c in self.components(indicator)]
        return tuple(n for n in parts[0] if all(n in p for p in parts))

    def min_cell(self, indicator: Indicator) -> int:
        release = self.release()
        return max(release.policy(c.record_type or "").min_cell for c in self.components(indicator))

    def catalogue(self) -> list[dict[str, Any]]:
        """Every indicator with what it can be grouped by (for `stats list` and charts)."""
        release = self.release()
        out = []
        for ind in release.indicators.values():
            comps = self.components(ind)
            types = sorted(
                {c.record_type or "" for c in comps}
                | {d.via for c in comps for d in c.dimensions if d.via}
            )
            out.append(
                {
                    "name": ind.name,
                    "ref": ind.ref,
                    "title": ind.title,
                    "unit": ind.unit,
                    "kind": ind.kind,
                    "measure": ind.measure.kind if ind.measure else "ratio",
                    "record_types": types,
                    "dimensions": list(self.dimension_names(ind)),
                    "replication": {t: release.policy(t).mode for t in types},
                    "min_cell": self.min_cell(ind),
                    "yearly": any(self._yearly(c) for c in comps),
                    "numerator": ind.numerator,
                    "denominator": ind.denominator,
                }
            )
        return out

    # -- runs --------------------------------------------------------------------------------
    async def run(
        self, request: StatsRequest, *, federated: bool = False, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The answer document of `request` (raises StatsError for a bad request)."""
        indicator = self.indicator(request.indicator)
        request.check(indicator, self.dimension_names(indicator))
        comps = self.components(indicator)
        release = self.release()
        for comp in comps:
            self._check_grain(comp, request)
        partials: list[Partial] = []
        protected: list[Protected] = []
        answered: set[str] = set()
        missing: dict[str, str] = {}
        min_cell = self.min_cell(indicator)
        with self.metrics.duration.labels("federated" if federated else "local").time():
            for comp in comps:
                comp_request = dataclasses.replace(request, indicator=comp.name)
                family = self.family(comp, comp_request)
                if federated:
                    timeout = timeout_s or DEFAULT_TIMEOUT_S
                    asks = [self._federated(comp, comp_request, timeout)]
                    if family.request != comp_request:
                        asks.append(self._federated(comp, family.request, timeout))
                    answers = await asyncio.gather(*asks)
                    part, fam = answers[0].partial, answers[-1].partial
                    for answer in answers:
                        answered.update(answer.answered)
                        missing.update((m["node"], m["reason"]) for m in answer.missing)
                else:
                    part, fam = await self.node.db.read(
                        compute_with_family_txn, release, comp, comp_request, family, None, False
                    )
                    answered.add(self.node.config.node_id)
                partials.append(part)
                protected.append(
                    protect_in_family(part.cells, comp_request, family, fam.cells, min_cell)
                )
        cells = [p.cells for p in protected]
        if indicator.kind == "ratio":
            rows = ratio_cells(
                cells[0], cells[1], (partials[0].scale, partials[1].scale), indicator.factor
            )
        else:
            rows = {k: (decimal_value(c.value, partials[0].scale), c) for k, c in cells[0].items()}
        return result_document(
            release,
            indicator,
            request,
            rows,
            node=self.node.config.node_id,
            min_cell=min_cell,
            federated=federated,
            answered=sorted(answered - set(missing)),
            missing=[{"node": n, "reason": r} for n, r in sorted(missing.items())],
            label_indicator=comps[0],
            unresolved=sum(p.lone for p in protected),
            scope="answer" if any(p.scope == "answer" for p in protected) else "family",
        )

    def family(self, comp: Indicator, request: StatsRequest) -> Family:
        """The disclosure-control family of `request` (`node.stats.family.Family`)."""
        return family_of(
            request, comp.dimension_names, comp.kind, self._yearly(comp), rollup_for(self.release())
        )

    def _yearly(self, comp: Indicator) -> bool:
        """Whether `comp` can only be asked per year (its period field holds years only)."""
        schema = self.release().schemas[comp.record_type or ""]
        field = comp.period_field
        return field is not None and schema.by_name[field].type == "period"

    def _check_grain(self, comp: Indicator, request: StatsRequest) -> None:
        if self._yearly(comp) and request.grain != "year":
            raise StatsError("bad_request", f"{comp.name} is reported per year; ask for years")

    async def _own_part(self, comp: Indicator, request: StatsRequest, leaves: bool) -> Partial:
        """This node's own records. If they will leave the node and the type is `local`, the
        cells that disclosure control hides in this node's own part (below the minimum cell size,
        and those that would let one of them be recovered by subtraction from this part's
        margins) are blanked first; the querying node keeps its own cells whole."""
        assert comp.measure is not None
        sketch = comp.measure.kind in ("distinct", "duplicates")
        me = self.node.config.node_id
        release = self.release()
        policy = release.policy(comp.record_type or "")
        if not (leaves and policy.mode == "local"):
            return await self.node.db.read(compute_part_txn, release, comp, request, me, sketch)
        family = self.family(comp, request)
        part, fam = await self.node.db.read(
            compute_with_family_txn, release, comp, request, family, me, sketch
        )
        shown = protect_in_family(part.cells, request, family, fam.cells, policy.min_cell)
        return Partial(part.measure, part.scale, withhold(part.cells, shown))

    async def _federated(self, comp: Indicator, request: StatsRequest, timeout_s: float) -> Answer:
        """Issue a query as its origin: own part plus the children's, combined."""
        node = self.node
        now = node.clock.time_ms()
        comp_request = StatsRequest(
            comp.name, request.by, request.periods, request.region, request.region_level
        )
        deadline = now + int(timeout_s * 1000)
        query_id, query, sig = make_query(
            node.key, node.config.node_id, comp_request, now, deadline
        )
        received = ReceivedQuery(
            query_id, node.config.node_id, comp_request, query, sig, [], deadline
        )
        await self._audit("issued", node.config.node_id, comp_request)
        self.metrics.queries.labels("issued").inc()
        return await self._subtree_answer(comp, received)

    async def _subtree_answer(self, comp: Indicator, rq: ReceivedQuery) -> Answer:
        me = self.node.config.node_id
        own = await self._own_part(comp, rq.request, leaves=bool(rq.path))
        asks = [self._ask(child, rq) for child in self.node.config.children]
        results = await asyncio.gather(*asks)
        parts = [own]
        answered = [me]
        missing: list[dict[str, str]] = []
        for result in results:
            if isinstance(result, Answer):
                parts.append(result.partial)
                answered += result.answered
                missing += result.missing
            else:
                missing += result
        return Answer(combine(parts), answered, missing)

    async def _ask(self, child: ChildConfig, rq: ReceivedQuery) -> Answer | list[dict[str, str]]:
        node = self.node
        me = node.config.node_id

        def lost(reason: str) -> list[dict[str, str]]:
            self.metrics.children_missing.labels(child.id).inc()
            below = [
                {"node": c.id, "reason": f"below {child.id}, which did not answer"}
                for c in child.walk()[1:]
            ]
            return [{"node": child.id, "reason": reason}, *below]

        if child.url is None:
            return lost("no URL configured for this child")
        remaining_s = min(MAX_WAIT_S, (rq.deadline_ms - node.clock.time_ms()) / 1000 * _MARGIN)
        if remaining_s <= 0:
            return lost("timeout: no time left before the query's deadline")
        body = make_hop(
            node.key, me, child.id, rq.query, rq.origin_sig, [*rq.path, me], node.clock.time_ms()
        )
        try:
            data = await asyncio.wait_for(
                node.transport.post(child.id, child.url + QUERY_PATH, body), remaining_s
            )
        except TimeoutError:
            return lost(f"timeout: no answer within {remaining_s:.1f}s")
        except PeerUnavailable as exc:
            return lost(f"unavailable: {exc}")
        if len(data) > MAX_ANSWER_BYTES:
            return lost("answer too large")
        try:
            subtree = {c.id for c in child.walk()}
            return check_answer(
                child.id, child.verify_key, me, rq.id, len(rq.request.by), subtree, data
            )
        except QueryRejected as exc:
            return lost(f"bad answer: {exc.message}")

    # -- receiving ---------------------------------------------------------------------------
    async def answer_query(self, body: bytes, peer: str) -> tuple[int, bytes]:
        """Handle POST /v1/stats/query from the parent: (HTTP status, msgpack body)."""
        node = self.node
        config = node.config
        try:
            rq = check_hop(
                config,
                body,
                node.clock.time_ms(),
                int(config.sync.max_clock_skew_s * 1000),
                self.nonces,
            )
        except QueryRejected as exc:
            self.metrics.queries.labels("rejected").inc()
            if node.security is not None:
                await node.security.emit(
                    AuditKind.REQUEST_REJECTED,
                    peer=peer,
                    code=exc.code.value,
                    detail={"path": QUERY_PATH},
                )
            return exc.status, _error(exc.code.value, exc.message)
        await self._audit("received", rq.path[-1], rq.request, origin=rq.origin, query_id=rq.id)
        self.metrics.queries.labels("answered").inc()
        try:
            comp = self.indicator(rq.request.indicator)
            if comp.kind == "ratio":
                raise StatsError("bad_request", "ratios are asked as numerator and denominator")
            rq.request.check(comp, comp.dimension_names)
            self._check_grain(comp, rq.request)
        except StatsError as exc:
            return 400, _error(Code.MALFORMED.value, exc.message)
        answer = await self._subtree_answer(comp, rq)
        assert config.parent is not None
        reply = make_answer(
            node.key, config.node_id, config.parent.id, rq.id, len(rq.request.by), answer
        )
        return 200, reply

    async def _audit(self, code: str, peer: str, request: StatsRequest, **extra: str) -> None:
        if self.node.security is None:
            return
        await self.node.security.emit(
            AuditKind.STATS_QUERY,
            peer=peer,
            code=code,
            detail={
                "indicator": request.indicator,
                "by": ",".join(request.by),
                "period": request.period_text,
                "region": request.region or "",
                **extra,
            },
        )


def _error(code: str, message: str) -> bytes:
    return packb({"error": {"code": code, "message": message}})
