"""Commands that bring results back and free quota: fetch, clean, usage."""

from __future__ import annotations

import sys

import click

from ..runtime.events import gain_line
from .main import json_option, main, metric, print_json, size, warn, workspace_of


@main.command()
@click.argument("target", metavar="[PROJECT|JOB]", required=False)
@json_option
@click.pass_context
def fetch(ctx, target, as_json):
    """Bring best models back into models/finetuned/PROJECT/jobN/, each with its provenance
    (model.json: job, data, parameters, kraken version, best epoch, test score, checksums).
    A fine-tune from a base model also shows the gain: "base 81.2 % → fine-tuned 94.7 % (+13.5)",
    both scored on the job's own test pages.

    \b
    Examples:
      hpctrain fetch              # every finished job of the current project not fetched yet
      hpctrain fetch Projet_A     # the project's latest completed job
      hpctrain fetch 3
    """
    from ..app.fetch import fetch as do_fetch
    from ..runtime.events import base_words

    report = do_fetch(workspace_of(ctx), target)
    for note in report.notes:
        click.echo(note, err=True)
    if as_json:
        found = [_fetched_json(r) for r in report.results]
        print_json(found[0] if target else {"project": report.project, "fetched": found,
                                            "warnings": report.warnings})
    elif not report.results and report.warnings:
        click.echo("nothing fetched: see the warnings below")
    elif not report.results:
        click.echo(f"nothing new to fetch: every finished job of {report.project} is already in "
                   "models/finetuned/ (hpctrain fetch JOB fetches one again)")
    else:
        from tabulate import tabulate

        rows = [[r.job.id, r.job.project, r.model or "",
                 metric(r.job.best_metric, r.job.best_value), _test(r.job),
                 str(r.destination.relative_to(workspace_of(ctx).path))]
                for r in report.results]
        click.echo(tabulate(rows, headers=["job", "project", "model", "best", "test", "where"]))
        for r in report.results:
            if base_words(r.job.base_test, r.job.test):
                click.echo(f"job {r.job.id}: {base_words(r.job.base_test, r.job.test)}")
    warn(report.warnings)


def _fetched_json(result) -> dict:
    job = result.job
    return {"job": job.to_json(), "destination": str(result.destination),
            "model": result.model, "files": result.files,
            "gain": gain_line(job.base_test, job.test)}


def _test(job) -> str:
    return f"{job.test['char_accuracy']:.2%}" if "char_accuracy" in job.test else ""


@main.command()
@click.argument("project_name", metavar="PROJECT")
@click.option("-y", "--yes", is_flag=True, help="Delete without asking.")
@json_option
@click.pass_context
def clean(ctx, project_name, yes, as_json):
    """Free cluster quota: delete a project's compiled .arrow files and job logs (never models).

    \b
    Example:
      hpctrain clean Projet_A          # lists the files, then asks
      hpctrain clean Projet_A --yes
    """
    from ..app.clean import clean as do_clean, clean_plan
    from ..core.errors import Aborted

    workspace = workspace_of(ctx)
    plan = clean_plan(workspace, project_name)
    if not plan:
        print_json({"removed": 0, "files": []}) if as_json else click.echo("nothing to clean")
        return
    if not as_json:
        for item in plan:
            click.echo(f"  {item['path']} ({size(item['size'])})")
    total = sum(i["size"] for i in plan)
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted(
                f"{len(plan)} file(s) would be deleted; pass --yes to confirm without a terminal"
            )
        if not click.confirm(f"delete these {len(plan)} file(s), {size(total)}?", default=False):
            raise Aborted("nothing deleted")
    removed = do_clean(workspace, [i["path"] for i in plan])
    if as_json:
        print_json({"removed": removed, "files": [i["path"] for i in plan], "bytes": total})
    else:
        click.echo(f"deleted {removed} file(s), {size(total)}")


@main.command()
@click.argument("project_name", metavar="[PROJECT]", required=False)
@json_option
@click.pass_context
def usage(ctx, project_name, as_json):
    """Show what each project occupies on the cluster (ground truth, compiled data, models, logs,
    the rest of its jobs' files) and the free space left on the cluster's filesystem.

    \b
    Examples:
      hpctrain usage
      hpctrain usage Projet_A --json

    'clean frees' is what 'hpctrain clean PROJECT' would delete (compiled
    data and logs). A quota may allow less than the filesystem's free space.
    """
    from tabulate import tabulate

    from ..app.usage import usage as do_usage

    found = do_usage(workspace_of(ctx), project_name)
    if as_json:
        print_json(found.to_json())
        return
    columns = ("ground_truth", "compiled", "models", "logs", "other", "total", "cleanable")
    rows = [[p.project, *(size(getattr(p, c)) for c in columns)] for p in found.projects]
    if len(found.projects) > 1:
        rows.append(["(all)", *(size(sum(getattr(p, c) for p in found.projects))
                                for c in columns)])
    headers = ["project", "ground truth", "compiled", "models", "logs", "other", "total",
               "clean frees"]
    click.echo(tabulate(rows, headers=headers) if rows else "no project has files there yet")
    if found.base_models is not None:
        click.echo(f"base models: {size(found.base_models)}; the rest of the tree (registry, "
                   f"Scripts/): {size(found.elsewhere)}")
    where = f"total {size(found.total)} under {found.root}"
    if found.free is not None:
        where += f"; {size(found.free)} free of {size(found.capacity)} on its filesystem"
    click.echo(where)
