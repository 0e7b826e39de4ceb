"""`hpctrain report JOB...`: a job's efficiency, as text (the default) or JSON, or every job's
page as one HTML file (`--html`); `hpctrain plot JOB...`: the training curves as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from .main import json_option, main, print_json, workspace_of

DEFAULT = "\0default"  # --html without a path


@main.command()
@click.argument("targets", metavar="JOB...", nargs=-1, required=True)
@click.option("--html", "html_path", is_flag=False, flag_value=DEFAULT, default=None,
              metavar="[PATH]",
              help="Write one self-contained HTML page of the jobs to PATH (default: "
                   "report-jobN.html here): their table, curves, efficiency, provenance and "
                   "script. Put it after the jobs, or write --html=PATH.")
@json_option
@click.pass_context
def report(ctx, targets, html_path, as_json):
    """What a job used of what it asked for: queue wait, elapsed time against the limit, CPU
    efficiency, peak memory against the request, GPU use, and one suggestion for next time.
    With --html: one page to open in a browser or send, with the curves inline.

    \b
    Examples:
      hpctrain report 3
      hpctrain report 3 --json | jq .efficiency.cpu_efficiency
      hpctrain report 3 --html                # writes report-job3.html
      hpctrain report 3 4 5 --html=lr.html    # one page: the table and the curves overlaid

    Under Slurm the figures come from its accounting (sacct); with the
    embedded default, from what the job's processes used. GPUs are sampled
    inside the job with nvidia-smi. A job that has not ended shows the
    figures so far. The curves need matplotlib: pip install 'hpctrain[plot]'.
    """
    from ..core.names import check_job_id

    if html_path is not None:
        return _html(ctx, targets, html_path, as_json)
    from ..app.report import efficiency_lines, report as job_report

    found = [job_report(workspace_of(ctx), check_job_id(t)) for t in targets]
    if as_json:
        data = [f.to_json() for f in found]
        print_json(data[0] if len(data) == 1 else data)
        return
    for index, one in enumerate(found):
        if index:
            click.echo("")
        for line in efficiency_lines(one):
            click.echo(line)


def _html(ctx, targets, html_path, as_json) -> None:
    from ..app.report import html_report

    written = html_report(workspace_of(ctx), list(targets),
                          None if html_path == DEFAULT else Path(html_path))
    for note in written.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        print_json({"path": str(written.path), "jobs": written.jobs, "notes": written.notes})
    else:
        click.echo(f"wrote {written.path} (open it in a browser)")


@main.command()
@click.argument("targets", metavar="JOB...", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The PNG to write (default: curves-jobN.png here).")
@json_option
@click.pass_context
def plot(ctx, targets, output, as_json):
    """Draw the training curves of one or several jobs into a PNG: the validation metric per
    epoch (the best epoch starred, the base model's score dashed) and, below, the training
    loss. Several jobs are overlaid, one colour each.

    \b
    Examples:
      hpctrain plot 3                      # writes curves-job3.png
      hpctrain plot 3 4 5 -o lr-sweep.png

    Needs matplotlib: pip install 'hpctrain[plot]'. 'hpctrain fetch' also
    writes curves.png beside the fetched model.
    """
    from ..app.plot import plot as draw

    done = draw(workspace_of(ctx), list(targets), Path(output) if output else None)
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        print_json({"path": str(done.path), "jobs": [c.to_json() for c in done.curves],
                    "notes": done.notes})
    else:
        count = len(done.curves)
        click.echo(f"wrote {done.path} ({count} job{'s' * (count != 1)})")
