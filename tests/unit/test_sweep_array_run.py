"""The array's submission file run as Slurm would run task i (stub sbatch and srun, the real
submitit entry point and job runner): task i runs the job of the i-th folder, and only it."""

from __future__ import annotations

import json
import os
import subprocess

from hpctrain.cluster import scheduler
from hpctrain.cluster.ops import ClusterSide
from hpctrain.core.config import Tree
from hpctrain.core.layout import EVENTS, LOG, SCRIPT, SUBMITIT_DIR
from hpctrain.jobs.requests import Resources, TorchrunRequest
from hpctrain.jobs.sweep import SweepRequest, parse_sets, points


def test_array_task_i_runs_the_ith_jobs_runner(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho 4242\n')
    # srun: drop its options, run the command (the task's step) here
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do\n'
        '  case "$1" in --output|--error) shift 2 ;; *) shift ;; esac\ndone\nexec "$@"\n')
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(ClusterSide, "_preflight", lambda self, *args, **kwargs: None)
    side = ClusterSide(tmp_path / "root", Tree(), "slurm")
    side.ensure_tree()
    request = TorchrunRequest(project="t", target="train.py", script_text="print(1)\n", args=(),
                              resources=Resources(time="10"), nproc_per_node=1)
    grid = parse_sets(["lr=0.1,0.01"], torchrun=True)
    jobs = side.submit_sweep(SweepRequest(request, tuple(points(grid)), None, grid)).jobs
    assert [j.scheduler_id for j in jobs] == ["4242_0", "4242_1"]
    folders = [side.root / j.job_dir for j in jobs]
    for folder in folders:  # a job that only says which folder it runs in
        (folder / SCRIPT).write_text('#!/bin/bash\necho "ran in $PWD"\n')
    array = (folders[0] / SUBMITIT_DIR / scheduler.ARRAY_SCRIPT).read_text()
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "1",
           "SLURM_JOB_ID": "4244", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODELIST": "localhost",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}
    env.pop("SUBMITIT_FOLDER", None)
    done = subprocess.run(["bash", "-c", array], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ended = [json.loads(line) for line in (folders[1] / EVENTS).read_text().splitlines()]
    assert ended[-1]["event"] == "end" and ended[-1]["exit_code"] == 0
    assert (folders[1] / SUBMITIT_DIR / "4242_1_0_result.pkl").exists()
    assert f"ran in {folders[1]}" in (folders[1] / LOG).read_text()
    assert not (folders[0] / EVENTS).exists()  # task 0 did not run
