"""The page's files obey the rules the Content-Security-Policy relies on, and the statistics hook
is in place: checked on the files themselves, no browser needed."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

from network_mgmt.dashboard import ASSETS, STATIC_PREFIX, load_assets

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "network_mgmt" / "static"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.refs: list[str] = []
        self.bad_attrs: list[str] = []
        self.ids: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ident = a.get("id")
        if ident:
            self.ids.add(ident)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.bad_attrs.append(f"<{tag} {name}=...>")
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "style":
            self.bad_attrs.append("<style> element")
        for key in ("src", "href"):
            ref = a.get(key)
            if ref:
                self.refs.append(ref)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def _page() -> _Page:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    return page


def test_no_inline_script_style_or_handlers() -> None:
    page = _page()
    assert page.scripts, "the page loads its script"
    assert all(s.get("src") for s in page.scripts)
    assert page.script_text == []
    assert page.bad_attrs == []


def test_every_reference_is_a_served_local_file() -> None:
    for ref in _page().refs:
        assert ref.startswith(STATIC_PREFIX), f"{ref} is not a local dashboard file"
        assert ref.removeprefix(STATIC_PREFIX) in ASSETS


def test_modules_import_only_served_local_modules() -> None:
    for js in STATIC.glob("*.js"):
        text = js.read_text()
        for target in re.findall(r'from\s+"([^"]+)"', text):
            assert target.startswith("./"), f"{js.name} imports {target}"
            assert target[2:] in ASSETS, f"{js.name} imports {target}, which is not served"
        # Text goes into the page as text nodes only (no HTML parsing of API data), no eval.
        unsafe = re.findall(
            r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function",
            text,
        )
        assert unsafe == [], f"{js.name}: {unsafe}"
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text


def test_allow_list_matches_the_folder_and_the_package_data() -> None:
    on_disk = {p.name for p in STATIC.iterdir() if p.is_file()}
    assert on_disk == set(ASSETS)
    assert set(load_assets()) == set(ASSETS)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["network_mgmt"]
    for name in ASSETS:
        assert any(fnmatch("static/" + name, g) for g in globs), f"{name} not in package-data"


def test_statistics_hook_is_in_place() -> None:
    page = _page()
    assert "stats-panel" in page.ids
    stats = (STATIC / "stats.js").read_text()
    assert "export function mountStatistics" in stats
    assert "mountStatistics(" in (STATIC / "app.js").read_text()
