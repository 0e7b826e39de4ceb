"""The file-transport seam: how files reach the cluster root, and the records a push plan is
made of.

`LocalTransport` (backends/local.py) and `SshTransport` (backends/ssh/transport.py) implement
`FileTransport`; each also hands out the cluster side's operations (`cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from ..cluster.api import ClusterOps
from ..core.config import Tree


@dataclass(frozen=True)
class RemoteFile:
    rel: str  # POSIX path relative to the listed folder
    size: int
    mtime: float


@dataclass(frozen=True)
class Transfer:
    local: Path
    remote: str  # relative to the cluster root
    size: int


@dataclass
class SyncPlan:
    """The files a push sends (and how many it leaves alone), from a local folder to a remote."""

    transfers: list[Transfer] = field(default_factory=list)
    unchanged: int = 0
    local_folder: Path | None = None
    remote_folder: str = ""

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)


Progress = Callable[[Transfer], None]


@runtime_checkable
class FileTransport(Protocol):
    """Files under the cluster root, and the cluster side's operations."""

    @property
    def root(self) -> Path | str:
        """The cluster root, absolute, on the machine that holds it."""
        ...

    @property
    def cluster(self) -> ClusterOps:
        """The cluster side's operations on this root."""
        ...

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        """Every regular file under `rel`, keyed by its path relative to `rel`."""
        ...

    def put(self, local: Path, rel: str) -> None:
        """Send one file, atomically, keeping its modification time."""
        ...

    def get(self, rel: str, local: Path) -> None:
        """Bring one file back, atomically, keeping its modification time."""
        ...

    def checksums(self, rels: list[str]) -> dict[str, str]:
        """SHA-256 of the files that exist among `rels`, computed where they are."""
        ...

    def ensure_tree(self, tree: Tree) -> list[str]:
        """Make the cluster tree's folders (and parents); return the tree folders created."""
        ...

    def send_plan(self, plan: SyncPlan, progress: Progress | None = None) -> None:
        """Send every file of a push plan, the fastest way this transport knows."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> FileTransport: ...

    def __exit__(self, *exc) -> None: ...
