"""Ministry side of the standards channel: a TUF repository kept as plain files.

`StandardsRepository` writes a repository folder that any node can serve as static files:

    metadata/<N>.root.json        every root version (clients walk N -> N+1)
    metadata/timestamp.json       the only unversioned file, replaced last and atomically
    metadata/<N>.snapshot.json    consistent snapshots: each version is a new file
    metadata/<N>.targets.json
    metadata/<N>.province-<id>.json
    targets/<dir>/<sha256>.<name> target files, content-addressed, never overwritten

Roles: root (threshold of offline administrator keys), targets (threshold of administrator
keys), snapshot and timestamp (one online key each), and one terminating delegated role per
province, `province-<id>` with paths `province-<id>/*`, signed by the province's own key.
Every write is checked before it lands: a role must carry a threshold of signatures from keys it
is entitled to, versions only go up, and a province may only list targets under its prefix.
All expiry times come from the `now` argument. A release is published either in one step with
a threshold of administrator keys (`add_release`) or staged under `staging/` for administrators
to sign one at a time and committed later (`stage_release` … `commit_staged`, from
`security.tuf_staging`); both go through the same commit path.

This module does no network I/O, does not keep private keys (callers pass `NodeKey`s per call),
and does not build or parse release contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from security.keys import NodeKey
from security.standards_trust import (
    Pointer,
    PublishError,
    check_province_id,
    extension_target,
    pointer_target,
    province_prefix,
    province_role,
    release_target,
    tuf_public_key,
    tuf_signer,
)
from security.tuf_staging import StagingMixin, write_atomically

_HASH = "sha256"


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)
    province: timedelta = timedelta(days=90)


@dataclass(frozen=True)
class OnlineKeys:
    """The keys of the two online roles, used on every publication."""

    snapshot: NodeKey
    timestamp: NodeKey


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() != timedelta(0):
        raise PublishError("now must be an aware UTC datetime")
    return now.replace(microsecond=0)


class StandardsRepository(StagingMixin):
    """A TUF repository folder for standards releases and provincial extensions."""

    def __init__(self, root_dir: Path, expiry: ExpiryPolicy | None = None) -> None:
        self.root_dir = root_dir
        self.metadata_dir = root_dir / "metadata"
        self.targets_dir = root_dir / "targets"
        self.expiry = expiry or ExpiryPolicy()

    # --- public operations --------------------------------------------------------------------

    def init(
        self,
        *,
        root_keys: Sequence[NodeKey],
        root_threshold: int,
        targets_keys: Sequence[NodeKey],
        targets_threshold: int,
        online: OnlineKeys,
        now: datetime,
    ) -> None:
        """Create root v1, empty targets v1, snapshot v1 and timestamp v1 (all keys present)."""
        now = _utc(now)
        if self.metadata_dir.exists() and any(self.metadata_dir.iterdir()):
            raise PublishError(f"{self.metadata_dir} already holds a repository")
        for name, keys, threshold in (
            ("root", root_keys, root_threshold),
            ("targets", targets_keys, targets_threshold),
        ):
            if not 1 <= threshold <= len({k.public for k in keys}):
                raise PublishError(f"{name} threshold {threshold} needs that many distinct keys")
        root = Root(expires=now + self.expiry.root, consistent_snapshot=True)
        for role, keys in (
            ("root", root_keys),
            ("targets", targets_keys),
            ("snapshot", [online.snapshot]),
            ("timestamp", [online.timestamp]),
        ):
            for key in keys:
                root.add_key(tuf_public_key(key.verify_key), role)
        root.roles["root"].threshold = root_threshold
        root.roles["targets"].threshold = targets_threshold
        root_md: Metadata[Root] = Metadata(root)
        self._sign(root_md, root_keys)
        self._check_signed(root, "root", root_md)
        targets_md: Metadata[Targets] = Metadata(Targets(expires=now + self.expiry.targets))
        self._sign(targets_md, targets_keys)
        self._check_signed(root, "targets", targets_md)
        snapshot_md: Metadata[Snapshot] = Metadata(Snapshot(expires=now + self.expiry.snapshot))
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._write_versioned(root_md, "root")
        self._commit(root, snapshot_md, None, {"targets": targets_md}, online, now)

    def add_release(
        self,
        version: int,
        data: bytes,
        *,
        targets_keys: Sequence[NodeKey],
        online: OnlineKeys,
        now: datetime,
    ) -> str:
        """Publish `data` as release `version` and point `current.json` at it; return its name.

        One step, with a threshold of administrator keys at hand. `stage_release`,
        `sign_staged` and `commit_staged` (`security.tuf_staging`) make the same publication
        with each administrator signing separately."""
        targets_md, files = self._draft_release(version, data, now)
        self._sign(targets_md, targets_keys)
        self._commit_release(targets_md, files, online=online, now=now)
        return release_target(version)

    def delegate_province(
        self,
        province_id: str,
        public_key: VerifyKey,
        *,
        targets_keys: Sequence[NodeKey],
        online: OnlineKeys,
        now: datetime,
    ) -> None:
        """Delegate `province-<id>/*` (terminating) to `public_key`, replacing any earlier key."""
        now = _utc(now)
        role = province_role(province_id)
        root = self._root()
        snapshot_md, timestamp_md = self._snapshot(), self._timestamp()
        targets_md = self._targets(snapshot_md, "targets")
        signed = targets_md.signed
        if signed.delegations is None:
            signed.delegations = Delegations(keys={}, roles={})
        roles = signed.delegations.roles
        assert roles is not None  # we never use succinct roles
        if role in roles:
            for keyid in list(roles[role].keyids):
                signed.revoke_key(keyid, role)
        roles[role] = DelegatedRole(
            name=role,
            keyids=[],
            threshold=1,
            terminating=True,
            paths=[province_prefix(province_id) + "*"],
        )
        signed.add_key(tuf_public_key(public_key), role)
        self._bump(targets_md, now + self.expiry.targets)
        self._sign(targets_md, targets_keys)
        self._check_signed(root.signed, "targets", targets_md)
        self._commit(root.signed, snapshot_md, timestamp_md, {"targets": targets_md}, online, now)

    def add_extension(
        self,
        province_id: str,
        version: int,
        data: bytes,
        *,
        province_key: NodeKey,
        online: OnlineKeys,
        now: datetime,
    ) -> str:
        """Publish a province's extension `version`, signed by the key delegated to it."""
        now = _utc(now)
        role = province_role(province_id)
        root = self._root()
        snapshot_md, timestamp_md = self._snapshot(), self._timestamp()
        targets_md = self._targets(snapshot_md, "targets")
        delegations = targets_md.signed.delegations
        if delegations is None or delegations.roles is None or role not in delegations.roles:
            raise PublishError(f"{role} is not delegated; run delegate_province first")
        new_role = f"{role}.json" not in snapshot_md.signed.meta
        role_md = Metadata(Targets()) if new_role else self._targets(snapshot_md, role)
        name = extension_target(check_province_id(province_id), version)
        current = role_md.signed.targets.get(pointer_target(province_id))
        if name in role_md.signed.targets:
            raise PublishError(f"{name} is already published; extensions are immutable")
        if current is not None:
            fmt = province_prefix(province_id) + "extension-{}.json"
            old = Pointer.from_bytes(self._read_target(current), fmt)
            if version <= old.version:
                raise PublishError(f"extension {version} is not newer than {old.version}")
        files = {name: data, pointer_target(province_id): Pointer(version, name).to_bytes()}
        for path, blob in files.items():
            role_md.signed.targets[path] = TargetFile.from_data(path, blob, [_HASH])
        self._bump(role_md, now + self.expiry.province)
        if new_role:
            role_md.signed.version = 1
        role_md.sign(tuf_signer(province_key), append=True)
        self._check_signed(targets_md.signed, role, role_md)
        self._check_paths(delegations.roles[role], role_md.signed)
        self._commit(root.signed, snapshot_md, timestamp_md, {role: role_md}, online, now, files)
        return name

    def rotate_root(
        self,
        *,
        new_root_keys: Sequence[NodeKey | VerifyKey],
        new_threshold: int,
        old_signing_keys: Sequence[NodeKey],
        new_signing_keys: Sequence[NodeKey],
        now: datetime,
    ) -> int:
        """Write root N+1 with new root keys, signed by the old and the new threshold."""
        now = _utc(now)
        old = self._root()
        new_md: Metadata[Root] = Metadata.from_bytes(old.to_bytes())
        new = new_md.signed
        for keyid in list(new.roles["root"].keyids):
            new.revoke_key(keyid, "root")
        publics = [k.verify_key if isinstance(k, NodeKey) else k for k in new_root_keys]
        for vk in publics:
            new.add_key(tuf_public_key(vk), "root")
        if not 1 <= new_threshold <= len(new.roles["root"].keyids):
            raise PublishError(f"root threshold {new_threshold} needs that many distinct keys")
        new.roles["root"].threshold = new_threshold
        self._bump(new_md, now + self.expiry.root)
        signers = {k.public: k for k in [*old_signing_keys, *new_signing_keys]}
        self._sign(new_md, list(signers.values()))
        self._check_signed(old.signed, "root", new_md, "old root")
        self._check_signed(new, "root", new_md, "new root")
        self._write_versioned(new_md, "root")
        return int(new.version)

    def refresh_timestamp(self, *, online: OnlineKeys, now: datetime) -> None:
        """Re-sign snapshot and timestamp with fresh expiry (run by the online signer)."""
        now = _utc(now)
        root = self._root()
        self._commit(root.signed, self._snapshot(), self._timestamp(), {}, online, now)

    # --- reading the current state ------------------------------------------------------------

    def root_bytes(self, version: int | None = None) -> bytes:
        """Bytes of a root version (default: newest) — what nodes pin in their configuration."""
        if version is None:
            version = self._root_version()
        return (self.metadata_dir / f"{version}.root.json").read_bytes()

    def _root_version(self) -> int:
        versions = [
            int(p.name.split(".", 1)[0])
            for p in self.metadata_dir.glob("*.root.json")
            if p.name.split(".", 1)[0].isdigit()
        ]
        if not versions:
            raise PublishError(f"{self.metadata_dir} holds no root metadata; run init first")
        return max(versions)

    def _root(self) -> Metadata[Root]:
        return Metadata.from_bytes(self.root_bytes())

    def _timestamp(self) -> Metadata[Timestamp]:
        return Metadata.from_bytes((self.metadata_dir / "timestamp.json").read_bytes())

    def _snapshot(self) -> Metadata[Snapshot]:
        version = self._timestamp().signed.snapshot_meta.version
        return Metadata.from_bytes((self.metadata_dir / f"{version}.snapshot.json").read_bytes())

    def _targets(self, snapshot: Metadata[Snapshot], role: str) -> Metadata[Targets]:
        version = snapshot.signed.meta[f"{role}.json"].version
        return Metadata.from_bytes((self.metadata_dir / f"{version}.{role}.json").read_bytes())

    def _target_path(self, info: TargetFile) -> Path:
        dirname, _, base = info.path.rpartition("/")
        return self.targets_dir / dirname / f"{info.hashes[_HASH]}.{base}"

    def _read_target(self, info: TargetFile) -> bytes:
        return self._target_path(info).read_bytes()

    # --- releases: draft, then commit (shared by add_release and staged releases) ----------

    def _draft_release(
        self, version: int, data: bytes, now: datetime
    ) -> tuple[Metadata[Targets], dict[str, bytes]]:
        """Unsigned targets N+1 listing release `version` and the new pointer, and those files.

        Refuses a version already published or not newer than the current release."""
        now = _utc(now)
        targets_md = self._targets(self._snapshot(), "targets")
        name = release_target(version)
        current = targets_md.signed.targets.get(pointer_target())
        if name in targets_md.signed.targets:
            raise PublishError(f"{name} is already published; releases are immutable")
        if current is not None:
            old = Pointer.from_bytes(self._read_target(current), "releases/release-{}.json")
            if version <= old.version:
                raise PublishError(f"release {version} is not newer than {old.version}")
        files = {name: data, pointer_target(): Pointer(version, name).to_bytes()}
        for path, blob in files.items():
            targets_md.signed.targets[path] = TargetFile.from_data(path, blob, [_HASH])
        self._bump(targets_md, now + self.expiry.targets)
        return targets_md, files

    def _commit_release(
        self,
        targets_md: Metadata[Targets],
        files: dict[str, bytes],
        *,
        online: OnlineKeys,
        now: datetime,
    ) -> None:
        """Publish a signed draft: it must still follow the published targets, be unexpired and
        carry the threshold; then `_commit` writes targets, snapshot and timestamp."""
        now = _utc(now)
        root = self._root()
        snapshot_md, timestamp_md = self._snapshot(), self._timestamp()
        published = snapshot_md.signed.meta["targets.json"].version
        if targets_md.signed.version != published + 1:
            raise PublishError(
                f"targets v{targets_md.signed.version} does not follow the published "
                f"v{published} (the repository changed since); nothing written"
            )
        if targets_md.signed.is_expired(now):
            raise PublishError(
                f"targets v{targets_md.signed.version} expired at {targets_md.signed.expires}; "
                "nothing written"
            )
        self._check_signed(root.signed, "targets", targets_md)
        self._commit(
            root.signed, snapshot_md, timestamp_md, {"targets": targets_md}, online, now, files
        )

    # --- signing and writing ------------------------------------------------------------------

    @staticmethod
    def _bump(md: Metadata[Any], expires: datetime) -> None:
        md.signed.version += 1
        md.signed.expires = expires
        md.signatures.clear()

    @staticmethod
    def _sign(md: Metadata[Any], keys: Sequence[NodeKey]) -> None:
        md.signatures.clear()
        for key in {k.public: k for k in keys}.values():
            md.sign(tuf_signer(key), append=True)

    @staticmethod
    def _check_signed(
        delegator: Root | Targets, role: str, md: Metadata[Any], label: str | None = None
    ) -> None:
        result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
        if not result.verified:
            raise PublishError(
                f"{role} needs {result.threshold} valid signatures from "
                f"{label or 'its delegator'}'s keys, got {len(result.signed)}; nothing written"
            )

    @staticmethod
    def _check_paths(delegated: DelegatedRole, signed: Targets) -> None:
        for path in signed.targets:
            if not delegated.is_delegated_path(path):
                raise PublishError(f"{delegated.name} may not list {path}; nothing written")

    def _write_targets(self, files: dict[str, bytes]) -> None:
        for path, blob in files.items():
            info = TargetFile.from_data(path, blob, [_HASH])
            dest = self._target_path(info)
            if not dest.exists():
                write_atomically(dest, blob)

    def _write_versioned(self, md: Metadata[Any], role: str) -> None:
        dest = self.metadata_dir / f"{md.signed.version}.{role}.json"
        if dest.exists():
            raise PublishError(f"{dest} exists; metadata versions are immutable")
        write_atomically(dest, md.to_bytes())

    def _commit(
        self,
        root: Root,
        snapshot_md: Metadata[Snapshot],
        timestamp_md: Metadata[Timestamp] | None,
        changed: dict[str, Metadata[Targets]],
        online: OnlineKeys,
        now: datetime,
        target_files: dict[str, bytes] | None = None,
    ) -> None:
        """Sign snapshot N+1 and the timestamp over the changed targets roles, check every
        signature, then write target files, roles, snapshot and finally timestamp.json (the
        switch). A refusal before that point writes nothing."""
        writes: list[tuple[Path, bytes]] = []
        for role, md in changed.items():
            data = md.to_bytes()
            writes.append((self.metadata_dir / f"{md.signed.version}.{role}.json", data))
            snapshot_md.signed.meta[f"{role}.json"] = MetaFile.from_data(
                md.signed.version, data, [_HASH]
            )
        if timestamp_md is not None:
            self._bump(snapshot_md, now + self.expiry.snapshot)
        else:
            snapshot_md.signed.expires = now + self.expiry.snapshot
        self._sign(snapshot_md, [online.snapshot])
        self._check_signed(root, "snapshot", snapshot_md)
        snapshot_bytes = snapshot_md.to_bytes()
        writes.append(
            (self.metadata_dir / f"{snapshot_md.signed.version}.snapshot.json", snapshot_bytes)
        )
        if timestamp_md is None:
            timestamp_md = Metadata(Timestamp(expires=now + self.expiry.timestamp))
        else:
            self._bump(timestamp_md, now + self.expiry.timestamp)
        timestamp_md.signed.snapshot_meta = MetaFile.from_data(
            snapshot_md.signed.version, snapshot_bytes, [_HASH]
        )
        self._sign(timestamp_md, [online.timestamp])
        self._check_signed(root, "timestamp", timestamp_md)
        for dest, _ in writes:
            if dest.exists():
                raise PublishError(f"{dest} exists; metadata versions are immutable")
        self._write_targets(target_files or {})
        for dest, data in writes:
            write_atomically(dest, data)
        write_atomically(self.metadata_dir / "timestamp.json", timestamp_md.to_bytes())
