"""What an operator (or a new standards release) does with poison records held aside here.

`replay` re-validates one held record with the rules in force now for its origin and applies it
(version-guarded, `sync.held.release_txn`); `recheck` does that for every held record, as the node
does by itself when a new standards release comes into force — the usual cure for a record held
because this node did not know a code yet. A record that still fails stays held, unchanged.

What this does not do: authenticate or audit the operator (`network_mgmt.admin_api` does), decide
the hold policy (`[sync] on_invalid_record`), or touch the upward link: the signed batches that
carried these records were stored and relayed unchanged when they arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from network_mgmt.link_admin import LinkAdmin
from node.validation import RecordValidator
from sync.held import HeldError

log = logging.getLogger("lsnet.sync")

SYSTEM_OPERATOR = "lsnet (standards release)"


@dataclass(frozen=True)
class RecheckResult:
    released: int
    still_held: int


async def replay(
    admin: LinkAdmin,
    rules_for: Callable[[str], RecordValidator],
    held_id: int,
    operator: str,
    reason: str,
    now_ms: int,
) -> dict[str, Any]:
    """Re-validate and apply one held record; HeldError `still_invalid` if it fails again."""
    doc = await admin.held_record(held_id)
    return await admin.release_held(held_id, rules_for(doc["origin"]), operator, reason, now_ms)


async def recheck(
    admin: LinkAdmin,
    rules_for: Callable[[str], RecordValidator],
    reason: str,
    now_ms: Callable[[], int],
    operator: str = SYSTEM_OPERATOR,
    limit: int = 10_000,
) -> RecheckResult:
    """Replay every held record that passes the rules in force now (bounded by `limit`)."""
    released = still = 0
    for held_id in await admin.waiting_held_ids(limit):
        try:
            await replay(admin, rules_for, held_id, operator, reason, now_ms())
            released += 1
        except HeldError as exc:
            if exc.code != "still_invalid":
                continue  # decided meanwhile by an operator
            still += 1
    if released:
        log.warning("HELD %d held records pass now and were applied (%s)", released, reason)
    return RecheckResult(released, still)
