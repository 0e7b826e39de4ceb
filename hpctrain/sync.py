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

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)


def plan_push(local_folder: Path, rel_files: list[str], remote_folder: str, remote_listing: dict) -> SyncPlan:
    """Files whose remote copy is missing or differs in size or modification time."""
    plan = SyncPlan()
    for rel in rel_files:
        local = local_folder / rel
        st = local.stat()
        remote = remote_listing.get(Path(rel).as_posix())
        if remote and remote.size == st.st_size and abs(remote.mtime - st.st_mtime) <= MTIME_SLACK:
            plan.unchanged += 1
            continue
        plan.transfers.append(Transfer(local, f"{remote_folder}/{Path(rel).as_posix()}", st.st_size))
    return plan


def apply_push(plan: SyncPlan, transport, progress: Callable[[Transfer], None] | None = None) -> None:
    for transfer in plan.transfers:
        transport.put(transfer.local, transfer.remote)
        if progress:
            progress(transfer)
