"""The ministry keeps its standards timestamp fresh with the online keys, so a quiet
repository never freezes the network; it leaves a fresh one alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hierarchy_config.standards import default_release
from security.standards_admin import init_admin_folder, keep_fresh, timestamp_expires


def test_timestamp_is_resigned_only_near_expiry(tmp_path: Path) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    admin = init_admin_folder(
        tmp_path / "admin",
        admins=3,
        threshold=2,
        first_release=default_release(1).to_bytes(),
        now=start,
    )
    first = timestamp_expires(admin.repository_dir)
    assert first - start <= timedelta(days=1)
    margin = timedelta(hours=12)
    assert not keep_fresh(admin.repository_dir, admin.online(), start + timedelta(hours=1), margin)
    assert timestamp_expires(admin.repository_dir) == first
    later = start + timedelta(hours=20)
    assert keep_fresh(admin.repository_dir, admin.online(), later, margin)
    assert timestamp_expires(admin.repository_dir) > first
    assert timestamp_expires(admin.repository_dir) - later > margin
