"""`hpctrain compare`: jobs ranked by their score on the same test pages."""

from __future__ import annotations

import click

from .main import json_option, main, print_json, warn, workspace_of


@main.command()
@click.argument("targets", metavar="JOB [JOB ...]", nargs=-1, required=True)
@json_option
@click.pass_context
def compare(ctx, targets, as_json):
    """Rank jobs by their test metric on the same test pages, with the base model's score, the
    best epoch, the time to best and the GPU hours.

    \b
    Examples:
      hpctrain compare 12 13 14 15
      hpctrain compare 12 13 --json

    The first job names the test pages: a job tested on other pages (another split, another
    project) is kept out of the ranking and flagged; name it first to rank against its pages.
    Jobs that have not completed are listed unranked. The ranked column is the test metric
    (char_accuracy for transcription); when no job has one (segmentation on a kraken without
    'ketos segtest'), the best validation metric, and the header says so.
    """
    from ..app.compare import compare as do_compare

    found = do_compare(workspace_of(ctx), list(targets))
    if as_json:
        print_json(found.to_json())
    else:
        click.echo(render(found))
    warn(found.warnings)


def render(found) -> str:
    """The table, its header line and one line per job kept out of the ranking."""
    from tabulate import tabulate

    better = "lower" if found.lower_is_better else "higher"
    plural = "s" * (found.test_pages != 1)
    pages = (f"job {found.reference_job}'s {found.test_pages} test page{plural} (sha256 "
             f"{found.test_sha256[:12]})" if found.test_sha256 else
             f"job {found.reference_job}'s test data (no test pages recorded)")
    lines = [f"ranked by {found.ranked_by} ({better} is better) on {pages}"]
    rows = found.ranked + found.unranked
    notes = any(row.note for row in rows)
    table = [[row.rank if row.rank is not None else "-", row.job, row.kind, _settings(row),
              _score(row.base_score, found.metric), _score(row.score, found.metric),
              _blank(row.best_epoch), _duration(row.time_to_best), _hours(row.gpu_hours),
              *([row.note or ""] if notes else [])] for row in rows]
    headers = ["rank", "job", "kind", "settings", "base", found.ranked_by, "best epoch",
               "time to best", "GPU h", *(["not ranked"] if notes else [])]
    lines.append(tabulate(table, headers=headers, disable_numparse=True))
    lines += [row.note for row in found.other_test_pages]
    return "\n".join(lines)


def _settings(row) -> str:
    return " ".join(f"{k}={v}" for k, v in row.settings.items()) or "-"


def _score(value, metric: str) -> str:
    if value is None:
        return "-"
    if "loss" not in metric and 0 <= value <= 1:
        return f"{value:.2%}"
    return f"{value:.4f}"


def _blank(value) -> str:
    return "-" if value is None else str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _hours(value) -> str:
    return "-" if value is None else f"{value:.2f}"
