"""`hpctrain partitions`: Slurm's partitions as the cluster side sees them (limits, nodes,
features) and whether the user who submits may use each; the same facts preflight checks a job
against before it is queued (cluster/partitions.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import connect
from ..cluster.partitions import Partition, memory_text, time_text
from ..core.config import Workspace


@dataclass(frozen=True)
class PartitionsReport:
    """The partitions, or none where the profile's executor has none (the local one)."""

    executor: str
    partitions: list[Partition]

    def rows(self) -> list[list[str]]:
        """One table row per partition a user may see (hidden ones left out)."""
        return [_row(p) for p in self.partitions if not p.hidden]

    def to_json(self) -> list[dict]:
        return [{**p.to_json(), "time_limit": time_text(p.max_time) if p.max_time else None,
                 "features": list(p.features)} for p in self.partitions]


HEADERS = ["partition", "time limit", "nodes", "CPUs/node", "memory/node", "GPUs/node",
           "features", "state", "you may use it"]


def partitions(workspace: Workspace, refresh: bool = False) -> PartitionsReport:
    """Asked of the cluster side, which caches Slurm's answer for a few minutes."""
    executor = workspace.profile.executor
    if executor != "slurm":
        return PartitionsReport(executor, [])
    with connect(workspace) as transport:
        return PartitionsReport(executor, transport.cluster.partitions(refresh))


def _span(values: list, text=str) -> str:
    low, high = min(values), max(values)
    return text(low) if low == high else f"{text(low)}-{text(high)}"


def _row(p: Partition) -> list[str]:
    nodes = p.nodes
    return [
        p.name + ("*" if p.default else ""),
        time_text(p.max_time) if p.max_time else "no limit",
        str(len(nodes)),
        _span([n.cpus for n in nodes]) if nodes else "-",
        _span([n.memory for n in nodes], memory_text) if nodes else "-",
        _span([n.gpus for n in nodes]) if nodes and any(n.gpus for n in nodes) else "-",
        ",".join(p.features) or "-",
        p.state,
        {True: "yes", False: "no"}.get(p.usable, "?"),
    ]
