"""security.tuf_publish: the ministry's repository folder — layout, thresholds and refusals that
leave the folder untouched; and security.standards_trust key conversion and pointers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from security.standards_trust import (
    InvalidMetadataError,
    Pointer,
    PublishError,
    tuf_keyid,
    tuf_public_key,
    tuf_signer,
)
from tests.security.test_standards_trust_support import (
    NOW,
    Ministry,
    fixed_key,
    make_ministry,
)


@pytest.fixture
def ministry(tmp_path: Path) -> Ministry:
    return make_ministry(tmp_path / "ministry")


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_init_layout_and_roles(ministry: Ministry) -> None:
    names = set(files(ministry.dir))
    assert names == {
        "metadata/1.root.json",
        "metadata/1.targets.json",
        "metadata/1.snapshot.json",
        "metadata/timestamp.json",
    }
    root = Metadata.from_bytes(ministry.repo.root_bytes()).signed
    assert root.consistent_snapshot is True
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    assert root.roles["targets"].threshold == 2 and len(root.roles["targets"].keyids) == 3
    assert root.expires == NOW.replace(year=2026)
    with pytest.raises(PublishError):
        ministry.repo.init(
            root_keys=ministry.root_keys,
            root_threshold=2,
            targets_keys=ministry.targets_keys,
            targets_threshold=2,
            online=ministry.online,
            now=NOW,
        )


def test_release_layout_is_servable(ministry: Ministry) -> None:
    ministry.release(1, b"payload")
    ministry.delegate()
    ministry.extension(1)
    names = set(files(ministry.dir))
    assert {
        "metadata/2.targets.json",
        "metadata/3.targets.json",
        "metadata/4.snapshot.json",
        "metadata/1.province-330000.json",
    } <= names
    released = [n for n in names if n.startswith("targets/releases/")]
    assert len(released) == 1 and released[0].endswith(".release-1.json")
    assert any(n.startswith("targets/province-330000/") for n in names)
    targets = Metadata.from_bytes((ministry.dir / "metadata/3.targets.json").read_bytes()).signed
    role = targets.delegations.roles["province-330000"]
    assert role.terminating and role.paths == ["province-330000/*"] and role.threshold == 1


@pytest.mark.parametrize(
    "keys",
    [[4], [40, 41], [4, 4]],
    ids=["one-of-three", "unknown-keys", "same-key-twice"],
)
def test_under_signed_release_is_refused_and_nothing_written(
    ministry: Ministry, keys: list[int]
) -> None:
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="needs 2 valid signatures"):
        ministry.repo.add_release(
            1, b"x", targets_keys=[fixed_key(k) for k in keys], online=ministry.online, now=NOW
        )
    assert files(ministry.dir) == before


def test_wrong_online_key_writes_nothing(ministry: Ministry) -> None:
    from security.tuf_publish import OnlineKeys

    before = files(ministry.dir)
    with pytest.raises(PublishError, match="snapshot"):
        ministry.repo.add_release(
            1,
            b"x",
            targets_keys=ministry.targets_keys[:2],
            online=OnlineKeys(snapshot=fixed_key(50), timestamp=ministry.online.timestamp),
            now=NOW,
        )
    assert files(ministry.dir) == before


def test_release_versions_only_go_up(ministry: Ministry) -> None:
    ministry.release(2)
    for version in (1, 2):
        with pytest.raises(PublishError):
            ministry.release(version)


def test_extension_needs_delegation_and_the_delegated_key(ministry: Ministry) -> None:
    with pytest.raises(PublishError, match="not delegated"):
        ministry.extension(1)
    ministry.delegate()
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="province-330000 needs 1 valid"):
        ministry.repo.add_extension(
            "330000", 1, b"x", province_key=fixed_key(60), online=ministry.online, now=NOW
        )
    assert (
        set(files(ministry.dir)) - set(before)
        <= {n for n in files(ministry.dir) if n.startswith("targets/")}
        or files(ministry.dir) == before
    )


def test_bad_province_ids_are_refused(ministry: Ministry) -> None:
    for bad in ("../x", "a/b", "", "x" * 40):
        with pytest.raises(ValueError):
            ministry.delegate(bad)


def test_root_rotation_needs_old_and_new_thresholds(ministry: Ministry) -> None:
    new = [fixed_key(i) for i in (11, 12, 13)]
    with pytest.raises(PublishError, match="old root"):
        ministry.repo.rotate_root(
            new_root_keys=new,
            new_threshold=2,
            old_signing_keys=ministry.root_keys[:1],
            new_signing_keys=new[:2],
            now=NOW,
        )
    with pytest.raises(PublishError, match="new root"):
        ministry.repo.rotate_root(
            new_root_keys=new,
            new_threshold=2,
            old_signing_keys=ministry.root_keys[:2],
            new_signing_keys=new[:1],
            now=NOW,
        )
    assert not (ministry.dir / "metadata/2.root.json").exists()
    ministry.repo.rotate_root(
        new_root_keys=new,
        new_threshold=2,
        old_signing_keys=ministry.root_keys[:2],
        new_signing_keys=new[:2],
        now=NOW,
    )
    root2 = Metadata.from_bytes(ministry.repo.root_bytes()).signed
    assert root2.version == 2
    assert set(root2.roles["root"].keyids) == {tuf_keyid(k.verify_key) for k in new}


def test_naive_now_is_refused(ministry: Ministry) -> None:
    with pytest.raises(PublishError, match="UTC"):
        ministry.repo.refresh_timestamp(online=ministry.online, now=datetime(2025, 1, 1))  # noqa: DTZ001


def test_refresh_timestamp_bumps_online_roles(ministry: Ministry) -> None:
    ministry.repo.refresh_timestamp(online=ministry.online, now=NOW)
    timestamp = Metadata.from_bytes((ministry.dir / "metadata/timestamp.json").read_bytes()).signed
    assert timestamp.version == 2 and timestamp.snapshot_meta.version == 2


def test_nacl_signer_matches_node_key() -> None:
    key = fixed_key(1)
    signer = tuf_signer(key)
    public = tuf_public_key(key.verify_key)
    assert public.keyval == {"public": bytes(key.verify_key).hex()}
    assert signer.public_key.keyid == public.keyid == tuf_keyid(key.verify_key)
    sig = signer.sign(b"payload")
    assert bytes.fromhex(sig.signature) == key.sign(b"payload")
    public.verify_signature(sig, b"payload")


def test_pointer_round_trip_and_strictness() -> None:
    fmt = "releases/release-{}.json"
    p = Pointer(3, "releases/release-3.json")
    assert Pointer.from_bytes(p.to_bytes(), fmt) == p
    bad = [
        b"not json",
        json.dumps({"version": 3}).encode(),
        json.dumps({"version": 3, "target": "releases/release-4.json"}).encode(),
        json.dumps({"version": 0, "target": "releases/release-0.json"}).encode(),
        json.dumps({"version": True, "target": "releases/release-True.json"}).encode(),
        json.dumps({"version": 3, "target": "province-1/x", "extra": 1}).encode(),
    ]
    for data in bad:
        with pytest.raises(InvalidMetadataError):
            Pointer.from_bytes(data, fmt)
