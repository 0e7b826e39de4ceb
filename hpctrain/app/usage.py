"""`hpctrain usage`: what each project occupies on the cluster and how much space is left."""

from __future__ import annotations

from ..backends import connect
from ..cluster.api import Usage
from ..core.config import Workspace
from ..core.names import check_name


def usage(workspace: Workspace, project: str | None = None) -> Usage:
    """Computed on the cluster side, in one call."""
    if project is not None:
        check_name(project, "project name")
    with connect(workspace) as transport:
        return transport.cluster.usage(project)
