"""`hpctrain submit ...` and `hpctrain sweep ...`: kraken jobs and torchrun jobs, one or a grid."""

from __future__ import annotations


import click

from .main import json_option, main, print_json, workspace_of


# -- submit -------------------------------------------------------------------------------
preflight_option = click.option(
    "--no-preflight",
    is_flag=True,
    help="Queue without checking the partition's limits first (time, CPUs, GPUs, memory, "
    "features, who may use it); sbatch or the queue then decide.",
)


def _submit_command(kind: str, summary: str, example: str):
    @click.argument("project_name", metavar="[PROJECT]", required=False)
    @click.option("--partition", help="Slurm partition.")
    @click.option("--time", "time_limit",
                  help="Wall-clock limit, e.g. 05:00:00 (default: the project's time, else "
                       "learned from its earlier jobs on the partition, else 05:00:00).")
    @click.option("--gpus", type=int, help="GPUs per node.")
    @click.option("--cpus", type=int, help="CPUs per task (data-loader workers follow it).")
    @click.option("--mem", help="Memory, e.g. 32G.")
    @click.option("--constraint", help="Slurm node constraint, e.g. gputc.")
    @click.option("--mail-user", help="E-mail for Slurm notifications.")
    @click.option("--compile-partition",
                  help="A CPU partition: transcription and compile jobs compile there, "
                       "then train on --partition (two Slurm jobs, one hpctrain job).")
    @click.option("--dry-run", is_flag=True, help="Print the exact job script; submit nothing.")
    @preflight_option
    @json_option
    @click.pass_context
    def command(
        ctx,
        project_name,
        partition,
        time_limit,
        gpus,
        cpus,
        mem,
        constraint,
        mail_user,
        compile_partition,
        dry_run,
        no_preflight,
        as_json,
        base=None,
        no_base=False,
    ):
        from ..app.submit import submit

        resources = {
            "partition": partition,
            "time": time_limit,
            "gpus": gpus,
            "cpus": cpus,
            "mem": mem,
            "constraint": constraint,
            "mail_user": mail_user,
            "compile_partition": compile_partition,
        }
        result = submit(
            workspace_of(ctx),
            kind,
            project_name,
            base=base,
            no_base=no_base,
            resources=resources,
            dry_run=dry_run,
            preflight=not no_preflight,
        )
        _print_submission(result, kind, dry_run, as_json)

    command.__doc__ = (f"{summary}\n\n\b\nExample:\n  {example}\n\n"
                       "Without PROJECT: HPCTRAIN_PROJECT, else 'project:' in hpctrain.yaml, else\n"
                       "the project pushed last, else the only one.\n")
    if kind != "compile":
        command = click.option(
            "--no-base", is_flag=True, help="Train from scratch with the project's spec."
        )(command)
        command = click.option("--base", help="Base model name (default: the project's).")(command)
    return command


def _print_submission(result, kind: str, dry_run: bool, as_json: bool) -> None:
    for note in result.notes:
        click.echo(note, err=True)
    if as_json:
        print_json(
            {
                "job": result.job.to_json() if result.job else None,
                "job_dir": result.job_dir,
                "script": result.script,
                "compile_script": result.compile_script,
                "dry_run": dry_run,
                "time": result.time.to_json() if result.time else None,
            }
        )
    elif dry_run and result.compile_script:
        click.echo(f"# ==== compile.sh: stage 1 of 2 (a Slurm job of its own) ====\n"
                   f"{result.compile_script}\n"
                   f"# ==== job.sh: stage 2 of 2, after compile.sh succeeded ====\n"
                   f"{result.script}", nl=False)
    elif dry_run:
        click.echo(result.script, nl=False)
    else:
        job = result.job
        click.echo(
            f"submitted job {job.id} ({kind} of {job.project}"
            f"{', base ' + job.base if job.base else ''}); "
            f"follow it with 'hpctrain logs {job.id} -f'"
        )
        if job.stages:
            click.echo("; ".join(f"{stage.name} on {stage.partition or 'the default partition'} "
                                 f"(Slurm job {stage.scheduler_id})" for stage in job.stages)
                       + ", which starts once compiling succeeded")


@main.group()
def submit():
    """Render a job from its template and submit it.

    \b
    Examples:
      hpctrain submit transcription Projet_A --base tridis_v2
      hpctrain submit segmentation Projet_A --base blla --time 04:00:00
      hpctrain submit transcription Projet_A --dry-run     # print the script only
      hpctrain submit torchrun train.py --nodes 2 --gpus-per-node 4 -- --config cfg.yaml

    Under Slurm, a job is first checked against its partition (time limit, CPUs, GPUs, memory
    and features of one node, who may use it): one line says what is allowed, and nothing is
    queued. 'hpctrain partitions' shows the limits; --no-preflight skips the check.

    Without --time, a transcription or segmentation takes the project file's 'time:', else a
    limit learned from the project's earlier jobs on the same partition (one line says how;
    --dry-run shows it), else 05:00:00.
    """


submit.command("transcription")(
    _submit_command(
        "transcription",
        "Fine-tune a recognition model: split, ketos compile, ketos train, ketos test.",
        "hpctrain submit transcription Projet_A --base tridis_v2 --gpus 1",
    )
)
submit.command("segmentation")(
    _submit_command(
        "segmentation",
        "Fine-tune a segmentation model with ketos segtrain.",
        "hpctrain submit segmentation Projet_A --base blla",
    )
)
submit.command("compile")(
    _submit_command(
        "compile",
        "Split the pages and compile train/validation/test .arrow files.",
        "hpctrain submit compile Projet_A",
    )
)


@submit.command("torchrun")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS]...")
@click.option(
    "--project",
    "project_name",
    help="Project file for resources and alerts; also the job's label "
    "(default: the script's name).",
)
@click.option("--nodes", type=int, help="Nodes; one torchrun runs on each.")
@click.option(
    "--gpus-per-node", type=int, help="GPUs per node; one process per GPU (0: CPU with gloo)."
)
@click.option(
    "--nproc-per-node",
    type=int,
    help="Processes per node (default: the GPUs per node, or 1 on CPU).",
)
@click.option(
    "--cpus-per-task", "cpus", type=int, help="CPUs per node; OMP threads = CPUs / processes."
)
@click.option("--time", "time_limit", help="Wall-clock limit, e.g. 12:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option("--mem", help="Memory per node, e.g. 64G.")
@click.option("--constraint", help="Slurm node constraint.")
@click.option("--mail-user", help="E-mail for Slurm notifications.")
@click.option(
    "-m",
    "--module",
    "as_module",
    is_flag=True,
    help="SCRIPT is a Python module installed in the job's environment (torchrun -m).",
)
@click.option(
    "--venv", help="Virtual environment on the cluster to activate (default: the profile's)."
)
@click.option("--load", "modules", multiple=True, help="Environment module to load (repeatable).")
@click.option("--container", help="Apptainer image on the cluster to run torchrun in.")
@click.option(
    "--monitor", default="val_auc", show_default=True, help="Metric that picks the best epoch."
)
@click.option(
    "--resume-from",
    type=str,
    metavar="JOB",
    help="Start from that job's last checkpoint ($HPCTRAIN_RESUME_FROM in the job).",
)
@click.option("--dry-run", is_flag=True, help="Print the exact job script; submit nothing.")
@preflight_option
@json_option
@click.pass_context
def submit_torchrun(
    ctx,
    script,
    script_args,
    project_name,
    nodes,
    gpus_per_node,
    nproc_per_node,
    cpus,
    time_limit,
    partition,
    mem,
    constraint,
    mail_user,
    as_module,
    venv,
    modules,
    container,
    monitor,
    resume_from,
    dry_run,
    no_preflight,
    as_json,
):
    """Run a PyTorch DDP script with torchrun: one launcher per node, c10d rendezvous.

    SCRIPT is a local .py file (sent with the job), a module with --module, or
    hpctrain.trainer, the reference image classifier. Arguments after -- go to the script;
    it runs in the job folder, so relative paths (checkpoints/) land there. It reports
    metrics by printing lines such as

    \b
      ##hpctrain {"event": "metrics", "epoch": 3, "total": 50, "val_auc": 0.91}

    and its best model with {"event": "model", "path": "checkpoints/best.pt"}.

    \b
    Examples:
      hpctrain submit torchrun train.py --nodes 2 --gpus-per-node 4 -- --config cfg.yaml
      hpctrain submit torchrun hpctrain.trainer --gpus-per-node 4 --project her2 \
          -- --data /scratch/her2
      hpctrain submit torchrun hpctrain.trainer --nproc-per-node 2 --resume-from 7 \
          -- --data /scratch/her2
    """
    from ..app.submit import submit_torchrun as do_submit
    from ..core.names import check_job_id

    resources = {
        "nodes": nodes,
        "gpus": gpus_per_node,
        "cpus": cpus,
        "time": time_limit,
        "partition": partition,
        "mem": mem,
        "constraint": constraint,
        "mail_user": mail_user,
    }
    result = do_submit(
        workspace_of(ctx),
        script,
        script_args,
        project_name,
        as_module,
        nproc_per_node,
        resources,
        {"venv": venv, "modules": modules, "container": container},
        monitor,
        check_job_id(resume_from) if resume_from else None,
        dry_run,
        preflight=not no_preflight,
    )
    _print_submission(result, "torchrun", dry_run, as_json)


@main.command()
@click.option("--refresh", is_flag=True, help="Ask Slurm now instead of using the last answer "
              "(kept a few minutes).")
@json_option
@click.pass_context
def partitions(ctx, refresh, as_json):
    """Show the Slurm partitions: time limit, nodes, CPUs, memory, GPUs and features per node,
    state, and whether you may use each. Submit checks a job against the same facts.

    \b
    Examples:
      hpctrain partitions
      hpctrain partitions --refresh --json

    The default partition (used without --partition) is marked with '*'.
    """
    from tabulate import tabulate

    from ..app.partitions import HEADERS, partitions as do_partitions

    report = do_partitions(workspace_of(ctx), refresh)
    if as_json:
        print_json(report.to_json())
    elif report.executor != "slurm":
        click.echo(f"no partitions with the {report.executor} executor: jobs run on the machine "
                   "that holds the cluster root (set 'executor: slurm' in a profile for Slurm)")
    elif not report.rows():
        click.echo("Slurm shows no partition you can see")
    else:
        click.echo(tabulate(report.rows(), headers=HEADERS))
        for partition in report.partitions:
            if partition.why_not and not partition.hidden:
                click.echo(f"{partition.name}: {partition.why_not}")


# -- sweep --------------------------------------------------------------------------------
set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=V1,V2",
    help="Values to sweep, comma-separated (repeatable): the grid is every combination.")
max_parallel_option = click.option(
    "--max-parallel", type=click.IntRange(min=1),
    help="At most N tasks run at once (Slurm's --array=...%N).")


@main.group()
def sweep():
    """Train once per combination of values, as one Slurm job array.

    Each combination is one ordinary job (its own id, folder and events), and every job uses
    the same split of the pages. The sweep's id is its first job's: 'hpctrain status' shows the
    sweep as one row, 'hpctrain status SWEEP' its jobs, 'hpctrain cancel SWEEP --sweep' cancels
    the whole array.

    \b
    Examples:
      hpctrain sweep transcription Projet_A --base tridis_v2 \\
          --set learning_rate=1e-4,3e-4,1e-3 --set augment=true,false --max-parallel 2
      hpctrain sweep torchrun train.py --gpus-per-node 1 --set lr=0.1,0.01 -- --epochs 5
    """


def _sweep_command(kind: str, example: str):
    @click.argument("project_name", metavar="[PROJECT]", required=False)
    @set_option
    @max_parallel_option
    @click.option("--base", help="Base model name (default: the project's).")
    @click.option("--no-base", is_flag=True, help="Train from scratch with the project's spec.")
    @click.option("--partition", help="Slurm partition.")
    @click.option("--time", "time_limit", help="Wall-clock limit of each job, e.g. 05:00:00.")
    @click.option("--gpus", type=int, help="GPUs per node.")
    @click.option("--cpus", type=int, help="CPUs per task.")
    @click.option("--mem", help="Memory, e.g. 32G.")
    @click.option("--constraint", help="Slurm node constraint, e.g. gputc.")
    @click.option("--mail-user", help="E-mail for Slurm notifications.")
    @click.option("--dry-run", is_flag=True,
                  help="Print the array's submission file and the first job's script.")
    @preflight_option
    @json_option
    @click.pass_context
    def command(ctx, project_name, sets, max_parallel, base, no_base, partition, time_limit,
                gpus, cpus, mem, constraint, mail_user, dry_run, no_preflight, as_json):
        from ..app.sweep import sweep as do_sweep

        resources = {"partition": partition, "time": time_limit, "gpus": gpus, "cpus": cpus,
                     "mem": mem, "constraint": constraint, "mail_user": mail_user}
        swept = do_sweep(workspace_of(ctx), kind, project_name, list(sets), base, no_base,
                         resources, max_parallel, dry_run, not no_preflight)
        _print_sweep(swept, kind, dry_run, as_json)

    command.__doc__ = (
        f"Sweep {kind} training values: one job per combination, one job array.\n\n"
        "KEY is a training parameter of the project file (learning_rate, epochs, min_epochs,\n"
        "early_stopping, lag, augment, optimizer, pad, resize, batch_size, seed); each value\n"
        "is checked against its type.\n\n"
        f"\b\nExample:\n  {example}\n")
    return command


sweep.command("transcription")(_sweep_command(
    "transcription",
    "hpctrain sweep transcription Projet_A --base tridis_v2 "
    "--set learning_rate=1e-4,3e-4 --set augment=true,false"))
sweep.command("segmentation")(_sweep_command(
    "segmentation", "hpctrain sweep segmentation Projet_A --base blla --set epochs=20,50"))


@sweep.command("torchrun")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS]...")
@set_option
@max_parallel_option
@click.option("--project", "project_name",
              help="Project file for resources and alerts; also the jobs' label.")
@click.option("--nodes", type=int, help="Nodes; one torchrun runs on each.")
@click.option("--gpus-per-node", type=int, help="GPUs per node; one process per GPU.")
@click.option("--nproc-per-node", type=int, help="Processes per node.")
@click.option("--cpus-per-task", "cpus", type=int, help="CPUs per node.")
@click.option("--time", "time_limit", help="Wall-clock limit of each job, e.g. 12:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option("--mem", help="Memory per node, e.g. 64G.")
@click.option("-m", "--module", "as_module", is_flag=True,
              help="SCRIPT is a Python module installed in the job's environment.")
@click.option("--venv", help="Virtual environment on the cluster to activate.")
@click.option("--load", "modules", multiple=True, help="Environment module to load.")
@click.option("--container", help="Apptainer image on the cluster to run torchrun in.")
@click.option("--monitor", default="val_auc", show_default=True,
              help="Metric that picks the best epoch.")
@click.option("--dry-run", is_flag=True,
              help="Print the array's submission file and the first job's script.")
@preflight_option
@json_option
@click.pass_context
def sweep_torchrun(ctx, script, script_args, sets, max_parallel, project_name, nodes,
                   gpus_per_node, nproc_per_node, cpus, time_limit, partition, mem, as_module,
                   venv, modules, container, monitor, dry_run, no_preflight, as_json):
    """Sweep a torchrun script's options: each job runs SCRIPT with the arguments after --,
    then --KEY VALUE of its combination (--set lr=0.1,0.01 gives --lr 0.1 and --lr 0.01).

    \b
    Example:
      hpctrain sweep torchrun hpctrain.trainer --set lr=0.1,0.01 --set batch-size=32,64 \\
          -- --data /scratch/her2 --epochs 5
    """
    from ..app.sweep import sweep_torchrun as do_sweep

    resources = {"nodes": nodes, "gpus": gpus_per_node, "cpus": cpus, "time": time_limit,
                 "partition": partition, "mem": mem}
    swept = do_sweep(workspace_of(ctx), script, list(sets), script_args, project_name,
                     as_module, nproc_per_node, resources,
                     {"venv": venv, "modules": modules, "container": container}, monitor,
                     max_parallel, dry_run, not no_preflight)
    _print_sweep(swept, "torchrun", dry_run, as_json)


def _print_sweep(swept, kind: str, dry_run: bool, as_json: bool) -> None:
    from ..app.sweep import values_text

    for note in swept.notes:
        click.echo(note, err=True)
    done = swept.submission
    if as_json:
        print_json({**done.to_json(), "sweep": swept.sweep_id, "grid": swept.grid,
                    "dry_run": dry_run})
        return
    if dry_run:
        if done.array_script:
            click.echo(f"# ==== the array's submission file ({len(done.points)} tasks) ====\n"
                       f"{done.array_script}", nl=False)
        for job_dir, point in zip(done.job_dirs, done.points):
            click.echo(f"# task {job_dir}: {values_text(point)}")
        click.echo(f"# ==== job.sh of the first task ====\n{done.scripts[0]}", nl=False)
        return
    first, numbers = done.jobs[0], [job.id for job in done.jobs]
    consecutive = numbers == list(range(first.id, first.id + len(numbers)))
    ids = (f"{first.id}-{numbers[-1]}" if consecutive and len(numbers) > 1
           else ", ".join(map(str, numbers)))
    array = first.scheduler_id.split("_")[0] if first.scheduler_id else None
    click.echo(f"submitted sweep {first.id}: {len(done.jobs)} {kind} jobs ({ids})"
               + (f" as Slurm array {array}" if array and "_" in first.scheduler_id else "")
               + f"; follow it with 'hpctrain status {first.id}'")
    for job, point in zip(done.jobs, done.points):
        click.echo(f"  job {job.id}: {values_text(point)}")
