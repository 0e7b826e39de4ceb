"""Incremental file transfer: plan what differs (size + mtime), then send only that, atomically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MTIME_SLACK = 1.0  # seconds; remote filesystems may round modification times


@dataclass(frozen=True)
class Transfer:
    local: Path
    remote: str    # relative to the cluster root
    size: int


@dataclass
class SyncPlan:
    transfers: list[Transfer] = field(default_factory=list)
    unchanged: int = 0
    local_folder: Path | None = None
    remote_folder: str = ""

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_push(local_folder: Path, rel_files: list[str], remote_folder: str, remote_listing: dict,
              remote_checksums: Callable[[list[str]], dict] | None = None) -> SyncPlan:
    """Files whose remote copy is missing or differs in size or modification time.

    With `remote_checksums` (push --checksum), files of equal size are compared by content instead.
    """
    plan, same_size = SyncPlan(local_folder=local_folder, remote_folder=remote_folder), []
    for rel in rel_files:
        local = local_folder / rel
        st = local.stat()
        key = Path(rel).as_posix()
        remote = remote_listing.get(key)
        transfer = Transfer(local, f"{remote_folder}/{key}", st.st_size)
        if remote and remote.size == st.st_size and remote_checksums:
            same_size.append(transfer)
        elif remote and remote.size == st.st_size and abs(remote.mtime - st.st_mtime) <= MTIME_SLACK:
            plan.unchanged += 1
        else:
            plan.transfers.append(transfer)
    if same_size:
        digests = remote_checksums([t.remote for t in same_size])
        for transfer in same_size:
            if digests.get(transfer.remote) == sha256_file(transfer.local):
                plan.unchanged += 1
            else:
                plan.transfers.append(transfer)
    return plan


def apply_push(plan: SyncPlan, transport, progress: Callable[[Transfer], None] | None = None) -> None:
    """Send the planned files; a transport with `put_tree` or `put_many` sends them in one go."""
    if hasattr(transport, "put_tree") and transport.put_tree(plan, progress):
        return
    if hasattr(transport, "put_many"):
        transport.put_many([(t.local, t.remote) for t in plan.transfers],
                           (lambda i: progress(plan.transfers[i])) if progress else None)
        return
    for transfer in plan.transfers:
        transport.put(transfer.local, transfer.remote)
        if progress:
            progress(transfer)
