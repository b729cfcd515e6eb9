"""Standards trust channel end to end: the ministry publishes with security.tuf_publish, nodes
verify with security.tuf_client, and every TUF attack is refused with its exact error while the
node's trusted state on disk stays byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, MetaFile

from security.standards_trust import (
    ExpiredError,
    FetchError,
    MixAndMatchError,
    NotFoundError,
    RollbackError,
    StandardsTrustError,
    TargetMismatchError,
    TooLargeError,
    TrustCode,
    UnsignedError,
)
from security.tuf_client import StandardsClient
from security.tuf_publish import ExpiryPolicy
from tests.security.test_standards_trust_support import (
    MAX_RELEASE,
    NOW,
    Ministry,
    add_targets,
    copy_repo,
    disk_state,
    fixed_key,
    folder_fetch,
    forge_role,
    make_client,
    make_ministry,
    mapping_fetch,
    pointer,
)


@pytest.fixture
def ministry(tmp_path: Path) -> Ministry:
    m = make_ministry(tmp_path / "ministry")
    m.release(1)
    return m


def client_for(tmp_path: Path, ministry: Ministry, **kwargs: Any) -> StandardsClient:
    return make_client(
        tmp_path,
        ministry.repo.root_bytes(1),
        folder_fetch(ministry.dir),
        clock=lambda: NOW,
        **kwargs,
    )


def refused(client: StandardsClient, error: type[StandardsTrustError]) -> StandardsTrustError:
    """Refresh must raise exactly `error` and leave the trusted state untouched."""
    before = disk_state(client)
    release_before = client._release
    with pytest.raises(StandardsTrustError) as info:
        client.refresh()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert disk_state(client) == before
    assert client._release == release_before
    return info.value


# --- happy paths ------------------------------------------------------------------------------


def test_publish_then_verify(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    release = client.current_release()
    assert (release.name, release.version, release.data) == (
        "releases/release-1.json",
        1,
        b'{"release": 1}',
    )
    assert release.sha256 == hashlib.sha256(release.data).hexdigest()
    data2 = ministry.release(2)
    client.refresh()
    assert client.current_release().version == 2
    assert client.current_release().data == data2
    assert client.expires() == NOW + ExpiryPolicy().timestamp


def test_restart_keeps_verified_release_without_network(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()

    def offline(relative: str, limit: int) -> bytes:
        raise ConnectionError("parent down")

    again = make_client(tmp_path, ministry.repo.root_bytes(1), offline, clock=lambda: NOW)
    assert again.current_release() == client.current_release()
    assert again.served_files() == client.served_files()
    error = refused(again, FetchError)
    assert error.code is TrustCode.FETCH_FAILED and error.can_retry


def test_nothing_verified_yet(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    with pytest.raises(NotFoundError):
        client.current_release()


def test_repository_without_release_is_not_found(tmp_path: Path) -> None:
    empty = make_ministry(tmp_path / "empty")
    client = client_for(tmp_path, empty)
    assert refused(client, NotFoundError).code == "not_found"


# --- key compromise: thresholds ---------------------------------------------------------------


def test_targets_signed_by_one_of_three_is_unsigned(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    evil = {
        "releases/release-9.json": b"evil",
        "current.json": pointer(9, "releases/release-9.json"),
    }
    forge_role(
        ministry, "targets", add_targets(evil, ministry.dir / "targets"), ministry.targets_keys[:1]
    )
    assert refused(client, UnsignedError).code == "unsigned"
    assert client.current_release().version == 1


def test_targets_signed_by_unknown_keys_is_unsigned(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    evil = {
        "releases/release-9.json": b"evil",
        "current.json": pointer(9, "releases/release-9.json"),
    }
    strangers = [fixed_key(40), fixed_key(41), fixed_key(42)]
    forge_role(ministry, "targets", add_targets(evil, ministry.dir / "targets"), strangers)
    refused(client, UnsignedError)


def test_first_contact_with_under_signed_repository_is_refused(
    tmp_path: Path, ministry: Ministry
) -> None:
    evil = {
        "releases/release-9.json": b"evil",
        "current.json": pointer(9, "releases/release-9.json"),
    }
    forge_role(
        ministry, "targets", add_targets(evil, ministry.dir / "targets"), ministry.targets_keys[:1]
    )
    client = client_for(tmp_path, ministry)
    refused(client, UnsignedError)
    with pytest.raises(NotFoundError):
        client.current_release()


# --- rollback ---------------------------------------------------------------------------------


def test_older_repository_state_is_rollback(tmp_path: Path, ministry: Ministry) -> None:
    old_state = copy_repo(ministry.dir, tmp_path / "old-state")
    ministry.release(2)
    relay = tmp_path / "relay"
    shutil.copytree(ministry.dir, relay)
    client = make_client(
        tmp_path, ministry.repo.root_bytes(1), folder_fetch(relay), clock=lambda: NOW
    )
    client.refresh()
    shutil.rmtree(relay)
    shutil.copytree(old_state, relay)  # the relay now replays the older state
    assert refused(client, RollbackError).code == "rollback"
    assert client.current_release().version == 2


def test_snapshot_rollback_with_stolen_timestamp_key(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    repo = ministry.repo
    old_version = repo._timestamp().signed.snapshot_meta.version
    ministry.release(2)
    client.refresh()
    old_bytes = (ministry.dir / "metadata" / f"{old_version}.snapshot.json").read_bytes()
    timestamp = repo._timestamp()
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = MetaFile.from_data(old_version, old_bytes, ["sha256"])
    timestamp.signatures.clear()
    from security.standards_trust import tuf_signer

    timestamp.sign(tuf_signer(ministry.online.timestamp))
    (ministry.dir / "metadata" / "timestamp.json").write_bytes(timestamp.to_bytes())
    refused(client, RollbackError)


def test_targets_rollback_with_stolen_online_keys(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    ministry.release(2)
    client.refresh()
    repo = ministry.repo
    snapshot = repo._snapshot()
    old = ministry.dir / "metadata" / "2.targets.json"
    snapshot.signed.meta["targets.json"] = MetaFile.from_data(2, old.read_bytes(), ["sha256"])
    repo._commit(repo._root().signed, snapshot, repo._timestamp(), {}, ministry.online, NOW)
    refused(client, RollbackError)


def test_release_pointer_rollback_is_refused_even_if_signed(
    tmp_path: Path, ministry: Ministry
) -> None:
    """Defence in depth: a threshold-signed pointer back to an older release is refused."""
    client = client_for(tmp_path, ministry)
    ministry.release(2)
    client.refresh()
    back = {"current.json": pointer(1, "releases/release-1.json")}
    forge_role(
        ministry, "targets", add_targets(back, ministry.dir / "targets"), ministry.targets_keys[:2]
    )
    refused(client, RollbackError)
    assert client.current_release().version == 2


# --- indefinite freeze ------------------------------------------------------------------------


def test_expired_timestamp_with_injected_clock_is_freeze(
    tmp_path: Path, ministry: Ministry
) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    later = make_client(
        tmp_path,
        ministry.repo.root_bytes(1),
        folder_fetch(ministry.dir),
        clock=lambda: NOW + timedelta(days=2),
    )
    assert refused(later, ExpiredError).code == "expired"
    assert later.current_release().version == 1


def test_metadata_already_expired_on_system_clock_is_freeze(tmp_path: Path) -> None:
    """Without an injected clock python-tuf reads the system clock: publish 30 days ago, so the
    root (365 days) is still valid but the timestamp (1 day) has expired."""
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    stale = make_ministry(tmp_path / "stale", now=past)
    stale.release(1, now=past)
    client = make_client(tmp_path, stale.repo.root_bytes(1), folder_fetch(stale.dir))
    error = refused(client, ExpiredError)
    assert "timestamp" in str(error)


def test_refreshed_timestamp_ends_the_freeze(tmp_path: Path, ministry: Ministry) -> None:
    later = NOW + timedelta(days=2)
    client = make_client(
        tmp_path, ministry.repo.root_bytes(1), folder_fetch(ministry.dir), clock=lambda: later
    )
    refused(client, ExpiredError)
    ministry.repo.refresh_timestamp(online=ministry.online, now=later)
    client.refresh()
    assert client.current_release().version == 1


# --- endless data -----------------------------------------------------------------------------


def test_huge_timestamp_is_too_large(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    (ministry.dir / "metadata" / "timestamp.json").write_bytes(b" " * 10_000_000)
    assert refused(client, TooLargeError).code == "too_large"


def test_huge_release_file_from_relay_is_too_large(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    data = ministry.release(2)
    digest = hashlib.sha256(data).hexdigest()
    (ministry.dir / "targets" / "releases" / f"{digest}.release-2.json").write_bytes(
        b"x" * 10_000_000
    )
    refused(client, TooLargeError)
    assert not list(client.target_dir.rglob(f"{digest}*"))


def test_release_declared_larger_than_cap_is_not_downloaded(
    tmp_path: Path, ministry: Ministry
) -> None:
    log: list[str] = []
    client = make_client(
        tmp_path, ministry.repo.root_bytes(1), folder_fetch(ministry.dir, log), clock=lambda: NOW
    )
    ministry.release(2, b"y" * (MAX_RELEASE + 1))
    refused(client, TooLargeError)
    assert not any("release-2" in path for path in log)


# --- mix-and-match ----------------------------------------------------------------------------


def test_snapshot_from_another_state_is_mix_and_match(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    metadata = ministry.dir / "metadata"
    ministry.delegate()
    ministry.extension(1)
    new_version = ministry.repo._timestamp().signed.snapshot_meta.version
    # serve the previous snapshot's bytes under the new snapshot's name
    (metadata / f"{new_version}.snapshot.json").write_bytes(
        (metadata / f"{new_version - 1}.snapshot.json").read_bytes()
    )
    assert refused(client, MixAndMatchError).code == "mix_and_match"


def test_targets_from_another_state_is_mix_and_match(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    ministry.release(2)
    metadata = ministry.dir / "metadata"
    (metadata / "3.targets.json").write_bytes((metadata / "2.targets.json").read_bytes())
    refused(client, MixAndMatchError)


# --- tampered relay copy ----------------------------------------------------------------------


def test_tampered_release_from_relay_is_refused(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    data = ministry.release(2)
    digest = hashlib.sha256(data).hexdigest()
    path = ministry.dir / "targets" / "releases" / f"{digest}.release-2.json"
    path.write_bytes(data.replace(b"2", b"3"))  # same length, other bytes
    assert refused(client, TargetMismatchError).code == "target_mismatch"
    assert client.current_release().version == 1


def test_fetch_failure_is_retryable(tmp_path: Path, ministry: Ministry) -> None:
    def broken(relative: str, limit: int) -> bytes:
        raise OSError("connection reset")

    client = make_client(tmp_path, ministry.repo.root_bytes(1), broken, clock=lambda: NOW)
    error = refused(client, FetchError)
    assert error.can_retry


# --- provinces --------------------------------------------------------------------------------


def test_province_extension_verifies(tmp_path: Path, ministry: Ministry) -> None:
    ministry.delegate()
    client = client_for(tmp_path, ministry, provinces=["330000"])
    client.refresh()
    assert client.extension("330000") is None  # delegated, nothing published yet
    data = ministry.extension(1)
    client.refresh()
    ext = client.extension("330000")
    assert ext is not None and (ext.name, ext.version, ext.data) == (
        "province-330000/extension-1.json",
        1,
        data,
    )
    with pytest.raises(ValueError):
        client.extension("320000")


def test_province_cannot_publish_releases(tmp_path: Path, ministry: Ministry) -> None:
    ministry.delegate()
    ministry.extension(1)
    evil = {
        "releases/release-99.json": b"province release",
        "current.json": pointer(99, "releases/release-99.json"),
        "province-330000/current.json": pointer(2, "province-330000/extension-2.json"),
        "province-330000/extension-2.json": b"ext 2",
    }
    forge_role(
        ministry,
        "province-330000",
        add_targets(evil, ministry.dir / "targets"),
        [ministry.province_key],
    )
    client = client_for(tmp_path, ministry, provinces=["330000"])
    client.refresh()
    assert client.current_release().version == 1
    assert client.current_release().data == b'{"release": 1}'
    ext = client.extension("330000")
    assert ext is not None and ext.version == 2


def test_province_key_cannot_sign_another_provinces_role(
    tmp_path: Path, ministry: Ministry
) -> None:
    ministry.delegate("330000")
    ministry.delegate("320000", key=fixed_key(30))
    evil = {
        "province-320000/current.json": pointer(1, "province-320000/extension-1.json"),
        "province-320000/extension-1.json": b"forged",
    }
    forge_role(
        ministry,
        "province-320000",
        add_targets(evil, ministry.dir / "targets"),
        [ministry.province_key],
    )
    client = client_for(tmp_path, ministry, provinces=["320000"])
    refused(client, UnsignedError)


def test_province_paths_outside_delegation_are_not_found(
    tmp_path: Path, ministry: Ministry
) -> None:
    ministry.delegate("330000")
    ministry.delegate("320000", key=fixed_key(30))
    evil = {
        "province-320000/current.json": pointer(1, "province-320000/extension-1.json"),
        "province-320000/extension-1.json": b"forged",
    }
    # Listed inside province-330000's own (correctly signed) role: never consulted for 320000.
    forge_role(
        ministry,
        "province-330000",
        add_targets(evil, ministry.dir / "targets"),
        [ministry.province_key],
    )
    client = client_for(tmp_path, ministry, provinces=["320000"])
    client.refresh()
    assert client.extension("320000") is None


# --- root rotation ----------------------------------------------------------------------------


def test_root_rotation_is_followed_and_old_keys_are_then_insufficient(
    tmp_path: Path, ministry: Ministry
) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    new_keys = [fixed_key(i) for i in (11, 12, 13)]
    version = ministry.repo.rotate_root(
        new_root_keys=new_keys,
        new_threshold=2,
        old_signing_keys=ministry.root_keys[:2],
        new_signing_keys=new_keys[:2],
        now=NOW,
    )
    assert version == 2
    ministry.release(2)
    client.refresh()
    assert client.current_release().version == 2
    assert "metadata/2.root.json" in client.served_files()

    # Root 3 signed only by the old keys (the ones an attacker might still hold).
    root3: Metadata[Any] = Metadata.from_bytes(ministry.repo.root_bytes(2))
    root3.signed.version = 3
    root3.signatures.clear()
    from security.standards_trust import tuf_signer

    for key in ministry.root_keys:
        root3.sign(tuf_signer(key), append=True)
    (ministry.dir / "metadata" / "3.root.json").write_bytes(root3.to_bytes())
    refused(client, UnsignedError)
    assert "metadata/3.root.json" not in client.served_files()


def test_new_root_without_old_threshold_is_refused(tmp_path: Path, ministry: Ministry) -> None:
    client = client_for(tmp_path, ministry)
    client.refresh()
    root2: Metadata[Any] = Metadata.from_bytes(ministry.repo.root_bytes(1))
    root2.signed.version = 2
    new_keys = [fixed_key(i) for i in (11, 12)]
    from security.standards_trust import tuf_keyid, tuf_public_key, tuf_signer

    for keyid in list(root2.signed.roles["root"].keyids):
        root2.signed.revoke_key(keyid, "root")
    for key in new_keys:
        root2.signed.add_key(tuf_public_key(key.verify_key), "root")
    root2.signatures.clear()
    for key in [*new_keys, ministry.root_keys[0]]:  # only one old signature
        root2.sign(tuf_signer(key), append=True)
    assert tuf_keyid(new_keys[0].verify_key) in root2.signed.roles["root"].keyids
    (ministry.dir / "metadata" / "2.root.json").write_bytes(root2.to_bytes())
    refused(client, UnsignedError)


# --- re-serving to children -------------------------------------------------------------------


def test_node_reserves_its_verified_copy_to_a_grandchild(
    tmp_path: Path, ministry: Ministry
) -> None:
    ministry.delegate()
    ext_data = ministry.extension(1)
    province = client_for(tmp_path, ministry, name="province", provinces=["330000"])
    province.refresh()
    served = province.served_files()
    for path, data in served.items():
        assert (ministry.dir / path).read_bytes() == data, path  # exactly the ministry's bytes
    city = make_client(
        tmp_path,
        ministry.repo.root_bytes(1),
        mapping_fetch(served),
        name="city",
        provinces=["330000"],
        clock=lambda: NOW,
    )
    city.refresh()
    assert city.current_release() == province.current_release()
    ext = city.extension("330000")
    assert ext is not None and ext.data == ext_data
    grandchild = make_client(
        tmp_path,
        ministry.repo.root_bytes(1),
        mapping_fetch(city.served_files()),
        name="g",
        clock=lambda: NOW,
    )
    grandchild.refresh()
    assert grandchild.current_release().data == b'{"release": 1}'


def test_relaying_province_cannot_alter_what_it_serves(tmp_path: Path, ministry: Ministry) -> None:
    province = client_for(tmp_path, ministry, name="province")
    province.refresh()
    served = dict(province.served_files())
    name = next(p for p in served if "release-1" in p)
    served[name] = served[name].replace(b"1", b"7")
    city = make_client(
        tmp_path, ministry.repo.root_bytes(1), mapping_fetch(served), name="city", clock=lambda: NOW
    )
    refused(city, TargetMismatchError)


def test_served_files_after_rotation_include_root_chain(tmp_path: Path, ministry: Ministry) -> None:
    province = client_for(tmp_path, ministry, name="province")
    province.refresh()
    ministry.repo.rotate_root(
        new_root_keys=ministry.root_keys[1:],
        new_threshold=2,
        old_signing_keys=ministry.root_keys[:2],
        new_signing_keys=ministry.root_keys[1:],
        now=NOW,
    )
    province.refresh()
    city = make_client(
        tmp_path,
        ministry.repo.root_bytes(1),
        mapping_fetch(province.served_files()),
        name="city",
        clock=lambda: NOW,
    )
    city.refresh()
    assert city.current_release().version == 1
    assert {"metadata/1.root.json", "metadata/2.root.json"} <= set(city.served_files())
