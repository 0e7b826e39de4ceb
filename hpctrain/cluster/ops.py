"""The cluster side's operations on one cluster root (implements `ClusterOps`).

On a login node (or in the embedded default) they run directly; from a laptop the same
operations run through `hpctrain cluster-call` over SSH (backends/rpc.py). Nothing here prints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..core.config import STATE_FOLDER, Tree
from ..core.errors import (
    DiskFullError,
    GroundTruthError,
    HpctrainError,
    NotFoundError,
    RegistryError,
    SchedulerError,
    full_disk,
)
from ..core.files import write_text
from ..core.layout import (
    EVENTS,
    FETCHED,
    LAYOUT_VERSION,
    LOG,
    SCRIPT,
    SETTINGS,
    SUBMITIT_DIR,
    compiled_dir_name,
    job_dir_name,
)
from ..core.names import check_name
from ..jobs import build, kraken
from ..jobs.groundtruth import is_junk
from ..jobs.requests import JobRequest, TorchrunRequest, recorded
from ..jobs.split import split_pages
from ..runtime import events
from ..runtime.runner import RESERVE_BYTES, disk_full_error, read_settings
from . import polling, provenance
from . import usage as sizes
from .api import (
    MODEL_SUFFIXES,
    FetchPlan,
    JobStatus,
    StatusReport,
    Submission,
    Usage,
    inside_job,
)
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
        with Registry(self.root):  # imports an earlier version's SQLite registry
            pass
        return created

    def registry(self) -> Registry:
        if not self.folder("finetuned").is_dir():
            raise HpctrainError(
                f"the cluster tree under {self.root} is missing: run 'hpctrain init'"
            )
        return Registry(self.root)

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
        half-submitted stays. A full disk or quota is a DiskFullError."""
        writing = [f"the job registry ({STATE_FOLDER}/jobs)"]  # what is being written
        try:
            return self._register_and_queue(request, params, render_files, dry_run, writing,
                                            settings or {})
        except (OSError, SchedulerError) as e:  # the scheduler wraps what submitit raised
            reason = full_disk(e)
            if reason:
                raise DiskFullError.writing(reason, writing[-1], str(self.root)) from e
            raise

    def _register_and_queue(self, request, params: dict, render_files, dry_run: bool,
                            writing: list[str], extra_settings: dict) -> Submission:
        kind, project, base = request.kind, request.project, getattr(request, "base", None)
        with self.registry() as registry:
            if dry_run:
                job_id = registry.next_id()
                script, _files = render_files(job_id)
                return Submission(None, script, self.job_dir_name(project, job_id, kind))
            record = registry.add(
                kind, project, base, lambda i: self.job_dir_name(project, i, kind), params
            )
            writing.append(f"job {record.id}'s folder {record.job_dir}")
            try:
                script, files = render_files(record.id)
                job_settings = {
                    "monitor": getattr(request, "monitor", None),
                    "alerts": list(request.alerts),
                    "layout": LAYOUT_VERSION,
                    **extra_settings,
                }
                job_dir = self.root / record.job_dir
                self._write_job(
                    job_dir, script, {**files, SETTINGS: json.dumps(job_settings, indent=1)}
                )
                scheduler = scheduler_for(self.executor, self.root)
                scheduler_id = scheduler.submit(job_dir, request.resources.time)
            except BaseException:
                # The folder first: on a full disk, that frees the space the registry needs.
                shutil.rmtree(self.root / record.job_dir, ignore_errors=True)
                registry.delete(record.id)
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
    ) -> StatusReport:
        unreadable: list[str] = []  # damaged registry records: those jobs are left out
        with self.registry() as registry:
            if job_ids:
                records = [registry.get(i) for i in job_ids]
            else:
                records = registry.all(project, unreadable)
            report = StatusReport([], [f"{w}; the other jobs are shown" for w in unreadable])
            jobs = [(record, *self._read_job(record)) for record in records]
            asked = {r.scheduler_id: progress for r, progress, *_ in jobs
                     if not r.state.final and r.scheduler_id}
            answers = self._ask_scheduler(asked)
            report.warnings += answers.warnings
            for record, progress, damage, warnings in jobs:
                live = answers.states.get(record.scheduler_id)
                if (record.scheduler_id in asked and (live is None or live.state.final)
                        and progress.state not in polling.ENDED):
                    # over, says the scheduler: its runner's end may have been written since
                    progress, damage, warnings = self._read_job(record)
                state = _state(record, progress, live.state if live else None)
                if state != record.state:
                    if state.final:
                        self._record_silent_end(record, state, progress, live)
                    try:
                        registry.update(record.id, state=state)
                    except DiskFullError:  # a cache of what the events say: next time
                        pass
                if state == JobState.FAILED and not progress.error:
                    progress.error = self._why_it_ended(record)
                row = _row(record, state, progress, live)
                damaged = damage.warning(f"{record.job_dir}/{EVENTS}", state.final)
                row.warnings = ([damaged] if damaged else []) + warnings
                report.rows.append(row)
            return report

    def _ask_scheduler(self, jobs: dict[str, events.Progress]) -> polling.Answers:
        """The scheduler's word on live jobs (scheduler id -> progress from its events), asked
        no more often than cluster/polling.py allows."""
        if not jobs:
            return polling.Answers({})
        return polling.ask(self.root, scheduler_for(self.executor, self.root), jobs)

    def _record_silent_end(self, record: JobRecord, state: JobState,
                           progress: events.Progress, live: Live | None) -> None:
        """A job that ended without its runner saying so (killed, node failure, out of memory):
        append the end, with the scheduler's word for it, to the job's events, once."""
        if progress.ended is not None or not progress.started or state == JobState.CANCELLED:
            return
        said = live.said if live else None
        error = self._why_it_ended(record) or (
            f"Slurm says {said}: {SILENT_ENDS[said]}" if said in SILENT_ENDS else
            "the job's runner stopped without reporting an end (killed, or its node failed)")
        end = {"event": "end", "exit_code": None, "error": error, "scheduler_state": said}
        try:
            with open(self.root / record.job_dir / EVENTS, "a", encoding="utf-8") as sink:
                events.append(sink, end)
        except OSError:
            pass  # the row still says it; only the record of it is lost
        progress.error, progress.ended = error, time.time()

    def _read_job(self, record: JobRecord) -> tuple[events.Progress, events.Damage, list[str]]:
        """A job's progress from its events, and what its folder's damage costs: a missing or
        unreadable folder, damaged event lines, a damaged job.json. Never raises for them: one
        job's damaged files never stop a command about the others."""
        job_dir, damage = self.root / record.job_dir, events.Damage()
        try:
            names = set(os.listdir(job_dir))
        except FileNotFoundError:
            if record.state == JobState.SUBMITTING:  # its folder is being written
                return events.Progress(), damage, []
            return events.Progress(), damage, [
                f"{record.job_dir}: the job's folder is missing (moved or deleted); "
                "its progress is unknown"]
        except OSError as e:
            return events.Progress(), damage, [
                f"{record.job_dir}: the job's folder cannot be read "
                f"({e.strerror or type(e).__name__}); its progress is unknown"]
        progress = events.summarize(events.read(job_dir / EVENTS, damage))
        warnings = []
        if SETTINGS in names:
            try:
                read_settings(job_dir)
            except ValueError as e:
                warnings.append(f"{record.job_dir}/{SETTINGS} {e}: the job cannot start again "
                                "(a requeue would fail)")
        return progress, damage, warnings

    def _why_it_ended(self, record: JobRecord) -> str | None:
        """For a job that failed without saying why (its end event could not be written): a
        full disk, if the tails of its log and of the scheduler's stderr say so, or if the disk
        is full now."""
        job_dir = self.root / record.job_dir
        for path in [job_dir / LOG, *sorted((job_dir / SUBMITIT_DIR).glob("*.err"))]:
            reason = full_disk(_tail(path))
            if reason:
                return disk_full_error(reason, f"{path.relative_to(job_dir)} says so")
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < RESERVE_BYTES:
            return ("it ended without recording why, and the cluster's disk is full now (no space "
                    "left on device): free space ('hpctrain usage' shows what takes it) and "
                    "submit the job again")
        return None

    def job(self, job_id: int) -> JobStatus:
        report = self.status([int(job_id)])
        row = report.rows[0]
        row.warnings += report.warnings  # what the scheduler could not tell, said with the row
        return row

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
        except OSError as e:
            raise HpctrainError(
                f"{record.job_dir}/{LOG} cannot be read ({e.strerror or type(e).__name__}): "
                "check the job folder's permissions on the cluster"
            ) from e
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
        polling.changed(self.root)  # the queue changed: the other jobs' states may change soon
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
        done = [s for s in self.status(project=target).rows
                if s.state == "COMPLETED" and s.best_model]
        if not done:
            raise NotFoundError(
                f"project {target!r} has no completed job with a model yet: see 'hpctrain status'"
            )
        return done[-1]

    # -- space and cleaning ---------------------------------------------------------------
    def usage(self, project: str | None = None) -> Usage:
        """What each project occupies (cluster/usage.py), and the filesystem's free space."""
        if project is not None:
            check_name(project, "project name")
            if project not in sizes.known_projects(self.root, self.tree):
                known = ", ".join(sizes.known_projects(self.root, self.tree)) or "none yet"
                raise NotFoundError(
                    f"project {project!r} has no files on the cluster (projects there: {known})"
                )
        return sizes.measure(self.root, self.tree, project)

    def clean_plan(self, project: str) -> list[dict]:
        """Files `clean` would delete: compiled arrows and the project's job logs. Never models.
        The same accounting as `usage` (its `cleanable`)."""
        check_name(project, "project name")
        damaged: list[str] = []
        with self.registry() as registry:
            records = registry.all(project, damaged)
        if damaged:  # it may be an unfinished job of this project: delete nothing
            raise RegistryError(f"{damaged[0]}: it may be an unfinished job of project "
                                f"{project}; repair it or move it away before cleaning")
        running = [r.id for r in records if not r.state.final]
        if running:
            raise HpctrainError(
                f"project {project} has unfinished jobs "
                f"({', '.join(map(str, running))}): wait for them or cancel them "
                "before cleaning"
            )
        return [
            {"path": entry.rel, "size": entry.size}
            for entry in sizes.entries(self.root, self.tree, project)
            if entry.cleanable
        ]

    def clean(self, paths: list[str]) -> int:
        removed = 0
        for rel in paths:
            path = (self.root / rel).resolve()
            path.relative_to(self.root.resolve())  # never outside the root
            if path.is_file():
                path.unlink()
                removed += 1
        return removed


def _tail(path: Path, size: int = 8192) -> str:
    """The last `size` bytes of a file as text ('' if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - size))
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError:
        return ""


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


# Why a job ended although its runner never said so, by the scheduler's word for it.
SILENT_ENDS = {
    "NODE_FAIL": "the node the job ran on failed; submit it again (it was not requeued)",
    "OUT_OF_MEMORY": "it ran out of memory; ask for more with --mem",
    "BOOT_FAIL": "its node failed to start",
    "TIMEOUT": "it reached its time limit; ask for more with --time",
    "FAILED": "the job's runner was killed before it could report why",
}


# What a status row takes from the job's events as they are.
PROGRESS_FIELDS = ("step", "epoch", "total_epochs", "best_metric", "best_value", "best_epoch",
                   "test", "early_stopped", "stopped", "stopped_epoch", "error",
                   "checkpoint_epoch", "epoch_seconds", "metrics")


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
