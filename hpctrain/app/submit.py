"""`hpctrain submit`: a request built from the project file, the profile and the flags, sent to
the cluster side, which renders, registers and queues the job (or only renders it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..backends import connect
from ..cluster.api import MODEL_SUFFIXES
from ..cluster.registry import JobRecord
from ..core.config import Workspace, user_template_dir
from ..core.errors import ConfigError, HpctrainError, InvalidName, NotFoundError
from ..core.names import check_name
from ..core.webhook import choose
from ..jobs.render import collect_overrides
from ..jobs.requests import JobRequest, Resources, TorchrunRequest, override_resources
from ..jobs.torchrun import REFERENCE_TRAINER, check_module_name
from .history import TimeChoice, TimeProposal, propose_time
from .projects import Project, current_project, load_project
from .usage import full_disk_advice


@dataclass(frozen=True)
class Submitted:
    """A submission, and what `submit` did or chose on the way (printed as lines)."""

    job: JobRecord | None
    script: str
    job_dir: str
    notes: tuple[str, ...] = ()
    compile_script: str | None = None  # a chained job's first stage; `script` trains
    time: TimeChoice | None = None  # a kraken job's time limit and where it came from


def submit(
    workspace: Workspace,
    kind: str,
    name: str | None,
    base: str | None = None,
    no_base: bool = False,
    resources: dict | None = None,
    dry_run: bool = False,
    preflight: bool = True,
) -> Submitted:
    """Submit a kraken job of project `name` (None: the current project). With `preflight`
    (Slurm), the cluster side first checks it against its partition (cluster/partitions.py)."""
    request, notes, project = kraken_request(workspace, kind, name, base, no_base, resources,
                                             preflight)
    with connect(workspace) as transport, full_disk_advice(transport, request.project):
        if request.base:
            request, sent = base_on_the_cluster(workspace, transport, request, dry_run)
            notes += sent
        request, time, said = _choose_time(transport, request, project,
                                           (resources or {}).get("time") is not None, dry_run)
        notes += said
        done = transport.cluster.submit(request, dry_run=dry_run)
    return Submitted(done.job, done.script, done.job_dir, tuple(notes), done.compile_script,
                     time)


def kraken_request(
    workspace: Workspace,
    kind: str,
    name: str | None,
    base: str | None = None,
    no_base: bool = False,
    resources: dict | None = None,
    preflight: bool = True,
) -> tuple[JobRequest, list[str], Project]:
    """The request of a kraken job of project `name` (None: the current project), from the
    project file, the profile and the flags; what was chosen on the way (notes); the project."""
    name, why = current_project(workspace, name)
    notes = [f"project {name} ({why})"] if why else []
    project = load_project(workspace, name)
    params = project.segmentation if kind == "segmentation" else project.transcription
    if no_base:
        base = None
    elif base is None:
        base = project.base_segmentation if kind == "segmentation" else project.base
    if base is not None:
        check_name(base, "base model name")
    if kind != "compile" and base is None and not params.spec:
        raise ConfigError(
            f"no base model and no network spec for {kind}: pass --base NAME, or set "
            f"{kind}.spec in projects/{name}.yaml to train from scratch"
        )
    profile = workspace.profile
    job_resources = _compile_partition(
        workspace, _job_resources(workspace, project.resources, resources or {}))
    notes += _compile_note(workspace, kind, job_resources)
    request = JobRequest(
        kind=kind, project=project.name, format=project.format,
        base=base if kind != "compile" else None, params=params, split=project.split,
        resources=job_resources,
        device=profile.device, kraken_version=profile.kraken_version, modules=profile.modules,
        venv=profile.venv, container=profile.container, templates=template_overrides(workspace),
        alerts=tuple(a.to_json() for a in project.alerts), preflight=preflight,
        notify=_notify(project.notify, workspace),
    )
    return request, notes, project


HISTORY_KINDS = ("transcription", "segmentation")  # the kinds that train in epochs


def _choose_time(transport, request: JobRequest, project: Project, flag: bool,
                 dry_run: bool) -> tuple[JobRequest, TimeChoice, list[str]]:
    """The job's time limit: --time > the project file's `time:` > learned from the project's
    earlier jobs (app/history.py) > the default. A dry run also says what history proposes."""
    given = "flag" if flag else "project" if project.time_written else None
    if request.kind not in HISTORY_KINDS or (given and not dry_run):
        return request, TimeChoice(request.resources.time, given or "default"), []
    proposal = _proposal(transport, request)
    time = request.resources.time
    if given:
        where = "--time" if given == "flag" else (
            f"projects/{project.name}.yaml (set resources.time to null to learn it)")
        learned = f" (history would give {proposal.time} {proposal.basis()})" if proposal else ""
        return request, TimeChoice(time, given, proposal), [f"time {time} from {where}{learned}"]
    if proposal is None:
        where = request.resources.partition or "the default partition"
        said = [f"time {time} (the default: no earlier {request.kind} job of {project.name} on "
                f"{where} timed an epoch to learn from)"] if dry_run else []
        return request, TimeChoice(time, "default"), said
    request = replace(request, resources=replace(request.resources, time=proposal.time))
    return request, TimeChoice(proposal.time, "history", proposal), [proposal.line()]


def _proposal(transport, request: JobRequest) -> TimeProposal | None:
    """What the project's earlier jobs propose; none when the cluster side cannot say."""
    partition = request.resources.partition
    try:
        history = transport.cluster.outcomes(project=request.project)
        if propose_time(history, request.kind, partition, request.params) is None:
            return None  # nothing to learn from: Slurm's limits need not be asked
        limits = [p for p in transport.cluster.partitions()
                  if (p.name == partition if partition else p.default)]
    except HpctrainError:
        return None
    cap = (limits[0].name, limits[0].max_time) if limits and limits[0].max_time else None
    return propose_time(history, request.kind, partition, request.params, cap)


def base_on_the_cluster(workspace: Workspace, transport, request: JobRequest,
                         dry_run: bool) -> tuple[JobRequest, list[str]]:
    """A base model only in models/base/ here is sent first; one on neither side is refused
    before anything is queued."""
    remote = {m["name"]: m["file"] for m in transport.cluster.base_models()}
    if request.base in remote:
        return request, []
    local = [workspace.path / "models" / "base" / f"{request.base}{suffix}"
             for suffix in MODEL_SUFFIXES]
    found = next((path for path in local if path.is_file()), None)
    if found is None:
        known = ", ".join(sorted(remote)) or "none"
        raise NotFoundError(
            f"unknown base model {request.base!r}: not on the cluster (known there: {known}) "
            f"nor in models/base/ here; put {request.base}.mlmodel in models/base/ or run "
            f"'hpctrain models push FILE --name {request.base}'")
    rel = f"{workspace.profile.tree.base_models}/{found.name}"
    if dry_run:  # nothing is sent: the script shows where the model will be
        return replace(request, base_path=f"{transport.root}/{rel}"), [
            f"base model {request.base} is only in models/base/: a real submit sends it"]
    transport.put(found, rel)
    return request, [f"sent base model {request.base} ({found.stat().st_size:,} bytes) from "
                     "models/base/ to the cluster"]


def _notify(project_setting, workspace: Workspace) -> dict | None:
    """The job's webhook: the project's, else the profile's (core/webhook.py)."""
    hook = choose(project_setting, workspace.profile.notify)
    return hook.to_json() if hook else None


def template_overrides(workspace: Workspace) -> dict[str, str]:
    """The user's templates, sent with every job: --template-dir > workspace > user config."""
    return collect_overrides(
        [workspace.template_dir, workspace.path / "templates", user_template_dir()]
    )


def _job_resources(workspace: Workspace, base: Resources, flags: dict) -> Resources:
    resources = override_resources(base, **flags)
    if resources.partition is None and workspace.profile.partition:
        resources = override_resources(resources, partition=workspace.profile.partition)
    return resources


def _compile_partition(workspace: Workspace, resources: Resources) -> Resources:
    """The profile's compile partition, unless the flag or the project names one."""
    if resources.compile_partition is None and workspace.profile.compile_partition:
        return override_resources(
            resources, compile_partition=workspace.profile.compile_partition)
    return resources


def _compile_note(workspace: Workspace, kind: str, resources: Resources) -> list[str]:
    """The embedded default (submitit's local executor) runs every job whole on this machine:
    a compile partition means nothing there, so it is ignored, and said once (a project file
    shared with a Slurm profile keeps working here)."""
    if (resources.compile_partition and workspace.profile.executor != "slurm"
            and kind in ("compile", "transcription")):
        return [f"compile_partition {resources.compile_partition} ignored: the "
                f"{workspace.profile.executor} executor runs the whole job on one machine "
                "(it needs 'executor: slurm')"]
    return []


def submit_torchrun(
    workspace: Workspace,
    script: str,
    args: tuple[str, ...] = (),
    project: str | None = None,
    module: bool = False,
    nproc_per_node: int | None = None,
    resources: dict | None = None,
    environment: dict | None = None,
    monitor: str = "val_auc",
    resume_from: int | None = None,
    dry_run: bool = False,
    preflight: bool = True,
) -> Submitted:
    """Submit SCRIPT (a local .py file, a module with `module`, or hpctrain.trainer) as a
    torchrun DDP job. With `project`, its project file gives resources and alerts; flags win."""
    request = torchrun_request(workspace, script, args, project, module, nproc_per_node,
                               resources, environment, monitor, resume_from, preflight)
    with connect(workspace) as transport, full_disk_advice(transport, request.project):
        done = transport.cluster.submit_torchrun(request, dry_run=dry_run)
    return Submitted(done.job, done.script, done.job_dir)


def torchrun_request(
    workspace: Workspace,
    script: str,
    args: tuple[str, ...] = (),
    project: str | None = None,
    module: bool = False,
    nproc_per_node: int | None = None,
    resources: dict | None = None,
    environment: dict | None = None,
    monitor: str = "val_auc",
    resume_from: int | None = None,
    preflight: bool = True,
) -> TorchrunRequest:
    """The request of a torchrun job (see `submit_torchrun`)."""
    target, text = _torchrun_target(script, module)
    if project:
        loaded = load_project(workspace, project)
        base, alerts, notify = loaded.resources, loaded.alerts, loaded.notify
    else:
        project, base, alerts, notify = _label_for(target), Resources(), (), None
    resources = _job_resources(workspace, base, resources or {})
    environment = {k: v for k, v in (environment or {}).items() if v}
    profile = workspace.profile
    return TorchrunRequest(
        project=project,
        target=target,
        script_text=text,
        args=tuple(args),
        resources=resources,
        nproc_per_node=nproc_per_node or resources.gpus or 1,
        monitor=monitor,
        alerts=tuple(a.to_json() for a in alerts),
        modules=tuple(environment.get("modules") or profile.modules),
        venv=environment.get("venv") or profile.venv,
        container=environment.get("container") or profile.container,
        resume_from=resume_from,
        templates=template_overrides(workspace),
        preflight=preflight,
        notify=_notify(notify, workspace),
    )


def _torchrun_target(script: str, module: bool) -> tuple[str, str | None]:
    """(file name, text) of the script to send, or (module, None) for `torchrun -m`."""
    if script == REFERENCE_TRAINER:
        # Read, not imported: the laptop needs no torch to send it.
        return "trainer.py", (Path(__file__).resolve().parents[1] / "trainer.py").read_text(
            encoding="utf-8"
        )
    if module:
        return check_module_name(script), None
    path = Path(script).expanduser()
    if not path.is_file():
        raise NotFoundError(
            f"script {script} not found: give the path of a .py file, or pass "
            "--module for a module installed in the job's environment"
        )
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
