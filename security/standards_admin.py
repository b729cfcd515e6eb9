"""The ministry's standards administration folder: administrator keys, the TUF repository and
the root that every node pins.

Layout of an admin folder:
    keys/admin-1.key … admin-N.key   root and targets keys (threshold T of N); keep offline
    keys/snapshot.key, keys/timestamp.key   online keys used on every publication
    repository/                      the TUF repository the ministry node serves
    root.json                        the root to pin in every node's `[standards] trusted_root`

This module does file operations only; it does not build release contents (see
`hierarchy_config.standards`) and does not distribute them (see `sync.standards_channel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from security.keys import KeyFileError, NodeKey, load_signing_key, write_key_file
from security.tuf_publish import OnlineKeys, StandardsRepository


@dataclass(frozen=True)
class AdminFolder:
    root: Path

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def repository_dir(self) -> Path:
        return self.root / "repository"

    @property
    def root_file(self) -> Path:
        return self.root / "root.json"

    def repository(self) -> StandardsRepository:
        return StandardsRepository(self.repository_dir)

    def online(self) -> OnlineKeys:
        return OnlineKeys(
            snapshot=load_signing_key(self.keys_dir / "snapshot.key"),
            timestamp=load_signing_key(self.keys_dir / "timestamp.key"),
        )

    def admin_keys(self, names: Sequence[str]) -> list[NodeKey]:
        """Load administrator keys by name (`admin-1`) or path."""
        out = []
        for name in names:
            path = Path(name)
            if not path.exists():
                path = self.keys_dir / (name if name.endswith(".key") else f"{name}.key")
            out.append(load_signing_key(path))
        return out

    def all_admin_keys(self) -> list[NodeKey]:
        return [load_signing_key(p) for p in sorted(self.keys_dir.glob("admin-*.key"))]


def init_admin_folder(
    root: Path,
    *,
    admins: int,
    threshold: int,
    first_release: bytes,
    now: datetime,
) -> AdminFolder:
    """Create keys, a repository with release 1, and root.json. Refuses a non-empty folder."""
    if root.exists() and any(root.iterdir()):
        raise KeyFileError(f"{root} is not empty; choose a new folder for the standards admin")
    if not 1 <= threshold <= admins:
        raise KeyFileError(f"threshold {threshold} must be between 1 and the {admins} admins")
    folder = AdminFolder(root)
    keys = [NodeKey.generate() for _ in range(admins)]
    for i, key in enumerate(keys, start=1):
        write_key_file(folder.keys_dir / f"admin-{i}.key", key)
    online = OnlineKeys(snapshot=NodeKey.generate(), timestamp=NodeKey.generate())
    write_key_file(folder.keys_dir / "snapshot.key", online.snapshot)
    write_key_file(folder.keys_dir / "timestamp.key", online.timestamp)
    repo = folder.repository()
    repo.init(
        root_keys=keys,
        root_threshold=threshold,
        targets_keys=keys,
        targets_threshold=threshold,
        online=online,
        now=now,
    )
    repo.add_release(1, first_release, targets_keys=keys[:threshold], online=online, now=now)
    folder.root_file.write_bytes(repo.root_bytes())
    return folder


def timestamp_expires(repository_dir: Path) -> datetime:
    """When the repository's current timestamp (and so every node's view) expires."""
    import json

    doc = json.loads((repository_dir / "metadata" / "timestamp.json").read_bytes())
    return datetime.fromisoformat(str(doc["signed"]["expires"]).replace("Z", "+00:00"))


def keep_fresh(repository_dir: Path, online: OnlineKeys, now: datetime, margin: timedelta) -> bool:
    """Re-sign snapshot and timestamp (online keys) when they expire within `margin`.

    Run on a schedule by the ministry node, so a quiet repository never freezes the network.
    Returns True if it re-signed."""
    if timestamp_expires(repository_dir) - now > margin:
        return False
    StandardsRepository(repository_dir).refresh_timestamp(online=online, now=now)
    return True
