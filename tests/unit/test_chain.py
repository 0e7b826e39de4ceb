"""Compile on CPU, train on GPU: the two scripts of a chained transcription and their directives,
the scheduler's chained submission (stub sbatch), the stage-aware runner, the events of stages
(a second stage's start is no restart), and the registry's stages (round trip, old records).

Refresh the golden files after an intended change with:
    UPDATE_GOLDEN=1 python -m pytest tests/unit/test_chain.py
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import FIXTURES, check_golden
from hpctrain.cluster.registry import JobRecord, JobState, Registry, Stage
from hpctrain.cluster.scheduler import SlurmScheduler, directives, stage_directives
from hpctrain.core.errors import ConfigError, SchedulerError
from hpctrain.core.layout import COMPILE_SCRIPT, EVENTS, SCRIPT
from hpctrain.jobs.build import compile_resources, kraken_script
from hpctrain.jobs.kraken import dialect_for
from hpctrain.jobs.requests import Resources, validate_resources
from hpctrain.jobs.split import split_pages
from hpctrain.runtime import events
from hpctrain.runtime.runner import JobFailed, JobRunner

from test_render import PAGES, ketos_lines, request, split_command

JOB_DIR, COMPILED_DIR = "/home/alice/hpc/R/Projet_A/job7-transcription", "/home/alice/hpc/C/job7"


def chained(version="7.1.1", kind="transcription", apart=True, **resources):
    req = request(kind, "tridis_v2" if kind != "compile" else None)
    req = replace(req, resources=replace(req.resources, compile_partition="cpu", **resources))
    split = split_pages(PAGES, 0.8, 0.1, 0.1, 42)
    return kraken_script(req, dialect_for(version), split, 7, JOB_DIR, COMPILED_DIR, (), apart)


def sbatch(script: str) -> dict[str, str]:
    return dict(line[len("#SBATCH --"):].split("=", 1) for line in directives(script))


# -- the two scripts -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
def test_golden_scripts_of_both_stages(version):
    script, files = chained(version)
    check_golden(f"chain-compile-kraken{version}.sh", files[COMPILE_SCRIPT])
    check_golden(f"chain-train-kraken{version}.sh", script)


def test_the_compile_stage_asks_the_cpu_partition_and_no_gpu():
    script, files = chained()
    compiling = sbatch(files[COMPILE_SCRIPT])
    assert compiling == {
        "job-name": "hpctrain-Projet_A-transcription-7-compile", "partition": "cpu",
        "nodes": "1", "ntasks-per-node": "1", "cpus-per-task": "8", "time": "01:00:00",
        "mail-user": "someone@example.org", "mail-type": "FAIL"}  # no gres, no gputc constraint
    steps = [split_command(argv, {})[1] for argv in ketos_lines(files[COMPILE_SCRIPT])]
    assert steps == ["compile"] * 3
    assert all("cuda" not in " ".join(argv) for argv in ketos_lines(files[COMPILE_SCRIPT]))


def test_the_training_stage_only_trains_and_tests_on_the_gpu_partition():
    script, _ = chained()
    training = sbatch(script)
    assert (training["partition"], training["gres"], training["kill-on-invalid-dep"]) == \
        ("publicgpu", "gpu:1", "yes")
    assert "dependency" not in training  # its id is known at submission: the scheduler adds it
    steps = [split_command(argv, {})[1] for argv in ketos_lines(script)]
    assert "compile" not in steps and {"train", "test"} <= set(steps)
    assert "--dependency=afterok:<the compile job's id>" in script  # said, for the reader


def test_compile_resources_follow_the_job_unless_set():
    res = Resources(partition="gpu", time="05:00:00", gpus=2, cpus=8, mem="64G",
                    constraint="gputc", compile_partition="cpu")
    assert compile_resources(res) == Resources(partition="cpu", time="01:00:00", gpus=0, cpus=8,
                                               mem="64G")
    own = replace(res, compile_cpus=1, compile_mem="1500M", compile_time="20")
    assert (compile_resources(own).cpus, compile_resources(own).mem,
            compile_resources(own).time) == (1, "1500M", "20")
    _, files = chained(compile_cpus=1, compile_mem="1500M", compile_time="00:30:00")
    assert {k: sbatch(files[COMPILE_SCRIPT])[k] for k in ("cpus-per-task", "mem", "time")} == \
        {"cpus-per-task": "1", "mem": "1500M", "time": "00:30:00"}


@pytest.mark.parametrize("changes, words", [
    ({"compile_time": "99:99:99"}, "compile_time '99:99:99' is not a Slurm time"),
    ({"compile_mem": "0G"}, "compile_mem '0G' is not a Slurm size"),
    ({"compile_cpus": 0}, "compile_cpus must be a whole number"),
    ({"compile_partition": "cpu\n#SBATCH --x"}, "compile_partition"),
])
def test_compile_values_are_checked_like_the_jobs(changes, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        validate_resources(Resources(**changes), "projects/P.yaml resources")


def test_without_the_setting_nothing_changes():
    plain, plain_files = chained(apart=False)
    assert COMPILE_SCRIPT not in plain_files
    assert "ketos" in plain and " compile " in plain and "kill-on-invalid-dep" not in plain


def test_a_compile_job_runs_on_the_compile_partition_as_one_job():
    script, files = chained(kind="compile")
    assert COMPILE_SCRIPT not in files
    assert sbatch(script)["partition"] == "cpu" and "gres" not in sbatch(script)
    assert "kill-on-invalid-dep" not in script


@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
def test_every_flag_of_both_stages_exists_in_that_kraken(version):
    options = json.loads((FIXTURES / f"ketos-options-{version}.json").read_text())
    script, files = chained(version)
    for argv in ketos_lines(script) + ketos_lines(files[COMPILE_SCRIPT]):
        top, sub, flags = split_command(argv, options)
        assert set(top) <= set(options["ketos"]) and set(flags) <= set(options[sub])


# -- the scheduler ----------------------------------------------------------------------------
def test_stage_directives_add_the_dependency_and_slurms_own_cancel():
    script = "#!/bin/bash\n#SBATCH --partition=gpu\n#SBATCH --dependency=after:1\n"
    assert stage_directives(script, "4711") == [
        "#SBATCH --partition=gpu", "#SBATCH --dependency=afterok:4711",
        "#SBATCH --kill-on-invalid-dep=yes"]
    assert stage_directives(script, None) == directives(script)
    with pytest.raises(SchedulerError, match="not a Slurm job id"):
        stage_directives(script, "1;rm -rf ~")


@pytest.fixture
def stub_sbatch(tmp_path, monkeypatch):
    """sbatch that answers job ids 101, 102, ... and srun that exists."""
    bin_dir, counter = tmp_path / "bin", tmp_path / "ids"
    bin_dir.mkdir()
    counter.write_text("100")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nn=$(($(cat {counter}) + 1)); echo $n > {counter}\n'
        'echo "Submitted batch job $n"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_slurm_submits_each_stage_with_its_script_and_the_dependency(tmp_path, stub_sbatch):
    import submitit

    script, files = chained()
    job_dir = tmp_path / "job7"
    job_dir.mkdir()
    (job_dir / SCRIPT).write_text(script)
    (job_dir / COMPILE_SCRIPT).write_text(files[COMPILE_SCRIPT])
    slurm = SlurmScheduler(tmp_path)
    first = slurm.submit(job_dir, "01:00:00", stage="compile")
    second = slurm.submit(job_dir, "05:00:00", stage="train", after=first)
    assert (first, second) == ("101", "102")
    submitted = {sid: (job_dir / "submitit" / f"{sid}_submission.sh").read_text()
                 for sid in (first, second)}
    compiling, training = (sbatch(submitted[sid]) for sid in (first, second))
    assert compiling["partition"] == "cpu" and "gres" not in compiling
    assert "dependency" not in compiling
    assert training["partition"] == "publicgpu" and training["gres"] == "gpu:1"
    assert (training["dependency"], training["kill-on-invalid-dep"]) == ("afterok:101", "yes")
    runners = {sid: submitit.helpers.DelayedSubmission.load(
        job_dir / "submitit" / f"{sid}_submitted.pkl").function for sid in (first, second)}
    assert (runners[first].stage, runners[first].script) == ("compile", COMPILE_SCRIPT)
    assert (runners[second].stage, runners[second].script) == ("train", SCRIPT)


def test_the_local_executor_has_no_stages(tmp_path):
    from hpctrain.cluster.scheduler import LocalScheduler

    with pytest.raises(SchedulerError, match="no stages"):
        LocalScheduler(tmp_path).submit(tmp_path, "10", stage="compile")


# -- the runner and its events ------------------------------------------------------------------
def job_folder(tmp_path, compile_body: str) -> Path:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / COMPILE_SCRIPT).write_text(f"set -e\necho compiling\n{compile_body}\n")
    (job_dir / SCRIPT).write_text("echo training\n")
    return job_dir


def read_events(job_dir: Path) -> list[dict]:
    return list(events.read(job_dir / EVENTS))


def test_a_compile_stage_that_succeeds_ends_its_stage_not_the_job(tmp_path):
    job_dir = job_folder(tmp_path, "true")
    JobRunner(str(job_dir), stage="compile")()
    found = read_events(job_dir)
    assert found[0]["event"] == "start" and found[0]["stage"] == "compile"
    assert found[-1] == {**found[-1], "event": "stage_end", "stage": "compile"}
    assert not [e for e in found if e["event"] == "end"]
    assert events.summarize(iter(found)).state is None  # between stages
    JobRunner(str(job_dir), stage="train")()
    found = read_events(job_dir)
    assert [e.get("stage") for e in found if e["event"] == "start"] == ["compile", "train"]
    progress = events.summarize(iter(found))
    assert (progress.state, progress.starts, progress.stages_done) == ("COMPLETED", 1, ["compile"])
    assert (job_dir / "job.log").read_text() == "compiling\ntraining\n"


def test_a_compile_stage_that_fails_ends_the_job_with_its_error(tmp_path):
    job_dir = job_folder(tmp_path, "echo 'Error: No training data was provided' >&2; exit 2")
    with pytest.raises(JobFailed, match="No training data"):
        JobRunner(str(job_dir), stage="compile")()
    end = read_events(job_dir)[-1]
    assert (end["event"], end["stage"], end["exit_code"]) == ("end", "compile", 2)
    progress = events.summarize(iter(read_events(job_dir)))
    assert (progress.state, progress.error) == ("FAILED", "Error: No training data was provided")


def test_a_requeued_stage_keeps_its_stage():
    runner = JobRunner("/nowhere", None, "compile")
    import pickle

    assert pickle.loads(pickle.dumps(runner)).stage == "compile"
    with pytest.raises(ValueError, match="unknown stage"):
        JobRunner("/nowhere", stage="deploy")


def summary(*lines: dict):
    return events.summarize(iter([{"t": i, **e} for i, e in enumerate(lines)]))


START_C, START_T = {"event": "start", "stage": "compile"}, {"event": "start", "stage": "train"}
DONE_C = {"event": "stage_end", "stage": "compile", "exit_code": 0}


@pytest.mark.parametrize("lines, restarts", [
    ((START_C, DONE_C, START_T), 0),  # the training stage's start is no restart
    ((START_C, DONE_C, START_T, {"event": "requeue"}, START_T), 1),  # its requeue is
    ((START_C, {"event": "requeue"}, START_C, DONE_C, START_T), 1),
    (({"event": "start"}, {"event": "requeue"}, {"event": "start"}), 1),  # one job, as before
    (({"event": "start"},), 0),
])
def test_restarts_do_not_count_a_second_stage(lines, restarts):
    assert summary(*lines).starts - 1 == restarts


def test_the_step_of_a_finished_stage_is_not_shown_while_the_next_waits():
    progress = summary(START_C, {"event": "step", "step": "compile"}, DONE_C)
    assert (progress.step, progress.state, progress.stage) == (None, None, "compile")


# -- the registry ----------------------------------------------------------------------------------
STAGES = (Stage("compile", "101", JobState.COMPLETED, "cpu"),
          Stage("train", "102", JobState.PENDING, "publicgpu"))


def test_a_chained_record_keeps_its_stages(tmp_path):
    with Registry(tmp_path) as registry:
        record = registry.add("transcription", "Demo", None, lambda i: f"R/Demo/job{i}", {})
        registry.update(record.id, state=JobState.PENDING, scheduler_id="102", stages=STAGES)
        assert registry.get(record.id).stages == STAGES
        registry.update(record.id, state=JobState.FAILED)
        # a final job's stage may still change (a stage left queued, cancelled afterwards)
        cancelled = (STAGES[0], replace(STAGES[1], state=JobState.CANCELLED))
        registry.update(record.id, state=JobState.RUNNING, stages=cancelled)
        assert (registry.get(record.id).state, registry.get(record.id).stages) == \
            (JobState.FAILED, cancelled)
    data = json.loads((tmp_path / ".hpctrain/jobs/1.json").read_text())
    assert data["format"] == 1 and data["stages"][1] == {
        "name": "train", "scheduler_id": "102", "state": "CANCELLED", "partition": "publicgpu"}
    assert JobRecord.from_json(registry.get(1).to_json()) == registry.get(1)


def test_an_old_record_is_one_scheduler_job_and_a_single_job_writes_no_stages(tmp_path):
    jobs = tmp_path / ".hpctrain/jobs"
    jobs.mkdir(parents=True)
    old = {"format": 1, "id": 3, "kind": "transcription", "project": "Demo", "base": None,
           "state": "RUNNING", "job_dir": "R/Demo/job3", "scheduler_id": "77",
           "submitted": 1.0, "params": {}, "updated": 1.0}  # as hpctrain wrote it before
    (jobs / "3.json").write_text(json.dumps(old))
    registry = Registry(tmp_path)
    assert (registry.get(3).stages, registry.get(3).scheduler_id) == ((), "77")
    registry.update(3, state=JobState.COMPLETED)
    assert "stages" not in json.loads((jobs / "3.json").read_text())


@pytest.mark.parametrize("stages, why", [
    ("compile", "'stages' is not a list"),
    ([{"name": "compile"}], "'stages' holds something that is not a stage"),
    ([{"name": "compile", "scheduler_id": "1", "state": "DONE"}], "not a stage"),
    (["compile"], "not a stage"),
])
def test_damaged_stages_are_one_warning(tmp_path, stages, why):
    jobs = tmp_path / ".hpctrain/jobs"
    jobs.mkdir(parents=True)
    record = {"format": 1, "id": 4, "kind": "transcription", "project": "Demo", "base": None,
              "state": "PENDING", "job_dir": "R/Demo/job4", "scheduler_id": "2",
              "submitted": 1.0, "params": {}, "stages": stages}
    (jobs / "4.json").write_text(json.dumps(record))
    warnings: list[str] = []
    assert Registry(tmp_path).all(warnings=warnings) == []
    assert len(warnings) == 1 and why in warnings[0], warnings


def test_a_submission_with_stages_crosses_the_ssh_boundary():
    from hpctrain.backends.rpc import _encode, _submission
    from hpctrain.cluster.api import Submission

    record = JobRecord(5, "transcription", "Demo", None, JobState.PENDING, "R/Demo/job5", "102",
                       1.0, {}, STAGES)
    back = _submission(json.loads(json.dumps(_encode(Submission(record, "b", "d", "a")))))
    assert back == Submission(record, "b", "d", "a")

