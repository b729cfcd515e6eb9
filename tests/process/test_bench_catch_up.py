"""The catch-up benchmark's shared set-up (`bench.catch_up`): one prepared tree serves several
backlog sizes, grown by ingesting only the difference, and every run starts from the saved
databases (the city's backlog unsent, the province empty). Tiny sizes, real node processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import catch_up, hops

pytestmark = pytest.mark.process


def test_two_backlog_sizes_on_one_prepared_tree(tmp_path: Path) -> None:
    prepared = catch_up.prepare(tmp_path, 300)
    ports_at_layout = dict(prepared.tree.urls_http)
    results = catch_up.run((900, 300), 120.0, tmp_path, prepared)
    assert [r["backlog"] for r in results] == [300, 900]  # ascending, whatever the order given
    assert prepared.last_seq == 900 and prepared.grown == 1  # grown once, by 600 records
    for r in results:
        assert 0 < r["records"] <= r["backlog"]  # later seeds may update earlier records
        assert r["seconds"] > 0 and r["ceiling"]["rows"] == r["records"]
        # The province writes in its apply process (ADR 0014): its memory is counted apart.
        assert set(r["peak_rss_mib"]) == {"province", "city", "province_children"}
        assert all(v > 0 for v in r["peak_rss_mib"].values())
    # Each run moved the nodes to ports free at that moment (configurations and URLs agree).
    assert prepared.tree.urls_http != ports_at_layout
    city_cfg = prepared.tree.configs["city"].read_text(encoding="utf-8")
    assert prepared.tree.urls_http["province"] in city_cfg  # the city's parent URL
    # The run changed the databases; reset() brings back the unsent backlog and empty parents.
    tree = prepared.tree
    assert hops.content_digest(tree.urls["province"], tree.ids["city"])[0] == results[1]["records"]
    prepared.reset()
    assert hops.content_digest(tree.urls["province"], tree.ids["city"])[0] == 0
    assert hops.content_digest(tree.urls["city"], tree.ids["city"])[0] == results[1]["records"]


def test_a_prepared_tree_does_not_shrink(tmp_path: Path) -> None:
    prepared = catch_up.prepare(tmp_path, 200)
    with pytest.raises(catch_up.BenchError, match="holds 200 changes, more than 100"):
        prepared.grow_to(100)
