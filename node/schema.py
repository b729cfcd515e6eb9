"""Tables of the resource database (SQLAlchemy Core), as created by the Alembic migrations.

The migrations in `node/migrations/versions` are the source of truth for the database; these
`Table` objects mirror them for queries. A test checks that both agree. This module runs no SQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row: who this database belongs to, its epoch and the change-log counters.
node_meta = Table(
    "node_meta",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", String(64), nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("batched_seq", BigInteger, nullable=False),
    Column("chain_head", LargeBinary(32), nullable=False),
)


def _identifier(length: int) -> String:
    """Codes, node ids and keys: compared bytewise ("C" collation) on PostgreSQL, as SQLite does
    (migration 0013), whatever the database's locale."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


records = Table(
    "records",
    metadata,
    Column("record_type", _identifier(64), primary_key=True),
    Column("owner", _identifier(64), primary_key=True),
    Column("key", _identifier(512), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("standards", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("epoch", _identifier(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
# By owner: ix_records_origin_seq (owner first); by type and owner: the primary key (0013).
# Records kept `local` (seq 0): found quickly when a release makes their type replicate (0009).
Index(
    "ix_records_kept",
    records.c.owner,
    sqlite_where=records.c.seq == 0,
    postgresql_where=records.c.seq == 0,
)

# This node's own changes, densely numbered.
changelog = Table(
    "changelog",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("record_type", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("standards", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Every signed batch this node holds: its own (source 'local') and those received from children
# (source 'relay', forwarded upward unchanged). `acked` = the parent's watermark covers it.
batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(64), nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("header", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("header_hash", LargeBinary(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("stored_ms", BigInteger, nullable=False),
    Column("source", String(8), nullable=False),
    Column("acked", Boolean, nullable=False),
    Column("quarantined", Boolean, nullable=False),
    Column("quarantine_code", String(64), nullable=False),
    Column("quarantine_reason", Text, nullable=False),
)
Index(
    "ux_batches_origin_range", batches.c.origin, batches.c.epoch, batches.c.first_seq, unique=True
)
Index("ix_batches_pending", batches.c.acked, batches.c.id)
Index(  # migration 0010: the rare quarantined batches, for status and next_transfer_txn
    "ix_batches_quarantined",
    batches.c.origin,
    batches.c.epoch,
    batches.c.first_seq,
    postgresql_where=batches.c.quarantined,
    sqlite_where=batches.c.quarantined,
)

# What this node has applied from each origin: highest contiguous seq and the chain head there.
watermarks = Table(
    "watermarks",
    metadata,
    Column("origin", String(64), primary_key=True),
    Column("epoch", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("last_hash", LargeBinary(32), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Warnings (not errors) found when local records were validated against the standards release.
record_warnings = Table(
    "record_warnings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_type", String(64), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("field", String(128), nullable=False),
    Column("rule_id", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("standards", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)
Index(
    "ix_record_warnings_record",
    record_warnings.c.owner,
    record_warnings.c.record_type,
    record_warnings.c.key,
)

# Persisted state of the queue towards each upstream peer.
links = Table(
    "links",
    metadata,
    Column("peer", String(64), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("backoff_until_ms", BigInteger, nullable=False),
    Column("last_success_ms", BigInteger, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("last_error_ms", BigInteger, nullable=False),
)

# Tamper-evident audit log of security events (security.audit): a hash chain, dense seq from 1,
# every entry signed by the node key (`kid` names it). Append-only: triggers refuse UPDATE/DELETE.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("node", String(64), nullable=False),
    Column("kid", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("code", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)
Index("ix_audit_log_time", audit_log.c.time_ms)
Index("ix_audit_log_kind", audit_log.c.kind, audit_log.c.time_ms)
Index("ix_audit_log_peer", audit_log.c.peer, audit_log.c.time_ms)

# Scoped, revocable API tokens of local business systems (security.tokens): only the SHA-256 of
# each token is stored. revoked_ms 0 = active; at most one active token per name.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_used_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
)
Index("ux_api_tokens_hash", api_tokens.c.token_hash, unique=True)
Index(
    "ux_api_tokens_active_name",
    api_tokens.c.name,
    unique=True,
    sqlite_where=api_tokens.c.revoked_ms == 0,
    postgresql_where=api_tokens.c.revoked_ms == 0,
)

# Security feed (network_mgmt.security_feed): audit entries of this node's subtree, received from
# children and copied from the own log, each with its origin's chain fields and signature so any
# ancestor can re-verify it. `verified` = the origin's known key signed it here; `forwarded_ms` 0 =
# not yet acknowledged by the parent (the forwarding position, persisted per row).
security_feed = Table(
    "security_feed",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("code", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("kid", String(16), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("forwarded_ms", BigInteger, nullable=False),
)
Index("ux_security_feed_origin_seq", security_feed.c.origin, security_feed.c.seq, unique=True)
Index("ix_security_feed_pending", security_feed.c.forwarded_ms, security_feed.c.id)
Index("ix_security_feed_time", security_feed.c.time_ms)

# Key lifecycle (security.key_store): rotation announcements and revocations known here.
key_events = Table(
    "key_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("kid", String(16), nullable=False),
    Column("doc", LargeBinary, nullable=False),
    Column("received_from", String(64), nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("forwarded_ms", BigInteger, nullable=False),
)
Index(
    "ux_key_events_kind_node_kid",
    key_events.c.kind,
    key_events.c.node_id,
    key_events.c.kid,
    unique=True,
)

# Changes of record types kept `local` (not replicated upward; resource-library mode 3): they
# never take a `changelog` seq, so upward batches and watermarks stay contiguous (migration 0009).
local_changes = Table(
    "local_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_type", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("standards", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Append-only: one row per apply of a received batch ('push', 'repair' by anti-entropy, 'restore'
# when a node rebuilds from its parent), so a double apply is observable (issue 6).
apply_log = Table(
    "apply_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(64), nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("header_hash", LargeBinary(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("applied_ms", BigInteger, nullable=False),
)
Index("ix_apply_log_origin", apply_log.c.origin, apply_log.c.epoch, apply_log.c.first_seq)
Index("ix_records_origin_seq", records.c.owner, records.c.epoch, records.c.seq)

# Network management (network_mgmt.heartbeat): the latest status of each node of the subtree as
# its carrier (a direct child, `via`) reported it, JSON; `received_ms` on this node's clock.
node_status = Table(
    "node_status",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("via", String(64), nullable=False),
    Column("status", Text, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
)

# Operator controls of the link to a peer (network_mgmt.link_admin): paused survives restarts.
link_controls = Table(
    "link_controls",
    metadata,
    Column("peer", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("changed_ms", BigInteger, nullable=False),
)

# Every operator decision on a quarantined batch (replay or skip), with reason and operator.
quarantine_actions = Table(
    "quarantine_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
)
Index("ix_quarantine_actions_batch", quarantine_actions.c.batch_id)

# End-to-end probes (network_mgmt.probe): per origin, the newest probe record applied here.
e2e_probes = Table(
    "e2e_probes",
    metadata,
    Column("origin", String(64), primary_key=True),
    Column("sent_ms", BigInteger, nullable=False),
    Column("arrived_ms", BigInteger, nullable=False),
)

# Poison records held aside by a receiver (sync.held, migration 0011): a change that failed
# validation, of a record type whose policy is `hold`, kept with the reason while the rest of its
# batch was applied. `state`: held, released (re-validated and applied) or skipped.
held_changes = Table(
    "held_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(64), nullable=False),
    Column("epoch", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("record_type", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("payload", Text, nullable=False),
    Column("standards", String(64), nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("held_ms", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_ms", BigInteger, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("origin", "epoch", "seq", name="uq_held_changes_position"),
)
Index("ix_held_changes_state", held_changes.c.state, held_changes.c.origin)

# The last errors of each upward link (sync.store.note_link_error_txn keeps 100 per peer), so they
# outlive a restart (migration 0011).
link_errors = Table(
    "link_errors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("peer", String(64), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("message", Text, nullable=False),
)
Index("ix_link_errors_peer", link_errors.c.peer, link_errors.c.id)
