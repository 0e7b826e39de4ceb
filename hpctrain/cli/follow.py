"""Commands that follow jobs: status, logs, wait, cancel."""

from __future__ import annotations

import shutil
import sys

import click

from ..core.errors import HpctrainError
from .main import json_option, main, metric, print_json, warn, workspace_of


# -- following jobs -----------------------------------------------------------------------
def _elapsed(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _epoch(row) -> str:
    if row.epoch is None:
        return ""
    return f"{row.epoch}/{row.total_epochs}" if row.total_epochs else str(row.epoch)


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB]...")
@click.option("--project", "project_name", help="Only this project's jobs.")
@click.option("--tasks", is_flag=True, help="Show each job of a sweep, not one row per sweep.")
@json_option
@click.pass_context
def status(ctx, job_ids, project_name, tasks, as_json):
    """One table of jobs: id, kind, project, base, state, elapsed, epoch, best metric.

    A sweep is one row (its jobs' states counted, its best job); 'hpctrain status SWEEP'
    shows its jobs, each with its values. --json always lists every job, a sweep's with
    "sweep" and "sweep_values".

    \b
    Examples:
      hpctrain status
      hpctrain status 3 --json
      hpctrain status 12          # the jobs of sweep 12
    """
    from tabulate import tabulate

    from ..app.follow import status as get_status
    from ..app.sweep import group_rows
    from ..core.names import check_job_id

    report = get_status(
        workspace_of(ctx), [check_job_id(j) for j in job_ids] or None, project_name
    )
    rows = report.rows
    if as_json:
        print_json([_row_json(r) for r in rows])
        warn(_warnings(rows) + report.warnings)
        return
    if not rows:
        click.echo("no jobs yet: 'hpctrain submit --help' shows how to start one")
        warn(report.warnings)
        return
    shown = rows if job_ids or tasks else group_rows(rows)
    with_values = any(getattr(r, "sweep_values", None) for r in shown)
    headers = ["job", "kind", "project", "base", "state", "elapsed", "epoch", "best", "test"]
    click.echo(tabulate([_table_row(r, with_values) for r in shown],
                        headers=headers + (["values"] if with_values else [])))
    for r in rows if job_ids or tasks else [r for r in rows if r.sweep is None]:
        if _stage_words(r):
            click.echo(f"job {r.id}: {_stage_words(r)} ({_stage_ids(r)})")
        if r.error and r.state == "FAILED":
            click.echo(f"job {r.id}: {r.error}")
        if _base_words(r):
            click.echo(f"job {r.id}: {_base_words(r)}")
        if r.waiting or r.expected_start:
            click.echo(f"job {r.id}: {_why_waiting(r)}")
        for message in r.alerts:
            click.echo(f"job {r.id}: ALERT {message}")
    for r in shown:
        if hasattr(r, "tasks"):
            click.echo(f"sweep {r.id}: {_sweep_words(r)}")
    warn(_warnings(rows) + report.warnings)  # after the table: the other rows are whole


def _table_row(r, with_values: bool) -> list:
    """One line of the status table: a job's, or a sweep's (SweepRow) summed up."""
    from ..app.sweep import values_text

    if hasattr(r, "tasks"):
        best = r.best
        cells = [f"{r.id} (sweep)", r.kind, r.project, r.base or "", r.state, "", "",
                 f"job {best.id}: {metric(best.best_metric, best.best_value)}" if best else "",
                 _test(best) if best else ""]
        return cells + ([f"{len(r.tasks)} jobs"] if with_values else [])
    cells = [r.id, r.kind, r.project, r.base or "", r.state + (" !" if r.alerts else ""),
             _elapsed(r.elapsed), _epoch(r), metric(r.best_metric, r.best_value), _test(r)]
    return cells + ([values_text(r.sweep_values)] if with_values else [])


def _test(row) -> str:
    return f"{row.test['char_accuracy']:.2%}" if "char_accuracy" in row.test else ""


def _sweep_words(row) -> str:
    """A sweep under the table: its jobs, where its best is, how to open it."""
    from ..app.sweep import values_text

    first, last = row.tasks[0].id, row.tasks[-1].id
    best = row.best
    words = f"jobs {first}-{last}" if first != last else f"job {first}"
    if best:
        words += f"; best so far job {best.id} ({values_text(best.sweep_values)})"
    return words + f"; 'hpctrain status {row.id}' shows each"


def _base_words(row) -> str | None:
    from ..runtime.events import base_words

    return base_words(row.base_test, row.test)


def _row_json(row) -> dict:
    """A status row for --json, with `gain`: "base 81.2 % → fine-tuned 94.7 % (+13.5)" or null."""
    from ..runtime.events import gain_line

    return {**row.to_json(), "gain": gain_line(row.base_test, row.test)}


def _warnings(rows) -> list[str]:
    """Each job's damaged files, one line each: the other jobs' rows are shown all the same."""
    return [f"job {r.id}: {warning}" for r in rows for warning in r.warnings]


# A chained job's stage in words, while it waits and while it runs.
STAGE_WORDS = {"compile": ("compiling waits for", "compiling on"),
               "train": ("compiled; training waits for", "training on")}


def _stage_words(row) -> str | None:
    """Where a chained job is: 'compiling on cpu', 'compiled; training waits for publicgpu'."""
    if not row.stage or row.state not in ("PENDING", "RUNNING"):
        return None
    waits, runs = STAGE_WORDS.get(row.stage, (f"{row.stage} waits for", f"{row.stage} on"))
    partition = next((s.get("partition") for s in row.stages if s.get("name") == row.stage),
                     None)
    return f"{runs if row.state == 'RUNNING' else waits} {partition or 'the default partition'}"


def _stage_ids(row) -> str:
    return ", ".join(f"{s.get('name')}: Slurm job {s.get('scheduler_id')} {s.get('state')}"
                     for s in row.stages)


def _why_waiting(row) -> str:
    """A pending job's reason in plain words and Slurm's estimate of its start."""
    parts = [f"{row.waiting} (Slurm: {row.reason})"] if row.waiting else []
    if row.expected_start:
        parts.append(f"expected to start {row.expected_start.replace('T', ' ')}")
    return "; ".join(parts)


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.pass_context
def logs(ctx, job_id, follow):
    """Print a job's raw log.

    With -f in a terminal, the last line is the job's progress (epoch, metric, best, elapsed,
    time left), kept up to date below the log.

    \b
    Examples:
      hpctrain logs 3
      hpctrain logs 3 -f      # like tail -f, stops when the job ends
    """
    from ..app.follow import follow_log
    from ..core.names import check_job_id

    live = LiveLine() if follow and sys.stdout.isatty() else None
    ragged = False
    for update in follow_log(workspace_of(ctx), check_job_id(job_id), follow):
        if isinstance(update, str):
            if live:
                live.clear()
            click.echo(update, nl=False)
            ragged = not update.endswith("\n")
        elif live:
            if ragged:  # keep the log's last partial line above the progress line
                click.echo("")
                ragged = False
            live.show(update)
    if live:
        live.close()


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=float, help="Give up after this many seconds (non-zero exit).")
@json_option
@click.pass_context
def wait(ctx, job_id, timeout, as_json):
    """Wait for a job to end, printing its progress; exit 0 only if it COMPLETED.

    It reads the job's events every second; Slurm is asked every 5 s at most, less often
    (up to every 60 s) while nothing changes.

    \b
    Example:
      hpctrain submit transcription Projet_A --json | jq .job.id | xargs hpctrain wait
    """
    from ..app.follow import watch
    from ..core.names import check_job_id

    live = LiveLine() if not as_json and sys.stdout.isatty() else None
    last = row = None
    warned = set()
    for row in watch(workspace_of(ctx), check_job_id(job_id), timeout):
        new = [w for w in _warnings([row]) if w not in warned]
        if new and live:
            live.clear()
        warn(new)
        warned.update(new)
        if live:
            live.show(row)
            continue
        line = _progress_line(row)
        if line != last and not as_json:
            click.echo(line)
            last = line
    if live:
        live.close()
    if as_json:
        print_json(_row_json(row))
    if row.state != "COMPLETED":
        raise HpctrainError(
            f"job {row.id} ended {row.state}" + (f": {row.error}" if row.error else "")
        )


def _progress_line(row, clock: bool = False) -> str:
    """The job's progress in one line; with `clock`, also elapsed time and time left."""
    from ..runtime.events import gain_line

    parts = [f"job {row.id} {row.state}"]
    if _stage_words(row):
        parts.append(_stage_words(row))
    if row.state == "PENDING" and (row.waiting or row.expected_start):
        parts.append(_why_waiting(row))
    if row.step:
        parts.append(row.step)
    if row.epoch is not None:
        parts.append(f"epoch {_epoch(row)}")
    if clock and row.best_metric in row.metrics:
        parts.append(f"{row.best_metric} {row.metrics[row.best_metric]:.4f}")
    if row.best_value is not None:
        at = f" (epoch {row.best_epoch})" if clock and row.best_epoch else ""
        parts.append(f"best {row.best_metric} {row.best_value:.4f}{at}")
    if _base_words(row):
        parts.append(_base_words(row))
    if "char_accuracy" in row.test and not gain_line(row.base_test, row.test):
        parts.append(f"test accuracy {row.test['char_accuracy']:.2%}")
    if clock and row.elapsed is not None:
        parts.append(f"{_elapsed(row.elapsed)} elapsed")
    left = time_left(row) if clock else None
    if left is not None:
        parts.append(f"about {_elapsed(left)} left")
    parts += [f"ALERT {message}" for message in row.alerts]
    return ", ".join(parts)


def time_left(row) -> float | None:
    """Seconds until the last epoch, from the mean epoch time; None before one can tell."""
    if row.state != "RUNNING" or not (row.epoch_seconds and row.total_epochs):
        return None
    if row.epoch is None or row.epoch >= row.total_epochs:
        return None
    return (row.total_epochs - row.epoch) * row.epoch_seconds


class LiveLine:
    """One progress line rewritten in place on a terminal."""

    def __init__(self) -> None:
        self.shown = False

    def show(self, row) -> None:
        width = shutil.get_terminal_size().columns - 1
        click.echo("\r\033[K" + _progress_line(row, clock=True)[:width], nl=False)
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo("\r\033[K", nl=False)
            self.shown = False

    def close(self) -> None:
        if self.shown:
            click.echo("")
            self.shown = False


@main.command()
@json_option
@click.argument("job_id", metavar="JOB")
@click.option("--sweep", "whole_sweep", is_flag=True,
              help="JOB is a sweep's id: cancel all its jobs (the whole Slurm array).")
@click.pass_context
def cancel(ctx, job_id, whole_sweep, as_json):
    """Cancel a pending or running job, or with --sweep every job of a sweep.

    Without --sweep, only the job named is cancelled, even the first job of a sweep (whose id
    is the sweep's).

    \b
    Examples:
      hpctrain cancel 3
      hpctrain cancel 12 --sweep     # all jobs of sweep 12: scancel of its array
    """
    from ..app.follow import cancel as do_cancel
    from ..app.sweep import cancel_sweep
    from ..core.names import check_job_id

    if whole_sweep:
        rows = cancel_sweep(workspace_of(ctx), check_job_id(job_id))
    else:
        rows = [do_cancel(workspace_of(ctx), check_job_id(job_id))]
    warn(_warnings(rows))
    if as_json:
        print_json([r.to_json() for r in rows] if whole_sweep else rows[0].to_json())
    else:
        for row in rows:
            click.echo(f"job {row.id} {row.state}")


@main.group()
def notify():
    """Job notifications: a webhook (ntfy, Slack, Matrix hookshot, or any JSON receiver) hears
    of each job's end, failure and alerts.

    Set it with 'notify:' in a profile of hpctrain.yaml or in a project file (the project's
    wins), e.g. 'notify: {url: https://ntfy.sh/TOPIC, format: ntfy}'; see the README.

    \b
    Example:
      hpctrain notify test
    """


@notify.command("test")
@click.option("--project", "project_name", help="Use this project's notify setting.")
@json_option
@click.pass_context
def notify_test(ctx, project_name, as_json):
    """Send one test notification from the cluster side to the webhook your jobs would use.

    \b
    Examples:
      hpctrain notify test
      hpctrain notify test --project Projet_A --json
    """
    from ..app.notify import test

    sent = test(workspace_of(ctx), project_name)
    if as_json:
        print_json(sent)
    else:
        click.echo(f"sent a test notification to {sent['to']} from {sent['sent_from']} "
                   f"(HTTP {sent['status']})")
