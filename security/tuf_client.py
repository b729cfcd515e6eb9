"""Node side of the standards channel: verify releases and extensions with python-tuf's ngclient.

`StandardsClient.refresh()` runs the TUF client workflow (root N -> N+1 walk, timestamp,
snapshot, targets, delegated province roles) against the node's parent through a `fetch`
callable, then downloads the release named by `current.json` and the extensions of the
provinces this node follows. Everything happens in a staging folder; only when every file has
verified does one atomic symlink switch make the new state current. A refusal raises one of the
`security.standards_trust` errors and leaves the trusted state on disk exactly as it was.

After a refresh, `served_files()` gives the exact metadata and target bytes that verified, in
the repository layout (`metadata/…`, `targets/…`), so the node can serve them to its children,
who then verify end-to-end against the ministry's root rather than trusting this node.

This module does no HTTP itself (the node supplies `fetch`), does not schedule refreshes, and
does not interpret release contents. `refresh()` is blocking: call it with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from security.standards_trust import (
    MAX_POINTER_BYTES,
    ExpiredError,
    FetchError,
    InvalidMetadataError,
    MixAndMatchError,
    NotFoundError,
    Pointer,
    RollbackError,
    StandardsFileMissing,
    StandardsTrustError,
    TargetMismatchError,
    TooLargeError,
    UnsignedError,
    VerifiedTarget,
    check_province_id,
    pointer_target,
    province_prefix,
    province_role,
)

Fetch = Callable[[str, int], bytes]
"""`fetch(relative_path, limit)`: bytes of `<parent>/<relative_path>`, reading at most `limit`+1
bytes; raise StandardsFileMissing for 'no such file', anything else for a network failure."""

_BASE = "lsnet-parent:///"
_CURRENT = "current"
_STATE = "state.json"


@dataclass(frozen=True)
class MetadataLimits:
    """Byte caps for each metadata download (endless-data defence) and the root-walk cap."""

    root: int = 64 * 1024
    timestamp: int = 16 * 1024
    snapshot: int = 1024 * 1024
    targets: int = 4 * 1024 * 1024
    max_root_rotations: int = 32

    def config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            root_max_length=self.root,
            timestamp_max_length=self.timestamp,
            snapshot_max_length=self.snapshot,
            targets_max_length=self.targets,
            prefix_targets_with_hash=True,
        )


class _ParentFetcher(FetcherInterface):
    """Hands each ngclient download to the node's `fetch`, with the cap ngclient asked for."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch_fn = fetch

    def _get(self, url: str, limit: int) -> bytes:
        if not url.startswith(_BASE):
            raise tuf_errors.DownloadError(f"unexpected URL {url}")
        relative = url[len(_BASE) :]
        try:
            data = self._fetch_fn(relative, limit)
        except StandardsFileMissing as exc:
            raise tuf_errors.DownloadHTTPError(f"{relative}: not found", 404) from exc
        except tuf_errors.DownloadError:
            raise
        except Exception as exc:
            raise tuf_errors.DownloadError(f"{relative}: {exc}") from exc
        if len(data) > limit:
            raise tuf_errors.DownloadLengthMismatchError(
                f"{relative}: more than the allowed {limit} bytes"
            )
        return bytes(data)

    def _fetch(self, url: str) -> Iterator[bytes]:  # pragma: no cover - download_file overrides
        yield self._get(url, MetadataLimits().targets)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        data = self._get(url, max_length)
        with tempfile.TemporaryFile() as tmp:
            tmp.write(data)
            tmp.seek(0)
            yield tmp


@contextlib.contextmanager
def _translated(target_phase: bool = False) -> Iterator[None]:
    """Turn python-tuf exceptions into our closed set of trust errors."""
    try:
        yield
    except StandardsTrustError:
        raise
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise TooLargeError(str(exc)) from exc
    except tuf_errors.DownloadError as exc:
        raise FetchError(str(exc) or type(exc).__name__) from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise UnsignedError(str(exc)) from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise ExpiredError(str(exc)) from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise RollbackError(str(exc)) from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        if target_phase:
            raise TargetMismatchError(str(exc)) from exc
        raise MixAndMatchError(str(exc)) from exc
    except tuf_errors.RepositoryError as exc:
        raise InvalidMetadataError(str(exc)) from exc


@dataclass(frozen=True)
class _Entry:
    """A verified target as recorded in the committed state."""

    name: str
    version: int
    sha256: str

    @property
    def layout_path(self) -> str:
        dirname, sep, base = self.name.rpartition("/")
        return f"targets/{dirname}{sep}{self.sha256}.{base}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> _Entry:
        return cls(str(body["name"]), int(body["version"]), str(body["sha256"]))


@dataclass(frozen=True)
class _Resolved:
    pointer: _Entry
    target: _Entry
    files: dict[str, bytes]  # layout path -> bytes


class StandardsClient:
    """Verifies what the parent serves against the pinned ministry root; keeps the last good set."""

    def __init__(
        self,
        trusted_root: bytes,
        metadata_dir: Path,
        target_dir: Path,
        fetch: Fetch,
        max_release_bytes: int,
        *,
        provinces: Sequence[str] = (),
        max_extension_bytes: int | None = None,
        limits: MetadataLimits | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        try:
            Metadata[Root].from_bytes(trusted_root)
        except Exception as exc:
            raise InvalidMetadataError(f"trusted root is not root metadata: {exc}") from exc
        self._trusted_root = trusted_root
        self.metadata_dir = metadata_dir
        self.target_dir = target_dir
        self._fetcher = _ParentFetcher(fetch)
        self.max_release_bytes = max_release_bytes
        self.max_extension_bytes = max_extension_bytes or max_release_bytes
        self.provinces = tuple(check_province_id(p) for p in provinces)
        self._limits = limits or MetadataLimits()
        self._clock = clock
        self._lock = threading.Lock()
        metadata_dir.mkdir(parents=True, exist_ok=True)
        target_dir.mkdir(parents=True, exist_ok=True)
        for leftover in metadata_dir.glob("staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self._release: VerifiedTarget | None = None
        self._extensions: dict[str, VerifiedTarget | None] = {}
        self._served: Mapping[str, bytes] = MappingProxyType({})
        self._expires: datetime | None = None
        self._load_committed()

    # --- public API ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch and verify the parent's newest state; commit it atomically or raise."""
        with self._lock:
            staging = Path(tempfile.mkdtemp(dir=self.metadata_dir, prefix="staging-"))
            try:
                self._refresh_into(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def current_release(self) -> VerifiedTarget:
        """The release in force here (last verified); NotFoundError before the first refresh."""
        if self._release is None:
            raise NotFoundError("no standards release has been verified yet")
        return self._release

    def extension(self, province_id: str) -> VerifiedTarget | None:
        """The verified extension of a followed province, or None if it has published none."""
        if province_id not in self.provinces:
            raise ValueError(f"province {province_id!r} is not followed by this client")
        return self._extensions.get(province_id)

    def served_files(self) -> Mapping[str, bytes]:
        """Exactly the verified metadata and targets, keyed by repository-relative path."""
        return self._served

    def expires(self) -> datetime | None:
        """Earliest expiry among the verified timestamp, snapshot and targets metadata."""
        return self._expires

    # --- refresh ------------------------------------------------------------------------------

    def _refresh_into(self, staging: Path) -> None:
        cache = staging / "tuf"
        current = self._current_generation()
        if current is not None:
            shutil.copytree(current / "tuf", cache, symlinks=True)
        else:
            cache.mkdir()
        with _translated():
            updater = Updater(
                str(cache),
                _BASE + "metadata/",
                None,
                _BASE + "targets/",
                fetcher=self._fetcher,
                config=self._limits.config(),
                bootstrap=self._trusted_root,
            )
            self._set_reference_time(updater)
            updater.refresh()
        release = self._resolve(updater, None, self.max_release_bytes)
        if release is None:
            raise NotFoundError(f"the parent's metadata lists no {pointer_target()}")
        self._check_not_older(release, self._release, "release")
        snapshot_roles = _read(cache / "snapshot.json", Snapshot).signed.meta
        extensions: dict[str, _Resolved | None] = {}
        for pid in self.provinces:
            resolved = None
            if f"{province_role(pid)}.json" in snapshot_roles:
                resolved = self._resolve(updater, pid, self.max_extension_bytes)
            self._check_not_older(resolved, self._extensions.get(pid), f"extension {pid}")
            extensions[pid] = resolved
        self._commit(staging, release, extensions)

    def _set_reference_time(self, updater: Updater) -> None:
        """Fix the update start time from our clock (python-tuf otherwise reads the system clock).

        Relies on `TrustedMetadataSet.reference_time` (python-tuf 5-7); fails loudly if gone.
        """
        if self._clock is None:
            return
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() != timedelta(0):
            raise ValueError("clock must return an aware UTC datetime")
        trusted = getattr(updater, "_trusted_set", None)
        if trusted is None or not hasattr(trusted, "reference_time"):
            raise RuntimeError("this python-tuf version does not allow injecting the clock")
        trusted.reference_time = now

    def _resolve(self, updater: Updater, province_id: str | None, cap: int) -> _Resolved | None:
        name = pointer_target(province_id)
        with _translated():
            info = updater.get_targetinfo(name)
        if info is None:
            return None
        if info.length > MAX_POINTER_BYTES:
            raise TooLargeError(f"{name} is declared {info.length} bytes")
        pointer_bytes = self._download(updater, info)
        if province_id is None:
            fmt = "releases/release-{}.json"
        else:
            fmt = province_prefix(province_id) + "extension-{}.json"
        pointer = Pointer.from_bytes(pointer_bytes, fmt)
        with _translated():
            target_info = updater.get_targetinfo(pointer.target)
        if target_info is None:
            raise NotFoundError(f"{name} names {pointer.target}, which is not listed")
        if target_info.length > cap:
            raise TooLargeError(
                f"{pointer.target} is declared {target_info.length} bytes, limit {cap}"
            )
        data = self._download(updater, target_info)
        pointer_entry = _Entry(name, pointer.version, _sha256(pointer_bytes))
        target_entry = _Entry(pointer.target, pointer.version, _sha256(data))
        return _Resolved(
            pointer=pointer_entry,
            target=target_entry,
            files={
                pointer_entry.layout_path: pointer_bytes,
                target_entry.layout_path: data,
            },
        )

    def _download(self, updater: Updater, info: TargetFile) -> bytes:
        """Verified bytes of a target: from our own store if it still verifies, else the parent."""
        if "sha256" not in info.hashes:
            raise InvalidMetadataError(f"{info.path} has no sha256 hash")
        dirname, sep, base = info.path.rpartition("/")
        local = self.target_dir / f"{dirname}{sep}{info.hashes['sha256']}.{base}"
        if updater.find_cached_target(info, str(local)) is not None:
            return local.read_bytes()
        with tempfile.TemporaryDirectory(dir=self.metadata_dir, prefix="staging-dl-") as tmp:
            dest = Path(tmp) / "target"
            with _translated(target_phase=True):
                updater.download_target(info, filepath=str(dest))
            return dest.read_bytes()

    @staticmethod
    def _check_not_older(new: _Resolved | None, old: VerifiedTarget | None, label: str) -> None:
        # A target that is no longer listed at all was withdrawn by signed metadata: accepted.
        if old is None or new is None:
            return
        if new.target.version < old.version:
            raise RollbackError(f"{label} {new.target.version} is older than {old.version}")

    # --- commit and load ----------------------------------------------------------------------

    def _commit(
        self, staging: Path, release: _Resolved, extensions: dict[str, _Resolved | None]
    ) -> None:
        resolved = [release, *(r for r in extensions.values() if r is not None)]
        for item in resolved:
            for layout_path, data in item.files.items():
                dest = self.target_dir / layout_path.removeprefix("targets/")
                if not dest.exists() or _sha256(dest.read_bytes()) != _sha256(data):
                    _atomic_write(dest, data)
        state = {
            "release": [release.pointer.to_json(), release.target.to_json()],
            "extensions": {
                pid: None if r is None else [r.pointer.to_json(), r.target.to_json()]
                for pid, r in extensions.items()
            },
        }
        _atomic_write(staging / _STATE, json.dumps(state, sort_keys=True).encode("utf-8"))
        current = self._current_generation()
        number = 1 if current is None else int(current.name.split("-")[1]) + 1
        generation = self.metadata_dir / f"gen-{number:08d}"
        os.rename(staging, generation)
        link = self.metadata_dir / f".{_CURRENT}.tmp"
        link.unlink(missing_ok=True)
        os.symlink(generation.name, link)
        os.replace(link, self.metadata_dir / _CURRENT)
        for old in self.metadata_dir.glob("gen-*"):
            if old.name != generation.name:
                shutil.rmtree(old, ignore_errors=True)
        self._load_committed()

    def _current_generation(self) -> Path | None:
        link = self.metadata_dir / _CURRENT
        if not link.is_symlink():
            return None
        return self.metadata_dir / os.readlink(link)

    def _load_committed(self) -> None:
        generation = self._current_generation()
        if generation is None:
            return
        state = json.loads((generation / _STATE).read_text("utf-8"))
        served: dict[str, bytes] = _served_metadata(generation / "tuf")
        release = self._load_pair(state["release"], served)
        extensions: dict[str, VerifiedTarget | None] = {}
        for pid, pair in state["extensions"].items():
            extensions[pid] = None if pair is None else self._load_pair(pair, served)
        self._release, self._extensions = release, extensions
        self._served = MappingProxyType(served)
        self._expires = _earliest_expiry(generation / "tuf")

    def _load_pair(self, pair: list[dict[str, Any]], served: dict[str, bytes]) -> VerifiedTarget:
        verified: list[VerifiedTarget] = []
        for body in pair:
            entry = _Entry.from_json(body)
            data = (self.target_dir / entry.layout_path.removeprefix("targets/")).read_bytes()
            if _sha256(data) != entry.sha256:
                raise TargetMismatchError(f"local copy of {entry.name} changed on disk")
            served[entry.layout_path] = data
            verified.append(VerifiedTarget(entry.name, entry.version, data, entry.sha256))
        return verified[-1]


def _read(path: Path, kind: type[Any]) -> Metadata[Any]:
    md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
    if not isinstance(md.signed, kind):
        raise InvalidMetadataError(f"{path.name} is not {kind.__name__} metadata")
    return md


def _served_metadata(cache: Path) -> dict[str, bytes]:
    """Map ngclient's cache (unversioned names) back to the repository's versioned names."""
    served: dict[str, bytes] = {}
    for root_file in sorted((cache / "root_history").glob("*.root.json")):
        served[f"metadata/{root_file.name}"] = root_file.read_bytes()
    timestamp_bytes = (cache / "timestamp.json").read_bytes()
    served["metadata/timestamp.json"] = timestamp_bytes
    snapshot = _read(cache / "snapshot.json", Snapshot)
    version = snapshot.signed.version
    served[f"metadata/{version}.snapshot.json"] = (cache / "snapshot.json").read_bytes()
    for filename, meta in snapshot.signed.meta.items():
        local = cache / filename
        if local.exists() and _read(local, Targets).signed.version == meta.version:
            role = filename.removesuffix(".json")
            served[f"metadata/{meta.version}.{role}.json"] = local.read_bytes()
    return served


def _earliest_expiry(cache: Path) -> datetime:
    expiries: list[datetime] = [
        _read(cache / name, kind).signed.expires
        for name, kind in (
            ("timestamp.json", Timestamp),
            ("snapshot.json", Snapshot),
            ("targets.json", Targets),
        )
    ]
    return min(expiries)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
