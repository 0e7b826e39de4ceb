"""`hpctrain push`: validate a project's ground truth, plan what differs, send only that.

The plan compares size and modification time (or, with `--checksum`, SHA-256 computed on both
sides); the backend sends it the fastest way it knows, each file atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends import connect
from ..backends.api import Progress, SyncPlan, Transfer
from ..core.config import Workspace
from ..core.errors import GroundTruthError
from ..core.files import sha256_file
from ..jobs.groundtruth import Report, validate
from .projects import Project, load_project

MTIME_SLACK = 1.0  # seconds; remote filesystems may round modification times


@dataclass
class PushResult:
    project: str
    report: Report
    plan: SyncPlan
    remote_folder: str


def check_ground_truth(workspace: Workspace, name: str) -> tuple[Project, Report]:
    project = load_project(workspace, name)
    folder = project.ground_truth_path(workspace)
    if not folder.is_dir():
        raise GroundTruthError(
            f"ground truth folder {folder} not found: put the project's XML "
            f"and images there or set 'ground_truth' in projects/{name}.yaml"
        )
    report = validate(folder, project.format, need_split=True)
    if not report.ok:
        raise GroundTruthError(
            f"{len(report.problems)} problem(s) in {folder}; fix them and push "
            "again (nothing was sent)",
            report.problems,
        )
    return project, report


def push(
    workspace: Workspace,
    name: str,
    progress: Progress | None = None,
    dry_run: bool = False,
    checksum: bool = False,
) -> PushResult:
    """Validate the ground truth, then send only new or changed pages."""
    project, report = check_ground_truth(workspace, name)
    with connect(workspace) as transport:
        remote_folder = f"{workspace.profile.tree.ground_truth}/{project.name}"
        listing = transport.list_files(remote_folder)
        plan = plan_push(
            report.folder,
            report.files(),
            remote_folder,
            listing,
            transport.checksums if checksum else None,
        )
        if not dry_run:
            transport.send_plan(plan, progress)
    return PushResult(project.name, report, plan, remote_folder)


def plan_push(
    local_folder: Path,
    rel_files: list[str],
    remote_folder: str,
    remote_listing: dict,
    remote_checksums: Callable[[list[str]], dict] | None = None,
) -> SyncPlan:
    """Files whose remote copy is missing or differs in size or modification time.

    With `remote_checksums` (push --checksum), files of equal size are compared by content.
    """
    plan = SyncPlan(local_folder=local_folder, remote_folder=remote_folder)
    same_size = []
    for rel in rel_files:
        st = (local_folder / rel).stat()
        key = Path(rel).as_posix()
        remote = remote_listing.get(key)
        transfer = Transfer(local_folder / rel, f"{remote_folder}/{key}", st.st_size)
        if remote and remote.size == st.st_size and remote_checksums:
            same_size.append(transfer)
        elif (
            remote and remote.size == st.st_size and abs(remote.mtime - st.st_mtime) <= MTIME_SLACK
        ):
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
