"""The validated, immutable shape of a node's configuration file (`node.toml`).

Pydantic models with every check a centre needs before a node starts: the level, the parent, the
children (recursively: a ministry lists its provinces and their cities, so it can verify every
city's signatures), unique ids, well-formed keys and URLs. Paths are resolved against the file's
folder by the loader. This module does not read files (see `hierarchy_config.loader`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from nacl.signing import VerifyKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from security.keys import PublicKeyFormatError, parse_public_key

NODE_ID_RE = re.compile(r"^[0-9]{6}$")
MINISTRY_ID = "100000"


class Level(StrEnum):
    CITY = "city"
    PROVINCE = "province"
    MINISTRY = "ministry"

    @property
    def child_level(self) -> Level | None:
        return {Level.MINISTRY: Level.PROVINCE, Level.PROVINCE: Level.CITY}.get(self)


class FieldProblem(ValueError):
    """A check spanning several fields failed; `field` is the dotted path to blame.

    Raised inside model validators, where pydantic reports no location of its own; the loader
    puts `field` into the `ConfigError`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_node_id(value: str) -> str:
    if not NODE_ID_RE.match(value):
        raise ValueError(
            f"node id {value!r} must be a 6-digit GB/T 2260 code such as '330100' "
            f"(the ministry uses '{MINISTRY_ID}')"
        )
    return value


def _check_public_key(value: str) -> str:
    try:
        parse_public_key(value)
    except PublicKeyFormatError as exc:
        raise ValueError(f"{exc}; copy the key printed by 'lsnet keys generate'") from exc
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"URL {value!r} must look like 'http://host:port' (http or https)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"URL {value!r} has an invalid port") from exc
    return value.rstrip("/")


class NodeSection(_Frozen):
    id: str
    name: str = ""
    level: Level
    listen: str = Field(description="host:port the node's HTTP server binds to")
    public_url: str | None = None
    database: str = Field(description="SQLAlchemy URL; relative sqlite paths are resolved")
    key_file: Path

    _id = field_validator("id")(_check_node_id)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        valid_port = port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if not sep or not host or not valid_port:
            raise ValueError(
                f"listen address {value!r} must be 'host:port', e.g. '127.0.0.1:18400'"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.listen}"


class ParentConfig(_Frozen):
    id: str
    url: str
    public_key: str

    _id = field_validator("id")(_check_node_id)
    _url = field_validator("url")(_check_url)
    _pk = field_validator("public_key")(_check_public_key)

    @property
    def verify_key(self) -> VerifyKey:
        return parse_public_key(self.public_key)


class ChildConfig(_Frozen):
    id: str
    public_key: str
    name: str = ""
    children: tuple[ChildConfig, ...] = ()
    url: str | None = Field(
        default=None, description="the child's base URL, for downward federated statistics queries"
    )

    _id = field_validator("id")(_check_node_id)
    _pk = field_validator("public_key")(_check_public_key)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @property
    def verify_key(self) -> VerifyKey:
        return parse_public_key(self.public_key)

    def walk(self) -> list[ChildConfig]:
        """This child and everything below it."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


class LimitsConfig(_Frozen):
    """Size limits, checked before any signature work."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_changes: int = Field(default=1000, ge=1, le=100_000)
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_batches_per_transfer: int = Field(default=8, ge=1, le=1000)
    max_ingest_records: int = Field(default=10_000, ge=1)
    # Per-peer rate limits on node-to-node requests (token bucket; 429 beyond them).
    peer_requests_per_s: float = Field(default=50.0, gt=0)
    peer_burst: int = Field(default=100, ge=1)
    # Refused requests allowed per remote address before it is answered 429 unread.
    bad_requests_per_s: float = Field(default=5.0, gt=0)
    bad_burst: int = Field(default=20, ge=1)
    # A client that has not sent its whole body within this time is cut off (slow-client
    # defence: a trickled body cannot hold a request open for long).
    body_read_timeout_s: float = Field(default=30.0, gt=0, le=600)


InvalidRecordPolicy = Literal["hold", "block"]


class SyncConfig(_Frozen):
    debounce_ms: int = Field(default=50, ge=0, le=10_000)
    retry_interval_s: float = Field(default=2.0, gt=0, le=3600)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=120.0, gt=0, le=900)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    # How often a node sends key rotations/revocations upward and fetches its parent's.
    key_sync_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # How often a child compares digests of what it holds with its parent (sync.anti_entropy).
    anti_entropy_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    # Re-validate every received record against the record schemas (ADR 0005). When false, a
    # receiver still checks signatures, digests, shapes and that each key matches its fields.
    revalidate_records: bool = True
    # Write received pushes in a separate process, so that each batch is written while the next
    # is verified (sync.apply_worker, ADR 0014). Uses a second database connection and about
    # one more core while a backlog arrives; ignored for an in-memory database. Unset (auto):
    # on for a node with children run by `lsnet node run` on a machine with 2 or more CPUs,
    # off where many nodes share one process (`lsnet demo`, `lsnet simulate`, tests).
    apply_process: bool | None = None
    # How many pushes a node may have on the way to its parent at once while it catches up
    # (ADR 0015). With 2 the next push is verified by the parent while the previous one is being
    # written and answered; 1 is the strict one-transfer-in-flight of DESIGN §4.
    pushes_in_flight: int = Field(default=2, ge=1, le=8)
    # What a receiver does with a record that fails validation inside a sound, signed batch (a
    # poison record, e.g. a code this node's standards do not know yet). "hold": keep the record
    # aside for an operator (`lsnet links held ...`), apply the rest of the batch and go on, so
    # later batches of that origin are not blocked. "block": refuse the whole batch; the sender
    # quarantines it and that origin's later batches wait until an operator replays or skips it.
    on_invalid_record: InvalidRecordPolicy = "hold"
    # Per record type, overriding `on_invalid_record` (e.g. {contribution = "block"}).
    on_invalid_record_by_type: dict[str, InvalidRecordPolicy] = Field(default_factory=dict)

    def holds_invalid(self, record_type: str) -> bool:
        """Whether an invalid record of this type is held aside (True) or blocks its batch."""
        policy = self.on_invalid_record_by_type.get(record_type, self.on_invalid_record)
        return policy == "hold"

    @model_validator(mode="after")
    def _backoff_order(self) -> SyncConfig:
        if self.backoff_initial_s > self.backoff_max_s:
            raise FieldProblem(
                "backoff_initial_s", "backoff_initial_s must not exceed backoff_max_s"
            )
        return self


class StandardsConfig(_Frozen):
    """The downward standards channel (python-tuf). Off when `trusted_root` is not set."""

    trusted_root: Path | None = Field(
        default=None, description="the ministry's pinned TUF root.json (relative to this file)"
    )
    repository: Path | None = Field(
        default=None, description="ministry only: the publishing repository folder it serves"
    )
    online_keys: Path | None = Field(
        default=None,
        description="ministry only: folder with snapshot.key and timestamp.key, used to re-sign "
        "the repository's timestamp before it expires",
    )
    state_dir: Path = Path("standards-state")
    poll_interval_s: float = Field(default=5.0, gt=0, le=3600)
    max_release_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)


class TlsConfig(_Frozen):
    """TLS for node-to-node HTTP with operator-provided certificates (see deploy/README.md).

    With `cert_file` and `key_file` the node serves HTTPS; `ca_file` is the CA bundle that
    signs the other nodes' certificates (used to verify the parent, and the children when
    `require_client_cert` makes it mutual TLS)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise FieldProblem("tls.key_file", "cert_file and key_file go together")
        if self.require_client_cert and (self.ca_file is None or self.cert_file is None):
            raise FieldProblem(
                "tls.require_client_cert", "mutual TLS needs cert_file, key_file and ca_file"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ApiConfig(_Frozen):
    """Legacy ingest tokens in the file; prefer `lsnet tokens` (scoped, hashed, revocable)."""

    ingest_tokens: tuple[str, ...] = ()

    @field_validator("ingest_tokens")
    @classmethod
    def _tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for token in value:
            if len(token) < 16:
                raise ValueError("each ingest token must be at least 16 characters long")
        return value


class NetworkConfig(_Frozen):
    """Network management (network_mgmt): heartbeats to the parent and alert thresholds."""

    heartbeat_interval_s: float = Field(default=10.0, gt=0, le=3600)
    down_after_missed: int = Field(default=3, ge=1, le=1000)
    lag_alert_s: float = Field(default=600.0, gt=0)
    clock_skew_alert_ms: int = Field(default=2000, ge=1)
    release_expiry_alert_s: float = Field(default=12 * 3600.0, gt=0)  # timestamps live 24 h
    security_burst: int = Field(default=20, ge=1)
    # End-to-end lag probes through the data path (network_mgmt.probe), every this many seconds;
    # 0 = off. Each probe takes a change-log seq but is never a record.
    e2e_probe_interval_s: float = Field(default=30.0, ge=0, le=86400)


class NodeConfig(_Frozen):
    node: NodeSection
    parent: ParentConfig | None = None
    children: tuple[ChildConfig, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    sync: SyncConfig = SyncConfig()
    api: ApiConfig = ApiConfig()
    standards: StandardsConfig = StandardsConfig()
    tls: TlsConfig = TlsConfig()
    network: NetworkConfig = NetworkConfig()

    @model_validator(mode="after")
    def _shape(self) -> NodeConfig:
        level = self.node.level
        if level is Level.MINISTRY and self.parent is not None:
            raise FieldProblem(
                "parent", "the ministry is the root of the tree and has no [parent]; remove it"
            )
        if level is not Level.MINISTRY and self.parent is None:
            raise FieldProblem(
                "parent", f"a {level.value} node needs a [parent] section (id, url, public_key)"
            )
        if level is Level.CITY and self.children:
            raise FieldProblem(
                "children", "a city has no children; remove the [[children]] entries"
            )
        if self.parent is not None and self.parent.id == self.node.id:
            raise FieldProblem("parent.id", "a node cannot be its own parent")
        _check_tree(level, self.children)
        seen: dict[str, str] = {self.node.id: "node.id"}
        if self.parent is not None:
            seen[self.parent.id] = "parent.id"
        for where, entry in _walk(self.children):
            if entry.id in seen:
                raise FieldProblem(
                    f"{where}.id",
                    f"duplicate node id {entry.id!r} (also at {seen[entry.id]}); list each once",
                )
            seen[entry.id] = f"{where}.id"
        if self.standards.repository is not None:
            if level is not Level.MINISTRY:
                raise FieldProblem(
                    "standards.repository", "only the ministry serves a publishing repository"
                )
            if self.standards.trusted_root is None:
                raise FieldProblem(
                    "standards.trusted_root", "the ministry must pin its own root as well"
                )
        return self

    # -- derived views -------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.node.id

    @property
    def level(self) -> Level:
        return self.node.level

    def subtree_keys(self) -> dict[str, VerifyKey]:
        """Every enrolled node below this one, by id, with its public key."""
        return {c.id: c.verify_key for top in self.children for c in top.walk()}

    def route_of(self, origin: str) -> str | None:
        """The direct child whose subtree holds `origin`, or None if it is not below us."""
        for top in self.children:
            if any(c.id == origin for c in top.walk()):
                return top.id
        return None

    def child_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.children)


def _walk(
    children: tuple[ChildConfig, ...], prefix: str = "children"
) -> Iterator[tuple[str, ChildConfig]]:
    """Every child below, depth first, with its position such as `children[0].children[1]`."""
    for index, child in enumerate(children):
        where = f"{prefix}[{index}]"
        yield where, child
        yield from _walk(child.children, f"{where}.children")


def _check_tree(level: Level, children: tuple[ChildConfig, ...], prefix: str = "children") -> None:
    child_level = level.child_level
    for index, child in enumerate(children):
        where = f"{prefix}[{index}]"
        if child_level is None or (child_level is Level.CITY and child.children):
            raise FieldProblem(
                f"{where}.children", f"child {child.id!r}: a city has no children; remove them"
            )
        _check_tree(child_level, child.children, f"{where}.children")
