"""The embedded default's transport: the cluster root is a folder on this machine, and the
cluster side's operations are direct calls."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..cluster.ops import ClusterSide
from ..core.config import Tree
from ..core.errors import DiskFullError, HpctrainError, TransportError, full_disk
from ..core.files import copy_file, is_part, sha256_file
from .api import Progress, RemoteFile, SyncPlan


def safe_rel(rel: str) -> PurePosixPath:
    """A relative path that cannot climb out of the root."""
    path = PurePosixPath(rel)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise TransportError(f"refusing path {rel!r}: it would leave the cluster root")
    return path


class LocalTransport:
    """The cluster root is a folder on this machine."""

    def __init__(self, root: Path, cluster: ClusterSide):
        self._root = Path(root)
        self._cluster = cluster

    @property
    def root(self) -> Path:
        return self._root

    @property
    def cluster(self) -> ClusterSide:
        return self._cluster

    def _path(self, rel: str) -> Path:
        return self._root / safe_rel(rel)

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        base = self._path(rel)
        found = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if is_part(name):
                    continue
                full = Path(dirpath) / name
                st = full.stat()
                key = full.relative_to(base).as_posix()
                found[key] = RemoteFile(key, st.st_size, st.st_mtime)
        return found

    def put(self, local: Path, rel: str) -> None:
        try:
            _copy(local, self._path(rel))
        except TransportError as e:
            reason = full_disk(e)
            if reason:  # the part was removed: what was there before is untouched
                raise DiskFullError.writing(reason, rel, str(self._root)) from e
            raise

    def get(self, rel: str, local: Path) -> None:
        source = self._path(rel)
        if not source.is_file():
            raise TransportError(f"{rel} not found on the cluster")
        _copy(source, local)

    def checksums(self, rels: list[str]) -> dict[str, str]:
        return {rel: sha256_file(self._path(rel)) for rel in rels if self._path(rel).is_file()}

    def ensure_tree(self, tree: Tree) -> list[str]:
        return self._cluster.ensure_tree()

    def send_plan(self, plan: SyncPlan, progress: Progress | None = None) -> None:
        for transfer in plan.transfers:
            self.put(transfer.local, transfer.remote)
            if progress:
                progress(transfer)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _copy(source: Path, target: Path) -> None:
    try:
        copy_file(source, target, mtime=source.stat().st_mtime)
    except HpctrainError as e:
        raise TransportError(str(e)) from e


def open_transport(workspace) -> LocalTransport:
    profile = workspace.profile
    return LocalTransport(
        workspace.root, ClusterSide(workspace.root, profile.tree, profile.executor)
    )
