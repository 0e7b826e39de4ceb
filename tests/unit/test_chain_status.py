"""A chained job on the cluster side, with a fake Slurm: submitted as two scheduler jobs (undone
together), shown as one job whose state is its stage's, the training left queued after a failed
compile cancelled once, `cancel` of both, one batched query; and the commands a user types."""

from __future__ import annotations

import json
import pytest

from helpers import set_project
from hpctrain.cluster import scheduler
from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.cluster.scheduler import Live
from hpctrain.core.config import Tree
from hpctrain.core.errors import SchedulerError
from hpctrain.core.layout import COMPILE_SCRIPT, EVENTS
from hpctrain.jobs.requests import JobRequest, Resources, Split, TrainParams
from hpctrain.runtime import events

P, R, C = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED


class FakeSlurm:
    """Records what it is asked; answers the states a test sets; ids 101, 102, ..."""

    name = "slurm"
    calls: list = []
    live: dict = {}
    refuse: set = set()  # stages whose submit fails
    cancel_fails = False

    def __init__(self, root):
        pass

    def submit(self, job_dir, time_limit, stage=None, after=None):
        if stage in self.refuse:
            raise SchedulerError("sbatch refused the job: invalid partition specified: gpu")
        sid = str(101 + sum(1 for c in self.calls if c[0] == "submit"))
        self.calls.append(("submit", sid, stage, after, time_limit))
        self.live[sid] = Live(P)
        return sid

    def states(self, ids):
        self.calls.append(("states", list(ids)))
        return {sid: self.live.get(sid) for sid in ids}

    shared = False  # asked at every status: no polling.json (cluster/polling.py)
    accounting_off = None

    def accounting(self, ids):  # no accounting: the efficiency report uses the job's events
        return {}

    def cancel(self, sid, job_dir):
        if self.cancel_fails:
            raise SchedulerError("scancel failed: slurm_load_jobs error: timed out")
        self.calls.append(("cancel", sid))
        self.live[sid] = Live(JobState.CANCELLED, said="CANCELLED")


@pytest.fixture
def slurm(monkeypatch):
    fake = type("Fake", (FakeSlurm,), {"calls": [], "live": {}, "refuse": set()})
    monkeypatch.setitem(scheduler.SCHEDULERS, "slurm", fake)
    # a fake Slurm has no partitions to check against (preflight: tests/unit/test_preflight*.py)
    monkeypatch.setattr(ClusterSide, "_preflight", lambda self, *args, **kwargs: None)
    return fake


@pytest.fixture
def side(tmp_path):
    side = ClusterSide(tmp_path / "root", Tree(), "slurm")
    side.ensure_tree()
    pages = side.folder("ground_truth") / "Demo"
    pages.mkdir(parents=True)
    for i in range(10):
        (pages / f"p{i}.xml").write_text("<PcGts/>")
    return side


def kraken_request(kind="transcription", **resources) -> JobRequest:
    res = Resources(partition="publicgpu", gpus=1, cpus=2, compile_partition="cpu", **resources)
    return JobRequest(kind=kind, project="Demo", format="page", base=None,
                      params=TrainParams(spec="[1,48,0,1 Lbx100]"), split=Split(),
                      resources=res, device="cpu", kraken_version="7.1.1")


def write_events(side, job, *lines):
    path = side.root / job.job_dir / EVENTS
    with open(path, "a") as sink:
        for line in lines:
            events.append(sink, line)


def row(side, job_id=1):
    return side.job(job_id)


# -- submitting --------------------------------------------------------------------------------
def test_a_chained_submit_queues_compile_then_training_after_it(side, slurm):
    job = side.submit(kraken_request(compile_time="00:30:00")).job
    assert [c for c in slurm.calls if c[0] == "submit"] == [
        ("submit", "101", "compile", None, "00:30:00"),
        ("submit", "102", "train", "101", "05:00:00")]
    assert job.scheduler_id == "102" and [(s.name, s.scheduler_id, s.partition)
                                          for s in job.stages] == \
        [("compile", "101", "cpu"), ("train", "102", "publicgpu")]
    assert (side.root / job.job_dir / COMPILE_SCRIPT).is_file()


def test_a_refused_training_stage_cancels_the_compile_stage_and_leaves_nothing(side, slurm):
    slurm.refuse = {"train"}
    with pytest.raises(SchedulerError) as refused:
        side.submit(kraken_request())
    assert "invalid partition" in str(refused.value)
    assert "compile 101" in str(refused.value) and "cancelled" in str(refused.value)
    assert ("cancel", "101") in slurm.calls
    assert Registry(side.root).all() == []
    assert not list(side.folder("finetuned").rglob("job.sh"))


def test_a_dry_run_shows_both_scripts_and_queues_nothing(side, slurm):
    done = side.submit(kraken_request(), dry_run=True)
    assert done.job is None and slurm.calls == []
    assert "#SBATCH --partition=cpu" in done.compile_script
    assert "#SBATCH --kill-on-invalid-dep=yes" in done.script


@pytest.mark.parametrize("kind", ["segmentation", "compile"])
def test_only_a_transcription_is_chained(side, slurm, kind):
    request = kraken_request(kind)
    job = side.submit(request).job
    assert job.stages == () and [c[2:4] for c in slurm.calls] == [(None, None)]
    script = (side.root / job.job_dir / "job.sh").read_text()
    on_cpu = "#SBATCH --partition=cpu" in script
    assert on_cpu == (kind == "compile")  # a compile job needs no GPU either


def test_the_local_executor_runs_the_job_whole(side, monkeypatch):
    class Whole:  # the embedded default's submit: no stage, no dependency
        def __init__(self, root):
            pass

        def submit(self, job_dir, time_limit):
            return "1"

    monkeypatch.setitem(scheduler.SCHEDULERS, "local", Whole)
    local = ClusterSide(side.root, Tree(), "local")
    job = local.submit(kraken_request()).job
    assert job.stages == () and not (local.root / job.job_dir / COMPILE_SCRIPT).exists()
    assert "compile -f page" in (local.root / job.job_dir / "job.sh").read_text()


# -- one job, two stages ------------------------------------------------------------------------
def test_the_jobs_state_is_its_stages_from_queue_to_completed(side, slurm):
    job = side.submit(kraken_request()).job
    slurm.live["101"] = Live(P, reason="Resources")
    slurm.live["102"] = Live(P, reason="Dependency")
    first = row(side)
    assert (first.state, first.stage, first.reason) == ("PENDING", "compile", "Resources")
    assert [(s["name"], s["scheduler_id"], s["state"]) for s in first.stages] == \
        [("compile", "101", "PENDING"), ("train", "102", "PENDING")]

    slurm.live["101"] = Live(R)
    write_events(side, job, {"event": "start", "stage": "compile"},
                 {"event": "step", "step": "compile"})
    assert (row(side).state, row(side).stage, row(side).step) == ("RUNNING", "compile", "compile")

    slurm.live["101"] = Live(C)
    write_events(side, job, {"event": "stage_end", "stage": "compile", "exit_code": 0})
    waiting = row(side)
    assert (waiting.state, waiting.stage, waiting.reason) == ("PENDING", "train", "Dependency")

    slurm.live["102"] = Live(R)
    write_events(side, job, {"event": "start", "stage": "train"})
    training = row(side)
    assert (training.state, training.stage, training.restarts) == ("RUNNING", "train", 0)

    write_events(side, job, {"event": "end", "exit_code": 0, "error": None, "stage": "train"})
    slurm.live["102"] = Live(C)
    done = row(side)
    assert done.state == "COMPLETED" and [s["state"] for s in done.stages] == ["COMPLETED"] * 2
    assert not [c for c in slurm.calls if c[0] == "cancel"]
    before = len(slurm.calls)
    row(side)
    assert slurm.calls[before:] == []  # an ended job with ended stages asks nothing more


def test_a_failed_compile_fails_the_job_with_its_error_and_cancels_the_training_once(side, slurm):
    job = side.submit(kraken_request()).job
    error = "Error: No training data was provided to the compile command."
    write_events(side, job, {"event": "start", "stage": "compile"},
                 {"event": "end", "exit_code": 2, "error": error, "stage": "compile"})
    slurm.live["101"] = Live(JobState.FAILED, said="FAILED")
    failed = row(side)
    assert (failed.state, failed.error, failed.stage) == ("FAILED", error, "compile")
    assert ("cancel", "102") in slurm.calls
    assert [s["state"] for s in failed.stages] == ["FAILED", "CANCELLED"]
    cancelled = [e for e in events.read(side.root / job.job_dir / EVENTS)
                 if e["event"] == "stage_cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["scheduler_id"] == "102"
    assert "compile stage (101) ended FAILED" in cancelled[0]["reason"]
    assert Registry(side.root).get(job.id).stages[1].state == JobState.CANCELLED
    row(side)
    assert [c for c in slurm.calls if c[0] == "cancel"] == [("cancel", "102")]


def test_a_training_slurm_cancelled_itself_is_not_cancelled_again(side, slurm):
    job = side.submit(kraken_request()).job
    write_events(side, job, {"event": "start", "stage": "compile"},
                 {"event": "end", "exit_code": 1, "error": "Error: x", "stage": "compile"})
    slurm.live["101"] = Live(JobState.FAILED)
    slurm.live["102"] = Live(JobState.CANCELLED, said="CANCELLED")  # --kill-on-invalid-dep
    assert row(side).state == "FAILED"
    assert not [c for c in slurm.calls if c[0] == "cancel"]
    assert [s.state for s in Registry(side.root).get(job.id).stages] == \
        [JobState.FAILED, JobState.CANCELLED]


def test_a_cancel_that_fails_is_a_warning_and_is_tried_again(side, slurm):
    job = side.submit(kraken_request()).job
    write_events(side, job, {"event": "start", "stage": "compile"},
                 {"event": "end", "exit_code": 1, "error": "Error: x", "stage": "compile"})
    slurm.live["101"] = Live(JobState.FAILED)
    slurm.cancel_fails = True
    first = row(side)
    assert first.state == "FAILED"
    assert any("train stage (slurm job 102) is still queued" in w for w in first.warnings)
    slurm.cancel_fails = False
    again = row(side)
    assert ("cancel", "102") in slurm.calls and not again.warnings
    assert again.stages[1]["state"] == "CANCELLED"


def test_a_compile_killed_for_memory_says_which_setting_to_raise(side, slurm):
    job = side.submit(kraken_request()).job
    write_events(side, job, {"event": "start", "stage": "compile"})
    slurm.live["101"] = Live(JobState.FAILED, said="OUT_OF_MEMORY")
    failed = row(side)
    assert failed.state == "FAILED"
    assert failed.error.startswith("its compile stage (slurm job 101): Slurm says OUT_OF_MEMORY")
    assert "compile_mem" in failed.error
    assert ("cancel", "102") in slurm.calls


def test_a_compile_still_queued_keeps_the_job_pending_not_the_training(side, slurm):
    side.submit(kraken_request()).job
    slurm.live["101"] = Live(P, reason="PartitionConfig")
    waiting = row(side)
    assert (waiting.state, waiting.never_starts) == ("PENDING", True)


def test_status_asks_every_stage_of_every_job_in_one_query(side, slurm):
    side.submit(kraken_request())
    side.submit(kraken_request())
    slurm.calls.clear()
    report = side.status()
    assert [c for c in slurm.calls if c[0] == "states"] == [("states", ["101", "102", "103",
                                                                         "104"])]
    assert [r.state for r in report.rows] == ["PENDING", "PENDING"]


def test_restarts_count_the_trainings_requeue_not_its_first_start(side, slurm):
    job = side.submit(kraken_request()).job
    slurm.live.update({"101": Live(C), "102": Live(R)})
    write_events(side, job, {"event": "start", "stage": "compile"},
                 {"event": "stage_end", "stage": "compile", "exit_code": 0},
                 {"event": "start", "stage": "train"})
    assert row(side).restarts == 0
    write_events(side, job, {"event": "requeue"}, {"event": "start", "stage": "train"})
    assert row(side).restarts == 1


# -- cancel ----------------------------------------------------------------------------------------
def test_cancel_cancels_both_stages_the_training_first(side, slurm):
    job = side.submit(kraken_request()).job
    slurm.live["101"] = Live(R)
    cancelled = side.cancel(job.id)
    assert [c for c in slurm.calls if c[0] == "cancel"] == [("cancel", "102"), ("cancel", "101")]
    assert cancelled.state == "CANCELLED"
    assert [s.state for s in Registry(side.root).get(job.id).stages] == [JobState.CANCELLED] * 2


def test_cancel_leaves_a_stage_that_ended_alone(side, slurm):
    job = side.submit(kraken_request()).job
    slurm.live.update({"101": Live(C), "102": Live(R)})
    side.cancel(job.id)
    assert [c for c in slurm.calls if c[0] == "cancel"] == [("cancel", "102")]


# -- the commands ---------------------------------------------------------------------------
@pytest.fixture
def pushed(cli, workspace, demo_project):
    assert cli("push", "Demo").exit_code == 0
    set_project(workspace, "Demo", transcription={"early_stopping": False, "epochs": 3})
    return workspace


def use_fake_slurm(workspace, extra: str = ""):
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", f"executor: slurm{extra}"))


def test_dry_run_prints_both_scripts(cli, pushed, slurm):
    use_fake_slurm(pushed)
    set_project(pushed, "Demo", resources={"compile_partition": "cpu", "partition": "gpu"})
    result = cli("submit", "transcription", "Demo", "--no-base", "--dry-run")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.split("# ==== job.sh: stage 2 of 2")
    assert "#SBATCH --partition=cpu" in first and " compile " in first
    assert "#SBATCH --partition=gpu" in second and "#SBATCH --kill-on-invalid-dep" in second
    assert slurm.calls == []


def test_the_profiles_compile_partition_and_the_project_wins(cli, pushed, slurm):
    use_fake_slurm(pushed, "\n    compile_partition: cpu")
    result = cli("submit", "transcription", "Demo", "--no-base", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    assert [s["partition"] for s in job["stages"]] == ["cpu", None]
    set_project(pushed, "Demo", resources={"compile_partition": "cpuonly"})
    job = json.loads(cli("submit", "transcription", "Demo", "--no-base", "--json").stdout)["job"]
    assert job["stages"][0]["partition"] == "cpuonly"
    flag = cli("submit", "transcription", "Demo", "--no-base", "--json",
               "--compile-partition", "bigcpu")
    assert json.loads(flag.stdout)["job"]["stages"][0]["partition"] == "bigcpu"


def test_status_says_which_stage_a_job_is_at(cli, pushed, slurm):
    use_fake_slurm(pushed)
    set_project(pushed, "Demo", resources={"compile_partition": "cpu"})
    result = cli("submit", "transcription", "Demo", "--no-base")
    assert "compile on cpu (Slurm job 101); train on the default partition (Slurm job 102)" \
        in result.stdout
    slurm.live["101"] = Live(R)
    side = ClusterSide(pushed / "cluster", Tree(), "slurm")
    write_events(side, side.job(1), {"event": "start", "stage": "compile"})
    shown = cli("status").stdout
    assert "job 1: compiling on cpu (compile: Slurm job 101 RUNNING, train: Slurm job 102 " \
        "PENDING)" in shown
    rows = json.loads(cli("status", "--json").stdout)
    assert rows[0]["stage"] == "compile" and len(rows[0]["stages"]) == 2


def test_the_embedded_default_ignores_a_compile_partition_in_one_line(cli, pushed, monkeypatch):
    set_project(pushed, "Demo", resources={"compile_partition": "cpu"})
    result = cli("submit", "transcription", "Demo", "--no-base", "--dry-run")
    assert result.exit_code == 0
    assert "compile_partition cpu ignored: the local executor runs the whole job" in result.stderr
    assert "compile -f page" in result.stdout and "stage 2 of 2" not in result.stdout

