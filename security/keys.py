"""Ed25519 node keys: generate, save, load, and refer to them by key id.

A key file holds one line `ed25519-seed:<base64 of the 32-byte seed>` (plus comment lines) and
must be readable by its owner only; `load_signing_key` refuses a file that group or others can
read. Public keys travel as `ed25519:<base64>`. This module does not sign protocol messages (see
`security.signing`) and does not encrypt key files (a later issue adds passphrases).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

PUBLIC_PREFIX = "ed25519:"
SEED_PREFIX = "ed25519-seed:"


class KeyError_(Exception):
    """Base for key problems (kept distinct from the built-in KeyError)."""


class KeyFileError(KeyError_):
    """A key file is missing, malformed or has unsafe permissions."""


class PublicKeyFormatError(KeyError_, ValueError):
    """A public key string is not `ed25519:<base64 of 32 bytes>`."""


def key_id(verify_key: VerifyKey) -> str:
    """Short, stable id of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def encode_public_key(verify_key: VerifyKey) -> str:
    return PUBLIC_PREFIX + base64.b64encode(bytes(verify_key)).decode("ascii")


def parse_public_key(text: str) -> VerifyKey:
    """Parse `ed25519:<base64>`; raise PublicKeyFormatError with the reason otherwise."""
    if not isinstance(text, str) or not text.startswith(PUBLIC_PREFIX):
        raise PublicKeyFormatError(f"public key must start with '{PUBLIC_PREFIX}'")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PublicKeyFormatError("public key is not valid base64") from exc
    if len(raw) != 32:
        raise PublicKeyFormatError(f"public key must be 32 bytes, got {len(raw)}")
    return VerifyKey(raw)


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key with its public half and key id."""

    signing_key: SigningKey

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    @property
    def public(self) -> str:
        return encode_public_key(self.verify_key)

    @property
    def kid(self) -> str:
        return key_id(self.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes) over `message`."""
        return bytes(self.signing_key.sign(message).signature)

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(SigningKey.generate())


def write_key_file(path: Path, key: NodeKey, *, overwrite: bool = False) -> None:
    """Write `key` to `path` with mode 0600, created atomically."""
    if path.is_dir():
        raise KeyFileError(f"{path} is a directory; give the path of the key file to write")
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: file exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    seed = base64.b64encode(bytes(key.signing_key)).decode("ascii")
    body = (
        "# lsnet node signing key (Ed25519). Keep secret; mode 0600.\n"
        f"# public key: {key.public}\n# key id: {key.kid}\n{SEED_PREFIX}{seed}\n"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_signing_key(path: Path) -> NodeKey:
    """Load a key file, refusing one that group or others may read."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"{path}: key file not found; create it with 'lsnet keys generate --out {path}'"
        ) from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'"
        )
    text = path.read_text(encoding="ascii", errors="replace")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(SEED_PREFIX):
            try:
                seed = base64.b64decode(line[len(SEED_PREFIX) :], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KeyFileError(f"{path}: key seed is not valid base64") from exc
            if len(seed) != 32:
                raise KeyFileError(f"{path}: key seed must be 32 bytes, got {len(seed)}")
            return NodeKey(SigningKey(seed))
    raise KeyFileError(f"{path}: no '{SEED_PREFIX}' line found; is this an lsnet key file?")
