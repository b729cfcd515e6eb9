"""security.keys and security.signing: key files, public key strings, key ids, and signatures that
are bound to their purpose."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from security.keys import (
    KeyFileError,
    NodeKey,
    PublicKeyFormatError,
    encode_public_key,
    key_id,
    load_signing_key,
    parse_public_key,
    write_key_file,
)
from security.signing import SIGNATURE_BYTES, SignatureInvalid, sign, verify

FIXED = NodeKey(SigningKey(bytes(range(32))))


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "node.key"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- key files -------------------------------------------------------------------------------------


def test_generate_write_load_round_trip(key_path: Path) -> None:
    key = NodeKey.generate()
    write_key_file(key_path, key)
    loaded = load_signing_key(key_path)
    assert bytes(loaded.signing_key) == bytes(key.signing_key)
    assert (loaded.public, loaded.kid) == (key.public, key.kid)
    text = key_path.read_text(encoding="ascii")
    assert key.public in text and key.kid in text  # the comments help an operator
    assert not key_path.with_name("node.key.tmp").exists()


def test_key_file_is_written_with_mode_0600(key_path: Path, open_umask: None) -> None:
    write_key_file(key_path, NodeKey.generate())
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_an_existing_key_is_not_overwritten_unless_asked(key_path: Path) -> None:
    first, second = NodeKey.generate(), NodeKey.generate()
    write_key_file(key_path, first)
    with pytest.raises(KeyFileError, match="exists"):
        write_key_file(key_path, second)
    assert load_signing_key(key_path).kid == first.kid
    write_key_file(key_path, second, overwrite=True)
    assert load_signing_key(key_path).kid == second.kid
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o040, 0o610])
def test_key_readable_by_group_or_others_is_refused(key_path: Path, mode: int) -> None:
    write_key_file(key_path, NodeKey.generate())
    key_path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_signing_key(key_path)
    message = str(info.value)
    assert f"chmod 600 {key_path}" in message
    assert f"{mode:04o}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(key_path: Path, mode: int) -> None:
    write_key_file(key_path, FIXED)
    key_path.chmod(mode)
    assert load_signing_key(key_path).kid == FIXED.kid


def test_missing_key_file_says_how_to_make_one(key_path: Path) -> None:
    with pytest.raises(KeyFileError, match="lsnet keys generate"):
        load_signing_key(key_path)


def _write_raw(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no 'ed25519-seed:' line"),
        ("# only a comment\n", "no 'ed25519-seed:' line"),
        (f"{FIXED.public}\n", "no 'ed25519-seed:' line"),  # a public key is not a key file
        ("ed25519-seed:not base64!\n", "not valid base64"),
        ("ed25519-seed:" + base64.b64encode(b"\x01" * 31).decode() + "\n", "32 bytes, got 31"),
        ("ed25519-seed:" + base64.b64encode(b"\x01" * 64).decode() + "\n", "32 bytes, got 64"),
    ],
)
def test_malformed_key_files_are_refused(key_path: Path, text: str, reason: str) -> None:
    _write_raw(key_path, text)
    with pytest.raises(KeyFileError, match=reason) as info:
        load_signing_key(key_path)
    assert str(key_path) in str(info.value)


def test_seed_line_may_sit_among_comments_and_blanks(key_path: Path) -> None:
    seed = base64.b64encode(bytes(FIXED.signing_key)).decode()
    _write_raw(key_path, f"# comment\n\n   ed25519-seed:{seed}   \n# trailer\n")
    assert load_signing_key(key_path).kid == FIXED.kid


# -- public keys and key ids -----------------------------------------------------------------------


def test_public_key_round_trip() -> None:
    text = encode_public_key(FIXED.verify_key)
    assert text == FIXED.public == "ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    assert bytes(parse_public_key(text)) == bytes(FIXED.verify_key)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", "must start with"),
        ("ed448:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", "must start with"),
        ("ED25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", "must start with"),
        ("ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg", "base64"),
        ("ed25519:***", "base64"),
        ("ed25519:" + base64.b64encode(b"\x02" * 31).decode(), "32 bytes, got 31"),
        ("ed25519:", "32 bytes, got 0"),
        (None, "must start with"),
        (b"ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", "must start with"),
    ],
)
def test_parse_public_key_errors(text: object, reason: str) -> None:
    with pytest.raises(PublicKeyFormatError, match=reason) as info:
        parse_public_key(text)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)  # callers catching ValueError see it too


def test_key_id_is_stable_and_short() -> None:
    assert FIXED.kid == key_id(FIXED.verify_key) == "56475aa75463474c"
    assert FIXED.kid == hashlib.sha256(bytes(FIXED.verify_key)).hexdigest()[:16]
    again = NodeKey(SigningKey(bytes(range(32))))
    assert again.kid == FIXED.kid
    assert NodeKey.generate().kid != FIXED.kid


# -- signatures ------------------------------------------------------------------------------------


def test_signature_verifies_for_its_purpose_only() -> None:
    data = b"header bytes"
    signature = sign(FIXED, "batch", data)
    assert len(signature) == SIGNATURE_BYTES
    verify(FIXED.verify_key, "batch", data, signature)
    for purpose in ("push", "push-reply", "batch ", "batc", ""):
        with pytest.raises(SignatureInvalid):
            verify(FIXED.verify_key, purpose, data, signature)


def test_purpose_and_data_cannot_be_shifted_into_each_other() -> None:
    signature = sign(FIXED, "push", b"-reply")
    with pytest.raises(SignatureInvalid):
        verify(FIXED.verify_key, "push-reply", b"", signature)


def test_a_bare_signature_is_not_a_protocol_signature() -> None:
    data = b"envelope"
    with pytest.raises(SignatureInvalid):
        verify(FIXED.verify_key, "push", data, FIXED.sign(data))


def test_signature_fails_for_other_bytes_keys_and_lengths() -> None:
    data = b"envelope"
    signature = sign(FIXED, "push", data)
    assert sign(FIXED, "push", data) == signature  # Ed25519 is deterministic
    with pytest.raises(SignatureInvalid):
        verify(FIXED.verify_key, "push", data + b"!", signature)
    with pytest.raises(SignatureInvalid):
        verify(NodeKey.generate().verify_key, "push", data, signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(SignatureInvalid):
        verify(FIXED.verify_key, "push", data, flipped)
    for bad in (b"", signature[:-1], signature + b"\x00"):
        with pytest.raises(SignatureInvalid, match="64 bytes"):
            verify(FIXED.verify_key, "push", data, bad)
