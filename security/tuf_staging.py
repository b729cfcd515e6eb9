"""Staged standards releases: stage once, let each administrator sign separately, then publish.

In practice the administrators who form the targets threshold (e.g. 2 of 3) keep their keys on
different offline machines, so a release is published in steps instead of with every key at hand:

1. `stage_release` writes the release and an *unsigned* targets N+1 into `<repo>/staging/`:

       staging/targets.json          the staged targets metadata; administrators sign this file
       staging/targets/<path>        the new target files by target path (release, current.json)

   Nodes never see it: they read only `metadata/` and `targets/`.
2. Each administrator appends one signature, either in place (`sign_staged`) or on a copy of
   `staging/targets.json` taken to an offline machine (`sign_staged_file`), whose signatures are
   then merged back (`add_staged_signatures`, which verifies every signature and requires the
   copy's signed content to be identical to the staged one).
3. `commit_staged` checks the threshold and publishes through the same path as a one-step
   `add_release` (targets, snapshot, timestamp), then removes the staging folder.

Every refusal raises `PublishError` (or a subclass) and leaves the repository byte-identical.

This module holds the pure steps on staged metadata (describe, add a signature, merge
signatures), the file-level offline signing, and `StagingMixin`, which `StandardsRepository`
(`security.tuf_publish`) mixes in. It does not build targets metadata itself, does not sign or
write snapshot/timestamp (that is `StandardsRepository`'s commit path), keeps no private keys,
and does no network I/O.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securesystemslib.exceptions import UnverifiedSignatureError
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]

from security.keys import NodeKey
from security.standards_trust import (
    RELEASES_DIR,
    PublishError,
    pointer_target,
    tuf_keyid,
    tuf_signer,
)

if TYPE_CHECKING:
    from security.tuf_publish import OnlineKeys

STAGING_DIR = "staging"
STAGED_METADATA = "targets.json"
STAGED_TARGETS = "targets"
_RELEASE_NAME = re.compile(rf"^{RELEASES_DIR}/release-([1-9][0-9]*)\.json$")


class ThresholdNotMetError(PublishError):
    """The staged release has fewer valid administrator signatures than the targets threshold."""

    def __init__(self, version: int, signatures: int, threshold: int) -> None:
        super().__init__(
            f"staged release {version} has {signatures} of {threshold} signatures; "
            f"{threshold - signatures} more administrator(s) must sign it; nothing written"
        )
        self.signatures = signatures
        self.threshold = threshold


@dataclass(frozen=True)
class StagedRelease:
    """What is staged and who signed it.

    `signers` are the TUF key ids of the valid signatures by targets keys of the root; when the
    root is not known (an offline copy signed without `root`), they are the key ids of the
    signatures present, unverified, and `threshold` is None.
    """

    version: int
    target: str
    sha256: str
    length: int
    targets_version: int
    expires: datetime
    signers: tuple[str, ...]
    threshold: int | None
    path: Path

    @property
    def signatures(self) -> int:
        return len(self.signers)

    @property
    def ready(self) -> bool:
        return self.threshold is not None and self.signatures >= self.threshold


# --- pure steps on staged metadata ------------------------------------------------------------


def parse_staged(data: bytes, source: str) -> Metadata[Targets]:
    """Parse a staged file; PublishError naming `source` if it is not staged targets metadata."""
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except Exception as exc:
        raise PublishError(f"{source} is not TUF metadata: {exc}") from None
    if not isinstance(md.signed, Targets):
        raise PublishError(f"{source} holds {md.signed.type} metadata, not a staged targets")
    if not _release_names(md.signed):
        raise PublishError(f"{source} lists no release; it is not a staged release")
    return md


def parse_root(data: bytes, source: str) -> Root:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except Exception as exc:
        raise PublishError(f"{source} is not TUF metadata: {exc}") from None
    if not isinstance(md.signed, Root):
        raise PublishError(f"{source} holds {md.signed.type} metadata, not a root")
    return md.signed


def describe(md: Metadata[Targets], path: Path, root: Root | None) -> StagedRelease:
    """The staged release (the newest release listed: versions only go up) and its signers."""
    version, name = max(_release_names(md.signed))
    info = md.signed.targets[name]
    if root is None:
        signers = sorted(md.signatures)
        threshold = None
    else:
        result = root.get_verification_result("targets", md.signed_bytes, md.signatures)
        signers, threshold = sorted(result.signed), result.threshold
    return StagedRelease(
        version=version,
        target=name,
        sha256=str(info.hashes["sha256"]),
        length=int(info.length),
        targets_version=int(md.signed.version),
        expires=md.signed.expires,
        signers=tuple(signers),
        threshold=threshold,
        path=path,
    )


def add_signature(md: Metadata[Targets], key: NodeKey, root: Root | None) -> None:
    """Append `key`'s signature; refuse a key that is not a targets key of `root`, or a repeat."""
    keyid = tuf_keyid(key.verify_key)
    version = describe(md, Path(), None).version
    if root is not None and keyid not in root.roles["targets"].keyids:
        raise PublishError(
            f"key {keyid[:16]} is not an administrator (targets) key of root "
            f"v{root.version}; nothing written"
        )
    if keyid in md.signatures:
        raise PublishError(
            f"key {keyid[:16]} has already signed staged release {version}; nothing written"
        )
    md.sign(tuf_signer(key), append=True)


def merge_signatures(staged: Metadata[Targets], copy: Metadata[Targets], root: Root) -> int:
    """Add to `staged` the signatures of `copy` it lacks, each verified against `root`'s targets
    keys over the staged signed bytes; return how many were added. Refuses (changing nothing) a
    copy of different content, or any signature that is unknown, invalid or conflicting."""
    payload = staged.signed_bytes
    if copy.signed_bytes != payload:
        raise PublishError(
            "the copy's signed content differs from the staged release (a different or altered "
            "staged file); nothing merged"
        )
    new = {}
    for keyid, sig in copy.signatures.items():
        known = staged.signatures.get(keyid)
        if known is not None and known.signature == sig.signature:
            continue
        if known is not None or keyid not in root.roles["targets"].keyids:
            what = "conflicts with the staged one" if known else "is not by an administrator key"
            raise PublishError(f"signature by {keyid[:16]} {what}; nothing merged")
        try:
            root.get_key(keyid).verify_signature(sig, payload)
        except UnverifiedSignatureError:
            msg = f"signature by {keyid[:16]} does not verify; nothing merged"
            raise PublishError(msg) from None
        new[keyid] = sig
    staged.signatures.update(new)
    return len(new)


def _release_names(targets: Targets) -> list[tuple[int, str]]:
    return [(int(m.group(1)), name) for name in targets.targets if (m := _RELEASE_NAME.match(name))]


# --- a staged file copied to an offline machine -----------------------------------------------


def read_staged_file(path: Path, *, root: bytes | None = None) -> StagedRelease:
    """Describe a staged file (signatures are verified only when the pinned `root` is given)."""
    root_signed = parse_root(root, "root") if root is not None else None
    return describe(parse_staged(path.read_bytes(), str(path)), path, root_signed)


def sign_staged_file(
    path: Path, key: NodeKey, *, root: bytes | None = None, release: bytes | None = None
) -> StagedRelease:
    """Sign a (copied) staged file in place with one administrator key.

    With `root` (the pinned root.json) the key must be one of its targets keys; with `release`
    (the release file the administrator reviewed) the staged hashes must match it. Refusals
    leave the file unchanged."""
    md = parse_staged(path.read_bytes(), str(path))
    root_signed = parse_root(root, "root") if root is not None else None
    if release is not None:
        info = describe(md, path, None)
        try:
            md.signed.targets[info.target].verify_length_and_hashes(release)
        except LengthOrHashMismatchError:
            raise PublishError(
                f"the release file is not the staged {info.target} (sha256 {info.sha256[:16]}…, "
                f"{info.length} bytes); nothing signed"
            ) from None
    add_signature(md, key, root_signed)
    write_atomically(path, md.to_bytes())
    return describe(md, path, root_signed)


# --- the repository side (mixed into StandardsRepository) -------------------------------------


class StagingMixin:
    """Staged releases of a `StandardsRepository`; relies on the three hooks below."""

    root_dir: Path

    def _root(self) -> Metadata[Root]:
        raise NotImplementedError

    def _draft_release(
        self, version: int, data: bytes, now: datetime
    ) -> tuple[Metadata[Targets], dict[str, bytes]]:
        raise NotImplementedError

    def _commit_release(
        self,
        targets_md: Metadata[Targets],
        files: dict[str, bytes],
        *,
        online: OnlineKeys,
        now: datetime,
    ) -> None:
        raise NotImplementedError

    @property
    def staging_dir(self) -> Path:
        return self.root_dir / STAGING_DIR

    @property
    def staged_file(self) -> Path:
        """The file administrators sign (in place, or a copy taken offline and merged back)."""
        return self.staging_dir / STAGED_METADATA

    def stage_release(self, version: int, data: bytes, *, now: datetime) -> StagedRelease:
        """Stage release `version` (unsigned) for administrators to sign one at a time."""
        if self.staging_dir.exists():
            current = self.staged()
            if current is not None and current.version == version:
                raise PublishError(f"release {version} is already staged; sign or discard it")
            what = f"release {current.version}" if current else "a release"
            raise PublishError(f"{what} is already staged; commit or discard it first")
        targets_md, files = self._draft_release(version, data, now)
        tmp = Path(tempfile.mkdtemp(dir=self.root_dir, prefix=".staging-"))
        try:
            for name, blob in files.items():
                write_atomically(tmp / STAGED_TARGETS / name, blob)
            write_atomically(tmp / STAGED_METADATA, targets_md.to_bytes())
            os.rename(tmp, self.staging_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return describe(targets_md, self.staged_file, self._root().signed)

    def staged(self) -> StagedRelease | None:
        """The staged release and its valid signatures, or None if nothing is staged."""
        if not self.staging_dir.exists():
            return None
        return describe(self._staged_md(), self.staged_file, self._root().signed)

    def sign_staged(self, key: NodeKey) -> int:
        """Add one administrator's signature in place; return the number of valid signatures."""
        md, root = self._staged_md(), self._root().signed
        add_signature(md, key, root)
        write_atomically(self.staged_file, md.to_bytes())
        return describe(md, self.staged_file, root).signatures

    def add_staged_signatures(self, file: Path) -> StagedRelease:
        """Merge the signatures of a staged file signed elsewhere (each verified first)."""
        md, root = self._staged_md(), self._root().signed
        if merge_signatures(md, parse_staged(file.read_bytes(), str(file)), root):
            write_atomically(self.staged_file, md.to_bytes())
        return describe(md, self.staged_file, root)

    def commit_staged(self, *, online: OnlineKeys, now: datetime) -> str:
        """Publish the staged release once it carries the threshold; return its target name."""
        md = self._staged_md()
        info = describe(md, self.staged_file, self._root().signed)
        assert info.threshold is not None
        if not info.ready:
            raise ThresholdNotMetError(info.version, info.signatures, info.threshold)
        self._commit_release(md, self._staged_files(md), online=online, now=now)
        shutil.rmtree(self.staging_dir)
        return info.target

    def discard_staged(self) -> StagedRelease | None:
        """Remove the staged release and its signatures; return what was discarded (None if
        the staging folder was damaged and could not be read: it is removed all the same)."""
        if not self.staging_dir.exists():
            raise PublishError("no release is staged")
        try:
            info = self.staged()
        except PublishError:
            info = None
        shutil.rmtree(self.staging_dir)
        return info

    def _staged_md(self) -> Metadata[Targets]:
        if not self.staging_dir.exists():
            raise PublishError("no release is staged; stage one first")
        if not self.staged_file.is_file():
            raise PublishError(f"{self.staged_file} is missing; discard the staged release")
        return parse_staged(self.staged_file.read_bytes(), str(self.staged_file))

    def _staged_files(self, md: Metadata[Targets]) -> dict[str, bytes]:
        """The staged target files, each checked against the staged metadata."""
        base = self.staging_dir / STAGED_TARGETS
        files = {
            p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()
        }
        for name, blob in files.items():
            info = md.signed.targets.get(name)
            try:
                if info is None:
                    raise LengthOrHashMismatchError(name)
                info.verify_length_and_hashes(blob)
            except LengthOrHashMismatchError:
                raise PublishError(
                    f"staged file {name} does not match the staged metadata; nothing written"
                ) from None
        missing = {describe(md, Path(), None).target, pointer_target()} - set(files)
        if missing:
            raise PublishError(f"staged files missing: {', '.join(sorted(missing))}")
        return files


def write_atomically(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` through a temporary file and a rename (never a partial file)."""
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
