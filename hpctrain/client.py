"""The laptop side of every command: load the workspace, plan, act through the transport, return records.

The CLI calls exactly one function of this module per command and prints what it returns.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .clusterside import MODEL_SUFFIXES, JobRequest, JobStatus, Submission
from .config import WORKSPACE_DIRS, WORKSPACE_FILE, Workspace
from .errors import ConfigError, GroundTruthError, HpctrainError, InvalidName, NotFoundError, TransportError
from .groundtruth import Report, validate
from .names import check_name
from .project import Project, Resources, load_project, override_resources
from .render import packaged_template_dir, render
from .sync import SyncPlan, Transfer, apply_push, plan_push
from .transport import connect

WORKSPACE_TEMPLATE = "workspace.yaml.j2"
PROJECT_TEMPLATE = "project.yaml.j2"


# -- init ---------------------------------------------------------------------------------
@dataclass
class InitResult:
    workspace: Path
    created: list[str]
    cluster_root: Path | str
    cluster_created: list[str]


def init_workspace(path: Path, accept_host_key: str | None = None, flags: dict | None = None) -> InitResult:
    """Create (or complete) a workspace and the cluster tree of its active profile. Never overwrites.

    `accept_host_key` (an SSH fingerprint the user has checked) adds the cluster's host key to
    known_hosts, only if the server presents exactly that key.
    """
    from .config import load_workspace

    path = Path(path).resolve()
    created = []
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder: choose another workspace path")
    for rel in WORKSPACE_DIRS:
        folder = path / rel
        if not folder.is_dir():
            folder.mkdir(parents=True)
            created.append(rel + "/")
    config = path / WORKSPACE_FILE
    if not config.exists():
        _write_new(config, render(WORKSPACE_TEMPLATE, {}, [packaged_template_dir()]))
        created.append(WORKSPACE_FILE)
    workspace = load_workspace(path, flags)
    with connect(workspace) as transport:
        if accept_host_key:
            from .ssh import accept_host_key as accept

            if workspace.profile.backend != "ssh":
                raise ConfigError("--accept-host-key is for a profile with backend ssh")
            accept(transport.target, accept_host_key)
        cluster_created = transport.ensure_tree(workspace.profile.tree)
        cluster_root = transport.root
    return InitResult(path, created, cluster_root, cluster_created)


def _write_new(path: Path, text: str) -> None:
    """Create a file that must not exist yet: written under a temporary name, then linked (never overwrites)."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; edit it instead") from None
    finally:
        tmp.unlink(missing_ok=True)


def setup_cluster(workspace: Workspace, force: bool = False, progress=None):
    from .install import setup

    if workspace.profile.backend != "ssh":
        raise ConfigError(f"profile {workspace.profile.name!r} is local: hpctrain runs here already, "
                          "nothing to set up (use --profile NAME for an ssh profile)")
    with connect(workspace) as transport:
        return setup(transport, force=force, progress=progress)


def new_project(workspace: Workspace, name: str, ground_truth: str | None = None) -> Path:
    """Write projects/NAME.yaml from the documented example; refuses to overwrite."""
    path = workspace.project_file(name)
    if path.exists():
        raise ConfigError(f"{path.relative_to(workspace.path)} already exists; edit it instead")
    text = render(PROJECT_TEMPLATE, {"name": name, "ground_truth": ground_truth or f"ground_truth/{name}"},
                  [packaged_template_dir()])
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, text)
    return path


# -- push ---------------------------------------------------------------------------------
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
        raise GroundTruthError(f"ground truth folder {folder} not found: put the project's XML and images there "
                               f"or set 'ground_truth' in projects/{name}.yaml")
    report = validate(folder, project.format, need_split=True)
    if not report.ok:
        raise GroundTruthError(f"{len(report.problems)} problem(s) in {folder}; fix them and push again "
                               "(nothing was sent)", report.problems)
    return project, report


def push(workspace: Workspace, name: str, progress: Callable[[Transfer], None] | None = None,
         dry_run: bool = False, checksum: bool = False) -> PushResult:
    """Validate the ground truth, then send only new or changed pages."""
    project, report = check_ground_truth(workspace, name)
    with connect(workspace) as transport:
        remote_folder = f"{workspace.profile.tree.ground_truth}/{project.name}"
        listing = transport.list_files(remote_folder)
        plan = plan_push(report.folder, report.files(), remote_folder, listing,
                         transport.checksums if checksum else None)
        if not dry_run:
            apply_push(plan, transport, progress)
    return PushResult(project.name, report, plan, remote_folder)


# -- models -------------------------------------------------------------------------------


def push_model(workspace: Workspace, file: Path, name: str | None = None) -> dict:
    file = Path(file)
    if not file.is_file():
        raise NotFoundError(f"model file {file} not found")
    if file.suffix not in MODEL_SUFFIXES:
        raise ConfigError(f"{file.name}: a base model is a {' or '.join(MODEL_SUFFIXES)} file")
    name = check_name(name or file.stem, "model name")
    with connect(workspace) as transport:
        remote = f"{workspace.profile.tree.base_models}/{name}{file.suffix}"
        transport.put(file, remote)
    return {"name": name, "remote": remote, "size": file.stat().st_size}


def list_models(workspace: Workspace) -> dict:
    with connect(workspace) as transport:
        base = transport.cluster.base_models()
        done = [s for s in transport.cluster.status() if s.best_model]
    local = workspace.path / "models" / "finetuned"
    fetched = {p.parent.name + "/" + p.name for p in local.glob("*/*") if p.is_dir()}
    finetuned = [{"job": s.id, "project": s.project, "kind": s.kind, "state": s.state, "metric": s.best_metric,
                  "value": s.best_value, "remote": s.best_model,
                  "fetched": f"{s.project}/job{s.id}" in fetched} for s in done]
    return {"base": base, "finetuned": finetuned}


# -- jobs ---------------------------------------------------------------------------------
def submit(workspace: Workspace, kind: str, name: str, base: str | None = None, no_base: bool = False,
           resources: dict | None = None, dry_run: bool = False) -> Submission:
    project = load_project(workspace, name)
    params = project.segmentation if kind == "segmentation" else project.transcription
    if no_base:
        base = None
    elif base is None:
        base = project.base_segmentation if kind == "segmentation" else project.base
    if base is not None:
        check_name(base, "base model name")
    if kind != "compile" and base is None and not params.spec:
        raise ConfigError(f"no base model and no network spec for {kind}: pass --base NAME, or set "
                          f"{kind}.spec in projects/{name}.yaml to train from scratch")
    profile = workspace.profile
    resources = _job_resources(workspace, project.resources, resources or {})
    request = JobRequest(
        kind=kind, project=project.name, format=project.format, base=base if kind != "compile" else None,
        params=params, split=project.split, resources=resources,
        device=profile.device, kraken_version=profile.kraken_version, modules=profile.modules,
        venv=profile.venv, container=profile.container, template_paths=_template_paths(workspace),
        alerts=tuple(a.to_json() for a in project.alerts),
    )
    with connect(workspace) as transport:
        return transport.cluster.submit(request, dry_run=dry_run)


def _template_paths(workspace: Workspace) -> tuple[str, ...]:
    return tuple(str(p) for p in (workspace.template_dir, workspace.path / "templates") if p and p.is_dir())


def _job_resources(workspace: Workspace, base: Resources, flags: dict) -> Resources:
    resources = override_resources(base, **flags)
    if resources.partition is None and workspace.profile.partition:
        resources = override_resources(resources, partition=workspace.profile.partition)
    return resources


def submit_torchrun(workspace: Workspace, script: str, args: tuple[str, ...] = (), project: str | None = None,
                    module: bool = False, nproc_per_node: int | None = None, resources: dict | None = None,
                    environment: dict | None = None, monitor: str = "val_auc", resume_from: int | None = None,
                    dry_run: bool = False) -> Submission:
    """Submit SCRIPT (a local .py file, a module with `module`, or hpctrain.trainer) as a torchrun DDP job.

    With `project`, its project file gives resources and alerts; flags win over it."""
    from .torchrun import TorchrunRequest

    target, text = _torchrun_target(script, module)
    if project:
        loaded = load_project(workspace, project)
        base, alerts = loaded.resources, loaded.alerts
    else:
        project, base, alerts = _label_for(target), Resources(), ()
    resources = _job_resources(workspace, base, resources or {})
    environment = {k: v for k, v in (environment or {}).items() if v}
    profile = workspace.profile
    request = TorchrunRequest(
        project=project, target=target, script_text=text, args=tuple(args), resources=resources,
        nproc_per_node=nproc_per_node or resources.gpus or 1, monitor=monitor,
        alerts=tuple(a.to_json() for a in alerts), modules=tuple(environment.get("modules") or profile.modules),
        venv=environment.get("venv") or profile.venv, container=environment.get("container") or profile.container,
        resume_from=resume_from, template_paths=_template_paths(workspace))
    with connect(workspace) as transport:
        return transport.cluster.submit_torchrun(request, dry_run=dry_run)


def _torchrun_target(script: str, module: bool) -> tuple[str, str | None]:
    """(file name, text) of the script to send, or (module, None) for `torchrun -m`."""
    from .torchrun import REFERENCE_TRAINER

    if script == REFERENCE_TRAINER:
        from importlib.resources import files

        # Read, not imported: the laptop needs no torch to send it.
        return "trainer.py", (files("hpctrain") / "trainer.py").read_text(encoding="utf-8")
    if module:
        from .torchrun import check_module_name

        return check_module_name(script), None
    path = Path(script).expanduser()
    if not path.is_file():
        raise NotFoundError(f"script {script} not found: give the path of a .py file, or pass --module "
                            "for a module installed in the job's environment")
    try:
        return path.name, path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{script} is not a UTF-8 text file: give a Python script") from None


def _label_for(target: str) -> str:
    """The project label of a torchrun job without --project: the script's or module's name."""
    stem = target[:-3] if target.endswith(".py") else target.rsplit(".", 1)[-1]
    try:
        return check_name(stem, "project name")
    except InvalidName:
        raise ConfigError(f"cannot name the job after {target!r}: pass --project NAME") from None


def status(workspace: Workspace, job_ids: list[int] | None = None, project: str | None = None) -> list[JobStatus]:
    if project:
        check_name(project, "project name")
    with connect(workspace) as transport:
        return transport.cluster.status(job_ids, project)


def poll_interval() -> float:
    return float(os.environ.get("HPCTRAIN_POLL_SECONDS", "1"))


def follow_log(workspace: Workspace, job_id: int, follow: bool = False) -> Iterator[str]:
    """Chunks of a job's raw log; with `follow`, new ones until the job ends. One connection throughout."""
    from .registry import JobState

    with connect(workspace) as transport:
        cluster, offset = transport.cluster, 0
        while True:
            chunk, offset = cluster.read_log(job_id, offset)
            if chunk:
                yield chunk
                continue
            if not follow or JobState(cluster.job(job_id).state).final:
                chunk, offset = cluster.read_log(job_id, offset)  # what was written while we asked
                if chunk:
                    yield chunk
                return
            time.sleep(poll_interval())


def watch(workspace: Workspace, job_id: int, timeout: float | None = None) -> Iterator[JobStatus]:
    """The job's status row, again and again until it ends (or `timeout` seconds pass). One connection."""
    from .registry import JobState

    deadline = time.monotonic() + timeout if timeout else None
    with connect(workspace) as transport:
        while True:
            row = transport.cluster.job(job_id)
            yield row
            if JobState(row.state).final:
                return
            if deadline and time.monotonic() > deadline:
                raise HpctrainError(f"job {job_id} still {row.state} after {timeout:.0f} s")
            time.sleep(poll_interval())


def cancel(workspace: Workspace, job_id: int) -> JobStatus:
    with connect(workspace) as transport:
        return transport.cluster.cancel(job_id)


# -- fetch --------------------------------------------------------------------------------
FETCHED = ("events.jsonl", "job.log", "job.sh", "split/train.txt", "split/validation.txt", "split/test.txt")


@dataclass
class FetchResult:
    job: JobStatus
    destination: Path
    files: list[str] = field(default_factory=list)


def _job_to_fetch(cluster, target: str) -> JobStatus:
    if target.isdigit():
        job = cluster.job(int(target))
        if not job.best_model:
            raise HpctrainError(f"job {job.id} is {job.state} and has no best model yet"
                                + (f": {job.error}" if job.error else ""))
        return job
    check_name(target, "project name")
    done = [s for s in cluster.status(project=target) if s.state == "COMPLETED" and s.best_model]
    if not done:
        raise NotFoundError(f"project {target!r} has no completed job with a model yet: see 'hpctrain status'")
    return done[-1]


def _inside_job(job: JobStatus, remote: str) -> str:
    """`remote` relative to the job folder; a path that leaves it (a hostile or broken cluster) is refused."""
    import posixpath

    rel = posixpath.normpath(remote[len(job.job_dir) + 1:]) if remote.startswith(job.job_dir + "/") else ""
    if not rel or rel.startswith(("../", "/")) or rel == "..":
        raise TransportError(f"refusing to fetch {remote!r}: it is outside job {job.id}'s folder "
                             "(fetch only brings files from the job's folder)")
    return rel


def fetch(workspace: Workspace, target: str) -> FetchResult:
    """Bring a job's best model, events, log and script into models/finetuned/PROJECT/jobN/."""
    with connect(workspace) as transport:
        job = _job_to_fetch(transport.cluster, target)
        destination = workspace.path / "models" / "finetuned" / job.project / f"job{job.id}"
        result = FetchResult(job, destination)
        wanted = [job.best_model] + [f"{job.job_dir}/{rel}" for rel in FETCHED]
        available = transport.list_files(job.job_dir)
        for remote in wanted:
            rel = _inside_job(job, remote)
            if rel not in available:
                continue
            local = destination / Path(rel).name if remote == job.best_model else destination / rel
            transport.get(remote, local)
            result.files.append(str(local.relative_to(workspace.path)))
    return result


# -- clean --------------------------------------------------------------------------------
def clean_plan(workspace: Workspace, project: str) -> list[dict]:
    check_name(project, "project name")
    with connect(workspace) as transport:
        return transport.cluster.clean_plan(project)


def clean(workspace: Workspace, paths: list[str]) -> int:
    with connect(workspace) as transport:
        return transport.cluster.clean(paths)
