"""Commands that move files to the cluster: push, models push, models list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .main import json_option, main, metric, print_json, size, warn, workspace_of


@main.command()
@click.argument("target", metavar="PROJECT|FOLDER|EXPORT.zip")
@click.option("--project", "project_name", help="Project name (default: the folder's or zip's).")
@click.option("--dry-run", is_flag=True, help="Validate and list what would be sent; send nothing.")
@click.option(
    "--checksum", is_flag=True, help="Compare contents (SHA-256), not size and modification time."
)
@json_option
@click.pass_context
def push(ctx, target, project_name, dry_run, checksum, as_json):
    """Validate a project's ground truth, then upload new or changed pages.

    \b
    Examples:
      hpctrain push Projet_A                      # ground_truth/Projet_A
      hpctrain push ~/Downloads/Projet_A          # an export folder anywhere
      hpctrain push ~/Downloads/export.zip --project Projet_A

    A project without a project file gets projects/NAME.yaml with the
    documented defaults. A zip is checked whole (no paths leaving the folder,
    no links, no size bomb) before it is unpacked into ground_truth/NAME/.

    Every XML must be well-formed PAGE or ALTO, name an image that exists,
    and the project needs at least 10 pages for its train/validation/test
    split. One line is printed per problem file and nothing is sent until
    all are fixed. .DS_Store and ._* files are skipped.
    """
    from ..app.push import push as do_push

    progress = _transfer_progress() if not as_json and sys.stderr.isatty() else None
    result = do_push(workspace_of(ctx), target, progress=progress, dry_run=dry_run,
                     checksum=checksum, project_name=project_name)
    if progress:
        click.echo("", err=True)
    for note in result.notes:
        click.echo(note, err=True)
    report, plan = result.report, result.plan
    if as_json:
        print_json(
            {
                "project": result.project,
                "pages": len(report.pages),
                "xml": report.xml_count,
                "images": report.image_count,
                "skipped": report.skipped,
                "notes": report.notes,
                "sent": [t.remote for t in plan.transfers],
                "bytes": plan.bytes,
                "unchanged": plan.unchanged,
                "dry_run": dry_run,
            }
        )
        return
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} system file(s) (.DS_Store, ._*)")
    click.echo(
        f"{len(report.pages)} valid pages ({report.xml_count} XML, {report.image_count} images)"
    )
    verb = "would send" if dry_run else "sent"
    click.echo(
        f"{verb} {len(plan.transfers)} file(s), {size(plan.bytes)}; {plan.unchanged} unchanged "
        f"-> {result.remote_folder}"
    )


def _transfer_progress():
    """A byte progress bar on the terminal: [#####.....] 52% 104.2/201.0 MB, 1040/2000 files."""
    state = {"files": 0, "bytes": 0}

    def show(transfer, plan):
        state["files"] += 1
        state["bytes"] += transfer.size
        done = state["bytes"] / plan.bytes if plan.bytes else 1.0
        bar = "#" * int(done * 30) + "." * (30 - int(done * 30))
        click.echo(f"\r[{bar}] {done:4.0%} {size(state['bytes'])}/{size(plan.bytes)}, "
                   f"{state['files']}/{len(plan.transfers)} files", nl=False, err=True)

    return show


@main.group()
def models():
    """Base models on the cluster and fine-tuned results.

    \b
    Examples:
      hpctrain models push tridis_v2.mlmodel
      hpctrain models list
    """


@models.command("push")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", help="Name to store it under (default: the file name without extension).")
@json_option
@click.pass_context
def models_push(ctx, file, name, as_json):
    """Upload a base model into the cluster's Model_de_base.

    \b
    Example:
      hpctrain models push ~/Downloads/tridis_v2_medieval.mlmodel --name tridis_v2
    """
    from ..app.models import push_model

    result = push_model(workspace_of(ctx), Path(file), name)
    if as_json:
        print_json(result)
    else:
        click.echo(f"pushed {result['name']} ({size(result['size'])}) -> {result['remote']}")


@models.command("list")
@json_option
@click.pass_context
def models_list(ctx, as_json):
    """List base models and fine-tuned results.

    \b
    Example:
      hpctrain models list --json
    """
    from tabulate import tabulate

    from ..app.models import list_models

    result = list_models(workspace_of(ctx))
    if as_json:
        print_json(result)
        warn(result["warnings"])
        return
    click.echo("Base models:")
    click.echo(
        tabulate(
            [[m["name"], m["file"], size(m["size"])] for m in result["base"]],
            headers=["name", "file", "size"],
        )
        if result["base"]
        else "  (none)"
    )
    click.echo("\nFine-tuned:")
    rows = [
        [
            m["job"],
            m["project"],
            m["kind"],
            m["state"],
            metric(m["metric"], m["value"]),
            "yes" if m["fetched"] else "no",
            m["remote"],
        ]
        for m in result["finetuned"]
    ]
    click.echo(
        tabulate(rows, headers=["job", "project", "kind", "state", "best", "fetched", "model"])
        if rows
        else "  (none)"
    )
    click.echo("\nFetched (on this computer, with model.json):")
    here = [[m["job"], m["project"], m["kind"], metric(m["best"].get("metric"),
             m["best"].get("value")), f"{m['test']['char_accuracy']:.2%}"
             if "char_accuracy" in m["test"] else "", m["model"]] for m in result["here"]]
    click.echo(tabulate(here, headers=["job", "project", "kind", "best", "test", "model"])
               if here else "  (none)")
    warn(result["warnings"])
