"""A sweep on the cluster side and through the commands (fake Slurm): one registry record,
folder and events per task, all on the same split, one array queued; nothing left when the
array is refused; status as one row that opens into the tasks; the whole array cancelled with
one scancel of its id, one task alone by its own id; records without sweep fields still read."""

from __future__ import annotations

import hashlib
import json

import pytest

from helpers import one_line_error, set_project
from hpctrain.app.sweep import SweepRow, expand_rows, expand_targets, group_rows
from hpctrain.cluster import scheduler
from hpctrain.cluster.api import JobStatus, StatusReport
from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobState, Registry, parse_record, record_bytes
from hpctrain.cluster.scheduler import Live
from hpctrain.core.config import Tree
from hpctrain.core.errors import NotFoundError, SchedulerError
from hpctrain.core.layout import EVENTS, SCRIPT, split_file
from hpctrain.jobs.requests import (
    JobRequest,
    Resources,
    Split,
    TorchrunRequest,
    TrainParams,
)
from hpctrain.jobs.sweep import SweepRequest, parse_sets, points
from hpctrain.runtime import events

P, R, C = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED


class FakeArraySlurm:
    """Queues arrays 500, 501, ... (tasks ARRAY_i); answers the states a test sets."""

    name, shared, accounting_off = "slurm", False, None
    calls: list = []
    live: dict = {}
    refuse = False

    def __init__(self, root):
        pass

    def submit_array(self, job_dirs, time_limit, max_parallel=None):
        if self.refuse:
            raise SchedulerError("sbatch (the sweep's array) failed: invalid partition")
        array = 500 + sum(1 for c in self.calls if c[0] == "submit_array")
        self.calls.append(("submit_array", [d.name for d in job_dirs], time_limit, max_parallel))
        ids = [f"{array}_{i}" for i in range(len(job_dirs))]
        self.live.update({sid: Live(P, "JobArrayTaskLimit") for sid in ids})
        return ids

    def submit(self, job_dir, time_limit, stage=None, after=None):
        self.calls.append(("submit", job_dir.name))
        return "400"

    def states(self, ids):
        return {sid: self.live.get(sid) for sid in ids}

    def accounting(self, ids):
        return {}

    def cancel(self, sid, job_dir):
        self.calls.append(("cancel", sid))
        self.live[sid] = Live(JobState.CANCELLED, said="CANCELLED")

    def cancel_array(self, tasks):
        self.calls.append(("cancel_array", [sid for sid, _ in tasks]))
        for sid, _ in tasks:
            self.live[sid] = Live(JobState.CANCELLED, said="CANCELLED")


@pytest.fixture
def slurm(monkeypatch):
    fake = type("Fake", (FakeArraySlurm,), {"calls": [], "live": {}, "refuse": False})
    monkeypatch.setitem(scheduler.SCHEDULERS, "slurm", fake)
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


def kraken_sweep(*sets, max_parallel=None, **resources) -> SweepRequest:
    res = Resources(partition="publicgpu", gpus=1, cpus=2, **resources)
    request = JobRequest(kind="transcription", project="Demo", format="page", base=None,
                         params=TrainParams(spec="[1,48,0,1 Lbx100]"), split=Split(),
                         resources=res, device="cpu", kraken_version="7.1.1")
    grid = parse_sets(list(sets))
    return SweepRequest(request, tuple(points(grid)), max_parallel, grid)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- submitting --------------------------------------------------------------------------------
def test_a_sweep_is_one_job_per_point_on_one_split_queued_as_one_array(side, slurm):
    done = side.submit_sweep(kraken_sweep("learning_rate=1e-4,1e-3", "augment=true,false",
                                          max_parallel=2))
    jobs = done.jobs
    assert [j.id for j in jobs] == [1, 2, 3, 4] and {j.sweep for j in jobs} == {1}
    assert [j.sweep_values for j in jobs] == [
        {"learning_rate": 1e-4, "augment": True}, {"learning_rate": 1e-4, "augment": False},
        {"learning_rate": 1e-3, "augment": True}, {"learning_rate": 1e-3, "augment": False}]
    assert [j.scheduler_id for j in jobs] == ["500_0", "500_1", "500_2", "500_3"]
    assert [c[0] for c in slurm.calls] == ["submit_array"]
    assert slurm.calls[0][1:] == ([f"job{i}-transcription" for i in (1, 2, 3, 4)], "05:00:00", 2)
    folders = [side.root / j.job_dir for j in jobs]
    assert len(set(folders)) == 4
    for part in ("train", "validation", "test"):
        assert len({digest(f / split_file(part)) for f in folders}) == 1
    scripts = [(f / SCRIPT).read_text() for f in folders]
    assert " -r 0.001 " in scripts[2] and " -r 0.0001 " in scripts[0]
    assert ("--augment" in scripts[0], "--augment" in scripts[1]) == (True, False)
    recorded = [side.registry().get(j.id).params["request"]["params"] for j in jobs]
    assert [p["learning_rate"] for p in recorded] == [1e-4, 1e-4, 1e-3, 1e-3]


def test_a_refused_array_leaves_no_record_and_no_folder(side, slurm):
    slurm.refuse = True
    with pytest.raises(SchedulerError, match="invalid partition"):
        side.submit_sweep(kraken_sweep("epochs=3,4"))
    assert side.registry().all() == []
    assert not list((side.folder("finetuned") / "Demo").glob("job*"))


def test_a_dry_run_shows_the_array_and_registers_nothing(side, slurm):
    done = side.submit_sweep(kraken_sweep("epochs=3,4,5", max_parallel=2), dry_run=True)
    assert done.jobs == () and len(done.scripts) == 3 and slurm.calls == []
    assert "#SBATCH --array=0-2%2" in done.array_script
    assert done.job_dirs[2].endswith("job3-transcription") and side.registry().all() == []


def test_each_task_compiles_inside_its_job_without_a_chain(side, slurm):
    done = side.submit_sweep(kraken_sweep("epochs=3,4", compile_partition="cpu"))
    assert all(job.stages == () for job in done.jobs)
    assert " compile " in (side.root / done.jobs[0].job_dir / SCRIPT).read_text()


def test_a_torchrun_sweep_passes_each_value_as_a_script_option(side, slurm):
    request = TorchrunRequest(project="t", target="train.py", script_text="print(1)\n",
                              args=("--epochs", "2"), resources=Resources(), nproc_per_node=1)
    grid = parse_sets(["lr=0.1,0.01"], torchrun=True)
    done = side.submit_sweep(SweepRequest(request, tuple(points(grid)), None, grid))
    scripts = [(side.root / j.job_dir / SCRIPT).read_text() for j in done.jobs]
    assert "--epochs 2 --lr 0.1" in scripts[0] and "--epochs 2 --lr 0.01" in scripts[1]
    assert [j.kind for j in done.jobs] == ["torchrun", "torchrun"]


def test_the_embedded_default_runs_every_task(side, monkeypatch):
    started = []

    class Local:
        name, shared, accounting_off = "local", False, None

        def __init__(self, root):
            pass

        def submit(self, job_dir, time_limit, stage=None, after=None):
            started.append(job_dir.name)
            return str(1000 + len(started))

    Local.submit_array = scheduler.LocalScheduler.submit_array
    monkeypatch.setitem(scheduler.SCHEDULERS, "local", Local)
    local = ClusterSide(side.root, Tree(), "local")
    done = local.submit_sweep(kraken_sweep("epochs=3,4", max_parallel=1))
    assert started == ["job1-transcription", "job2-transcription"]
    assert [j.scheduler_id for j in done.jobs] == ["1001", "1002"]
    assert done.array_script is None


# -- following and cancelling ------------------------------------------------------------------
def test_status_rows_carry_the_sweep_and_each_tasks_values(side, slurm):
    jobs = side.submit_sweep(kraken_sweep("epochs=3,4,5")).jobs
    slurm.live["500_0"] = Live(R)
    with open(side.root / jobs[0].job_dir / EVENTS, "a") as sink:
        events.append(sink, {"event": "start"})
    rows = side.status().rows
    assert [(r.sweep, r.sweep_values, r.state) for r in rows] == [
        (1, {"epochs": 3}, "RUNNING"), (1, {"epochs": 4}, "PENDING"),
        (1, {"epochs": 5}, "PENDING")]
    assert rows[1].reason == "JobArrayTaskLimit" and len(jobs) == 3


def test_cancel_sweep_is_one_cancel_of_the_array_and_leaves_ended_tasks(side, slurm):
    jobs = side.submit_sweep(kraken_sweep("epochs=3,4,5")).jobs
    with open(side.root / jobs[0].job_dir / EVENTS, "a") as sink:
        events.append(sink, {"event": "start"})
        events.append(sink, {"event": "end", "exit_code": 0})
    slurm.live["500_0"] = Live(C, said="COMPLETED")
    assert side.job(1).state == "COMPLETED"
    rows = side.cancel_sweep(1)
    assert slurm.calls[-1] == ("cancel_array", ["500_1", "500_2"])
    assert [r.state for r in rows] == ["COMPLETED", "CANCELLED", "CANCELLED"]
    with pytest.raises(Exception, match="have all ended; nothing to cancel"):
        side.cancel_sweep(1)


def test_cancelling_one_task_cancels_that_task_only(side, slurm):
    side.submit_sweep(kraken_sweep("epochs=3,4,5"))
    assert side.cancel(2).state == "CANCELLED"
    assert slurm.calls[-1] == ("cancel", "500_1")
    assert [r.state for r in side.status().rows] == ["PENDING", "CANCELLED", "PENDING"]


def test_cancel_sweep_of_a_task_or_a_plain_job_says_what_it_is(side, slurm):
    side.submit_sweep(kraken_sweep("epochs=3,4"))
    with pytest.raises(NotFoundError, match="job 2 is not a sweep \\(it is a task of sweep 1\\)"):
        side.cancel_sweep(2)


def test_submit_and_cancel_of_a_sweep_cross_the_rpc_boundary(side, slurm):
    from hpctrain.backends.rpc import RemoteCluster
    from test_rpc import Loopback

    proxy = RemoteCluster(Loopback(), str(side.root), Tree(), "slurm")
    done = proxy.submit_sweep(kraken_sweep("epochs=3,4", "augment=true,false", max_parallel=1))
    assert [(j.sweep, j.sweep_values["epochs"]) for j in done.jobs] == [(1, 3)] * 2 + [(1, 4)] * 2
    assert list(done.jobs) == side.registry().all() and len(done.scripts) == 4
    rows = proxy.cancel_sweep(1)
    assert [(r.state, r.sweep) for r in rows] == [("CANCELLED", 1)] * 4
    assert slurm.calls[-1] == ("cancel_array", ["500_0", "500_1", "500_2", "500_3"])


# -- the registry ------------------------------------------------------------------------------
def test_records_without_sweep_fields_read_and_are_written_as_before(side, slurm):
    plain = side.submit(kraken_sweep("epochs=3").request).job
    data = json.loads(record_bytes(plain, 0.0))
    assert "sweep" not in data and "sweep_values" not in data
    old = {k: v for k, v in data.items() if k != "updated"}
    assert parse_record(json.dumps(old).encode(), plain.id, "x").sweep is None
    task = side.submit_sweep(kraken_sweep("epochs=3,4")).jobs[1]
    again = parse_record(record_bytes(task, 0.0), task.id, "x")
    assert (again.sweep, again.sweep_values) == (task.sweep, {"epochs": 4})


def test_a_damaged_sweep_field_is_one_damaged_record(side, slurm):
    task = side.submit_sweep(kraken_sweep("epochs=3,4")).jobs[0]
    path = side.root / ".hpctrain" / "jobs" / f"{task.id}.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "sweep": "one"}))
    damaged: list[str] = []
    assert [r.id for r in Registry(side.root).all(warnings=damaged)] == [2]
    assert "'sweep' is not a job id" in damaged[0]


# -- one row per sweep, a sweep's id as its tasks ----------------------------------------------
def status_row(job_id, state="PENDING", sweep=None, values=None, **extra) -> JobStatus:
    return JobStatus(id=job_id, kind="transcription", project="Demo", base=None, state=state,
                     scheduler_id=None, elapsed=None, step=None, epoch=None, total_epochs=None,
                     best_metric=extra.pop("metric", None), best_value=extra.pop("value", None),
                     best_model=None, sweep=sweep, sweep_values=values or {}, **extra)


ROWS = [status_row(1), status_row(2, "COMPLETED", 2, {"epochs": 3}, metric="val_accuracy",
                                  value=0.9),
        status_row(3, "COMPLETED", 2, {"epochs": 4}, test={"char_accuracy": 0.95}),
        status_row(4, "RUNNING", 2, {"epochs": 5}, metric="val_accuracy", value=0.97),
        status_row(5, "COMPLETED", 2, {"epochs": 6}, test={"char_accuracy": 0.91}),
        status_row(6)]


def test_a_sweep_folds_into_one_row_with_its_states_counted_and_its_best_task():
    grouped = group_rows(ROWS)
    assert [getattr(r, "id") for r in grouped] == [1, 2, 6]
    sweep = grouped[1]
    assert isinstance(sweep, SweepRow) and [t.id for t in sweep.tasks] == [2, 3, 4, 5]
    assert sweep.state == "3/4 COMPLETED, 1 RUNNING"
    assert sweep.best.id == 3  # a test score wins over a validation metric
    assert SweepRow(9, "t", "p", None, [ROWS[1], ROWS[3]]).best.id == 4


def test_a_sweeps_id_expands_to_its_tasks_a_jobs_id_stays_itself():
    assert expand_rows(ROWS, [6, 2, 3]) == [6, 2, 3, 4, 5]
    assert expand_rows(ROWS, [3]) == [3]

    class Ops:
        def status(self, job_ids=None, project=None):
            return StatusReport(ROWS)

    assert expand_targets(Ops(), ["1", "2"]) == [1, 2, 3, 4, 5]
    with pytest.raises(NotFoundError, match="no job 7"):
        expand_targets(Ops(), ["7"])


# -- the commands --------------------------------------------------------------------------------
@pytest.fixture
def pushed(cli, workspace, demo_project, slurm):
    assert cli("push", "Demo").exit_code == 0
    set_project(workspace, "Demo", transcription={"early_stopping": False, "epochs": 3})
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))
    return workspace


def test_the_sweep_command_submits_one_array_and_status_shows_one_row(cli, pushed, slurm):
    result = cli("sweep", "transcription", "Demo", "--no-base", "--set",
                 "learning_rate=1e-4,3e-4", "--set", "augment=true,false", "--max-parallel", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["sweep"] == 1 and [j["id"] for j in done["jobs"]] == [1, 2, 3, 4]
    assert slurm.calls[0][3] == 2
    table = cli("status").stdout
    assert "1 (sweep)" in table and "0/4" not in table and "4/4 PENDING" in table
    assert len([line for line in table.splitlines() if "Demo" in line]) == 1
    opened = cli("status", "1").stdout
    assert len([line for line in opened.splitlines() if "Demo" in line]) == 4
    assert "learning_rate=0.0003 augment=false" in opened
    rows = json.loads(cli("status", "--json").stdout)
    assert [(r["sweep"], r["sweep_values"]["augment"]) for r in rows] == [
        (1, True), (1, False), (1, True), (1, False)]


def test_the_sweep_command_refuses_a_hostile_value_in_one_line(cli, pushed, slurm):
    result = cli("sweep", "transcription", "Demo", "--no-base", "--set", "epochs=3;reboot")
    one_line_error(result, "--set epochs", "not a whole number")
    assert slurm.calls == []


def test_the_sweep_dry_run_prints_the_array_and_queues_nothing(cli, pushed, slurm):
    result = cli("sweep", "transcription", "Demo", "--no-base", "--set", "epochs=3,4",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --array=0-1" in result.stdout and "epochs=4" in result.stdout
    assert slurm.calls == []


def test_cancel_sweep_cancels_the_array_cancel_alone_one_job(cli, pushed, slurm):
    assert cli("sweep", "transcription", "Demo", "--no-base", "--set",
               "epochs=3,4,5").exit_code == 0
    assert cli("cancel", "1").stdout == "job 1 CANCELLED\n"
    assert slurm.calls[-1] == ("cancel", "500_0")
    result = cli("cancel", "1", "--sweep")
    assert result.exit_code == 0, result.output
    assert slurm.calls[-1] == ("cancel_array", ["500_1", "500_2"])
    assert result.stdout.splitlines() == ["job 1 CANCELLED", "job 2 CANCELLED",
                                          "job 3 CANCELLED"]


def test_a_torchrun_sweep_command_appends_each_value_to_the_scripts_arguments(cli, workspace):
    result = cli("sweep", "torchrun", "hpctrain.trainer", "--set", "lr=0.1,0.01", "--dry-run",
                 "--json", "--", "--data", "/scratch/her2")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["points"] == [{"lr": "0.1"}, {"lr": "0.01"}] and done["jobs"] == []
    assert "--data /scratch/her2 --lr 0.01" in done["scripts"][1]
    assert "--lr 0.1" not in done["scripts"][1]
    refused = cli("sweep", "torchrun", "hpctrain.trainer", "--set", "lr=$(reboot)")
    one_line_error(refused, "--set lr", "characters a sweep value may not hold")
