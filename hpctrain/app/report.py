"""`hpctrain report JOB`: what a job used of what it asked for, measured on the cluster side
(cluster/efficiency.py) in one call, as aligned lines; and `report JOB... --html`, one
self-contained page of the jobs (app/report_html.py renders it): their table, curves, efficiency,
provenance and rendered script.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..backends import connect
from ..cluster import provenance
from ..cluster.api import JobReport
from ..cluster.efficiency import clock, slurm_size
from ..core.config import Workspace
from ..core.errors import HpctrainError
from ..core.files import write_text
from ..core.layout import SCRIPT
from . import plot
from .fetch import destination_of
from .report_html import JobPage, render_page
from .sweep import expand_targets


def report(workspace: Workspace, job_id: int) -> JobReport:
    with connect(workspace) as transport:
        return transport.cluster.report(job_id)


@dataclass
class HtmlReport:
    path: Path
    jobs: list[int]
    notes: list[str] = field(default_factory=list)  # what the page lacks, and why


def html_report(workspace: Workspace, targets: list[str], output: Path | None = None
                ) -> HtmlReport:
    """Write one HTML page (no external resource: the curves are an inline PNG) for the jobs
    of `targets` to `output` (default: report-jobN.html here)."""
    notes: list[str] = []
    with connect(workspace) as transport:
        cluster = transport.cluster
        ids = expand_targets(cluster, targets)
        curves = {c.job: c for c in cluster.curves(ids)}
        pages = [_page(workspace, transport, cluster.report(i), curves.get(i)) for i in ids]
    picture = _picture(list(curves.values()), notes)
    path = output or Path(f"report-job{plot.jobs_in_name(ids)}.html")
    write_text(path, render_page(pages, picture, notes, __version__))
    return HtmlReport(path, ids, notes)


def _page(workspace: Workspace, transport, found: JobReport, curve) -> JobPage:
    job = found.job
    record, source = _provenance(workspace, transport.cluster, found)
    return JobPage(found, curve, efficiency_lines(found), record, source,
                   _script(transport, job.job_dir))


def _provenance(workspace: Workspace, cluster, found: JobReport) -> tuple[dict | None, str]:
    """model.json as fetched, else what the cluster side would write into it, else nothing."""
    job = found.job
    local = destination_of(workspace, job.project, job.id) / provenance.MODEL_JSON
    try:
        data = json.loads(local.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data, f"{local.relative_to(workspace.path)} (fetched)"
    except (OSError, ValueError):
        pass
    if not job.best_model:
        return None, "none yet: the job has no model ('hpctrain fetch' writes model.json)"
    try:
        return cluster.fetch_plan(str(job.id)).provenance, "the cluster (not fetched yet)"
    except HpctrainError as e:
        return None, f"not available: {e}"


def _script(transport, job_dir: str) -> str | None:
    """The job's rendered script, brought into a temporary folder; None if it has none."""
    with tempfile.TemporaryDirectory(prefix="hpctrain-report-") as tmp:
        local = Path(tmp) / SCRIPT
        try:
            transport.get(f"{job_dir}/{SCRIPT}", local)
            return local.read_text(encoding="utf-8", errors="replace")
        except (HpctrainError, OSError):
            return None


def _picture(curves: list, notes: list[str]) -> bytes | None:
    try:
        drawn, left_out = plot.drawable(curves)
        notes += left_out
        return plot.render(drawn)
    except HpctrainError as e:  # no epochs yet, or no matplotlib: the page says so
        notes.append(f"no curves: {e}")
        return None


def efficiency_lines(found: JobReport) -> list[str]:
    """The report in a few aligned lines (`report JOB` prints them; the HTML report shows them)."""
    job, eff = found.job, found.efficiency
    head = f"job {job.id} {job.kind} {job.project}: {job.state}"
    if job.state == "PENDING":
        head += " (still waiting in the queue: figures so far)"
    elif not eff.final:
        head += " (still running: figures so far)"
    rows = [("queue wait", _queue(eff)),
            ("elapsed", _elapsed(eff)),
            ("CPU", _cpu(eff)),
            ("memory", _memory(eff)),
            ("GPU", _gpu(eff)),
            ("suggestion", eff.suggestion or ("none: the request fits what the job used"
                                              if eff.final else "once the job has ended"))]
    rows += [("note", note) for note in eff.notes]
    return [head] + [f"  {label:<12}{text}" for label, text in rows]


def _queue(eff) -> str:
    if eff.queue_wait is None:
        return "unknown"
    text = clock(eff.queue_wait) + ("" if eff.started else " so far")
    if eff.submitted and eff.started:
        text += f" (submitted {eff.submitted.replace('T', ' ')}, started {eff.started[11:]})"
    if eff.requeues:
        again = f", {clock(eff.requeued_wait)} waiting again" if eff.requeued_wait else ""
        text += f"; requeued {eff.requeues} time(s){again}"
    return text


def _elapsed(eff) -> str:
    if eff.elapsed is None:
        return "not started"
    text = clock(eff.elapsed)
    if eff.requeues and eff.longest_run is not None:
        text += f" over {eff.requeues + 1} runs (longest {clock(eff.longest_run)})"
    limit = f" of a {clock(eff.time_limit)} limit" if eff.time_limit else " (no limit of its own)"
    return text + limit


def _cpu(eff) -> str:
    if eff.cpu_efficiency is None:
        return f"{eff.cpus} CPU(s) asked; use not known yet" if eff.cpus else "unknown"
    busy = eff.cpu_seconds / eff.elapsed if eff.elapsed else 0.0
    return (f"{eff.cpu_efficiency:.0%} of {eff.cpus} CPU(s) ({busy:.1f} busy on average; "
            f"CPU time {clock(eff.cpu_seconds)})")


def _memory(eff) -> str:
    peak = f"peak {slurm_size(eff.max_rss)}" if eff.max_rss else "peak not recorded"
    if not eff.mem_request:
        return f"{peak} (no memory asked for)"
    asked = "by default: no --mem" if eff.mem_default else "asked"
    per_node = " per node" if eff.nodes > 1 else ""
    share = f", {eff.max_rss / eff.mem_request:.0%}" if eff.max_rss else ""
    return f"{peak} of {slurm_size(eff.mem_request)}{per_node} ({asked}{share})"


def _gpu(eff) -> str:
    if not eff.gpu_samples:
        return eff.gpu_note or "unknown"
    text = (f"{eff.gpu_mean_utilization:.0f}% busy on average, peak "
            f"{eff.gpu_peak_utilization:.0f}%" if eff.gpu_mean_utilization is not None
            else "utilisation not reported")
    if eff.gpu_peak_memory:
        total = f" of {slurm_size(eff.gpu_memory_total)}" if eff.gpu_memory_total else ""
        text += f"; memory peak {slurm_size(eff.gpu_peak_memory)}{total}"
    text += f" ({eff.gpus_sampled} GPU(s), {eff.gpu_samples} sample(s))"
    return text + (f"; {eff.gpu_note}" if eff.gpu_note else "")
