"""Where the cluster side runs, and how files reach it: the transport seam.

`LocalTransport` is the embedded default: the cluster root is a local folder and cluster-side
operations are direct calls. An SSH transport (paramiko SFTP + remote `hpctrain ... --json`)
implements the same methods.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .clusterside import ClusterSide
from .config import Workspace
from .errors import ConfigError, TransportError


@dataclass(frozen=True)
class RemoteFile:
    rel: str       # POSIX path relative to the listed folder
    size: int
    mtime: float


def _safe_rel(rel: str) -> PurePosixPath:
    """A relative path that cannot climb out of the root."""
    path = PurePosixPath(rel)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise TransportError(f"refusing path {rel!r}: it would leave the cluster root")
    return path


def atomic_copy(source: Path, target: Path, mtime: float | None = None) -> None:
    """Copy to a temporary name beside the target, then rename: never a partial file under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.hpctrain-part")
    try:
        shutil.copyfile(source, tmp)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TransportError(f"cannot copy {source} to {target}: {e.strerror}") from e


class LocalTransport:
    """The cluster root is a folder on this machine."""

    def __init__(self, root: Path, cluster: ClusterSide):
        self.root = Path(root)
        self.cluster = cluster

    def _path(self, rel: str) -> Path:
        return self.root / _safe_rel(rel)

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        """Every regular file under `rel`, keyed by its path relative to `rel`."""
        base = self._path(rel)
        found = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(".hpctrain-part"):
                    continue
                full = Path(dirpath) / name
                st = full.stat()
                key = full.relative_to(base).as_posix()
                found[key] = RemoteFile(key, st.st_size, st.st_mtime)
        return found

    def put(self, local: Path, rel: str) -> None:
        atomic_copy(local, self._path(rel), mtime=local.stat().st_mtime)

    def get(self, rel: str, local: Path) -> None:
        source = self._path(rel)
        if not source.is_file():
            raise TransportError(f"{rel} not found on the cluster")
        atomic_copy(source, local, mtime=source.stat().st_mtime)

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TRANSPORTS = {"local": LocalTransport}


def connect(workspace: Workspace):
    """The transport for the workspace's active profile."""
    profile = workspace.profile
    if profile.backend not in TRANSPORTS:
        raise ConfigError(f"backend {profile.backend!r} is not available; choose one of {', '.join(TRANSPORTS)}")
    cluster = ClusterSide(workspace.root, profile.tree, profile.executor)
    return TRANSPORTS[profile.backend](workspace.root, cluster)
