"""The cluster side's operations on one cluster root (implements `ClusterOps`).

On a login node (or in the embedded default) they run directly; from a laptop the same
operations run through `hpctrain cluster-call` over SSH (backends/rpc.py). Nothing here prints.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

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
    COMPILE_SCRIPT,
    EVENTS,
    FETCHED,
    LAYOUT_VERSION,
    LOG,
    NOTIFICATIONS,
    SCRIPT,
    SETTINGS,
    SUBMITIT_DIR,
    compiled_dir_name,
    job_dir_name,
)
from ..core.names import check_name
from ..core.webhook import webhook_from_json
from ..jobs import build, kraken
from ..jobs.groundtruth import is_junk
from ..jobs.requests import JobRequest, TorchrunRequest, recorded
from ..jobs.split import split_pages
from ..jobs.sweep import SweepRequest
from ..jobs.sweep import with_values as sweep_values_of
from ..runtime import curves as training_curves
from ..runtime import events, notify
from ..runtime.runner import RESERVE_BYTES, disk_full_error, read_settings
from . import efficiency, outcomes, polling, provenance
from . import partitions as slurm_partitions
from . import usage as sizes
from .api import (
    MODEL_SUFFIXES,
    FetchPlan,
    JobOutcome,
    JobReport,
    JobStatus,
    StatusReport,
    Submission,
    SweepSubmission,
    Usage,
    inside_job,
)
from .registry import JobRecord, JobState, Registry, Stage
from .scheduler import (
    ARRAY_SCRIPT,
    Live,
    Scheduler,
    array_script,
    directives,
    scheduler_for,
    time_to_minutes,
    waiting,
)


LOG_CHUNK = 1 << 20  # what one read_log call returns at most


@dataclass(frozen=True)
class _Prepared:
    """A job checked and ready to register: its request (base model resolved), the params the
    registry keeps, how to render its files for an id, job.json's extra settings, its chain's
    stages, and a kraken job's split lists."""

    request: JobRequest | TorchrunRequest
    params: dict
    render_files: Callable[[int], tuple[str, dict]]
    settings: dict
    stages: tuple = ()
    split: dict | None = None


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
        job = self._prepare_kraken(request, dry_run)
        return self._submit(job.request, job.params, job.render_files, dry_run, job.settings,
                            job.stages)

    def _prepare_kraken(self, request: JobRequest, dry_run: bool, split: dict | None = None,
                        chain: bool = True) -> _Prepared:
        """A kraken job checked and ready to render: `split` (a sweep's, made once) or the
        project's pages split now; without `chain`, compiling runs inside the job."""
        if request.kind not in build.KINDS:
            raise HpctrainError(
                f"unknown job kind {request.kind!r}; choose one of {', '.join(build.KINDS)}"
            )
        self._preflight(request, slurm_partitions.KRAKEN_FLAGS)
        if request.base and not (dry_run and request.base_path):
            # A dry run may show where a base model still on the laptop will be.
            request = replace(request, base_path=str(self.resolve_base(request.base)))
        dialect = kraken.resolve_dialect(request.kraken_version)
        kraken.check_params(dialect, request.kind, request.params, request.project)
        if split is None:
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

        # Compiling needs no GPU: on Slurm, with a compile partition, it runs there (chained
        # before the training when the kind trains).
        compile_apart = (chain and self.executor == "slurm"
                         and bool(request.resources.compile_partition))

        def render_files(job_id: int) -> tuple[str, dict]:
            job_dir = str(self.root / self.job_dir_name(request.project, job_id, request.kind))
            compiled_dir = str(
                self.root / compiled_dir_name(self.tree.compiled, request.project, job_id)
            )
            return build.kraken_script(
                request, dialect, split, job_id, job_dir, compiled_dir, self.template_dirs,
                compile_apart,
            )

        # the runner's log parser: the total of ketos' epoch lines that show none (4.3 never does)
        settings = {"epochs": kraken.epoch_bound(request)}
        stages = (build.chain_stages(request)
                  if chain and build.chained(request, self.executor) else ())
        return _Prepared(request, params, render_files, settings, stages, split)

    def submit_torchrun(self, request: TorchrunRequest, dry_run: bool = False) -> Submission:
        """Render and submit a torchrun DDP job (see jobs/torchrun.py)."""
        job = self._prepare_torchrun(request)
        return self._submit(job.request, job.params, job.render_files, dry_run)

    def _prepare_torchrun(self, request: TorchrunRequest) -> _Prepared:
        from ..jobs.torchrun import check_request

        check_request(request)
        if self.executor != "slurm" and request.resources.nodes > 1:
            raise HpctrainError(
                f"{request.resources.nodes} nodes need Slurm; the {self.executor} "
                "executor runs one node (set 'executor: slurm' in the profile)"
            )
        self._preflight(request, slurm_partitions.TORCHRUN_FLAGS, request.nproc_per_node)
        resume_from = self._checkpoint_of(request.resume_from) if request.resume_from else None
        params = {"request": recorded(request), "hpctrain": __version__}

        def render_files(job_id: int) -> tuple[str, dict]:
            job_dir = str(self.root / self.job_dir_name(request.project, job_id, request.kind))
            return build.torchrun_script(
                request, job_id, job_dir, self.executor == "slurm", resume_from, self.template_dirs
            )

        return _Prepared(request, params, render_files, {}, ())

    # -- sweeps ---------------------------------------------------------------------------
    def submit_sweep(self, sweep: SweepRequest, dry_run: bool = False) -> SweepSubmission:
        """One job per grid point (jobs/sweep.py), all on the SAME split (made once, here),
        queued as one array: Slurm's `--array`, the embedded default's tasks one after the
        other. A kraken sweep compiles inside each task (no compile partition: a chain per task
        would be two arrays). Nothing half-submitted stays, as for `submit`."""
        sweep = sweep.check()
        requests = [sweep_values_of(sweep.request, point) for point in sweep.points]
        if sweep.torchrun:
            prepared = [self._prepare_torchrun(requests[0])]
            prepared += [self._prepare_torchrun(replace(r, preflight=False))
                         for r in requests[1:]]
        else:
            prepared = [self._prepare_kraken(requests[0], dry_run, chain=False)]
            prepared += [self._prepare_kraken(replace(r, preflight=False), dry_run,
                                              prepared[0].split, chain=False)
                         for r in requests[1:]]
        writing = [f"the job registry ({STATE_FOLDER}/jobs)"]
        try:
            return self._register_array(prepared, sweep, dry_run, writing)
        except (OSError, SchedulerError) as e:
            reason = full_disk(e)
            if reason:
                raise DiskFullError.writing(reason, writing[-1], str(self.root)) from e
            raise

    def _register_array(self, prepared: list[_Prepared], sweep: SweepRequest, dry_run: bool,
                        writing: list[str]) -> SweepSubmission:
        first = prepared[0].request
        time_limit = first.resources.time
        with self.registry() as registry:
            if dry_run:
                start = registry.next_id()
                rendered = [job.render_files(start + i)[0] for i, job in enumerate(prepared)]
                dirs = [self.job_dir_name(first.project, start + i, first.kind)
                        for i in range(len(prepared))]
                return SweepSubmission((), tuple(rendered), tuple(dirs), sweep.points,
                                       self._array_text(dirs, rendered[0], time_limit,
                                                        sweep.max_parallel))
            records: list[JobRecord] = []
            scripts: list[str] = []
            try:
                for job, point in zip(prepared, sweep.points):
                    record = registry.add(
                        first.kind, first.project, getattr(first, "base", None),
                        lambda i: self.job_dir_name(first.project, i, first.kind), job.params,
                        sweep_values=point, sweep=records[0].id if records else None)
                    records.append(record)
                    writing.append(f"job {record.id}'s folder {record.job_dir}")
                    script, files = job.render_files(record.id)
                    self._write_job_folder(record, job.request, script, files, job.settings)
                    scripts.append(script)
                scheduler = scheduler_for(self.executor, self.root)
                ids = scheduler.submit_array([self.root / r.job_dir for r in records],
                                             time_limit, sweep.max_parallel)
            except BaseException:
                for record in reversed(records):
                    shutil.rmtree(self.root / record.job_dir, ignore_errors=True)
                    registry.delete(record.id)
                raise
            for record, scheduler_id in zip(records, ids):
                registry.update(record.id, state=JobState.PENDING, scheduler_id=scheduler_id)
            array = self.root / records[0].job_dir / SUBMITIT_DIR / ARRAY_SCRIPT
            return SweepSubmission(
                tuple(registry.get(r.id) for r in records), tuple(scripts),
                tuple(r.job_dir for r in records), sweep.points,
                array.read_text(encoding="utf-8") if array.is_file() else None)

    def _array_text(self, dirs: list[str], script: str, time_limit: str,
                    max_parallel: int | None) -> str | None:
        """What a dry run shows of the array's submission file (Slurm only)."""
        import sys

        if self.executor != "slurm":
            return None
        minutes = max(1, int(time_to_minutes(time_limit)))
        return array_script([str(self.root / d) for d in dirs], directives(script), minutes,
                            max_parallel, sys.executable)

    def sweep_tasks(self, registry: Registry, sweep_id: int) -> list[JobRecord]:
        """The tasks of sweep `sweep_id`, in order; refused if that job is not a sweep."""
        record = registry.get(sweep_id)
        if record.sweep != record.id:
            also = f" (it is a task of sweep {record.sweep})" if record.sweep else ""
            raise NotFoundError(f"job {record.id} is not a sweep{also}: cancel one job with "
                                f"'hpctrain cancel {record.id}'")
        return [r for r in registry.all(record.project) if r.sweep == record.id]

    def cancel_sweep(self, sweep_id: int) -> list[JobStatus]:
        """Cancel the sweep's tasks that have not ended: on Slurm, one scancel of the array."""
        with self.registry() as registry:
            tasks = self.sweep_tasks(registry, int(sweep_id))
            live = [r for r in tasks if not r.state.final]
            if not live:
                raise HpctrainError(f"the {len(tasks)} tasks of sweep {sweep_id} have all "
                                    "ended; nothing to cancel")
            noted = [r for r in live if self._note_cancel(r)]
            try:
                scheduler_for(self.executor, self.root).cancel_array(
                    [(r.scheduler_id or "", self.root / r.job_dir) for r in live])
            except BaseException:
                for record in noted:
                    notify.withdraw_cancel(self.root / record.job_dir)
                raise
            for record in live:
                registry.update(record.id, state=JobState.CANCELLED)
        polling.changed(self.root)
        return self.status([r.id for r in tasks]).rows

    def _preflight(self, request: JobRequest | TorchrunRequest,
                   flags: slurm_partitions.Flags, processes: int | None = None) -> None:
        """Refuse, before anything is registered, what the partition cannot run or the user
        may not use there (Slurm only: the local executor has no partitions)."""
        if self.executor == "slurm" and request.preflight:
            slurm_partitions.preflight(self.root, request.resources, flags, processes)

    def partitions(self, refresh: bool = False) -> list[slurm_partitions.Partition]:
        """Slurm's partitions and whether this user may use each; none for the local executor."""
        if self.executor != "slurm":
            return []
        return slurm_partitions.partitions(self.root, refresh)

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
                settings: dict | None = None, stages: tuple = ()) -> Submission:
        """Register the job, write its folder (script, files, job.json), hand it to the scheduler
        (with `stages`, (name, Resources) pairs, one scheduler job per stage, each after the
        one before).

        On any failure the registry entry and the folder are removed again, and stages already
        queued are cancelled: nothing half-submitted stays. A full disk or quota is a
        DiskFullError."""
        writing = [f"the job registry ({STATE_FOLDER}/jobs)"]  # what is being written
        try:
            return self._register_and_queue(request, params, render_files, dry_run, writing,
                                            settings or {}, stages)
        except (OSError, SchedulerError) as e:  # the scheduler wraps what submitit raised
            reason = full_disk(e)
            if reason:
                raise DiskFullError.writing(reason, writing[-1], str(self.root)) from e
            raise

    def _register_and_queue(self, request, params: dict, render_files, dry_run: bool,
                            writing: list[str], extra_settings: dict,
                            stages: tuple) -> Submission:
        kind, project, base = request.kind, request.project, getattr(request, "base", None)
        with self.registry() as registry:
            if dry_run:
                job_id = registry.next_id()
                script, files = render_files(job_id)
                return Submission(None, script, self.job_dir_name(project, job_id, kind),
                                  files.get(COMPILE_SCRIPT))
            record = registry.add(
                kind, project, base, lambda i: self.job_dir_name(project, i, kind), params
            )
            writing.append(f"job {record.id}'s folder {record.job_dir}")
            try:
                script, files = render_files(record.id)
                job_dir = self._write_job_folder(record, request, script, files, extra_settings)
                scheduler = scheduler_for(self.executor, self.root)
                if stages:
                    queued = _queue_stages(scheduler, job_dir, stages)
                    scheduler_id = queued[-1].scheduler_id
                else:
                    queued, scheduler_id = None, scheduler.submit(job_dir, request.resources.time)
            except BaseException:
                # The folder first: on a full disk, that frees the space the registry needs.
                shutil.rmtree(self.root / record.job_dir, ignore_errors=True)
                registry.delete(record.id)
                raise
            registry.update(record.id, state=JobState.PENDING, scheduler_id=scheduler_id,
                            stages=queued)
            return Submission(registry.get(record.id), script, record.job_dir,
                              files.get(COMPILE_SCRIPT))

    def _write_job_folder(self, record: JobRecord, request, script: str, files: dict,
                          extra_settings: dict) -> Path:
        """The job's folder: its script, files and job.json (the runner's settings)."""
        job_settings = {
            "monitor": getattr(request, "monitor", None),
            "alerts": list(request.alerts),
            "layout": LAYOUT_VERSION,
            **extra_settings,
            **_notify_settings(request, record),
        }
        job_dir = self.root / record.job_dir
        files = {**files, SETTINGS: json.dumps(job_settings, indent=1)}
        if "notify" in job_settings:
            files[NOTIFICATIONS] = notify.start_record()
        self._write_job(job_dir, script, files,
                        private=(SETTINGS,) if "notify" in job_settings else ())
        return job_dir

    @staticmethod
    def _write_job(job_dir: Path, script: str, files: dict, private: tuple = ()) -> None:
        """The job's files; those in `private` (job.json with a webhook URL) only for the
        user (mode 0600)."""
        job_dir.mkdir(parents=True, exist_ok=False)
        for rel, text in {**files, SCRIPT: script}.items():
            write_text(job_dir / rel, text, mode=0o600 if rel in private else None)

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
            failing: dict = {}  # webhooks that failed in this pass: not tried again in it
            jobs = [(record, *self._read_job(record)) for record in records]
            # one query for every job, every stage of a chained job included
            asked = {sid: _asking(record, progress) for record, progress, *_ in jobs
                     for sid in _to_ask(record)}
            answers = self._ask_scheduler(asked)
            report.warnings += answers.warnings
            for record, progress, damage, warnings in jobs:
                if record.stages:
                    state, stage_at, live, stages = self._chain_state(
                        record, progress, answers.states, warnings)
                else:
                    stage_at, stages = None, record.stages
                    live = answers.states.get(record.scheduler_id)
                    if (record.scheduler_id in asked and (live is None or live.state.final)
                            and progress.state not in polling.ENDED):
                        # over, says the scheduler: its runner's end may have been written since
                        progress, damage, warnings = self._read_job(record)
                    state = _state(record, progress, live.state if live else None)
                if state != record.state or stages != record.stages:
                    if state != record.state and state.final:
                        self._record_silent_end(record, state, progress, live, stage_at)
                    try:
                        registry.update(record.id, state=state, stages=stages)
                    except DiskFullError:  # a cache of what the events say: next time
                        pass
                if state == JobState.FAILED and not progress.error:
                    progress.error = self._why_it_ended(record)
                row = _row(record, state, progress, live, stages, stage_at)
                damaged = damage.warning(f"{record.job_dir}/{EVENTS}", state.final)
                row.warnings = ([damaged] if damaged else []) + warnings
                row.warnings += self._notify(record, state, failing)
                report.rows.append(row)
            # an efficiency not yet kept costs a sacct: only when Slurm is asked anyway
            self._add_efficiency(records, report.rows, ask=answers.asked or not asked)
            return report

    def _add_efficiency(self, records: list[JobRecord], rows: list[JobStatus],
                        ask: bool = True) -> None:
        """Finished jobs' rows carry their efficiency: as kept in their folders, else measured
        with one accounting query for all of them (cluster/efficiency.py)."""
        finished = [(record, JobState(row.state)) for record, row in zip(records, rows)
                    if JobState(row.state).final]
        if not finished:
            return
        found = efficiency.measure_jobs(self.root, scheduler_for(self.executor, self.root),
                                        finished, ask=ask)
        for row in rows:
            if row.id in found:
                row.efficiency = found[row.id].to_json()

    def _chain_state(
        self, record: JobRecord, progress: events.Progress, live_states: dict[str, Live | None],
        warnings: list[str],
    ) -> tuple[JobState, Stage, Live | None, tuple[Stage, ...]]:
        """A chained job's state (that of the stage it is at: compiling, then training), that
        stage and its live state, and the stages' states brought up to date.

        When the job ended other than COMPLETED, a later stage still queued is cancelled: Slurm
        does it itself (--kill-on-invalid-dep), this is for sites that ignore it. Why is
        recorded in the job's events; a cancel that fails is a warning, tried again next time."""
        lives = [None if s.settled else live_states.get(s.scheduler_id) for s in record.stages]
        nows = [s.state if s.settled else (live.state if live else None)
                for s, live in zip(record.stages, lives)]
        at = _stage_at(record.stages, nows, progress)
        state = _state(record, progress, nows[at])
        stages = [_stage_now(s, live, state.final) for s, live in zip(record.stages, lives)]
        if state.final and state != JobState.COMPLETED:
            for later in range(at + 1, len(stages)):
                stages[later] = self._cancel_left_over(record, stages[later], stages[at], state,
                                                       warnings)
        return state, stages[at], lives[at], tuple(stages)

    def _cancel_left_over(self, record: JobRecord, stage: Stage, failed: Stage, state: JobState,
                          warnings: list[str]) -> Stage:
        if stage.settled:
            return stage
        try:
            scheduler_for(self.executor, self.root).cancel(stage.scheduler_id,
                                                           self.root / record.job_dir)
        except SchedulerError as e:
            warnings.append(f"its {stage.name} stage ({self.executor} job {stage.scheduler_id}) "
                            f"is still queued and could not be cancelled ({e}): cancel it with "
                            f"'scancel {stage.scheduler_id}'")
            return stage
        why = (f"its {failed.name} stage ({failed.scheduler_id}) ended {state.value} and the "
               "scheduler had not cancelled this one")
        self._append_event(record, {"event": "stage_cancelled", "stage": stage.name,
                                    "scheduler_id": stage.scheduler_id, "reason": why})
        return replace(stage, state=JobState.CANCELLED)

    def _append_event(self, record: JobRecord, event: dict) -> None:
        try:
            with open(self.root / record.job_dir / EVENTS, "a", encoding="utf-8") as sink:
                events.append(sink, event)
        except OSError:
            pass  # the row still says it; only the record of it is lost

    def _notify(self, record: JobRecord, state: JobState, failing: dict) -> list[str]:
        """Send what the job's webhook has not heard yet (runtime/notify.py), for a job that
        has one; what failed is a warning, tried again next time."""
        job_dir = self.root / record.job_dir
        if not notify.has_webhook(job_dir):
            return []
        try:
            settings = read_settings(job_dir)
        except ValueError:
            return []  # _read_job warns about a damaged job.json
        return notify.from_status(job_dir, settings, state.final, failing)

    def _ask_scheduler(self, jobs: dict[str, events.Progress]) -> polling.Answers:
        """The scheduler's word on live jobs (scheduler id -> progress from its events), asked
        no more often than cluster/polling.py allows."""
        if not jobs:
            return polling.Answers({})
        return polling.ask(self.root, scheduler_for(self.executor, self.root), jobs)

    def _record_silent_end(self, record: JobRecord, state: JobState,
                           progress: events.Progress, live: Live | None,
                           stage: Stage | None = None) -> None:
        """A job that ended without its runner saying so (killed, node failure, out of memory):
        append the end, with the scheduler's word for it, to the job's events, once. `stage`:
        the stage of a chained job it ended in."""
        if progress.ended is not None or not progress.started or state == JobState.CANCELLED:
            return
        said = live.said if live else None
        fixes = {**SILENT_ENDS, **COMPILE_FIXES} if stage and stage.name == "compile" else (
            SILENT_ENDS)
        error = self._why_it_ended(record) or (
            f"Slurm says {said}: {fixes[said]}" if said in fixes else
            "the job's runner stopped without reporting an end (killed, or its node failed)")
        if stage is not None:
            error = f"its {stage.name} stage ({self.executor} job {stage.scheduler_id}): {error}"
        end = {"event": "end", "exit_code": None, "error": error, "scheduler_state": said}
        self._append_event(record, {**end, "stage": stage.name} if stage else end)
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

    def report(self, job_id: int) -> JobReport:
        """The job's row and its efficiency; a job that has not ended is measured so far (and
        its figures are not kept)."""
        row = self.job(job_id)
        if row.efficiency is not None:
            return JobReport(row, efficiency.Efficiency.from_json(row.efficiency))
        with self.registry() as registry:
            record = registry.get(row.id)
        found = efficiency.measure_jobs(self.root, scheduler_for(self.executor, self.root),
                                        [(record, JobState(row.state))])
        return JobReport(row, found[record.id])

    def outcomes(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> list[JobOutcome]:
        """The status rows of those jobs, each with what its folder says (cluster/outcomes.py)."""
        rows = self.status(job_ids, project).rows
        with self.registry() as registry:
            records = [registry.get(row.id) for row in rows]
        return [outcomes.of_job(self.root, record, row) for record, row in zip(records, rows)]

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
            # noted first: the end that the killed runner writes is then told as CANCELLED
            noted = self._note_cancel(record)
            try:
                if record.stages:
                    stages = self._cancel_stages(scheduler, record)
                else:
                    scheduler.cancel(record.scheduler_id or "", self.root / record.job_dir)
            except BaseException:
                if noted:
                    notify.withdraw_cancel(self.root / record.job_dir)
                raise
            if record.stages:
                registry.update(record.id, state=JobState.CANCELLED, stages=stages)
            else:
                registry.update(record.id, state=JobState.CANCELLED)
        polling.changed(self.root)  # the queue changed: the other jobs' states may change soon
        return self.job(record.id)

    def _note_cancel(self, record: JobRecord) -> bool:
        job_dir = self.root / record.job_dir
        if not notify.has_webhook(job_dir):
            return False
        try:
            job = notify.JobNotify.from_settings(read_settings(job_dir))
        except ValueError:
            return False
        return job is not None and notify.note_cancel(job_dir, job)

    def _cancel_stages(self, scheduler: Scheduler, record: JobRecord) -> tuple[Stage, ...]:
        """Cancel every stage the scheduler still holds, the last first (so that none starts
        because the one before it ended meanwhile); those that ended are left as they are."""
        asked = [s.scheduler_id for s in record.stages if not s.settled]
        live = scheduler.states(asked) if asked else {}
        stages = list(record.stages)
        for i in reversed(range(len(stages))):
            now = live.get(stages[i].scheduler_id)
            if now is not None and not now.state.final:
                scheduler.cancel(stages[i].scheduler_id, self.root / record.job_dir)
                stages[i] = replace(stages[i], state=JobState.CANCELLED)
        return tuple(stages)

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

    def curves(self, job_ids: list[int]) -> list[training_curves.Curve]:
        """Each job's curves from its events; an unknown job is refused (NotFoundError)."""
        with self.registry() as registry:
            records = [registry.get(int(job_id)) for job_id in job_ids]
        found = []
        for record in records:
            curve = training_curves.fold(events.read(self.root / record.job_dir / EVENTS))
            curve.job, curve.project, curve.kind = record.id, record.project, record.kind
            found.append(curve)
        return found

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

    # -- notifications --------------------------------------------------------------------
    def notify_test(self, setting: dict) -> dict:
        """One test notification from here (the login node): does the webhook answer?"""
        import socket

        hook = webhook_from_json(setting)
        job = notify.JobNotify(hook, None, "", "test", secrets.token_hex(4))
        here = socket.gethostname()
        try:
            status = notify.send_test(job)
        except notify.SendError as e:
            raise HpctrainError(
                f"the test notification to {hook.shown} from {here} failed: {e.reason}; check "
                "the notify url and that this machine may reach it") from None
        return {"to": hook.shown, "status": status, "sent_from": here}


def _notify_settings(request, record: JobRecord) -> dict:
    """job.json's `notify` for a request with a webhook (checked again here), else nothing."""
    if not request.notify:
        return {}
    hook = webhook_from_json(request.notify)
    job = notify.JobNotify(hook, record.id, record.project, record.kind, secrets.token_hex(4))
    return {"notify": job.to_settings()}


def _queue_stages(scheduler: Scheduler, job_dir: Path, stages: tuple) -> tuple[Stage, ...]:
    """Queue each stage after the one before; if one is refused, cancel those queued (best
    effort: the job's folder goes, so a stage left would fail at once)."""
    queued: list[Stage] = []
    try:
        for name, resources in stages:
            after = queued[-1].scheduler_id if queued else None
            scheduler_id = scheduler.submit(job_dir, resources.time, stage=name, after=after)
            queued.append(Stage(name, scheduler_id, JobState.PENDING, resources.partition))
    except SchedulerError as e:
        if not queued:
            raise
        _cancel_quietly(scheduler, job_dir, queued)
        done = ", ".join(f"{s.name} {s.scheduler_id}" for s in queued)
        raise SchedulerError(f"{e} (its {stages[len(queued)][0]} stage; the stages queued "
                             f"before it were cancelled: {done})") from e
    except BaseException:
        _cancel_quietly(scheduler, job_dir, queued)
        raise
    return tuple(queued)


def _cancel_quietly(scheduler: Scheduler, job_dir: Path, queued: list[Stage]) -> None:
    for stage in reversed(queued):
        try:
            scheduler.cancel(stage.scheduler_id, job_dir)
        except SchedulerError:
            pass


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


def _to_ask(record: JobRecord) -> list[str]:
    """The scheduler ids `status` asks about for a job: a live job's; for a chained job, each
    stage the scheduler may still hold (even once the job ended: a stage left queued)."""
    if record.stages:
        return [stage.scheduler_id for stage in record.stages if not stage.settled]
    return [record.scheduler_id] if not record.state.final and record.scheduler_id else []


def _asking(record: JobRecord, progress: events.Progress) -> events.Progress:
    """What the scheduler's throttle is told of a job's events. It never asks about a job whose
    events say it ended, but a chained job's stages are asked about until they settle (a
    training left queued, the last stage's final word)."""
    if record.stages and progress.state in polling.ENDED:
        return events.Progress()
    return progress


def _stage_at(stages: tuple[Stage, ...], nows: list[JobState | None],
              progress: events.Progress) -> int:
    """The index of the stage a chained job is at: the first that has not succeeded (its
    runner's `stage_end`, or the scheduler's COMPLETED); the last once the others have."""
    for i, (stage, now) in enumerate(zip(stages[:-1], nows)):
        if stage.name not in progress.stages_done and now != JobState.COMPLETED:
            return i
    return len(stages) - 1


def _stage_now(stage: Stage, live: Live | None, job_ended: bool) -> Stage:
    """A stage with the scheduler's latest word for it; UNKNOWN (asked no more) once the
    scheduler has forgotten it and the job has ended."""
    if stage.settled:
        return stage
    if live is not None and live.state != JobState.UNKNOWN:
        return replace(stage, state=live.state)
    return replace(stage, state=JobState.UNKNOWN) if live is None and job_ended else stage


# Why a job ended although its runner never said so, by the scheduler's word for it.
SILENT_ENDS = {
    "NODE_FAIL": "the node the job ran on failed; submit it again (it was not requeued)",
    "OUT_OF_MEMORY": "it ran out of memory; ask for more with --mem",
    "BOOT_FAIL": "its node failed to start",
    "TIMEOUT": "it reached its time limit; ask for more with --time",
    "FAILED": "the job's runner was killed before it could report why",
}
# The same for a compile stage, whose resources are the compile_* ones.
COMPILE_FIXES = {
    "OUT_OF_MEMORY": "it ran out of memory; ask for more with compile_mem in the project's "
                     "resources",
    "TIMEOUT": "it reached its time limit; ask for more with compile_time in the project's "
               "resources (1 hour by default)",
}


# What a status row takes from the job's events as they are.
PROGRESS_FIELDS = ("step", "epoch", "total_epochs", "best_metric", "best_value", "best_epoch",
                   "test", "base_test", "early_stopped", "stopped", "stopped_epoch", "error",
                   "checkpoint_epoch", "epoch_seconds", "metrics")


def _row(record: JobRecord, state: JobState, progress: events.Progress,
         live: Live | None = None, stages: tuple[Stage, ...] = (),
         stage_at: Stage | None = None) -> JobStatus:
    elapsed = None
    if progress.started:
        elapsed = (progress.ended or time.time()) - progress.started
    best_model = f"{record.job_dir}/{progress.best_model}" if progress.best_model else None
    return JobStatus(
        id=record.id, kind=record.kind, project=record.project, base=record.base,
        state=state.value, scheduler_id=record.scheduler_id, job_dir=record.job_dir,
        elapsed=elapsed, best_model=best_model, alerts=list(progress.alerts.values()),
        restarts=max(0, progress.starts - 1), stages=[stage.to_json() for stage in stages],
        stage=stage_at.name if stage_at else None,
        sweep=record.sweep, sweep_values=dict(record.sweep_values),
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
