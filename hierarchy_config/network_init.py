"""Lay out a ready-to-run local network: one folder per node with its `node.toml` and key.

`init_network(out)` picks real GB/T 2260 codes (the ministry, then provinces in a fixed preference
order, skipping any with fewer prefectures than asked, each with its first prefectures), generates
one Ed25519 key per node, and writes `out/<node_id>/node.toml` and `out/<node_id>/node.key` (both
mode 0600: the config holds ingest tokens) and `out/network.json`, which `NetworkLayout.load` reads
back. Every config is validated with the same code as `load_config` before anything is written.
Ports are consecutive on one host: the ministry, then each province followed by its cities.

What it does not do: it does not start nodes, open ports (it does not check that they are free),
create databases, or touch an existing non-empty folder. It is for demos, tests and simulations,
not for enrolling real centres (which exchange public keys out of band).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from hierarchy_config import regions
from hierarchy_config.loader import ConfigError, parse_config
from hierarchy_config.model import MINISTRY_ID, Level
from security.keys import NodeKey, write_key_file

MINISTRY_NAME = "人力资源和社会保障部"
PROVINCE_PREFERENCE = (
    "330000",
    "320000",
    "440000",
    "370000",
    "410000",
    "510000",
    "420000",
    "430000",
    "350000",
    "340000",
)
LAYOUT_FILE = "network.json"
CONFIG_NAME = "node.toml"
KEY_NAME = "node.key"
ROOT_PIN_NAME = "standards-root.json"
STANDARDS_ADMIN = "standards-admin"
DATABASE_URL = "sqlite:///node.db"
MAX_PORT = 65535


class NetworkInitError(Exception):
    """The network cannot be laid out as asked (or a layout file cannot be read)."""


@dataclass(frozen=True)
class NodeEntry:
    id: str
    name: str
    level: Level
    parent_id: str | None
    url: str
    config_path: Path


@dataclass(frozen=True)
class NetworkLayout:
    """The nodes of a laid-out network, ministry first, each province followed by its cities."""

    root: Path
    nodes: tuple[NodeEntry, ...]

    def by_id(self, node_id: str) -> NodeEntry:
        """The node with this id; KeyError if there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"no node {node_id!r} in the network at {self.root}")

    def ministry(self) -> NodeEntry:
        return next(n for n in self.nodes if n.level is Level.MINISTRY)

    def provinces(self) -> tuple[NodeEntry, ...]:
        return tuple(n for n in self.nodes if n.level is Level.PROVINCE)

    def cities(self) -> tuple[NodeEntry, ...]:
        return tuple(n for n in self.nodes if n.level is Level.CITY)

    def children_of(self, node_id: str) -> tuple[NodeEntry, ...]:
        return tuple(n for n in self.nodes if n.parent_id == node_id)

    @classmethod
    def load(cls, root: Path) -> NetworkLayout:
        """Read `root/network.json` as written by `init_network`."""
        root = Path(root).resolve()
        path = root / LAYOUT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NetworkInitError(f"{path}: not found; create it with init_network") from None
        except (OSError, ValueError) as exc:
            raise NetworkInitError(f"{path}: cannot read network layout: {exc}") from None
        try:
            nodes = tuple(_entry_from_json(root, item) for item in data)
        except (TypeError, KeyError, ValueError) as exc:
            raise NetworkInitError(f"{path}: malformed network layout: {exc!r}") from None
        if sum(1 for n in nodes if n.level is Level.MINISTRY) != 1:
            raise NetworkInitError(f"{path}: a network layout needs exactly one ministry")
        return cls(root=root, nodes=nodes)


def _entry_from_json(root: Path, item: dict[str, Any]) -> NodeEntry:
    parent = item["parent"]
    if parent is not None and not isinstance(parent, str):
        raise TypeError(f"parent must be a string or null, got {parent!r}")
    return NodeEntry(
        id=str(item["id"]),
        name=str(item["name"]),
        level=Level(item["level"]),
        parent_id=parent,
        url=str(item["url"]),
        config_path=root / str(item["config"]),
    )


@dataclass(frozen=True)
class _Plan:
    """One node to write: who it is, its key and where it listens."""

    entry: NodeEntry
    key: NodeKey
    listen: str


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _choose(
    provinces: int, cities_per_province: int
) -> list[tuple[regions.Region, list[regions.Region]]]:
    """Provinces in preference order, skipping those with too few prefectures."""
    known = {r.code: r for r in regions.provinces()}
    order = [c for c in PROVINCE_PREFERENCE if c in known]
    order += [c for c in sorted(known) if c not in order]
    chosen: list[tuple[regions.Region, list[regions.Region]]] = []
    for code in order:
        prefs = regions.prefectures(code)
        if len(prefs) >= cities_per_province:
            chosen.append((known[code], prefs[:cities_per_province]))
        if len(chosen) == provinces:
            return chosen
    most = max((len(regions.prefectures(c)) for c in order), default=0)
    if cities_per_province > most:
        raise NetworkInitError(
            f"cities_per_province={cities_per_province} is more than any province has "
            f"(at most {most} prefectures); ask for fewer cities"
        )
    raise NetworkInitError(
        f"only {len(chosen)} provinces have {cities_per_province} or more prefectures, "
        f"but provinces={provinces} were requested; ask for fewer provinces or cities"
    )


Tree = Sequence[tuple["regions.Region", Sequence["regions.Region"]]]


def _plan(
    root: Path,
    provinces: int,
    cities_per_province: int,
    base_port: int,
    host: str,
    tree: Tree | None = None,
) -> list[_Plan]:
    if provinces < 1 or cities_per_province < 1:
        raise NetworkInitError(
            f"provinces ({provinces}) and cities_per_province ({cities_per_province}) "
            "must both be at least 1"
        )
    if not host or any(ch.isspace() for ch in host) or "/" in host:
        raise NetworkInitError(f"host {host!r} must be a host name or IP address")
    if tree is not None:  # an explicit (uneven) tree, e.g. `lsnet simulate`'s national one
        provinces = len(tree)
        total = 1 + provinces + sum(len(cities) for _, cities in tree)
    else:
        total = 1 + provinces * (1 + cities_per_province)
    if base_port < 1 or base_port + total - 1 > MAX_PORT:
        raise NetworkInitError(
            f"{total} nodes need ports {base_port}..{base_port + total - 1}, "
            f"which must lie within 1..{MAX_PORT}; choose a lower base_port"
        )
    chosen = list(tree) if tree is not None else _choose(provinces, cities_per_province)
    ports: Iterator[int] = iter(range(base_port, base_port + total))

    def plan(node_id: str, name: str, level: Level, parent: str | None) -> _Plan:
        port = next(ports)
        entry = NodeEntry(
            id=node_id,
            name=name,
            level=level,
            parent_id=parent,
            url=f"http://{_url_host(host)}:{port}",
            config_path=root / node_id / CONFIG_NAME,
        )
        return _Plan(entry=entry, key=NodeKey.generate(), listen=f"{host}:{port}")

    out = [plan(MINISTRY_ID, MINISTRY_NAME, Level.MINISTRY, None)]
    for province, cities in chosen:
        out.append(plan(province.code, province.name, Level.PROVINCE, MINISTRY_ID))
        out.extend(plan(c.code, c.name, Level.CITY, province.code) for c in cities)
    return out


def _child_doc(p: _Plan, by_parent: dict[str | None, list[_Plan]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": p.entry.id, "name": p.entry.name, "public_key": p.key.public}
    doc["url"] = p.entry.url  # downward federated statistics queries (node.stats.federated)
    below = [_child_doc(c, by_parent) for c in by_parent.get(p.entry.id, [])]
    if below:
        doc["children"] = below
    return doc


def _config_doc(
    p: _Plan, by_id: dict[str, _Plan], by_parent: dict[str | None, list[_Plan]]
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "node": {
            "id": p.entry.id,
            "name": p.entry.name,
            "level": p.entry.level.value,
            "listen": p.listen,
            "public_url": p.entry.url,
            "database": DATABASE_URL,
            "key_file": KEY_NAME,
        }
    }
    if p.entry.parent_id is not None:
        parent = by_id[p.entry.parent_id]
        doc["parent"] = {
            "id": parent.entry.id,
            "url": parent.entry.url,
            "public_key": parent.key.public,
        }
    doc["api"] = {"ingest_tokens": [secrets.token_urlsafe(24)]}
    children = [_child_doc(c, by_parent) for c in by_parent.get(p.entry.id, [])]
    if children:
        doc["children"] = children
    return doc


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only: node.toml holds the ingest tokens."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def init_network(
    out: Path,
    *,
    provinces: int = 2,
    cities_per_province: int = 2,
    base_port: int = 18400,
    host: str = "127.0.0.1",
    standards: bool = True,
    now: datetime | None = None,
    tree: Tree | None = None,
) -> NetworkLayout:
    """Write a ministry → provinces → cities network under `out` (which must be absent or empty).

    With `standards`, also a standards admin folder (`standards-admin/`: 2-of-3 administrator
    keys, a TUF repository holding release 1 built from the default pack, `root.json`), the
    ministry serving that repository and every node pinning the root. `tree` (provinces with
    their cities) replaces `provinces` × `cities_per_province` with an explicit, uneven tree."""
    root = Path(out).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise NetworkInitError(f"{root}: exists and is not an empty folder; choose a new path")
    plans = _plan(root, provinces, cities_per_province, base_port, host, tree)
    by_id = {p.entry.id: p for p in plans}
    by_parent: dict[str | None, list[_Plan]] = {}
    for p in plans:
        by_parent.setdefault(p.entry.parent_id, []).append(p)
    docs = {p.entry.id: _config_doc(p, by_id, by_parent) for p in plans}
    if standards:
        for p in plans:
            section: dict[str, Any] = {"trusted_root": ROOT_PIN_NAME}
            if p.entry.level is Level.MINISTRY:
                section["repository"] = f"../{STANDARDS_ADMIN}/repository"
                section["online_keys"] = f"../{STANDARDS_ADMIN}/keys"
            docs[p.entry.id]["standards"] = section
    for p in plans:  # validate everything before the first byte is written
        try:
            parse_config(docs[p.entry.id], p.entry.config_path)
        except ConfigError as exc:  # a bug here, not a user error
            raise NetworkInitError(f"generated an invalid configuration: {exc}") from exc

    root.mkdir(parents=True, exist_ok=True)
    pinned: bytes | None = None
    if standards:
        from hierarchy_config.standards.build import default_release
        from security.standards_admin import init_admin_folder

        when = now or datetime.now(UTC)
        admin = init_admin_folder(
            root / STANDARDS_ADMIN,
            admins=3,
            threshold=2,
            first_release=default_release(1, created=when).to_bytes(),
            now=when,
        )
        pinned = admin.root_file.read_bytes()
    for p in plans:
        folder = p.entry.config_path.parent
        folder.mkdir()
        write_key_file(folder / KEY_NAME, p.key)
        _write_private(p.entry.config_path, tomli_w.dumps(docs[p.entry.id]).encode("utf-8"))
        if pinned is not None:
            (folder / ROOT_PIN_NAME).write_bytes(pinned)
    layout = [
        {
            "id": p.entry.id,
            "name": p.entry.name,
            "level": p.entry.level.value,
            "parent": p.entry.parent_id,
            "url": p.entry.url,
            "config": p.entry.config_path.relative_to(root).as_posix(),
        }
        for p in plans
    ]
    (root / LAYOUT_FILE).write_text(
        json.dumps(layout, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return NetworkLayout(root=root, nodes=tuple(p.entry for p in plans))
