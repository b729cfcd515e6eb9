"""Shared vocabulary of the standards trust channel (TUF): names, pointers, keys and errors.

The ministry publishes standards releases and provinces publish local extensions as TUF
targets (`security.tuf_publish`); every node verifies them with python-tuf's ngclient
(`security.tuf_client`). This module holds what both sides agree on:

- target naming: release N is `releases/release-N.json`; the newest release is named by the
  pointer target `current.json` = `{"target": "releases/release-N.json", "version": N}`.
  A province's extension N is `province-<id>/extension-N.json` with the pointer
  `province-<id>/current.json`; the province signs the delegated role `province-<id>`.
- conversion of our PyNaCl Ed25519 keys (`security.keys.NodeKey`) into securesystemslib
  signers and public keys (PyNaCl signs; verification inside python-tuf uses
  securesystemslib's bundled Ed25519 verifier, since pyca/cryptography is not a dependency);
- the closed set of trust errors, each with a wire/metrics `code`.

It does not read files, talk to the network, or interpret release contents (a release is opaque
bytes here; another module builds and parses it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum

from nacl.signing import VerifyKey
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import (  # type: ignore[attr-defined]
    Signature,
    Signer,
    SSlibKey,
)

from security.keys import NodeKey

RELEASES_DIR = "releases"
POINTER_NAME = "current.json"
MAX_POINTER_BYTES = 4096
_PROVINCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


# --- names ------------------------------------------------------------------------------------


def check_province_id(province_id: str) -> str:
    """Return `province_id` if it is safe in a role name and a path; raise ValueError otherwise."""
    if not isinstance(province_id, str) or not _PROVINCE_ID.match(province_id):
        raise ValueError(f"province id {province_id!r} must match {_PROVINCE_ID.pattern}")
    return province_id


def province_role(province_id: str) -> str:
    """Name of the delegated targets role a province signs: `province-<id>`."""
    return f"province-{check_province_id(province_id)}"


def province_prefix(province_id: str) -> str:
    """Target path prefix delegated to a province: `province-<id>/`."""
    return province_role(province_id) + "/"


def release_target(version: int) -> str:
    return f"{RELEASES_DIR}/release-{_check_version(version)}.json"


def extension_target(province_id: str, version: int) -> str:
    return f"{province_prefix(province_id)}extension-{_check_version(version)}.json"


def pointer_target(province_id: str | None = None) -> str:
    """`current.json` for ministry releases, `province-<id>/current.json` for an extension."""
    return POINTER_NAME if province_id is None else province_prefix(province_id) + POINTER_NAME


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return version


# --- pointer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pointer:
    """Content of a `current.json` target: which versioned target is the newest."""

    version: int
    target: str

    def to_bytes(self) -> bytes:
        body = {"target": self.target, "version": self.version}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, expected: str) -> Pointer:
        """Parse a pointer whose target must be `expected` with its version filled in.

        `expected` is a format string such as `releases/release-{}.json`. Raises
        InvalidMetadataError for anything else.
        """
        if len(data) > MAX_POINTER_BYTES:
            raise TooLargeError(f"pointer is {len(data)} bytes, limit {MAX_POINTER_BYTES}")
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidMetadataError("pointer is not JSON") from exc
        if not isinstance(body, dict) or set(body) != {"target", "version"}:
            raise InvalidMetadataError("pointer must be {'target': ..., 'version': ...}")
        version, target = body["version"], body["target"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidMetadataError(f"pointer version {version!r} is not a positive integer")
        if target != expected.format(version):
            raise InvalidMetadataError(
                f"pointer target {target!r} is not {expected.format(version)}"
            )
        return cls(version=version, target=target)


@dataclass(frozen=True)
class VerifiedTarget:
    """A target file whose bytes verified against the ministry's root of trust."""

    name: str
    version: int
    data: bytes
    sha256: str


# --- keys -------------------------------------------------------------------------------------


_ED25519 = "ed25519"


def tuf_public_key(verify_key: VerifyKey) -> SSlibKey:
    """Our Ed25519 public key as a TUF key (key id = SHA-256 of its canonical JSON form)."""
    keyval = {"public": bytes(verify_key).hex()}
    canonical = encode_canonical({"keytype": _ED25519, "scheme": _ED25519, "keyval": keyval})
    assert isinstance(canonical, str)
    keyid = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return SSlibKey(keyid, _ED25519, _ED25519, keyval)


class NaclSigner(Signer):
    """A securesystemslib signer backed by our PyNaCl key.

    securesystemslib's own `CryptoSigner` needs pyca/cryptography, which lsnet does not depend
    on; Ed25519 is deterministic, so these signatures are byte-identical to CryptoSigner's.
    """

    def __init__(self, key: NodeKey) -> None:
        self._key = key
        self._public = tuf_public_key(key.verify_key)

    @property
    def public_key(self) -> SSlibKey:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self._key.sign(payload).hex())

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: object, secrets_handler: object = None
    ) -> NaclSigner:
        raise NotImplementedError("lsnet keys are loaded with security.keys, not by URI")


def tuf_signer(key: NodeKey) -> NaclSigner:
    return NaclSigner(key)


def tuf_keyid(verify_key: VerifyKey) -> str:
    return str(tuf_public_key(verify_key).keyid)


# --- errors -----------------------------------------------------------------------------------


class TrustCode(StrEnum):
    """Closed set of codes for refused standards metadata or targets (wire and metrics)."""

    ROLLBACK = "rollback"
    EXPIRED = "expired"
    UNSIGNED = "unsigned"
    TOO_LARGE = "too_large"
    TARGET_MISMATCH = "target_mismatch"
    MIX_AND_MATCH = "mix_and_match"
    INVALID = "invalid_metadata"
    NOT_FOUND = "not_found"
    FETCH_FAILED = "fetch_failed"


class StandardsTrustError(Exception):
    """Base of every refusal by the standards client; `code` is a TrustCode."""

    code: TrustCode = TrustCode.INVALID
    can_retry = False


class RollbackError(StandardsTrustError):
    """A metadata or release version is lower than one already trusted."""

    code = TrustCode.ROLLBACK


class ExpiredError(StandardsTrustError):
    """Metadata is past its expiry (indefinite freeze): the node keeps its previous release."""

    code = TrustCode.EXPIRED


class UnsignedError(StandardsTrustError):
    """Too few signatures from the keys the delegating role trusts (or unknown keys only)."""

    code = TrustCode.UNSIGNED


class TooLargeError(StandardsTrustError):
    """A download exceeded its byte cap (endless data) or a release is declared too large."""

    code = TrustCode.TOO_LARGE


class TargetMismatchError(StandardsTrustError):
    """A target file's bytes do not match the signed length and hashes (tampered relay copy)."""

    code = TrustCode.TARGET_MISMATCH


class MixAndMatchError(StandardsTrustError):
    """A metadata file does not match the hash/length its snapshot or timestamp signed."""

    code = TrustCode.MIX_AND_MATCH


class InvalidMetadataError(StandardsTrustError):
    """Metadata or a pointer is malformed or breaks the repository rules."""

    code = TrustCode.INVALID


class NotFoundError(StandardsTrustError):
    """The signed metadata does not list the requested target (or not under that role)."""

    code = TrustCode.NOT_FOUND


class FetchError(StandardsTrustError):
    """The parent could not be reached or did not have a file; retry later."""

    code = TrustCode.FETCH_FAILED
    can_retry = True


class StandardsFileMissing(Exception):
    """Raised by a node's `fetch` callable when the parent answers 'no such file' (HTTP 404)."""


class PublishError(Exception):
    """The ministry-side repository refused an operation; nothing was written."""
