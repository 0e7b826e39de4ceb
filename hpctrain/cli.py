"""The command line: parse, call one library function, print. Errors become one line here, and only here."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .errors import HpctrainError


class Cli(click.Group):
    """Turns every HpctrainError into `hpctrain: error: ...` and a non-zero exit, without a traceback."""

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


def _workspace(ctx: click.Context):
    from .config import load_workspace

    options = ctx.find_root().params
    flags = {"profile": options.get("profile"), "template_dir": options.get("template_dir")}
    return load_workspace(Path(options["workspace"]) if options.get("workspace") else None, flags)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpctrain")
@click.option("-w", "--workspace", type=click.Path(file_okay=False), envvar="HPCTRAIN_WORKSPACE",
              help="Workspace folder (default: the current folder or the nearest parent with hpctrain.yaml).")
@click.option("--profile", help="Cluster profile to use (default: the workspace's 'profile').")
@click.option("--template-dir", type=click.Path(exists=True, file_okay=False),
              help="Look for job templates here first.")
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


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--accept-host-key", metavar="SHA256:...",
              help="Trust the cluster's SSH host key if, and only if, it has this fingerprint.")
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
    from .client import init_workspace

    options = ctx.find_root().params
    result = init_workspace(Path(directory), accept_host_key, {"profile": options.get("profile")})
    for item in result.created:
        click.echo(f"created {item}")
    for item in result.cluster_created:
        click.echo(f"created cluster folder {item}/")
    click.echo(f"workspace ready in {result.workspace} (cluster root: {result.cluster_root})")


@main.command()
@click.option("--force", is_flag=True, help="Reinstall even when the cluster already has this version.")
@json_option
@click.pass_context
def setup(ctx, force, as_json):
    """Install the cluster-side hpctrain, at exactly this version, into ~/.hpctrain/venv on the cluster.

    \b
    Example:
      hpctrain --profile mycluster setup

    Wheels are gathered here and uploaded, so the cluster needs no internet.
    Job commands refuse to run while the two versions differ.
    """
    from .client import setup_cluster

    progress = (lambda name: click.echo(f"uploaded {name}", err=True)) if not as_json and sys.stderr.isatty() \
        else None
    result = setup_cluster(_workspace(ctx), force=force, progress=progress)
    if as_json:
        _print_json({"version": result.version, "previous": result.previous, "python": result.python,
                     "wheels": result.wheels, "changed": result.changed})
    elif not result.changed:
        click.echo(f"the cluster already runs hpctrain {result.version}")
    else:
        click.echo(f"installed hpctrain {result.version} on the cluster (Python {result.python}, "
                   f"{len(result.wheels)} wheels; was {result.previous or 'not installed'})")


@main.command("cluster-call", hidden=True)
def cluster_call():
    """The cluster side of a job command: one JSON request on stdin, one JSON answer on stdout.

    \b
    Example (what the laptop runs over SSH):
      echo '{"version": "0.1.0", "op": "status", ...}' | ~/.hpctrain/venv/bin/hpctrain cluster-call
    """
    from .remote import serve

    click.echo(json.dumps(serve(sys.stdin.read()), default=str))


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
    from .client import new_project

    path = new_project(_workspace(ctx), name, ground_truth)
    click.echo(f"created {path}")


@main.command()
@click.argument("project_name", metavar="PROJECT")
@click.option("--dry-run", is_flag=True, help="Validate and list what would be sent; send nothing.")
@click.option("--checksum", is_flag=True, help="Compare contents (SHA-256), not size and modification time.")
@json_option
@click.pass_context
def push(ctx, project_name, dry_run, checksum, as_json):
    """Validate a project's ground truth, then upload new or changed pages.

    \b
    Example:
      hpctrain push Projet_A

    Every XML must be well-formed PAGE or ALTO, name an image that exists,
    and the project needs at least 10 pages for its train/validation/test
    split. One line is printed per problem file and nothing is sent until
    all are fixed. .DS_Store and ._* files are skipped.
    """
    from .client import push as do_push

    progress = _transfer_progress() if not as_json and sys.stderr.isatty() else None
    result = do_push(_workspace(ctx), project_name, progress=progress, dry_run=dry_run, checksum=checksum)
    if progress:
        click.echo("", err=True)
    report, plan = result.report, result.plan
    if as_json:
        _print_json({"project": result.project, "pages": len(report.pages), "xml": report.xml_count,
                     "images": report.image_count, "skipped": report.skipped, "notes": report.notes,
                     "sent": [t.remote for t in plan.transfers], "bytes": plan.bytes,
                     "unchanged": plan.unchanged, "dry_run": dry_run})
        return
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} system file(s) (.DS_Store, ._*)")
    click.echo(f"{len(report.pages)} valid pages ({report.xml_count} XML, {report.image_count} images)")
    verb = "would send" if dry_run else "sent"
    click.echo(f"{verb} {len(plan.transfers)} file(s), {_size(plan.bytes)}; {plan.unchanged} unchanged "
               f"-> {result.remote_folder}")


def _transfer_progress():
    state = {"files": 0, "bytes": 0}

    def show(transfer):
        state["files"] += 1
        state["bytes"] += transfer.size
        click.echo(f"\rsent {state['files']} files, {_size(state['bytes'])}", nl=False, err=True)

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
    from .client import push_model

    result = push_model(_workspace(ctx), Path(file), name)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"pushed {result['name']} ({_size(result['size'])}) -> {result['remote']}")


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

    from .client import list_models

    result = list_models(_workspace(ctx))
    if as_json:
        _print_json(result)
        return
    click.echo("Base models:")
    click.echo(tabulate([[m["name"], m["file"], _size(m["size"])] for m in result["base"]],
                        headers=["name", "file", "size"]) if result["base"] else "  (none)")
    click.echo("\nFine-tuned:")
    rows = [[m["job"], m["project"], m["kind"], m["state"], _metric(m["metric"], m["value"]),
             "yes" if m["fetched"] else "no", m["remote"]] for m in result["finetuned"]]
    click.echo(tabulate(rows, headers=["job", "project", "kind", "state", "best", "fetched", "model"])
               if rows else "  (none)")


def _metric(name, value) -> str:
    return f"{name} {value:.4f}" if name and value is not None else ""


# -- submit -------------------------------------------------------------------------------
def _submit_command(kind: str, summary: str, example: str):
    @click.argument("project_name", metavar="PROJECT")
    @click.option("--partition", help="Slurm partition.")
    @click.option("--time", "time_limit", help="Wall-clock limit, e.g. 05:00:00.")
    @click.option("--gpus", type=int, help="GPUs per node.")
    @click.option("--cpus", type=int, help="CPUs per task (data-loader workers follow it).")
    @click.option("--mem", help="Memory, e.g. 32G.")
    @click.option("--constraint", help="Slurm node constraint, e.g. gputc.")
    @click.option("--mail-user", help="E-mail for Slurm notifications.")
    @click.option("--dry-run", is_flag=True, help="Print the exact job script; submit nothing.")
    @json_option
    @click.pass_context
    def command(ctx, project_name, partition, time_limit, gpus, cpus, mem, constraint, mail_user, dry_run,
                as_json, base=None, no_base=False):
        from .client import submit

        resources = {"partition": partition, "time": time_limit, "gpus": gpus, "cpus": cpus, "mem": mem,
                     "constraint": constraint, "mail_user": mail_user}
        result = submit(_workspace(ctx), kind, project_name, base=base, no_base=no_base, resources=resources,
                        dry_run=dry_run)
        _print_submission(result, kind, dry_run, as_json)

    command.__doc__ = f"{summary}\n\n\b\nExample:\n  {example}\n"
    if kind != "compile":
        command = click.option("--no-base", is_flag=True, help="Train from scratch with the project's spec.")(command)
        command = click.option("--base", help="Base model name (default: the project's).")(command)
    return command


def _print_submission(result, kind: str, dry_run: bool, as_json: bool) -> None:
    if as_json:
        _print_json({"job": result.job.to_json() if result.job else None, "job_dir": result.job_dir,
                     "script": result.script, "dry_run": dry_run})
    elif dry_run:
        click.echo(result.script, nl=False)
    else:
        job = result.job
        click.echo(f"submitted job {job.id} ({kind} of {job.project}"
                   f"{', base ' + job.base if job.base else ''}); follow it with 'hpctrain logs {job.id} -f'")


@main.group()
def submit():
    """Render a job from its template and submit it.

    \b
    Examples:
      hpctrain submit transcription Projet_A --base tridis_v2
      hpctrain submit segmentation Projet_A --base blla --time 04:00:00
      hpctrain submit transcription Projet_A --dry-run     # print the script only
      hpctrain submit torchrun train.py --nodes 2 --gpus-per-node 4 -- --config cfg.yaml
    """


submit.command("transcription")(_submit_command(
    "transcription",
    "Fine-tune a recognition model: split, ketos compile, ketos train, ketos test.",
    "hpctrain submit transcription Projet_A --base tridis_v2 --gpus 1"))
submit.command("segmentation")(_submit_command(
    "segmentation", "Fine-tune a segmentation model with ketos segtrain.",
    "hpctrain submit segmentation Projet_A --base blla"))
submit.command("compile")(_submit_command(
    "compile", "Split the pages and compile train/validation/test .arrow files.",
    "hpctrain submit compile Projet_A"))


@submit.command("torchrun")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS]...")
@click.option("--project", "project_name", help="Project file for resources and alerts; also the job's label "
              "(default: the script's name).")
@click.option("--nodes", type=int, help="Nodes; one torchrun runs on each.")
@click.option("--gpus-per-node", type=int, help="GPUs per node; one process per GPU (0: CPU with gloo).")
@click.option("--nproc-per-node", type=int, help="Processes per node (default: the GPUs per node, or 1 on CPU).")
@click.option("--cpus-per-task", "cpus", type=int, help="CPUs per node; OMP threads = CPUs / processes.")
@click.option("--time", "time_limit", help="Wall-clock limit, e.g. 12:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option("--mem", help="Memory per node, e.g. 64G.")
@click.option("--constraint", help="Slurm node constraint.")
@click.option("--mail-user", help="E-mail for Slurm notifications.")
@click.option("-m", "--module", "as_module", is_flag=True,
              help="SCRIPT is a Python module installed in the job's environment (torchrun -m).")
@click.option("--venv", help="Virtual environment on the cluster to activate (default: the profile's).")
@click.option("--load", "modules", multiple=True, help="Environment module to load (repeatable).")
@click.option("--container", help="Apptainer image on the cluster to run torchrun in.")
@click.option("--monitor", default="val_auc", show_default=True, help="Metric that picks the best epoch.")
@click.option("--resume-from", type=str, metavar="JOB", help="Start from that job's last checkpoint "
              "($HPCTRAIN_RESUME_FROM in the job).")
@click.option("--dry-run", is_flag=True, help="Print the exact job script; submit nothing.")
@json_option
@click.pass_context
def submit_torchrun(ctx, script, script_args, project_name, nodes, gpus_per_node, nproc_per_node, cpus,
                    time_limit, partition, mem, constraint, mail_user, as_module, venv, modules, container,
                    monitor, resume_from, dry_run, as_json):
    """Run a PyTorch DDP script with torchrun: one launcher per node, c10d rendezvous.

    SCRIPT is a local .py file (sent with the job), a module with --module, or
    hpctrain.trainer, the reference image classifier. Arguments after -- go to the script;
    it runs in the job folder, so relative paths (checkpoints/) land there. It reports
    metrics by printing lines such as

    
      ##hpctrain {"event": "metrics", "epoch": 3, "total": 50, "val_auc": 0.91}

    and its best model with {"event": "model", "path": "checkpoints/best.pt"}.

    
    Examples:
      hpctrain submit torchrun train.py --nodes 2 --gpus-per-node 4 -- --config cfg.yaml
      hpctrain submit torchrun hpctrain.trainer --gpus-per-node 4 --project her2 -- --data /scratch/her2
      hpctrain submit torchrun hpctrain.trainer --nproc-per-node 2 --resume-from 7 -- --data /scratch/her2
    """
    from .client import submit_torchrun as do_submit
    from .names import check_job_id

    resources = {"nodes": nodes, "gpus": gpus_per_node, "cpus": cpus, "time": time_limit, "partition": partition,
                 "mem": mem, "constraint": constraint, "mail_user": mail_user}
    result = do_submit(_workspace(ctx), script, script_args, project_name, as_module, nproc_per_node, resources,
                       {"venv": venv, "modules": modules, "container": container}, monitor,
                       check_job_id(resume_from) if resume_from else None, dry_run)
    _print_submission(result, "torchrun", dry_run, as_json)


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
@json_option
@click.pass_context
def status(ctx, job_ids, project_name, as_json):
    """One table of jobs: id, kind, project, base, state, elapsed, epoch, best metric.

    \b
    Examples:
      hpctrain status
      hpctrain status 3 --json
    """
    from tabulate import tabulate

    from .client import status as get_status
    from .names import check_job_id

    rows = get_status(_workspace(ctx), [check_job_id(j) for j in job_ids] or None, project_name)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    if not rows:
        click.echo("no jobs yet: 'hpctrain submit --help' shows how to start one")
        return
    table = [[r.id, r.kind, r.project, r.base or "", r.state + (" !" if r.alerts else ""), _elapsed(r.elapsed),
              _epoch(r),
              _metric(r.best_metric, r.best_value),
              f"{r.test['char_accuracy']:.2%}" if "char_accuracy" in r.test else ""] for r in rows]
    click.echo(tabulate(table, headers=["job", "kind", "project", "base", "state", "elapsed", "epoch", "best",
                                        "test"]))
    for r in rows:
        if r.error and r.state == "FAILED":
            click.echo(f"job {r.id}: {r.error}")
        for message in r.alerts:
            click.echo(f"job {r.id}: ALERT {message}")


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.pass_context
def logs(ctx, job_id, follow):
    """Print a job's raw log.

    \b
    Examples:
      hpctrain logs 3
      hpctrain logs 3 -f      # like tail -f, stops when the job ends
    """
    from .client import follow_log
    from .names import check_job_id

    for chunk in follow_log(_workspace(ctx), check_job_id(job_id), follow):
        click.echo(chunk, nl=False)


@main.command()
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=float, help="Give up after this many seconds (non-zero exit).")
@json_option
@click.pass_context
def wait(ctx, job_id, timeout, as_json):
    """Wait for a job to end, printing its progress; exit 0 only if it COMPLETED.

    \b
    Example:
      hpctrain submit transcription Projet_A --json | jq .job.id | xargs hpctrain wait
    """
    from .client import watch
    from .names import check_job_id

    last = row = None
    for row in watch(_workspace(ctx), check_job_id(job_id), timeout):
        line = _progress_line(row)
        if line != last and not as_json:
            click.echo(line)
            last = line
    if as_json:
        _print_json(row.to_json())
    if row.state != "COMPLETED":
        raise HpctrainError(f"job {row.id} ended {row.state}" + (f": {row.error}" if row.error else ""))


def _progress_line(row) -> str:
    parts = [f"job {row.id} {row.state}"]
    if row.step:
        parts.append(row.step)
    if row.epoch is not None:
        parts.append(f"epoch {_epoch(row)}")
    if row.best_value is not None:
        parts.append(f"best {row.best_metric} {row.best_value:.4f}")
    if "char_accuracy" in row.test:
        parts.append(f"test accuracy {row.test['char_accuracy']:.2%}")
    parts += [f"ALERT {message}" for message in row.alerts]
    return ", ".join(parts)


@main.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def cancel(ctx, job_id, as_json):
    """Cancel a pending or running job.

    \b
    Example:
      hpctrain cancel 3
    """
    from .client import cancel as do_cancel
    from .names import check_job_id

    row = do_cancel(_workspace(ctx), check_job_id(job_id))
    if as_json:
        _print_json(row.to_json())
    else:
        click.echo(f"job {row.id} {row.state}")


@main.command()
@click.argument("target", metavar="PROJECT|JOB")
@json_option
@click.pass_context
def fetch(ctx, target, as_json):
    """Bring a job's best model, events, log and script back into models/finetuned/PROJECT/jobN/.

    \b
    Examples:
      hpctrain fetch Projet_A     # the project's latest completed job
      hpctrain fetch 3
    """
    from .client import fetch as do_fetch

    result = do_fetch(_workspace(ctx), target)
    if as_json:
        _print_json({"job": result.job.to_json(), "destination": str(result.destination), "files": result.files})
        return
    job = result.job
    click.echo(f"job {job.id} ({job.kind} of {job.project}, {_metric(job.best_metric, job.best_value)}):")
    for item in result.files:
        click.echo(f"  {item}")


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
    from .client import clean as do_clean, clean_plan
    from .errors import Aborted

    workspace = _workspace(ctx)
    plan = clean_plan(workspace, project_name)
    if not plan:
        _print_json({"removed": 0, "files": []}) if as_json else click.echo("nothing to clean")
        return
    if not as_json:
        for item in plan:
            click.echo(f"  {item['path']} ({_size(item['size'])})")
    total = sum(i["size"] for i in plan)
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted(f"{len(plan)} file(s) would be deleted; pass --yes to confirm without a terminal")
        if not click.confirm(f"delete these {len(plan)} file(s), {_size(total)}?", default=False):
            raise Aborted("nothing deleted")
    removed = do_clean(workspace, [i["path"] for i in plan])
    if as_json:
        _print_json({"removed": removed, "files": [i["path"] for i in plan], "bytes": total})
    else:
        click.echo(f"deleted {removed} file(s), {_size(total)}")
