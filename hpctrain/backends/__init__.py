"""Backends: where the cluster side runs and how files reach it (`FileTransport`).

`local` is the embedded default (a folder here, direct calls); `ssh/` reaches a login node and
runs job commands through `rpc`. Backends are looked up by the profile's `backend` and imported
only when used. Imports `cluster`, `jobs`, `runtime` and `core`.
"""

from __future__ import annotations

from importlib import import_module

from ..core.config import Workspace
from ..core.errors import ConfigError
from .api import FileTransport

BACKENDS = {"local": "hpctrain.backends.local", "ssh": "hpctrain.backends.ssh.transport"}


def connect(workspace: Workspace) -> FileTransport:
    """The transport for the workspace's active profile."""
    profile = workspace.profile
    if profile.backend not in BACKENDS:
        raise ConfigError(
            f"backend {profile.backend!r} is not available; choose one of {', '.join(BACKENDS)}"
        )
    module = import_module(BACKENDS[profile.backend])
    return module.open_transport(workspace)
