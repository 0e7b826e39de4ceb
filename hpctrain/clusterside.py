"""The cluster side: the tree under the cluster root, submitting jobs, their states, logs and clean-up.

On a login node (or in the embedded default) these functions run directly; from a laptop the
same operations run as the cluster-side `hpctrain ... --json` over SSH. Nothing here prints.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__, events
from .config import Tree
from .errors import GroundTruthError, HpctrainError, NotFoundError
from .executor import scheduler_for
from .groundtruth import is_junk
from .project import Resources, Split, TrainParams
from .registry import JobRecord, JobState, Registry
from .runner import EVENTS, LOG, SCRIPT, SETTINGS

MODEL_SUFFIXES = (".mlmodel", ".safetensors")
KINDS = ("transcription", "segmentation", "compile")


@dataclass(frozen=True)
class JobRequest:
    """Everything the cluster side needs to render and submit one kraken job."""

    kind: str
    project: str
    format: str
    base: str | None
    params: TrainParams
    split: Split
    resources: Resources
    device: str = "auto"
    kraken_version: str = "auto"
    modules: tuple[str, ...] = ()
    venv: str | None = None
    container: str | None = None
    template_paths: tuple[str, ...] = ()
    base_path: str | None = None  # filled in by the cluster side
    alerts: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Submission:
    job: JobRecord | None      # None for a dry run
    script: str
    job_dir: str


@dataclass
class JobStatus:
    """One row of `hpctrain status`."""

    id: int
    kind: str
    project: str
    base: str | None
    state: str
    scheduler_id: str | None
    elapsed: float | None
    step: str | None
    epoch: int | None
    total_epochs: int | None
    best_metric: str | None
    best_value: float | None
    best_model: str | None
    test: dict = field(default_factory=dict)
    early_stopped: bool = False
    error: str | None = None
    job_dir: str = ""
    alerts: list = field(default_factory=list)   # open alerts, one message each
    checkpoint_epoch: int | None = None
    restarts: int = 0                            # times the job was requeued and started again

    def to_json(self) -> dict:
        return asdict(self)


class ClusterSide:
    """Operations on one cluster root."""

    def __init__(self, root: Path, tree: Tree = Tree(), executor: str = "local"):
        self.root = Path(root)
        self.tree = tree
        self.executor = executor

    # -- the tree -------------------------------------------------------------------------
    def folder(self, role: str) -> Path:
        return self.root / getattr(self.tree, role)

    def ensure_tree(self) -> list[str]:
        created = []
        for role in ("ground_truth", "compiled", "base_models", "scripts", "finetuned"):
            path = self.folder(role)
            if not path.is_dir():
                path.mkdir(parents=True)
                created.append(getattr(self.tree, role))
        (self.root / ".hpctrain").mkdir(exist_ok=True)
        with Registry(self.registry_path):
            pass
        return created

    def registry(self) -> Registry:
        if not self.folder("finetuned").is_dir():
            raise HpctrainError(f"the cluster tree under {self.root} is missing: run 'hpctrain init'")
        return Registry(self.registry_path)

    @property
    def registry_path(self) -> Path:
        return self.root / ".hpctrain" / "registry.sqlite"

    def job_dir_name(self, project: str, job_id: int, kind: str) -> str:
        return job_dir_name(self.tree, project, job_id, kind)

    # -- models ---------------------------------------------------------------------------
    def base_models(self) -> list[dict]:
        folder = self.folder("base_models")
        found = sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES) if folder.is_dir() else []
        return [{"name": p.stem, "file": p.name, "size": p.stat().st_size} for p in found]

    def resolve_base(self, name: str) -> Path:
        for suffix in MODEL_SUFFIXES:
            path = self.folder("base_models") / f"{name}{suffix}"
            if path.is_file():
                return path
        known = ", ".join(m["name"] for m in self.base_models()) or "none yet"
        raise NotFoundError(f"unknown base model {name!r} (known: {known}): "
                            f"run 'hpctrain models push FILE --name {name}'")

    # -- submitting -----------------------------------------------------------------------
    def pages(self, project: str) -> list[str]:
        folder = self.folder("ground_truth") / project
        pages = sorted(str(p) for p in folder.rglob("*.xml") if not is_junk(p.name)) if folder.is_dir() else []
        if not pages:
            raise GroundTruthError(f"no ground truth for project {project!r} on the cluster: "
                                   f"run 'hpctrain push {project}' first")
        return pages

    def submit(self, request: JobRequest, dry_run: bool = False) -> Submission:
        from dataclasses import replace

        from . import kraken
        from .render import search_path

        if request.kind not in KINDS:
            raise HpctrainError(f"unknown job kind {request.kind!r}; choose one of {', '.join(KINDS)}")
        if request.base:
            request = replace(request, base_path=str(self.resolve_base(request.base)))
        dialect = kraken.resolve_dialect(request.kraken_version)
        split = kraken.split_pages(self.pages(request.project), request.split.train, request.split.validation,
                                   request.split.test, request.split.seed)
        template_paths = [Path(p) for p in request.template_paths] + search_path(None, None)
        params = {"request": _request_json(request), "kraken": dialect.version, "split_sizes":
                  {k: len(v) for k, v in split.items()}, "hpctrain": __version__}

        def render_files(job_id: int) -> tuple[str, dict]:
            script, job = render_job(request, dialect, split, job_id, self.root, self.tree, template_paths)
            return script, job.files

        return self._submit(request, params, render_files, dry_run)

    def submit_torchrun(self, request, dry_run: bool = False) -> Submission:
        """Render and submit a torchrun DDP job (see torchrun.py)."""
        from .render import render, search_path
        from .torchrun import TEMPLATE, check_request, torchrun_context

        check_request(request)
        if self.executor != "slurm" and request.resources.nodes > 1:
            raise HpctrainError(f"{request.resources.nodes} nodes need Slurm; the {self.executor} executor runs "
                                "one node (set 'executor: slurm' in the profile)")
        resume_from = self._checkpoint_of(request.resume_from) if request.resume_from else None
        template_paths = [Path(p) for p in request.template_paths] + search_path(None, None)
        params = {"request": _request_json(request), "hpctrain": __version__}

        def render_files(job_id: int) -> tuple[str, dict]:
            job_dir = str(self.root / self.job_dir_name(request.project, job_id, request.kind))
            context, files = torchrun_context(request, job_dir, job_id, self.executor == "slurm", resume_from)
            script = render(TEMPLATE, {**_common_context(request, job_id, job_dir), **context}, template_paths)
            return script, files

        return self._submit(request, params, render_files, dry_run)

    def _checkpoint_of(self, job_id: int) -> str:
        with self.registry() as registry:
            record = registry.get(job_id)
        progress = events.summarize(events.read(self.root / record.job_dir / EVENTS))
        if not progress.checkpoint:
            raise NotFoundError(f"job {job_id} has written no checkpoint yet: resume from a job that has "
                                "(see 'hpctrain status')")
        path = Path(progress.checkpoint)
        return str(path if path.is_absolute() else self.root / record.job_dir / path)

    def _submit(self, request, params: dict, render_files, dry_run: bool) -> Submission:
        """Register the job, write its folder (script, files, job.json), hand it to the scheduler.

        On any failure the registry entry and the folder are removed again: nothing half-submitted stays."""
        kind, project, base = request.kind, request.project, getattr(request, "base", None)
        with self.registry() as registry:
            if dry_run:
                job_id = registry.next_id()
                script, _files = render_files(job_id)
                return Submission(None, script, self.job_dir_name(project, job_id, kind))
            record = registry.add(kind, project, base, lambda i: self.job_dir_name(project, i, kind), params)
            try:
                script, files = render_files(record.id)
                settings = {"monitor": getattr(request, "monitor", None), "alerts": list(request.alerts)}
                job_dir = self.root / record.job_dir
                self._write_job(job_dir, script, {**files, SETTINGS: json.dumps(settings, indent=1)})
                scheduler_id = scheduler_for(self.executor, self.root).submit(job_dir, request.resources.time)
            except BaseException:
                registry.delete(record.id)
                shutil.rmtree(self.root / record.job_dir, ignore_errors=True)
                raise
            registry.update(record.id, state=JobState.PENDING, scheduler_id=scheduler_id)
            return Submission(registry.get(record.id), script, record.job_dir)

    @staticmethod
    def _write_job(job_dir: Path, script: str, files: dict) -> None:
        job_dir.mkdir(parents=True, exist_ok=False)
        for rel, text in {**files, SCRIPT: script}.items():
            path = job_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

    # -- following ------------------------------------------------------------------------
    def status(self, job_ids: list[int] | None = None, project: str | None = None) -> list[JobStatus]:
        with self.registry() as registry:
            records = [registry.get(i) for i in job_ids] if job_ids else registry.all(project)
            live = [r for r in records if not r.state.final and r.scheduler_id]
            live_states = (scheduler_for(self.executor, self.root).states([r.scheduler_id for r in live])
                           if live else {})
            rows = []
            for record in records:
                progress = events.summarize(events.read(self.root / record.job_dir / EVENTS))
                state = self._state(record, progress, live_states.get(record.scheduler_id))
                if state != record.state:
                    registry.update(record.id, state=state)
                rows.append(_row(record, state, progress))
            return rows

    @staticmethod
    def _state(record: JobRecord, progress: events.Progress, scheduler_state: JobState | None) -> JobState:
        if record.state.final:
            return record.state
        if progress.state in ("COMPLETED", "FAILED"):
            return JobState(progress.state)
        if scheduler_state is not None and scheduler_state != JobState.RUNNING:
            return scheduler_state  # Slurm knows: PENDING, CANCELLED, TIMEOUT, FAILED before the runner started
        if scheduler_state is not None:
            return JobState.RUNNING if progress.state == "RUNNING" else JobState.PENDING
        if record.state == JobState.SUBMITTING:
            return record.state
        return JobState.FAILED  # the process is gone and never reported an end

    def job(self, job_id: int | str) -> JobStatus:
        return self.status([int(job_id)])[0]

    def read_log(self, job_id: int | str, offset: int = 0, limit: int = 1 << 20) -> tuple[str, int]:
        """Up to `limit` bytes of the raw log from `offset`, cut at a line end; and the new offset."""
        with self.registry() as registry:
            record = registry.get(job_id)
        path = self.root / record.job_dir / LOG
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(limit)
        except FileNotFoundError:
            return "", offset
        if len(data) == limit and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]
        return data.decode("utf-8", errors="replace"), offset + len(data)

    def cancel(self, job_id: int | str) -> JobStatus:
        with self.registry() as registry:
            record = registry.get(job_id)
            if record.state.final:
                raise HpctrainError(f"job {record.id} is already {record.state.value}; nothing to cancel")
            scheduler_for(self.executor, self.root).cancel(record.scheduler_id or "", self.root / record.job_dir)
            registry.update(record.id, state=JobState.CANCELLED)
        return self.job(record.id)

    # -- cleaning -------------------------------------------------------------------------
    def clean_plan(self, project: str) -> list[dict]:
        """Files `clean` would delete: compiled arrows and the project's job logs. Never models."""
        with self.registry() as registry:
            records = registry.all(project)
        running = [r.id for r in records if not r.state.final]
        if running:
            raise HpctrainError(f"project {project} has unfinished jobs ({', '.join(map(str, running))}): "
                                "wait for them or cancel them before cleaning")
        plan = []
        compiled = self.folder("compiled") / project
        if compiled.is_dir():
            plan += [p for p in sorted(compiled.rglob("*.arrow"))]
        for record in records:
            job_dir = self.root / record.job_dir
            plan += [p for p in (job_dir / LOG,) if p.is_file()]
            plan += sorted((job_dir / "submitit").glob("*.out")) + sorted((job_dir / "submitit").glob("*.err"))
        return [{"path": str(p.relative_to(self.root)), "size": p.stat().st_size} for p in plan]

    def clean(self, paths: list[str]) -> int:
        removed = 0
        for rel in paths:
            path = (self.root / rel).resolve()
            path.relative_to(self.root.resolve())  # never outside the root
            if path.is_file():
                path.unlink()
                removed += 1
        return removed


def job_dir_name(tree: Tree, project: str, job_id: int, kind: str) -> str:
    return f"{tree.finetuned}/{project}/job{job_id}-{kind}"


def render_job(request: JobRequest, dialect, split: dict, job_id: int, root: Path, tree: Tree,
               template_paths: list[Path]):
    """The job script and the files to write beside it; pure (touches no file but templates)."""
    from . import kraken
    from .render import render

    builder = {"transcription": kraken.transcription_job, "segmentation": kraken.segmentation_job,
               "compile": kraken.compile_job}[request.kind]
    job_dir = str(root / job_dir_name(tree, request.project, job_id, request.kind))
    compiled_dir = str(root / tree.compiled / request.project / f"job{job_id}")
    job = builder(dialect, request, job_dir, compiled_dir, _device(request), split)
    run_prefix = ["apptainer", "exec", "--nv", request.container] if request.container else []
    context = {**_common_context(request, job_id, job_dir), "run_prefix": run_prefix, **job.context}
    return render(job.template, context, template_paths), job


def _common_context(request, job_id: int, job_dir: str) -> dict:
    """What base.sh.j2 needs of any job: names, resources, environment set-up."""
    return {
        "version": __version__, "job_id": job_id, "kind": request.kind, "project": request.project,
        "job_name": f"hpctrain-{request.project}-{request.kind}-{job_id}", "res": request.resources,
        "env": {"modules": request.modules, "venv": request.venv}, "job_dir": job_dir,
    }


def _device(request: JobRequest) -> str:
    if request.device != "auto":
        return request.device
    return "cuda:0" if request.resources.gpus else "cpu"


def _request_json(request) -> dict:
    data = asdict(request)
    data.pop("template_paths")
    data.pop("script_text", None)
    return data


def _row(record: JobRecord, state: JobState, progress: events.Progress) -> JobStatus:
    elapsed = None
    if progress.started:
        elapsed = (progress.ended or time.time()) - progress.started
    best_model = f"{record.job_dir}/{progress.best_model}" if progress.best_model else None
    return JobStatus(
        id=record.id, kind=record.kind, project=record.project, base=record.base, state=state.value,
        scheduler_id=record.scheduler_id, elapsed=elapsed, step=progress.step, epoch=progress.epoch,
        total_epochs=progress.total_epochs, best_metric=progress.best_metric, best_value=progress.best_value,
        best_model=best_model, test=progress.test, early_stopped=progress.early_stopped, error=progress.error,
        job_dir=record.job_dir, alerts=list(progress.alerts.values()), checkpoint_epoch=progress.checkpoint_epoch,
        restarts=max(0, progress.starts - 1))
