"""`hpctrain usage`: what each project occupies on the cluster and how much space is left; and,
when a command finds the cluster's disk or quota full, what `hpctrain clean` would free."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..backends import connect
from ..cluster.api import Usage
from ..core.config import Workspace
from ..core.errors import DiskFullError, HpctrainError
from ..core.names import check_name
from ..core.units import size_text


def usage(workspace: Workspace, project: str | None = None) -> Usage:
    """Computed on the cluster side, in one call."""
    if project is not None:
        check_name(project, "project name")
    with connect(workspace) as transport:
        return transport.cluster.usage(project)


def advice(found: Usage, project: str | None = None) -> str:
    """What to run to free space: clean the project being written to if that frees anything,
    else the project whose clean frees most."""
    cleanable = sorted((p for p in found.projects if p.cleanable), key=lambda p: -p.cleanable)
    mine = [p for p in cleanable if p.project == project]
    best = (mine or cleanable or [None])[0]
    if best is None:
        return ("'hpctrain clean' has nothing left to free there: delete ground truth, models or "
                "jobs you no longer need ('hpctrain usage' shows what takes the space)")
    return (f"'hpctrain clean {best.project}' would free {size_text(best.cleanable)} of compiled "
            "data and logs")


@contextmanager
def full_disk_advice(transport, project: str | None = None) -> Iterator[None]:
    """A DiskFullError raised inside gains what would free space, asked of the cluster side."""
    try:
        yield
    except DiskFullError as e:
        try:
            hint = advice(transport.cluster.usage(), project)
        except HpctrainError:  # the cluster side cannot answer (not set up, another version)
            hint = "free space there and run the command again"
        raise DiskFullError(f"{e}; {hint}") from e
