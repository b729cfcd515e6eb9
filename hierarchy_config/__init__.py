"""Node configuration: who a node is, its parent and its enrolled subtree, validated on load.

`load_config(path)` returns an immutable `NodeConfig` or raises `ConfigError` naming the file, the
field and the fix. `network_init` writes a ready-to-run local network. Nothing here opens a
database or a socket.
"""

from hierarchy_config.loader import ConfigError, load_config
from hierarchy_config.model import (
    ChildConfig,
    Level,
    LimitsConfig,
    NodeConfig,
    NodeSection,
    ParentConfig,
    SyncConfig,
)

__all__ = [
    "ChildConfig",
    "ConfigError",
    "Level",
    "LimitsConfig",
    "NodeConfig",
    "NodeSection",
    "ParentConfig",
    "SyncConfig",
    "load_config",
]
