"""security.tuf_staging: stage a release, sign it one administrator at a time (in place or on a
copy taken offline), commit once the threshold is met; every refusal leaves the folder as it was."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import Signature  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata

from security.standards_trust import PublishError, tuf_keyid, tuf_signer
from security.tuf_staging import (
    ThresholdNotMetError,
    read_staged_file,
    sign_staged_file,
)
from tests.security.test_standards_trust_support import (
    NOW,
    Ministry,
    fixed_key,
    folder_fetch,
    make_client,
    make_ministry,
)

DATA = b'{"release": 2}'


@pytest.fixture
def ministry(tmp_path: Path) -> Ministry:
    ministry = make_ministry(tmp_path / "ministry")
    ministry.release(1)
    return ministry


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def published(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(root).items() if not k.startswith("staging/")}


def test_stage_sign_separately_commit_and_a_node_verifies(
    ministry: Ministry, tmp_path: Path
) -> None:
    repo, (admin_a, admin_b, _) = ministry.repo, ministry.targets_keys
    before = files(ministry.dir)
    staged = repo.stage_release(2, DATA, now=NOW)
    assert (staged.version, staged.target, staged.signatures, staged.threshold) == (
        2,
        "releases/release-2.json",
        0,
        2,
    )
    assert staged.path == ministry.dir / "staging" / "targets.json"
    assert published(ministry.dir) == before  # nodes see nothing new
    assert repo.sign_staged(admin_a) == 1
    assert repo.sign_staged(admin_b) == 2
    info = repo.staged()
    assert info is not None and info.ready
    assert set(info.signers) == {tuf_keyid(k.verify_key) for k in (admin_a, admin_b)}

    fetch = folder_fetch(ministry.dir)
    client = make_client(tmp_path, repo.root_bytes(1), fetch, clock=lambda: NOW)
    client.refresh()
    assert client.current_release().version == 1

    assert repo.commit_staged(online=ministry.online, now=NOW) == "releases/release-2.json"
    assert repo.staged() is None and not (ministry.dir / "staging").exists()
    client.refresh()
    release = client.current_release()
    assert (release.version, release.data) == (2, DATA)


def test_staging_goes_through_the_same_commit_as_add_release(
    ministry: Ministry, tmp_path: Path
) -> None:
    twin = make_ministry(tmp_path / "twin")
    twin.release(1)
    twin.release(2, DATA)
    ministry.repo.stage_release(2, DATA, now=NOW)
    for key in ministry.targets_keys[:2]:
        ministry.repo.sign_staged(key)
    ministry.repo.commit_staged(online=ministry.online, now=NOW)
    assert files(ministry.dir) == files(twin.dir)


def test_commit_with_one_signature_is_refused_and_nothing_changes(ministry: Ministry) -> None:
    ministry.repo.stage_release(2, DATA, now=NOW)
    ministry.repo.sign_staged(ministry.targets_keys[2])
    before = files(ministry.dir)
    with pytest.raises(ThresholdNotMetError, match="1 of 2 signatures") as err:
        ministry.repo.commit_staged(online=ministry.online, now=NOW)
    assert (err.value.signatures, err.value.threshold) == (1, 2)
    assert files(ministry.dir) == before


@pytest.mark.parametrize("key", [40, 1, 7], ids=["stranger", "root-only-key", "snapshot-key"])
def test_a_key_that_is_not_an_administrator_key_is_refused(ministry: Ministry, key: int) -> None:
    ministry.repo.stage_release(2, DATA, now=NOW)
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="not an administrator"):
        ministry.repo.sign_staged(fixed_key(key))
    assert files(ministry.dir) == before


def test_duplicate_signature_and_double_staging_are_refused(ministry: Ministry) -> None:
    repo = ministry.repo
    repo.stage_release(2, DATA, now=NOW)
    repo.sign_staged(ministry.targets_keys[0])
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="already signed staged release 2"):
        repo.sign_staged(ministry.targets_keys[0])
    with pytest.raises(PublishError, match="release 2 is already staged"):
        repo.stage_release(2, DATA, now=NOW)
    with pytest.raises(PublishError, match="release 2 is already staged; commit or discard"):
        repo.stage_release(3, b"three", now=NOW)
    assert files(ministry.dir) == before


def test_published_or_older_versions_cannot_be_staged(ministry: Ministry) -> None:
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="immutable"):
        ministry.repo.stage_release(1, DATA, now=NOW)
    ministry.release(3)
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="not newer than 3"):
        ministry.repo.stage_release(2, DATA, now=NOW)
    assert files(ministry.dir) == before


def test_nothing_staged(ministry: Ministry, tmp_path: Path) -> None:
    before = files(ministry.dir)
    assert ministry.repo.staged() is None
    for action in (
        lambda: ministry.repo.sign_staged(ministry.targets_keys[0]),
        lambda: ministry.repo.commit_staged(online=ministry.online, now=NOW),
        lambda: ministry.repo.discard_staged(),
    ):
        with pytest.raises(PublishError, match="no release is staged"):
            action()
    assert files(ministry.dir) == before


def test_discard_removes_the_staged_release(ministry: Ministry) -> None:
    before = files(ministry.dir)
    ministry.repo.stage_release(2, DATA, now=NOW)
    ministry.repo.sign_staged(ministry.targets_keys[0])
    gone = ministry.repo.discard_staged()
    assert gone is not None and gone.version == 2
    assert files(ministry.dir) == before
    ministry.repo.stage_release(2, b"a better release 2", now=NOW)
    (ministry.dir / "staging" / "targets.json").unlink()  # a damaged staging folder
    with pytest.raises(PublishError, match="missing; discard"):
        ministry.repo.stage_release(3, DATA, now=NOW)
    assert ministry.repo.discard_staged() is None
    assert files(ministry.dir) == before


def test_merging_a_copy_signed_offline(ministry: Ministry, tmp_path: Path) -> None:
    repo = ministry.repo
    staged = repo.stage_release(2, DATA, now=NOW)
    repo.sign_staged(ministry.targets_keys[0])
    offline = tmp_path / "usb" / "release-2.staged.json"
    offline.parent.mkdir()
    shutil.copy(staged.path, offline)

    # on the offline machine: review against the release file and the pinned root, then sign
    signed = sign_staged_file(
        offline, ministry.targets_keys[2], root=repo.root_bytes(), release=DATA
    )
    assert (signed.version, signed.signatures, signed.threshold) == (2, 2, 2)
    assert repo.staged().signatures == 1  # type: ignore[union-attr]

    info = repo.add_staged_signatures(offline)
    assert info.ready and info.signatures == 2
    before = files(ministry.dir)
    assert repo.add_staged_signatures(offline).signatures == 2  # idempotent, nothing rewritten
    assert files(ministry.dir) == before
    repo.commit_staged(online=ministry.online, now=NOW)
    client = make_client(tmp_path, repo.root_bytes(), folder_fetch(ministry.dir), clock=lambda: NOW)
    client.refresh()
    assert client.current_release().version == 2


def test_offline_signing_without_a_root_counts_but_cannot_judge(
    ministry: Ministry, tmp_path: Path
) -> None:
    staged = ministry.repo.stage_release(2, DATA, now=NOW)
    copy = Path(shutil.copy(staged.path, tmp_path / "copy.json"))
    signed = sign_staged_file(copy, fixed_key(40))  # no root: not checked here...
    assert (signed.signatures, signed.threshold, signed.ready) == (1, None, False)
    assert read_staged_file(copy, root=ministry.repo.root_bytes()).signatures == 0
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="not by an administrator key"):  # ...but at merge
        ministry.repo.add_staged_signatures(copy)
    assert files(ministry.dir) == before


def test_offline_refusals_leave_the_copy_unchanged(ministry: Ministry, tmp_path: Path) -> None:
    staged = ministry.repo.stage_release(2, DATA, now=NOW)
    copy = Path(shutil.copy(staged.path, tmp_path / "copy.json"))
    original = copy.read_bytes()
    with pytest.raises(PublishError, match="not an administrator"):
        sign_staged_file(copy, fixed_key(40), root=ministry.repo.root_bytes())
    with pytest.raises(PublishError, match=r"is not the staged releases/release-2\.json"):
        sign_staged_file(copy, ministry.targets_keys[0], release=b"something else")
    with pytest.raises(PublishError, match="not a root"):
        sign_staged_file(copy, ministry.targets_keys[0], root=copy.read_bytes())
    assert copy.read_bytes() == original
    sign_staged_file(copy, ministry.targets_keys[0])
    with pytest.raises(PublishError, match="already signed"):
        sign_staged_file(copy, ministry.targets_keys[0])


def test_merge_refuses_altered_or_forged_copies(ministry: Ministry, tmp_path: Path) -> None:
    repo = ministry.repo
    staged = repo.stage_release(2, DATA, now=NOW)

    altered = tmp_path / "altered.json"
    md = Metadata.from_bytes(staged.path.read_bytes())
    md.signed.expires += timedelta(days=1)  # an admin signing something else than staged
    md.sign(tuf_signer(ministry.targets_keys[0]), append=True)
    altered.write_bytes(md.to_bytes())

    forged = tmp_path / "forged.json"
    md = Metadata.from_bytes(staged.path.read_bytes())
    md.sign(tuf_signer(ministry.targets_keys[0]), append=True)
    keyid = tuf_keyid(ministry.targets_keys[1].verify_key)
    md.signatures[keyid] = Signature(keyid, "00" * 64)  # claims admin 2 without the key
    forged.write_bytes(md.to_bytes())

    not_metadata = tmp_path / "junk.json"
    not_metadata.write_bytes(b"{}")

    before = files(ministry.dir)
    for copy, reason in (
        (altered, "signed content differs"),
        (forged, "does not verify"),
        (not_metadata, "not TUF metadata"),
    ):
        with pytest.raises(PublishError, match=reason):
            repo.add_staged_signatures(copy)
    assert files(ministry.dir) == before


def test_tampered_staged_target_or_stale_staging_is_refused(ministry: Ministry) -> None:
    repo = ministry.repo
    repo.stage_release(2, DATA, now=NOW)
    for key in ministry.targets_keys[:2]:
        repo.sign_staged(key)
    release = ministry.dir / "staging" / "targets" / "releases" / "release-2.json"
    release.write_bytes(b'{"release": "evil"}')
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="does not match the staged metadata"):
        repo.commit_staged(online=ministry.online, now=NOW)
    assert files(ministry.dir) == before
    release.write_bytes(DATA)

    ministry.delegate()  # the targets role moved on while release 2 waited for signatures
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="does not follow the published"):
        repo.commit_staged(online=ministry.online, now=NOW)
    assert files(ministry.dir) == before


def test_an_expired_staged_release_is_refused(ministry: Ministry) -> None:
    repo = ministry.repo
    repo.stage_release(2, DATA, now=NOW)
    for key in ministry.targets_keys[:2]:
        repo.sign_staged(key)
    before = files(ministry.dir)
    with pytest.raises(PublishError, match="expired"):
        repo.commit_staged(online=ministry.online, now=NOW + timedelta(days=91))
    assert files(ministry.dir) == before
