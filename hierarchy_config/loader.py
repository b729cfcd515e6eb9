"""Read `node.toml` into a validated `NodeConfig`, or explain precisely what is wrong.

Errors name the file, the field (dotted path such as `children[1].public_key`) and the fix.
Relative paths (key file, SQLite database) are resolved against the folder of the file. This
module does not create anything on disk.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hierarchy_config.model import FieldProblem, NodeConfig


class ConfigError(Exception):
    """A configuration file cannot be used; the message says where and why."""

    def __init__(self, path: Path, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f" field '{field}':" if field else ""
        super().__init__(f"{path}:{where} {problem}")


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _resolve_database(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rel = url[len(prefix) :]
        if rel and rel != ":memory:":
            return prefix + str((base / rel).resolve())
    return url


def parse_config(data: dict[str, Any], path: Path) -> NodeConfig:
    """Validate an already-parsed TOML document as if it came from `path`."""
    try:
        cfg = NodeConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; check the spelling against deploy/node.example.toml"
        elif err.get("type") == "missing":
            msg = "required field is missing"
        elif err.get("type") == "enum":
            msg = f"{msg} (got {err.get('input')!r})"
        field = _dotted(tuple(err.get("loc", ())))
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldProblem):
            field = f"{field}.{cause.field}" if field else cause.field
        raise ConfigError(path, field, msg) from None
    base = path.parent
    node = cfg.node.model_copy(
        update={
            "key_file": (base / cfg.node.key_file).resolve(),
            "database": _resolve_database(cfg.node.database, base),
        }
    )
    std = cfg.standards
    standards = std.model_copy(
        update={
            "trusted_root": None
            if std.trusted_root is None
            else (base / std.trusted_root).resolve(),
            "repository": None if std.repository is None else (base / std.repository).resolve(),
            "online_keys": None if std.online_keys is None else (base / std.online_keys).resolve(),
            "state_dir": (base / std.state_dir).resolve(),
        }
    )
    tls = cfg.tls.model_copy(
        update={
            name: (base / value).resolve()
            for name in ("cert_file", "key_file", "ca_file")
            if (value := getattr(cfg.tls, name)) is not None
        }
    )
    return cfg.model_copy(update={"node": node, "standards": standards, "tls": tls})


def load_config(path: Path | str) -> NodeConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse_config(data, path)
