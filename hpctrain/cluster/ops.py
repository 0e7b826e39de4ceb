"""The cluster side's operations on one cluster root (implements `ClusterOps`).

On a login node (or in the embedded default) they run directly; from a laptop the same
operations run through `hpctrain cluster-call` over SSH (backends/rpc.py). Nothing here prints.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..core.config import STATE_FOLDER, Tree
from ..core.errors import GroundTruthError, HpctrainError, NotFoundError
from ..core.files import write_text
from ..core.layout import (
    CLEANABLE_GLOBS,
    EVENTS,
    FETCHED,
    LAYOUT_VERSION,
    LOG,
    SCRIPT,
    SETTINGS,
    compiled_dir_name,
    job_dir_name,
)
from ..core.names import check_name
from ..jobs import build, kraken
from ..jobs.groundtruth import is_junk
from ..jobs.requests import JobRequest, TorchrunRequest, recorded
from ..jobs.split import split_pages
from ..runtime import events
from . import provenance
from .api import MODEL_SUFFIXES, FetchPlan, JobStatus, Submission, inside_job
from .registry import JobRecord, JobState, Registry
from .scheduler import Live, scheduler_for, waiting


LOG_CHUNK = 1 << 20  # what one read_log call returns at most


class ClusterSide:
    """Operations on one cluster root."""

    def __init__(
        self,
        root: Path,
        tree: Tree = Tree(),
        executor: str = "local",
        template_dirs: tuple[Path, ...] = (),
    ):
        self.root = Path(root)
        self.tree = tree
        self.executor = executor
        self.template_dirs = [Path(p) for p in template_dirs]

    # -- the tree -------------------------------------------------------------------------
    def folder(self, role: str) -> Path:
        return self.root / getattr(self.tree, role)

    def ensure_tree(self) -> list[str]:
        created = []
        for name in self.tree.folders():
            if not (self.root / name).is_dir():
                (self.root / name).mkdir(parents=True)
                created.append(name)
        (self.root / STATE_FOLDER).mkdir(exist_ok=True)
        with Registry(self.registry_path):
            pass
        return created

    def registry(self) -> Registry:
        if not self.folder("finetuned").is_dir():
            raise HpctrainError(
                f"the cluster tree under {self.root} is missing: run 'hpctrain init'"
            )
        return Registry(self.registry_path)

    @property
    def registry_path(self) -> Path:
        return self.root / STATE_FOLDER / "registry.sqlite"

    def job_dir_name(self, project: str, job_id: int, kind: str) -> str:
        return job_dir_name(self.tree.finetuned, project, job_id, kind)

    # -- models ---------------------------------------------------------------------------
    def base_models(self) -> list[dict]:
        folder = self.folder("base_models")
        found = (
            sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES)
            if folder.is_dir()
            else []
        )
        return [{"name": p.stem, "file": p.name, "size": p.stat().st_size} for p in found]

    def resolve_base(self, name: str) -> Path:
        for suffix in MODEL_SUFFIXES:
            path = self.folder("base_models") / f"{name}{suffix}"
            if path.is_file():
                return path
        known = ", ".join(m["name"] for m in self.base_models()) or "none yet"
        raise NotFoundError(
            f"unknown base model {name!r} (known: {known}): "
            f"run 'hpctrain models push FILE --name {name}'"
        )

    # -- submitting -----------------------------------------------------------------------
    def pages(self, project: str) -> list[str]:
        folder = self.folder("ground_truth") / project
        pages = (
            sorted(str(p) for p in folder.rglob("*.xml") if not is_junk(p.name))
            if folder.is_dir()
            else []
        )
        if not pages:
            raise GroundTruthError(
                f"no ground truth for project {project!r} on the cluster: "
                f"run 'hpctrain push {project}' first"
            )
        return pages

    def submit(self, request: JobRequest, dry_run: bool = False) -> Submission:
        if request.kind not in build.KINDS:
            raise HpctrainError(
                f"unknown job kind {request.kind!r}; choose one of {', '.join(build.KINDS)}"
            )
        if request.base and not (dry_run and request.base_path):
            # A dry run may show where a base model still on the laptop will be.
            request = replace(request, base_path=str(self.resolve_base(request.base)))
        dialect = kraken.resolve_dialect(request.kraken_version)
        kraken.check_params(dialect, request.kind, request.params, request.project)
        split = split_pages(
            self.pages(request.project),
            request.split.train,
            request.split.validation,
            request.split.test,
            request.split.seed,
        )
        params = {
            "request": recorded(request),
            "kraken": dialect.version,
            "base_sha256": provenance.base_digest(request.base_path, dry_run),
            "split_sizes": {k: len(v) for k, v in split.items()},
            "hpctrain": __version__,
        }

        def render_files(job_id: int) -> tuple[str, dict]:
            job_dir = str(self.root / self.job_dir_name(request.project, job_id, request.kind))
            compiled_dir = str(
                self.root / compiled_dir_name(self.tree.compiled, request.project, job_id)
            )
            return build.kraken_script(
                request, dialect, split, job_id, job_dir, compiled_dir, self.template_dirs
            )

        # the runner's log parser: the total of ketos' epoch lines that show none (4.3 never does)
        settings = {"epochs": kraken.epoch_bound(request)}
        return self._submit(request, params, render_files, dry_run, settings)

    def submit_torchrun(self, request: TorchrunRequest, dry_run: bool = False) -> Submission:
        """Render and submit a torchrun DDP job (see jobs/torchrun.py)."""
        from ..jobs.torchrun import check_request

        check_request(request)
        if self.executor != "slurm" and request.resources.nodes > 1:
            raise HpctrainError(
                f"{request.resources.nodes} nodes need Slurm; the {self.executor} "
                "executor runs one node (set 'executor: slurm' in the profile)"
            )
        resume_from = self._checkpoint_of(request.resume_from) if request.resume_from else None
        params = {"request": recorded(request), "hpctrain": __version__}

        def render_files(job_id: int) -> tuple[str, dict]:
            job_dir = str(self.root / self.job_dir_name(request.project, job_id, request.kind))
            return build.torchrun_script(
                request, job_id, job_dir, self.executor == "slurm", resume_from, self.template_dirs
            )

        return self._submit(request, params, render_files, dry_run)

    def _checkpoint_of(self, job_id: int) -> str:
        with self.registry() as registry:
            record = registry.get(job_id)
        progress = events.summarize(events.read(self.root / record.job_dir / EVENTS))
        if not progress.checkpoint:
            raise NotFoundError(
                f"job {job_id} has written no checkpoint yet: resume from a job "
                "that has (see 'hpctrain status')"
            )
        path = Path(progress.checkpoint)
        return str(path if path.is_absolute() else self.root / record.job_dir / path)

    def _submit(self, request, params: dict, render_files, dry_run: bool,
                settings: dict | None = None) -> Submission:
        """Register the job, write its folder (script, files, job.json), hand it to the scheduler.

        On any failure the registry entry and the folder are removed again: nothing
        half-submitted stays."""
        kind, project, base = request.kind, request.project, getattr(request, "base", None)
        with self.registry() as registry:
            if dry_run:
                job_id = registry.next_id()
                script, _files = render_files(job_id)
                return Submission(None, script, self.job_dir_name(project, job_id, kind))
            record = registry.add(
                kind, project, base, lambda i: self.job_dir_name(project, i, kind), params
            )
            try:
                script, files = render_files(record.id)
                settings = {
                    "monitor": getattr(request, "monitor", None),
                    "alerts": list(request.alerts),
                    "layout": LAYOUT_VERSION,
                    **(settings or {}),
                }
                job_dir = self.root / record.job_dir
                self._write_job(
                    job_dir, script, {**files, SETTINGS: json.dumps(settings, indent=1)}
                )
                scheduler = scheduler_for(self.executor, self.root)
                scheduler_id = scheduler.submit(job_dir, request.resources.time)
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
            write_text(job_dir / rel, text)

    # -- following ------------------------------------------------------------------------
    def status(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> list[JobStatus]:
        with self.registry() as registry:
            records = [registry.get(i) for i in job_ids] if job_ids else registry.all(project)
            live = [r for r in records if not r.state.final and r.scheduler_id]
            live_states = (
                scheduler_for(self.executor, self.root).states([r.scheduler_id for r in live])
                if live
                else {}
            )
            rows = []
            for record in records:
                progress = events.summarize(events.read(self.root / record.job_dir / EVENTS))
                live = live_states.get(record.scheduler_id)
                state = _state(record, progress, live.state if live else None)
                if state != record.state:
                    registry.update(record.id, state=state)
                rows.append(_row(record, state, progress, live))
            return rows

    def job(self, job_id: int) -> JobStatus:
        return self.status([int(job_id)])[0]

    def read_log(self, job_id: int, offset: int = 0) -> tuple[str, int]:
        """Up to LOG_CHUNK bytes of the raw log from `offset`, cut at a line end; the new offset."""
        with self.registry() as registry:
            record = registry.get(job_id)
        path = self.root / record.job_dir / LOG
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(LOG_CHUNK)
        except FileNotFoundError:
            return "", offset
        if len(data) == LOG_CHUNK and b"\n" in data:
            data = data[: data.rindex(b"\n") + 1]
        return data.decode("utf-8", errors="replace"), offset + len(data)

    def cancel(self, job_id: int) -> JobStatus:
        with self.registry() as registry:
            record = registry.get(job_id)
            if record.state.final:
                raise HpctrainError(
                    f"job {record.id} is already {record.state.value}; nothing to cancel"
                )
            scheduler = scheduler_for(self.executor, self.root)
            scheduler.cancel(record.scheduler_id or "", self.root / record.job_dir)
            registry.update(record.id, state=JobState.CANCELLED)
        return self.job(record.id)

    # -- fetching -------------------------------------------------------------------------
    def fetch_plan(self, target: str) -> FetchPlan:
        """The best model (under its own name) and FETCHED files that exist, of one job."""
        job = self._job_to_fetch(target)
        wanted = [(job.best_model, Path(job.best_model).name)]
        wanted += [(f"{job.job_dir}/{rel}", rel) for rel in FETCHED]
        files = tuple(
            (remote, local)
            for remote, local in wanted
            if (self.root / inside_job(job, remote)).is_file()
        )
        with self.registry() as registry:
            record = registry.get(job.id)
        progress = events.summarize(events.read(self.root / job.job_dir / EVENTS))
        return FetchPlan(job, files, provenance.of_job(self.root, record, job, progress))

    def _job_to_fetch(self, target: str) -> JobStatus:
        if target.isdigit():
            job = self.job(int(target))
            if not job.best_model:
                raise HpctrainError(
                    f"job {job.id} is {job.state} and has no best model yet"
                    + (f": {job.error}" if job.error else "")
                )
            return job
        check_name(target, "project name")
        done = [s for s in self.status(project=target) if s.state == "COMPLETED" and s.best_model]
        if not done:
            raise NotFoundError(
                f"project {target!r} has no completed job with a model yet: see 'hpctrain status'"
            )
        return done[-1]

    # -- cleaning -------------------------------------------------------------------------
    def clean_plan(self, project: str) -> list[dict]:
        """Files `clean` would delete: compiled arrows and the project's job logs. Never models."""
        check_name(project, "project name")
        with self.registry() as registry:
            records = registry.all(project)
        running = [r.id for r in records if not r.state.final]
        if running:
            raise HpctrainError(
                f"project {project} has unfinished jobs "
                f"({', '.join(map(str, running))}): wait for them or cancel them "
                "before cleaning"
            )
        plan = []
        compiled = self.folder("compiled") / project
        if compiled.is_dir():
            plan += sorted(compiled.rglob("*.arrow"))
        for record in records:
            job_dir = self.root / record.job_dir
            for pattern in CLEANABLE_GLOBS:
                plan += sorted(p for p in job_dir.glob(pattern) if p.is_file())
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


def _state(
    record: JobRecord, progress: events.Progress, scheduler_state: JobState | None
) -> JobState:
    if record.state.final:
        return record.state
    if progress.state in ("COMPLETED", "FAILED"):
        return JobState(progress.state)
    if scheduler_state is not None and scheduler_state != JobState.RUNNING:
        # Slurm knows: PENDING, CANCELLED, TIMEOUT, FAILED before the runner started.
        return scheduler_state
    if scheduler_state is not None:
        return JobState.RUNNING if progress.state == "RUNNING" else JobState.PENDING
    if record.state == JobState.SUBMITTING:
        return record.state
    return JobState.FAILED  # the process is gone and never reported an end


# What a status row takes from the job's events as they are.
PROGRESS_FIELDS = ("step", "epoch", "total_epochs", "best_metric", "best_value", "best_epoch",
                   "test", "early_stopped", "stopped", "stopped_epoch", "error",
                   "checkpoint_epoch")


def _row(record: JobRecord, state: JobState, progress: events.Progress,
         live: Live | None = None) -> JobStatus:
    elapsed = None
    if progress.started:
        elapsed = (progress.ended or time.time()) - progress.started
    best_model = f"{record.job_dir}/{progress.best_model}" if progress.best_model else None
    return JobStatus(
        id=record.id, kind=record.kind, project=record.project, base=record.base,
        state=state.value, scheduler_id=record.scheduler_id, job_dir=record.job_dir,
        elapsed=elapsed, best_model=best_model, alerts=list(progress.alerts.values()),
        restarts=max(0, progress.starts - 1),
        **{name: getattr(progress, name) for name in PROGRESS_FIELDS},
        **_why_waiting(state, live))


def _why_waiting(state: JobState, live: Live | None) -> dict:
    """Slurm's pending reason in plain words, and its estimate of the start, for a waiting job."""
    if state != JobState.PENDING or live is None:
        return {}
    why = waiting(live.reason)
    found = {"expected_start": live.expected_start}
    if why:
        found.update(reason=live.reason, waiting=why.words, never_starts=why.never)
    return found
