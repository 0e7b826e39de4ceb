"""`hpctrain report JOB`: a job's efficiency, as text (the default) or JSON."""

from __future__ import annotations

import click

from .main import json_option, main, print_json, workspace_of


@main.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def report(ctx, job_id, as_json):
    """What a job used of what it asked for: queue wait, elapsed time against the limit, CPU
    efficiency, peak memory against the request, GPU use, and one suggestion for next time.

    \b
    Examples:
      hpctrain report 3
      hpctrain report 3 --json | jq .efficiency.cpu_efficiency

    Under Slurm the figures come from its accounting (sacct); with the
    embedded default, from what the job's processes used. GPUs are sampled
    inside the job with nvidia-smi. A job that has not ended shows the
    figures so far.
    """
    from ..app.report import report as job_report
    from ..core.names import check_job_id

    found = job_report(workspace_of(ctx), check_job_id(job_id))
    if as_json:
        print_json(found.to_json())
        return
    for line in text_lines(found):
        click.echo(line)


def text_lines(found) -> list[str]:
    """The report in a few aligned lines."""
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
    from ..cluster.efficiency import clock

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
    from ..cluster.efficiency import clock

    if eff.elapsed is None:
        return "not started"
    text = clock(eff.elapsed)
    if eff.requeues and eff.longest_run is not None:
        text += f" over {eff.requeues + 1} runs (longest {clock(eff.longest_run)})"
    limit = f" of a {clock(eff.time_limit)} limit" if eff.time_limit else " (no limit of its own)"
    return text + limit


def _cpu(eff) -> str:
    from ..cluster.efficiency import clock

    if eff.cpu_efficiency is None:
        return f"{eff.cpus} CPU(s) asked; use not known yet" if eff.cpus else "unknown"
    busy = eff.cpu_seconds / eff.elapsed if eff.elapsed else 0.0
    return (f"{eff.cpu_efficiency:.0%} of {eff.cpus} CPU(s) ({busy:.1f} busy on average; "
            f"CPU time {clock(eff.cpu_seconds)})")


def _memory(eff) -> str:
    from ..cluster.efficiency import slurm_size

    peak = f"peak {slurm_size(eff.max_rss)}" if eff.max_rss else "peak not recorded"
    if not eff.mem_request:
        return f"{peak} (no memory asked for)"
    asked = "by default: no --mem" if eff.mem_default else "asked"
    per_node = " per node" if eff.nodes > 1 else ""
    share = f", {eff.max_rss / eff.mem_request:.0%}" if eff.max_rss else ""
    return f"{peak} of {slurm_size(eff.mem_request)}{per_node} ({asked}{share})"


def _gpu(eff) -> str:
    from ..cluster.efficiency import slurm_size

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
