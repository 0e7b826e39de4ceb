"""A sweep on Slurm (cluster/scheduler.py): one `sbatch --array` whose task i runs the job of the
i-th folder; array task ids in sacct's and squeue's answers (a pending array is one line that
stands for each of its tasks); the whole array cancelled by its id, one task by its own."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from hpctrain.cluster import scheduler
from hpctrain.cluster.registry import JobState
from hpctrain.cluster.scheduler import (
    ARRAY_SCRIPT,
    SlurmScheduler,
    array_id,
    array_script,
    array_task_ids,
    directives,
)
from hpctrain.core.errors import SchedulerError

JOB_SH = ("#!/bin/bash\n#SBATCH --job-name=hpctrain-Demo-transcription-7\n"
          "#SBATCH --partition=publicgpu\n#SBATCH --nodes=1\n#SBATCH --time=02:00:00\n"
          "#SBATCH --gres=gpu:1\nset -e\nketos train\n")


def sbatch_lines(script: str) -> dict[str, str]:
    return dict(line[len("#SBATCH --"):].split("=", 1) for line in directives(script))


# -- the submission file ----------------------------------------------------------------------
def test_the_array_covers_every_task_and_holds_max_parallel():
    dirs = [f"/r/Demo/job{i}-transcription" for i in (7, 8, 9, 10)]
    script = array_script(dirs, directives(JOB_SH), 120, 2, "/venv/bin/python")
    found = sbatch_lines(script)
    assert found["array"] == "0-3%2"
    assert (found["partition"], found["gres"], found["time"]) == ("publicgpu", "gpu:1",
                                                                   "02:00:00")
    assert found["signal"] == "USR2@120" and found["open-mode"] == "append"
    assert found["job-name"] == "hpctrain-Demo-transcription-7-sweep"  # squeue tells it apart
    assert found["output"] == "/r/Demo/job7-transcription/submitit/%A_%a_sbatch.out"
    times = [line for line in directives(script) if line.startswith("#SBATCH --time")]
    assert times == ["#SBATCH --time=02:00:00"]  # the job's own directive wins, said once
    assert sbatch_lines(array_script(dirs, [], 60, None, "py"))["array"] == "0-3"
    assert sbatch_lines(array_script(dirs, [], 60, 9, "py"))["array"] == "0-3"


def test_task_i_runs_submitits_entry_point_in_the_ith_folder(tmp_path):
    """The case statement, run by bash, picks the folder of $SLURM_ARRAY_TASK_ID; srun is
    stubbed to print what it would run."""
    dirs = [str(tmp_path / "job 7"), str(tmp_path / "job8-$(id)")]
    script = array_script(dirs, [], 60, None, "/venv/bin/python")
    srun = tmp_path / "srun"
    srun.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    srun.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    for i, folder in enumerate(dirs):
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              env={**env, "SLURM_ARRAY_TASK_ID": str(i)})
        assert done.returncode == 0, done.stderr
        argv = [line[1:-1] for line in done.stdout.splitlines()]
        assert argv[argv.index("-m") - 2:argv.index("-m")] == ["/venv/bin/python", "-u"]
        assert argv[argv.index("-m") + 1:] == ["submitit.core._submit", f"{folder}/submitit"]
        assert f"{folder}/submitit/%A_%a_%t_log.out" in argv
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={**env, "SLURM_ARRAY_TASK_ID": "5"})
    assert done.returncode == 1 and "array task 5 has no job folder" in done.stderr
    assert shlex.quote(dirs[1]) in script  # the folder reaches the shell quoted


@pytest.fixture
def stub_sbatch(tmp_path, monkeypatch):
    """sbatch --parsable that answers 4242 and keeps the file it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\n[ "$1" = --parsable ] || exit 3\ncp "$2" {tmp_path}/submitted.sh\n'
        'echo "4242;cluster"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scancel.log\n')
    for name in ("sbatch", "srun", "scancel"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_submit_array_queues_one_array_and_gives_each_folder_its_runner(tmp_path, stub_sbatch):
    from submitit.core.utils import DelayedSubmission

    dirs = []
    for i in range(3):
        job_dir = tmp_path / f"job{i + 7}-transcription"
        job_dir.mkdir()
        (job_dir / "job.sh").write_text(JOB_SH)
        dirs.append(job_dir)
    ids = SlurmScheduler(tmp_path).submit_array(dirs, "02:00:00", max_parallel=2)
    assert ids == ["4242_0", "4242_1", "4242_2"]
    submitted = (stub_sbatch / "submitted.sh").read_text()
    assert sbatch_lines(submitted)["array"] == "0-2%2"
    assert (dirs[0] / "submitit" / ARRAY_SCRIPT).read_text() == submitted
    for job_dir, sid in zip(dirs, ids):
        runner = DelayedSubmission.load(job_dir / "submitit" / f"{sid}_submitted.pkl").function
        assert runner.job_dir == str(job_dir) and runner.stage is None
        assert not list((job_dir / "submitit").glob("*.part"))


def test_the_whole_array_is_cancelled_by_its_id_one_task_by_its_own(tmp_path, stub_sbatch):
    slurm = SlurmScheduler(tmp_path)
    slurm.cancel_array([("4242_0", tmp_path), ("4242_3", tmp_path)])
    slurm.cancel("4242_1", tmp_path)
    assert (stub_sbatch / "scancel.log").read_text().splitlines() == ["4242", "4242_1"]


# -- array task ids in Slurm's answers -------------------------------------------------------
@pytest.mark.parametrize("text, ids", [
    ("123_[0-3%2]", ["123_0", "123_1", "123_2", "123_3"]),
    ("123_[2-3]", ["123_2", "123_3"]),
    ("123_[1,4-5]", ["123_1", "123_4", "123_5"]),
    ("123_[7]", ["123_7"]),
    ("123_4", ["123_4"]),
    ("123", ["123"]),
    ("123_[0-999999999]", ["123_[0-999999999]"]),  # not ours: never expanded
])
def test_array_task_ids(text, ids):
    assert array_task_ids(text) == ids


def test_an_array_task_is_asked_by_its_arrays_id():
    assert (array_id("123_4"), array_id("123")) == ("123", "123")


SACCT = "4242_0|COMPLETED\n4242_1|RUNNING\n4242_[2-3%2]|PENDING\n4243|RUNNING\n99_0|FAILED\n"
SQUEUE = ("4242_1|RUNNING|None|2026-11-23T10:00:00\n"
          "4242_[2-3%2]|PENDING|JobArrayTaskLimit|N/A\n99_[0-1]|PENDING|Priority|N/A\n")


@pytest.fixture
def answers(monkeypatch):
    asked = []

    def run(argv, what):
        asked.append(argv)
        if argv[0] == "sacct":
            return SACCT
        if argv[0] == "squeue":
            return SQUEUE
        raise SchedulerError(f"{argv[0]} not expected")

    monkeypatch.setattr(scheduler, "_run", run)
    return asked


def test_states_map_a_pending_array_line_onto_each_of_its_tasks(tmp_path, answers):
    ids = ["4242_0", "4242_1", "4242_2", "4242_3", "4243"]
    found = SlurmScheduler(tmp_path).states(ids)
    assert {sid: live.state for sid, live in found.items()} == {
        "4242_0": JobState.COMPLETED, "4242_1": JobState.RUNNING, "4242_2": JobState.PENDING,
        "4242_3": JobState.PENDING, "4243": JobState.RUNNING}
    assert found["4242_3"].reason == "JobArrayTaskLimit"
    sacct = answers[0]
    assert sacct[sacct.index("-j") + 1] == "4242,4243"  # the array's id once, not each task's
    assert [argv[0] for argv in answers] == ["sacct", "squeue"]


def test_a_task_held_by_max_parallel_says_so_in_plain_words():
    assert "other jobs of its sweep" in scheduler.waiting("JobArrayTaskLimit").words
    assert not scheduler.waiting("JobArrayTaskLimit").never


def test_another_users_array_is_not_mistaken_for_ours(tmp_path, answers):
    found = SlurmScheduler(tmp_path).states(["4242_9"])
    assert found == {"4242_9": None}  # not in the lines: Slurm does not know it
