"""The command group, its error handling and output helpers.

Each command module (workspace, files, submit, follow, results, report, compare) parses, calls
one function of `hpctrain.app`, and prints. An HpctrainError becomes one line here, and only here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..core.errors import HpctrainError
from ..core.units import size_text


class Cli(click.Group):
    """Turns every HpctrainError into `hpctrain: error: ...` and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HpctrainError as e:
            if ctx.meta.get("traceback") or os.environ.get("HPCTRAIN_TRACEBACK"):
                raise
            for problem in getattr(e, "problems", []):
                click.echo(problem, err=True)
            click.echo(f"hpctrain: error: {e}", err=True)
            ctx.exit(e.exit_code)


def workspace_of(ctx: click.Context):
    """The workspace, loaded with the root command's options."""
    from ..core.config import load_workspace

    options = ctx.find_root().params
    flags = {"profile": options.get("profile"), "template_dir": options.get("template_dir")}
    return load_workspace(Path(options["workspace"]) if options.get("workspace") else None, flags)


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def warn(lines) -> None:
    """Warnings the library returned as data (damaged files): one stderr line each."""
    for line in lines:
        click.echo(f"hpctrain: warning: {line}", err=True)


def size(n: float) -> str:
    return size_text(n)


def metric(name, value) -> str:
    return f"{name} {value:.4f}" if name and value is not None else ""


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpctrain")
@click.option(
    "-w",
    "--workspace",
    type=click.Path(file_okay=False),
    envvar="HPCTRAIN_WORKSPACE",
    help="Workspace folder (default: the current folder or the nearest parent with hpctrain.yaml).",
)
@click.option("--profile", help="Cluster profile to use (default: the workspace's 'profile').")
@click.option(
    "--template-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Look for job templates here first.",
)
@click.option("--traceback", is_flag=True, help="Show the full Python traceback on errors.")
@click.pass_context
def main(ctx, workspace, profile, template_dir, traceback):
    """Train kraken and torchrun jobs on a Slurm cluster from your laptop.

    \b
    A full cycle on the embedded default (no cluster needed):
      hpctrain init demo && cd demo
      hpctrain project new Projet_A          # then put XML + images in ground_truth/Projet_A
      hpctrain push Projet_A
      hpctrain submit transcription Projet_A --base tridis_v2
      hpctrain status
      hpctrain fetch Projet_A
    """
    ctx.meta["traceback"] = traceback
