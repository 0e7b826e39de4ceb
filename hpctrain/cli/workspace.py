"""Commands for the workspace: init, setup, project new (and the hidden cluster-call)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .main import json_option, main, print_json, workspace_of


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--accept-host-key",
    metavar="SHA256:...",
    help="Trust the cluster's SSH host key if, and only if, it has this fingerprint.",
)
@click.pass_context
def init(ctx, directory, accept_host_key):
    """Create a workspace (and the cluster tree of its default profile).

    \b
    Example:
      hpctrain init ~/htr && cd ~/htr

    Creates hpctrain.yaml, ground_truth/, models/base/, models/finetuned/,
    projects/ and templates/, and the cluster-side tree (Ground_Truth/,
    GT_compile/, Model_de_base/, Scripts/, Repertoire_model_finetune/).
    Existing files are never overwritten. With an ssh profile, an unknown
    host key is refused with its fingerprint; after checking it, accept it:
      hpctrain --profile mycluster init --accept-host-key SHA256:...
    """
    from ..app.workspace import init_workspace

    options = ctx.find_root().params
    result = init_workspace(Path(directory), accept_host_key, {"profile": options.get("profile")})
    for item in result.created:
        click.echo(f"created {item}")
    for item in result.cluster_created:
        click.echo(f"created cluster folder {item}/")
    click.echo(f"workspace ready in {result.workspace} (cluster root: {result.cluster_root})")


@main.command()
@click.option(
    "--force", is_flag=True, help="Reinstall even when the cluster already has this version."
)
@json_option
@click.pass_context
def setup(ctx, force, as_json):
    """Install the cluster-side hpctrain, at exactly this version, on the cluster.

    \b
    Example:
      hpctrain --profile mycluster setup

    Wheels are gathered here and uploaded, so the cluster needs no internet.
    Job commands refuse to run while the two versions differ.
    """
    from ..app.setup import setup_cluster

    progress = (
        (lambda name: click.echo(f"uploaded {name}", err=True))
        if not as_json and sys.stderr.isatty()
        else None
    )
    result = setup_cluster(workspace_of(ctx), force=force, progress=progress)
    if as_json:
        print_json(
            {
                "version": result.version,
                "previous": result.previous,
                "python": result.python,
                "wheels": result.wheels,
                "changed": result.changed,
            }
        )
    elif not result.changed:
        click.echo(f"the cluster already runs hpctrain {result.version}")
    else:
        click.echo(
            f"installed hpctrain {result.version} on the cluster (Python {result.python}, "
            f"{len(result.wheels)} wheels; was {result.previous or 'not installed'})"
        )


@main.command("cluster-call", hidden=True)
def cluster_call():
    """The cluster side of a job command: one JSON request on stdin, one JSON answer on stdout.

    \b
    Example (what the laptop runs over SSH):
      echo '{"version": "0.1.0", "op": "status", ...}' | ~/.hpctrain/venv/bin/hpctrain cluster-call
    """
    from ..app.cluster_call import cluster_call as answer

    click.echo(answer(sys.stdin.read()))


@main.group()
def project():
    """Project files (projects/NAME.yaml).

    \b
    Example:
      hpctrain project new Projet_A
    """


@project.command("new")
@click.argument("name")
@click.option("--ground-truth", help="Ground-truth folder (default: ground_truth/NAME).")
@click.pass_context
def project_new(ctx, name, ground_truth):
    """Write projects/NAME.yaml with every key documented.

    \b
    Example:
      hpctrain project new Projet_A --ground-truth ~/exports/Projet_A
    """
    from ..app.workspace import new_project

    path = new_project(workspace_of(ctx), name, ground_truth)
    click.echo(f"created {path}")
