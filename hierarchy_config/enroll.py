"""Enroll a new child in a parent's `node.toml`: check it, then rewrite the file atomically.

A province adds a city as a `[[children]]` entry; the ministry adds a province the same way, or a
city as a `[[children.children]]` entry under one of its provinces (`under`). `plan_enrollment`
is pure (document in, new document out, or an `EnrollError` naming the problem);
`enroll_child` reads the file, plans, validates the result with the same code as
`load_config`, and replaces the file (temporary file in the same folder, mode 0600, then
`os.replace`), so a refusal or a crash leaves the original file byte-identical.

What it does not do: it keeps the document as data, not as text, so comments and layout in the
file are lost on rewrite. It does not tell a running node (restart it), it does not enroll the
city at its province as well when the ministry enrolls it (each parent runs this itself), and it
does not write the audit entry (the caller holds the node's key and database).
"""

from __future__ import annotations

import copy
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from hierarchy_config import regions
from hierarchy_config.loader import ConfigError, parse_config
from hierarchy_config.model import MINISTRY_ID, NODE_ID_RE, Level, NodeConfig
from security.keys import PublicKeyFormatError, key_id, parse_public_key

MAX_NAME_CHARS = 64


class EnrollError(ConfigError):
    """The child cannot be enrolled as asked; the parent's file is left unchanged."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(path, "", problem)


@dataclass(frozen=True)
class Enrollment:
    """What was (or would be) added to the parent's configuration."""

    child_id: str
    name: str
    public_key: str
    kid: str
    level: Level
    under: str | None
    config: NodeConfig

    def describe(self) -> str:
        where = f" under province {self.under}" if self.under else ""
        name = f" {self.name}" if self.name else ""
        return f"{self.level.value} {self.child_id}{name}{where} (key id {self.kid})"


def _child_level(parent: Level, under: str | None, path: Path) -> Level:
    if parent is Level.CITY:
        raise EnrollError(path, "a city has no children; enroll the node at its province")
    if parent is Level.PROVINCE:
        if under is not None:
            raise EnrollError(path, "--under is only for the ministry; a province adds cities")
        return Level.CITY
    return Level.PROVINCE if under is None else Level.CITY


def _check_id(child_id: str, level: Level, province: str | None, path: Path) -> None:
    if not regions.is_known_region(child_id[:2] + "0000"):
        raise EnrollError(
            path, f"child id {child_id!r} is not a GB/T 2260 code: no province {child_id[:2]}0000"
        )
    if level is Level.PROVINCE and not child_id.endswith("0000"):
        raise EnrollError(
            path,
            f"{child_id} is not a province code (XX0000); to enroll a city at the ministry "
            f"give --under <province id>, e.g. --under {child_id[:2]}0000",
        )
    if level is Level.CITY:
        if child_id.endswith("0000"):
            raise EnrollError(path, f"{child_id} is a province code, not a city")
        if province is not None and child_id[:2] != province[:2]:
            raise EnrollError(path, f"city {child_id} does not belong to province {province}")


def _children(doc: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    entries = doc.setdefault("children", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EnrollError(path, "'children' must be a list of [[children]] tables")
    return entries


def plan_enrollment(
    data: dict[str, Any],
    path: Path,
    *,
    child_id: str,
    public_key: str,
    name: str | None = None,
    under: str | None = None,
) -> tuple[dict[str, Any], Enrollment]:
    """Return the new document with the child added, and what was added.

    `data` is the parent's parsed, valid `node.toml`; it is not modified."""
    current = parse_config(data, path)
    level = _child_level(current.level, under, path)
    if not NODE_ID_RE.match(child_id) or child_id == MINISTRY_ID:
        raise EnrollError(
            path, f"child id {child_id!r} must be a 6-digit GB/T 2260 code such as '330300'"
        )
    taken = {current.node_id: "this node"}
    key_owner: dict[str, str] = {}
    if current.parent is not None:
        taken[current.parent.id] = "the parent"
        key_owner[current.parent.public_key] = f"the parent {current.parent.id}"
    for top in current.children:
        for known in top.walk():
            taken[known.id] = "an enrolled child"
            key_owner[known.public_key] = f"node {known.id}"
    if child_id in taken:
        raise EnrollError(path, f"node id {child_id} is already {taken[child_id]}; not enrolled")
    if under is not None and under not in current.child_ids():
        enrolled = ", ".join(current.child_ids()) or "none"
        raise EnrollError(
            path, f"--under {under} is not a province enrolled here (provinces: {enrolled})"
        )
    province = current.node_id if current.level is Level.PROVINCE else under
    _check_id(child_id, level, province, path)
    try:
        verify_key = parse_public_key(public_key)
    except PublicKeyFormatError as exc:
        raise EnrollError(
            path, f"--public-key: {exc}; copy the key printed by 'lsnet keys generate'"
        ) from None
    if public_key in key_owner:
        raise EnrollError(path, f"this public key already belongs to {key_owner[public_key]}")
    if name is None:
        name = regions.region_name(child_id) or ""
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise EnrollError(path, f"--name must be at most {MAX_NAME_CHARS} printable characters")

    doc = copy.deepcopy(data)
    siblings = _children(doc, path)
    if under is not None:
        parent_entry = next(e for e in siblings if e.get("id") == under)
        siblings = _children(parent_entry, path)
    entry: dict[str, Any] = {"id": child_id}
    if name:
        entry["name"] = name
    entry["public_key"] = public_key
    siblings.append(entry)
    try:
        config = parse_config(doc, path)
    except ConfigError as exc:
        raise EnrollError(path, f"the result would not be valid: {exc.problem}") from None
    return doc, Enrollment(
        child_id=child_id,
        name=name,
        public_key=public_key,
        kid=key_id(verify_key),
        level=level,
        under=under,
        config=config,
    )


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EnrollError(path, "file not found") from None
    try:
        return raw, tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EnrollError(path, f"not valid TOML: {exc}") from None


def _replace_private(path: Path, data: bytes) -> None:
    """Write `data` to a 0600 temporary file next to `path`, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def enroll_child(
    path: Path,
    *,
    child_id: str,
    public_key: str,
    name: str | None = None,
    under: str | None = None,
) -> Enrollment:
    """Add the child to the `node.toml` at `path`; refuse (file untouched) if anything is wrong."""
    path = Path(path).resolve()
    raw, data = _read(path)
    doc, enrollment = plan_enrollment(
        data, path, child_id=child_id, public_key=public_key, name=name, under=under
    )
    text = tomli_w.dumps(doc)
    if tomllib.loads(text) != doc:  # pragma: no cover - a tomli_w bug, not a user error
        raise EnrollError(path, "the rewritten file would not read back the same; not written")
    if path.read_bytes() != raw:
        raise EnrollError(path, "the file changed while enrolling; run the command again")
    _replace_private(path, text.encode("utf-8"))
    return enrollment
