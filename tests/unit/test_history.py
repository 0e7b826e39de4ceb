"""The time limit `submit` learns from the project's earlier jobs (app/history.py): the maths,
which jobs count, the partition's cap, and the precedence: --time > the project file's time >
history > the default, never the other way round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import set_project
from hpctrain.app.history import MAX_JOBS, propose_time, slurm_clock
from hpctrain.app.projects import Project
from hpctrain.app.submit import _choose_time
from hpctrain.cluster.api import JobOutcome, JobStatus
from hpctrain.cluster.partitions import Partition
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.jobs.requests import JobRequest, Resources, Split, TrainParams

FIXED = TrainParams(early_stopping=False, epochs=120)
EARLY = TrainParams(early_stopping=True, min_epochs=20)


def earlier(job_id: int, epoch_seconds: float, epochs: int = 30, kind: str = "transcription",
            partition: str | None = "gpu", state: str = "COMPLETED",
            elapsed: float | None = None, damaged: bool = False) -> JobOutcome:
    row = JobStatus(id=job_id, kind=kind, project="Demo", base=None, state=state,
                    scheduler_id=None, elapsed=elapsed, step=None, epoch=epochs,
                    total_epochs=None, best_metric=None, best_value=None, best_model=None,
                    epoch_seconds=epoch_seconds)
    return JobOutcome(row, None, None, {"resources": {"partition": partition}},
                      events_damaged=damaged)


def test_slowest_epoch_times_the_epoch_bound_plus_half_and_ten_minutes():
    found = propose_time([earlier(1, 38), earlier(2, 41), earlier(3, 40)], "transcription",
                         "gpu", FIXED)
    # (41 s x 120) x 1.5 + 600 = 7980 s -> rounded up to the quarter hour: 02:15:00
    assert found.seconds == 8100 and found.time == "02:15:00"
    assert found.jobs == (1, 2, 3) and found.epochs == 120 and found.epoch_seconds == 41
    assert found.line() == ("time 02:15:00 from 3 earlier jobs on gpu (1, 2, 3): 41 s/epoch × "
                            "120 epochs (the project's epochs), + 50 % + 10 min")


def test_under_an_hour_it_rounds_up_to_the_minute():
    found = propose_time([earlier(1, 10.2)], "transcription", "gpu",
                         TrainParams(early_stopping=False, epochs=100))
    assert found.seconds == 2160  # 10.2 x 100 x 1.5 + 600 = 2130 -> 36 min
    assert found.time == "00:36:00" and "from 1 earlier job on gpu (1)" in found.line()


def test_time_outside_training_is_the_most_a_completed_job_spent_beyond_its_epochs():
    jobs = [earlier(1, 40, epochs=30, elapsed=40 * 30 + 300),  # 5 min loading and testing
            earlier(2, 40, epochs=10, state="TIMEOUT", elapsed=9000)]  # not completed: no say
    found = propose_time(jobs, "transcription", "gpu", FIXED)
    assert found.outside == 300
    assert found.seconds == 9000  # (40 x 120 + 300) x 1.5 + 600 = 8250 -> 02:30:00
    assert "+ 5 min outside training" in found.line()


def test_early_stopping_expects_the_most_of_min_epochs_and_the_epochs_reached():
    reached = propose_time([earlier(1, 60, epochs=35), earlier(2, 60, epochs=48)],
                           "transcription", "gpu", EARLY)
    assert reached.epochs == 48 and "the most an earlier job reached" in reached.line()
    short = propose_time([earlier(1, 60, epochs=8)], "transcription", "gpu", EARLY)
    assert short.epochs == 20 and "min_epochs" in short.line()


def test_only_the_same_kind_partition_and_undamaged_timed_jobs_count():
    jobs = [earlier(1, 500, kind="segmentation"), earlier(2, 500, partition="cpu"),
            earlier(3, 500, damaged=True), earlier(4, 0), earlier(5, float("nan")),
            earlier(6, 30), earlier(7, 30, epochs=0)]
    found = propose_time(jobs, "transcription", "gpu", FIXED)
    assert found.jobs == (6,) and found.epoch_seconds == 30
    assert propose_time(jobs[:5], "transcription", "gpu", FIXED) is None


def test_the_latest_jobs_count():
    jobs = [earlier(1, 900)] + [earlier(i, 40) for i in range(2, 2 + MAX_JOBS)]
    found = propose_time(jobs, "transcription", "gpu", FIXED)
    assert 1 not in found.jobs and len(found.jobs) == MAX_JOBS and found.epoch_seconds == 40


def test_the_partition_max_time_caps_it():
    found = propose_time([earlier(1, 900)], "transcription", "gpu", FIXED, ("gpu", 4 * 3600))
    assert found.time == "04:00:00" and found.line().endswith(", capped at gpu's MaxTime "
                                                              "04:00:00")
    long = propose_time([earlier(1, 900)], "transcription", "gpu", FIXED)
    assert long.time == "1-21:15:00" and long.capped_by is None


def test_slurm_clock():
    assert slurm_clock(59 * 60) == "00:59:00" and slurm_clock(86400 + 3661) == "1-01:01:01"


# -- precedence, with a fake cluster --------------------------------------------------------
class FakeCluster:
    def __init__(self, history, partitions=()):
        self.history, self.listed, self.asked = history, list(partitions), []

    def outcomes(self, job_ids=None, project=None):
        self.asked.append(("outcomes", project))
        return self.history

    def partitions(self, refresh=False):
        self.asked.append(("partitions",))
        return self.listed


class FakeTransport:
    def __init__(self, cluster):
        self.cluster = cluster


def request(time="05:00:00", partition="gpu", kind="transcription") -> JobRequest:
    return JobRequest(kind=kind, project="Demo", format="page", base=None, params=FIXED,
                      split=Split(), resources=Resources(partition=partition, time=time))


HISTORY = [earlier(1, 41), earlier(2, 40)]


def test_history_is_used_when_nobody_chose_a_time():
    transport = FakeTransport(FakeCluster(HISTORY, [Partition("gpu", max_time=86400)]))
    changed, choice, notes = _choose_time(transport, request(), Project("Demo", "gt"),
                                          flag=False, dry_run=False)
    assert changed.resources.time == "02:15:00" == choice.time and choice.source == "history"
    assert notes == [choice.proposal.line()] and notes[0].startswith("time 02:15:00 from 2")


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_explicit_time_is_never_overridden(dry_run):
    cluster = FakeCluster(HISTORY)
    changed, choice, notes = _choose_time(FakeTransport(cluster), request("00:30:00"),
                                          Project("Demo", "gt"), flag=True, dry_run=dry_run)
    assert changed.resources.time == "00:30:00" == choice.time and choice.source == "flag"
    if dry_run:  # says what history would give, and keeps the flag's
        assert choice.proposal.time == "02:15:00"
        assert notes == [f"time 00:30:00 from --time (history would give 02:15:00 "
                         f"{choice.proposal.basis()})"]
    else:  # history is not even asked for
        assert cluster.asked == [] and notes == []


def test_a_time_written_in_the_project_file_wins_over_history():
    project = Project("Demo", "gt", time_written=True)
    changed, choice, notes = _choose_time(FakeTransport(FakeCluster(HISTORY)), request("07:00:00"),
                                          project, flag=False, dry_run=True)
    assert changed.resources.time == "07:00:00" and choice.source == "project"
    assert "from projects/Demo.yaml (set resources.time to null" in notes[0]


def test_no_history_keeps_the_default_without_asking_slurm():
    cluster = FakeCluster([earlier(1, 40, partition="cpu")], [Partition("gpu", max_time=60)])
    changed, choice, notes = _choose_time(FakeTransport(cluster), request(),
                                          Project("Demo", "gt"), flag=False, dry_run=True)
    assert changed.resources.time == "05:00:00" and choice.source == "default"
    assert notes == ["time 05:00:00 (the default: no earlier transcription job of Demo on gpu "
                     "timed an epoch to learn from)"]
    assert ("partitions",) not in cluster.asked


def test_the_default_partition_caps_a_job_that_names_none():
    history = [earlier(1, 900, partition=None)]
    cluster = FakeCluster(history, [Partition("other", max_time=60),
                                    Partition("main", default=True, max_time=3 * 3600)])
    _, choice, _ = _choose_time(FakeTransport(cluster), request(partition=None),
                                Project("Demo", "gt"), flag=False, dry_run=False)
    assert choice.time == "03:00:00" and choice.proposal.capped_by == "main's MaxTime 03:00:00"


def test_a_compile_job_learns_nothing():
    cluster = FakeCluster(HISTORY)
    _, choice, notes = _choose_time(FakeTransport(cluster), request(kind="compile"),
                                    Project("Demo", "gt"), flag=False, dry_run=True)
    assert choice.source == "default" and cluster.asked == [] and notes == []


# -- through the command, on the embedded default ---------------------------------------------
JOBS = "Repertoire_model_finetune"


def add_timed_job(workspace: Path, seconds_per_epoch: int, epochs: int = 4,
                  damaged: bool = False) -> int:
    """A completed transcription of Demo on the default partition, its epochs timed."""
    root = workspace / "cluster"
    request = {"kind": "transcription", "resources": {"partition": None, "time": "05:00:00"}}
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", None,
                              lambda i: f"{JOBS}/Demo/job{i}-transcription", {"request": request})
        registry.update(record.id, state=JobState.COMPLETED, scheduler_id=str(record.id))
    job_dir = root / record.job_dir
    job_dir.mkdir(parents=True)
    lines = [{"event": "start", "t": 1000}, {"event": "step", "step": "train", "t": 1000}]
    lines += [{"event": "metrics", "epoch": e, "t": 1000 + e * seconds_per_epoch,
               "val_accuracy": 0.5} for e in range(1, epochs + 1)]
    lines.append({"event": "end", "exit_code": 0, "t": 1000 + epochs * seconds_per_epoch})
    encoded = [json.dumps(e).encode() + b"\n" for e in lines]
    if damaged:
        encoded.insert(2, b'{"event": "metrics", \xff not UTF-8\n')
    (job_dir / "events.jsonl").write_bytes(b"".join(encoded))
    return record.id


@pytest.fixture
def pushed(cli, demo_project, workspace):
    assert cli("push", "Demo").exit_code == 0
    set_project(workspace, "Demo", transcription={"early_stopping": False, "epochs": 100})
    return demo_project


def submit_json(cli, *flags):
    result = cli("submit", "transcription", "Demo", "--no-base", "--dry-run", "--json", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_submit_learns_the_time_from_earlier_jobs(cli, workspace, pushed):
    first = add_timed_job(workspace, 30)
    add_timed_job(workspace, 45, damaged=True)  # its events are damaged: it does not count
    data, said = submit_json(cli)
    assert data["time"]["source"] == "history" and data["time"]["time"] == "01:30:00"
    assert data["time"]["proposal"]["jobs"] == [first]  # 30 x 100 x 1.5 + 600 s, up
    assert "#SBATCH --time=01:30:00" in data["script"]
    assert f"time 01:30:00 from 1 earlier job on the default partition ({first}): 30 s/epoch" \
        in said


def test_submit_keeps_an_explicit_time_and_the_project_file_time(cli, workspace, pushed):
    add_timed_job(workspace, 30)
    data, said = submit_json(cli, "--time", "00:40:00")
    assert data["time"]["source"] == "flag" and "#SBATCH --time=00:40:00" in data["script"]
    assert "time 00:40:00 from --time (history would give 01:30:00" in said
    set_project(workspace, "Demo", resources={"time": "03:00:00"})
    data, _ = submit_json(cli)
    assert data["time"]["source"] == "project" and "#SBATCH --time=03:00:00" in data["script"]


def test_submit_without_history_uses_the_default(cli, workspace, pushed):
    data, said = submit_json(cli)
    assert data["time"] == {"time": "05:00:00", "source": "default", "proposal": None}
    assert "#SBATCH --time=05:00:00" in data["script"]
    assert "(the default: no earlier transcription job of Demo" in said
