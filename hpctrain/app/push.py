"""`hpctrain push`: validate a project's ground truth, plan what differs, send only that.

The plan compares size and modification time (or, with `--checksum`, SHA-256 computed on both
sides); the backend sends it the fastest way it knows, each file atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..backends import connect
from ..backends.api import SyncPlan, Transfer
from ..core.config import Workspace
from ..core.errors import GroundTruthError, NotFoundError
from ..core.files import sha256_file
from ..jobs.groundtruth import Report, validate
from ..core.names import check_name
from .exports import unpack_export
from .projects import Project, ensure_project, load_project, remember_push
from .usage import full_disk_advice

MTIME_SLACK = 1.0  # seconds; remote filesystems may round modification times


@dataclass
class PushResult:
    project: str
    report: Report
    plan: SyncPlan
    remote_folder: str
    notes: list[str] = field(default_factory=list)  # what push did besides sending


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
    target: str,
    progress: Callable[[Transfer, SyncPlan], None] | None = None,
    dry_run: bool = False,
    checksum: bool = False,
    project_name: str | None = None,
) -> PushResult:
    """Validate the ground truth, then send only new or changed pages.

    `target` is a project name (ground_truth/NAME), a folder anywhere, or an export .zip; a
    project file is created from the documented defaults when there is none."""
    name, notes = prepare(workspace, target, project_name)
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
            with full_disk_advice(transport, project.name):
                transport.send_plan(plan, (lambda t: progress(t, plan)) if progress else None)
            remember_push(workspace, project.name)
    return PushResult(project.name, report, plan, remote_folder, notes)


def prepare(workspace: Workspace, target: str, project_name: str | None) -> tuple[str, list[str]]:
    """The project a push target names, made ready: an export unpacked, a project file made."""
    path = Path(target).expanduser()
    if target.lower().endswith(".zip"):
        if not path.is_file():
            raise NotFoundError(f"{target} not found: give the path of an export .zip")
        name = check_name(project_name or path.stem, "project name")
        count = unpack_export(path, workspace.path / "ground_truth" / name)
        notes = [f"unpacked {count} files of {path.name} into ground_truth/{name}/"]
        return name, notes + _created(workspace, name, ensure_project(workspace, name))
    if _is_folder_target(workspace, target, path):
        name = check_name(project_name or path.resolve().name, "project name")
        return name, _created(workspace, name, ensure_project(workspace, name, path))
    name = check_name(project_name or target, "project name")
    if not workspace.project_file(name).exists():
        if not (workspace.path / "ground_truth" / name).is_dir():
            raise NotFoundError(f"unknown project {name!r}: put its export in ground_truth/{name}/"
                                f", or push a folder or an export .zip "
                                f"(hpctrain push ~/Downloads/{name}.zip)")
        return name, _created(workspace, name, ensure_project(workspace, name))
    return name, []


def _is_folder_target(workspace: Workspace, target: str, path: Path) -> bool:
    """A path rather than a project name: it has a slash, or only a folder of that name exists."""
    if "/" in target or target in (".", "..", "~"):
        if not path.is_dir():
            raise NotFoundError(f"{target} is not a folder: give a ground-truth folder, an export "
                                ".zip or a project name")
        return True
    known = (workspace.path / "projects" / f"{target}.yaml").exists() or \
        (workspace.path / "ground_truth" / target).is_dir()
    return path.is_dir() and not known


def _created(workspace: Workspace, name: str, created: bool) -> list[str]:
    return [f"created projects/{name}.yaml with the documented defaults (edit it to change the "
            "training settings)"] if created else []


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
