"""`hpctrain init` and `hpctrain project new`: the workspace, its project files, the cluster
tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends import connect
from ..core.config import WORKSPACE_DIRS, WORKSPACE_FILE, Workspace, load_workspace
from ..core.errors import ConfigError
from ..core.files import write_text
from ..jobs.render import render

WORKSPACE_TEMPLATE = "workspace.yaml.j2"
PROJECT_TEMPLATE = "project.yaml.j2"


@dataclass
class InitResult:
    workspace: Path
    created: list[str]
    cluster_root: Path | str
    cluster_created: list[str]


def init_workspace(
    path: Path, accept_host_key: str | None = None, flags: dict | None = None
) -> InitResult:
    """Create (or complete) a workspace and the cluster tree of its active profile. Never
    overwrites.

    `accept_host_key` (an SSH fingerprint the user has checked) adds the cluster's host key to
    known_hosts, only if the server presents exactly that key.
    """
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder: choose another workspace path")
    created = []
    for rel in WORKSPACE_DIRS:
        folder = path / rel
        if not folder.is_dir():
            folder.mkdir(parents=True)
            created.append(rel + "/")
    config = path / WORKSPACE_FILE
    if not config.exists():
        write_new(config, render(WORKSPACE_TEMPLATE, {}))
        created.append(WORKSPACE_FILE)
    workspace = load_workspace(path, flags)
    with connect(workspace) as transport:
        if accept_host_key:
            _accept_host_key(workspace, transport, accept_host_key)
        cluster_created = transport.ensure_tree(workspace.profile.tree)
        cluster_root = transport.root
    return InitResult(path, created, cluster_root, cluster_created)


def _accept_host_key(workspace: Workspace, transport, fingerprint: str) -> None:
    if workspace.profile.backend != "ssh":
        raise ConfigError("--accept-host-key is for a profile with backend ssh")
    from ..backends.ssh.connection import accept_host_key

    accept_host_key(transport.target, fingerprint)


def write_new(path: Path, text: str) -> None:
    """Create a file that must not exist yet (never overwrites)."""
    try:
        write_text(path, text, exclusive=True)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; edit it instead") from None


def new_project(workspace: Workspace, name: str, ground_truth: str | None = None) -> Path:
    """Write projects/NAME.yaml from the documented example; refuses to overwrite."""
    path = workspace.project_file(name)
    if path.exists():
        raise ConfigError(f"{path.relative_to(workspace.path)} already exists; edit it instead")
    return write_project_file(workspace, name, ground_truth)


def write_project_file(workspace: Workspace, name: str, ground_truth: str | None = None) -> Path:
    """projects/NAME.yaml with every key documented (never overwrites)."""
    path = workspace.project_file(name)
    text = render(
        PROJECT_TEMPLATE, {"name": name, "ground_truth": ground_truth or f"ground_truth/{name}"}
    )
    write_new(path, text)
    return path
