"""Ed25519 node keys: generate, save, load, and refer to them by key id.

A plain key file holds one line `ed25519-seed:<base64 of the 32-byte seed>` (plus comment lines).
A passphrase-protected file holds instead a `kdf:` line (algorithm, limits and random salt), a
`cipher:` line and `ed25519-seed-sealed:<base64 of nonce + ciphertext>`: the seed sealed with
XSalsa20-Poly1305 (`nacl.secret.SecretBox`) under a key derived from the passphrase with
argon2id. The limits are read back from the file, so they can be raised later without breaking
old files. Either kind must be readable by its owner only; `load_signing_key` refuses a file that
group or others can read. Public keys travel as `ed25519:<base64>`.

This module does not sign protocol messages (see `security.signing`), and it does not decide
where a passphrase comes from (environment variable, file): callers pass the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

PUBLIC_PREFIX = "ed25519:"
SEED_PREFIX = "ed25519-seed:"
SEALED_PREFIX = "ed25519-seed-sealed:"
KDF_PREFIX = "kdf:"
CIPHER_PREFIX = "cipher:"
KDF_ARGON2ID = "argon2id"
CIPHER_SECRETBOX = "xsalsa20-poly1305"
PASSPHRASE_ENV = "LSNET_KEY_PASSPHRASE"
# Upper bounds on limits read from a file, so a damaged file cannot make loading take minutes or
# exhaust memory (argon2id SENSITIVE is 4 passes over 1 GiB).
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 4 * 1024**3


class KeyError_(Exception):
    """Base for key problems (kept distinct from the built-in KeyError)."""


class KeyFileError(KeyError_):
    """A key file is missing, malformed or has unsafe permissions."""


class PassphraseRequired(KeyFileError):
    """The key file is sealed and no passphrase was given."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open the sealed key file (or the file was altered)."""


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


@dataclass(frozen=True)
class KdfLimits:
    """argon2id work factors; stored in every sealed file next to its salt."""

    opslimit: int = argon2id.OPSLIMIT_MODERATE
    memlimit: int = argon2id.MEMLIMIT_MODERATE

    def check(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= MAX_OPSLIMIT:
            raise KeyFileError(
                f"argon2id opslimit {self.opslimit} outside {argon2id.OPSLIMIT_MIN}..{MAX_OPSLIMIT}"
            )
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT:
            raise KeyFileError(
                f"argon2id memlimit {self.memlimit} outside {argon2id.MEMLIMIT_MIN}..{MAX_MEMLIMIT}"
            )


MODERATE = KdfLimits()


def _derive(passphrase: bytes, salt: bytes, limits: KdfLimits) -> bytes:
    return bytes(
        argon2id.kdf(
            SecretBox.KEY_SIZE,
            passphrase,
            salt,
            opslimit=limits.opslimit,
            memlimit=limits.memlimit,
        )
    )


def _sealed_lines(seed: bytes, passphrase: bytes, limits: KdfLimits) -> str:
    if not passphrase:
        raise KeyFileError("passphrase must not be empty")
    limits.check()
    salt = os.urandom(argon2id.SALTBYTES)
    sealed = SecretBox(_derive(passphrase, salt, limits)).encrypt(seed)
    b64 = base64.b64encode
    return (
        f"{KDF_PREFIX} {KDF_ARGON2ID} opslimit={limits.opslimit} memlimit={limits.memlimit} "
        f"salt={b64(salt).decode('ascii')}\n"
        f"{CIPHER_PREFIX} {CIPHER_SECRETBOX}\n"
        f"{SEALED_PREFIX}{b64(bytes(sealed)).decode('ascii')}\n"
    )


def write_key_file(
    path: Path,
    key: NodeKey,
    *,
    overwrite: bool = False,
    passphrase: bytes | None = None,
    limits: KdfLimits = MODERATE,
) -> None:
    """Write `key` to `path` with mode 0600, created atomically (temporary file + rename).

    With `passphrase` the seed is sealed (argon2id + XSalsa20-Poly1305); without, it is stored
    in the clear."""
    if path.is_dir():
        raise KeyFileError(f"{path} is a directory; give the path of the key file to write")
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: file exists; refusing to overwrite a key")
    seed = bytes(key.signing_key)
    if passphrase is None:
        kind = "Keep secret; mode 0600."
        secret = f"{SEED_PREFIX}{base64.b64encode(seed).decode('ascii')}\n"
    else:
        kind = "Sealed with a passphrase; keep secret; mode 0600."
        secret = _sealed_lines(seed, passphrase, limits)
    body = (
        f"# lsnet node signing key (Ed25519). {kind}\n"
        f"# public key: {key.public}\n# key id: {key.kid}\n{secret}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def is_sealed_key_file(path: Path) -> bool:
    """Whether the key file at `path` is passphrase-protected (same checks as loading)."""
    return any(line.startswith(SEALED_PREFIX) for line in _read_key_lines(path))


def _read_key_lines(path: Path) -> list[str]:
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
    return [line.strip() for line in text.splitlines()]


def _b64(path: Path, what: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{path}: {what} is not valid base64") from exc


def _parse_kdf(path: Path, line: str) -> tuple[bytes, KdfLimits]:
    parts = line[len(KDF_PREFIX) :].split()
    if not parts or parts[0] != KDF_ARGON2ID:
        raise KeyFileError(f"{path}: unsupported key derivation {' '.join(parts[:1])!r}")
    fields = dict(p.partition("=")[::2] for p in parts[1:])
    try:
        limits = KdfLimits(int(fields["opslimit"]), int(fields["memlimit"]))
        salt = _b64(path, "kdf salt", fields["salt"])
    except (KeyError, ValueError) as exc:
        raise KeyFileError(f"{path}: malformed '{KDF_PREFIX}' line") from exc
    if len(salt) != argon2id.SALTBYTES:
        raise KeyFileError(f"{path}: kdf salt must be {argon2id.SALTBYTES} bytes")
    limits.check()
    return salt, limits


def _open_sealed(path: Path, lines: list[str], sealed_line: str, passphrase: bytes) -> bytes:
    kdf = next((ln for ln in lines if ln.startswith(KDF_PREFIX)), None)
    cipher = next((ln for ln in lines if ln.startswith(CIPHER_PREFIX)), None)
    if kdf is None or cipher is None:
        raise KeyFileError(f"{path}: sealed key file lacks its '{KDF_PREFIX}' or '{CIPHER_PREFIX}'")
    if cipher[len(CIPHER_PREFIX) :].strip() != CIPHER_SECRETBOX:
        raise KeyFileError(f"{path}: unsupported cipher {cipher[len(CIPHER_PREFIX) :].strip()!r}")
    salt, limits = _parse_kdf(path, kdf)
    box = _b64(path, "sealed key", sealed_line[len(SEALED_PREFIX) :])
    try:
        return bytes(SecretBox(_derive(passphrase, salt, limits)).decrypt(box))
    except CryptoError:
        raise WrongPassphrase(f"{path}: wrong passphrase") from None


def load_signing_key(path: Path, passphrase: bytes | None = None) -> NodeKey:
    """Load a plain or sealed key file, refusing one that group or others may read.

    A sealed file needs `passphrase`; when none is given, the environment variable
    LSNET_KEY_PASSPHRASE is used, so every command that loads the node key (run, init, verify,
    audit, tokens, enroll …) opens a sealed key the same way. PassphraseRequired if there is
    none, WrongPassphrase if it does not open the file; a passphrase for a plain file is ignored."""
    lines = _read_key_lines(path)
    for line in lines:
        if line.startswith(SEED_PREFIX):
            seed = _b64(path, "key seed", line[len(SEED_PREFIX) :])
            break
        if line.startswith(SEALED_PREFIX):
            if passphrase is None and os.environ.get(PASSPHRASE_ENV):
                passphrase = os.environ[PASSPHRASE_ENV].encode("utf-8")
            if passphrase is None:
                raise PassphraseRequired(
                    f"{path}: key file is passphrase-protected; set {PASSPHRASE_ENV}"
                )
            seed = _open_sealed(path, lines, line, passphrase)
            break
    else:
        raise KeyFileError(f"{path}: no '{SEED_PREFIX}' line found; is this an lsnet key file?")
    if len(seed) != 32:
        raise KeyFileError(f"{path}: key seed must be 32 bytes, got {len(seed)}")
    return NodeKey(SigningKey(seed))


def retired_key_path(key_file: Path, kid: str) -> Path:
    """Where `lsnet keys rotate` keeps a node's key after replacing it."""
    return key_file.with_name(f"{key_file.name}.retired-{kid}")


def retired_verify_keys(key_file: Path, passphrase: bytes | None = None) -> dict[str, VerifyKey]:
    """The public halves of the keys this node used before its rotations, by key id (to verify
    what they signed: the node's older batches and audit entries)."""
    keys = {}
    for path in sorted(key_file.parent.glob(key_file.name + ".retired-*")):
        old = load_signing_key(path, passphrase).verify_key
        keys[key_id(old)] = old
    return keys
