"""Helpers for the standards trust tests: a ministry with keys, folder relays, an attacker who
holds some keys, and a snapshot of a client's on-disk state. (No tests in this module.)"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from tuf.api.metadata import Metadata, TargetFile

from security.keys import NodeKey
from security.standards_trust import Pointer, StandardsFileMissing, tuf_signer
from security.tuf_client import Fetch, StandardsClient
from security.tuf_publish import ExpiryPolicy, OnlineKeys, StandardsRepository

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX_RELEASE = 64 * 1024


def fixed_key(n: int) -> NodeKey:
    return NodeKey(SigningKey(bytes([n]) * 32))


@dataclass
class Ministry:
    repo: StandardsRepository
    root_keys: list[NodeKey]
    targets_keys: list[NodeKey]
    online: OnlineKeys
    province_key: NodeKey

    @property
    def dir(self) -> Path:
        return self.repo.root_dir

    def release(self, version: int, data: bytes | None = None, now: datetime = NOW) -> bytes:
        data = data if data is not None else f'{{"release": {version}}}'.encode()
        self.repo.add_release(
            version, data, targets_keys=self.targets_keys[:2], online=self.online, now=now
        )
        return data

    def delegate(self, province_id: str = "330000", key: NodeKey | None = None) -> None:
        self.repo.delegate_province(
            province_id,
            (key or self.province_key).verify_key,
            targets_keys=self.targets_keys[1:],
            online=self.online,
            now=NOW,
        )

    def extension(self, version: int, province_id: str = "330000") -> bytes:
        data = f'{{"extension": {version}, "province": "{province_id}"}}'.encode()
        self.repo.add_extension(
            province_id, version, data, province_key=self.province_key, online=self.online, now=NOW
        )
        return data


def make_ministry(path: Path, expiry: ExpiryPolicy | None = None, now: datetime = NOW) -> Ministry:
    ministry = Ministry(
        repo=StandardsRepository(path, expiry),
        root_keys=[fixed_key(i) for i in (1, 2, 3)],
        targets_keys=[fixed_key(i) for i in (4, 5, 6)],
        online=OnlineKeys(snapshot=fixed_key(7), timestamp=fixed_key(8)),
        province_key=fixed_key(9),
    )
    ministry.repo.init(
        root_keys=ministry.root_keys,
        root_threshold=2,
        targets_keys=ministry.targets_keys,
        targets_threshold=2,
        online=ministry.online,
        now=now,
    )
    return ministry


def folder_fetch(root: Path, log: list[str] | None = None) -> Fetch:
    """A parent that serves `root` as static files (what a relaying node would serve)."""

    def fetch(relative: str, limit: int) -> bytes:
        if log is not None:
            log.append(relative)
        path = (root / relative).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            raise StandardsFileMissing(relative)
        with path.open("rb") as f:
            return f.read(limit + 1)

    return fetch


def mapping_fetch(files: Mapping[str, bytes]) -> Fetch:
    def fetch(relative: str, limit: int) -> bytes:
        if relative not in files:
            raise StandardsFileMissing(relative)
        return files[relative][: limit + 1]

    return fetch


def copy_repo(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def make_client(
    tmp: Path,
    root: bytes,
    fetch: Fetch,
    name: str = "node",
    **kwargs: Any,
) -> StandardsClient:
    return StandardsClient(
        root, tmp / name / "meta", tmp / name / "targets", fetch, MAX_RELEASE, **kwargs
    )


def disk_state(client: StandardsClient) -> dict[str, bytes]:
    """Every file (and symlink target) under the client's metadata and target folders."""
    state: dict[str, bytes] = {}
    for base in (client.metadata_dir, client.target_dir):
        for path in sorted(base.rglob("*")):
            key = str(path.relative_to(base.parent))
            if path.is_symlink():
                state[key] = b"->" + str(path.readlink()).encode()
            elif path.is_file():
                state[key] = path.read_bytes()
    return state


# --- an attacker who holds some keys -------------------------------------------------------


def forge_role(
    ministry: Ministry,
    role: str,
    mutate: Callable[[Metadata[Any]], None],
    signers: Sequence[NodeKey],
    now: datetime = NOW,
) -> None:
    """Rewrite `role` (bumped, mutated, signed by `signers`) and publish it with the online keys.

    Uses the repository's private commit step, which checks only the online roles' signatures:
    this is the attacker who stole the snapshot and timestamp keys.
    """
    repo = ministry.repo
    snapshot = repo._snapshot()
    if f"{role}.json" in snapshot.signed.meta:
        md = repo._targets(snapshot, role)
        md.signed.version += 1
    else:
        from tuf.api.metadata import Targets

        md = Metadata(Targets())
    mutate(md)
    md.signatures.clear()
    for key in signers:
        md.sign(tuf_signer(key), append=True)
    repo._commit(repo._root().signed, snapshot, repo._timestamp(), {role: md}, ministry.online, now)


def add_targets(files: Mapping[str, bytes], target_dir: Path) -> Callable[[Metadata[Any]], None]:
    """A mutation that lists `files` in a targets role and writes them where they are served."""

    def mutate(md: Metadata[Any]) -> None:
        for path, data in files.items():
            info = TargetFile.from_data(path, data, ["sha256"])
            md.signed.targets[path] = info
            dirname, sep, base = path.rpartition("/")
            dest = target_dir / f"{dirname}{sep}{info.hashes['sha256']}.{base}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)

    return mutate


def pointer(version: int, target: str) -> bytes:
    return Pointer(version, target).to_bytes()
