"""`hpctrain clean`: what would free quota (compiled data, logs; never models), then deleting it."""

from __future__ import annotations

from ..backends import connect
from ..core.config import Workspace


def clean_plan(workspace: Workspace, project: str) -> list[dict]:
    with connect(workspace) as transport:
        return transport.cluster.clean_plan(project)


def clean(workspace: Workspace, paths: list[str]) -> int:
    with connect(workspace) as transport:
        return transport.cluster.clean(paths)
