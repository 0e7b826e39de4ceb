"""Polling that spares the scheduler (cluster/polling.py): Slurm is asked in one batched query, at
intervals that grow while nothing changes and go back to the shortest when something does; the
throttle holds across processes through one file under the cluster root; a damaged file is
replaced; where accounting is off, states come from squeue and the jobs' events, said once."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from hpctrain.cluster import ops, polling
from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.cluster.scheduler import Live
from hpctrain.core.config import Tree
from hpctrain.core.errors import ConfigError
from hpctrain.runtime.events import Progress

RUNNING = Live(JobState.RUNNING, said="RUNNING")
PENDING = Live(JobState.PENDING, "Priority", said="PENDING")


class FakeSlurm:
    """A shared scheduler that answers from a table and records each query."""

    name, shared, accounting_off = "slurm", True, None

    def __init__(self, answers: dict | None = None):
        self.answers = dict(answers or {})
        self.queries: list[list[str]] = []
        self.during = None  # called inside the query: what happens while Slurm is asked

    def accounting(self, scheduler_ids):  # none: the efficiency report uses the events
        return {}

    def states(self, scheduler_ids):
        self.queries.append(sorted(scheduler_ids))
        if self.during:
            self.during()
        return {sid: self.answers.get(sid) for sid in scheduler_ids}


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limits(monkeypatch):
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "5")
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", "40")


def running(starts: int = 1) -> Progress:
    return Progress(state="RUNNING", starts=starts)


def asks_at(root, slurm, clock, jobs, times) -> list[float]:
    """The times among `times` at which `ask` queried the scheduler."""
    asked = []
    for moment in times:
        clock.now = moment
        before = len(slurm.queries)
        polling.ask(root, slurm, jobs, clock)
        if len(slurm.queries) > before:
            asked.append(moment)
    return asked


# -- the backoff --------------------------------------------------------------------------------
def test_the_interval_grows_while_nothing_changes_up_to_its_cap(tmp_path, limits):
    slurm, clock = FakeSlurm({"7": RUNNING}), Clock(0)
    asked = asks_at(tmp_path, slurm, clock, {"7": running()}, [t / 2 for t in range(0, 600)])
    # 0 (new), then every 5, 7.5, 11.25, 16.875, 25.3125, 37.97 s (seen on the half-second),
    # then the 40 s cap
    gaps = [b - a for a, b in zip(asked, asked[1:])]
    assert asked[:2] == [0, 5] and gaps[:6] == [5, 7.5, 11.5, 17, 25.5, 38]
    assert all(gap == 40 for gap in gaps[6:]) and len(gaps) > 8
    assert polling.load(polling.path_of(tmp_path), polling.backoff()).interval == 40


def test_a_changed_state_brings_the_shortest_interval_back(tmp_path, limits):
    slurm, clock = FakeSlurm({"7": PENDING}), Clock(0)
    jobs = {"7": Progress()}
    asked = asks_at(tmp_path, slurm, clock, jobs, range(0, 100))
    assert asked == [0, 5, 13, 25, 42, 68]  # each on the first whole second it is due
    slurm.answers["7"] = Live(JobState.PENDING, "Resources")  # the reason changed
    assert asks_at(tmp_path, slurm, clock, jobs, range(100, 200))[:3] == [106, 111, 119]


def test_a_new_job_is_asked_at_once_in_the_same_query_as_the_others(tmp_path, limits):
    slurm, clock = FakeSlurm({"1": RUNNING, "2": RUNNING, "3": PENDING}), Clock(0)
    answers = polling.ask(tmp_path, slurm, {"1": running(), "2": running()}, clock)
    assert slurm.queries == [["1", "2"]] and answers.asked
    assert answers.states == {"1": RUNNING, "2": RUNNING}
    clock.now = 2
    again = polling.ask(tmp_path, slurm, {"1": running(), "2": running()}, clock)
    assert len(slurm.queries) == 1 and not again.asked and again.states == answers.states
    clock.now = 3
    third = polling.ask(tmp_path, slurm, {"1": running(), "2": running(), "3": Progress()}, clock)
    assert slurm.queries[1:] == [["1", "2", "3"]]  # one query, the new one with the others
    assert third.states["3"] == PENDING


def test_events_that_say_a_job_started_ask_at_once(tmp_path, limits):
    slurm, clock = FakeSlurm({"7": PENDING}), Clock(0)
    polling.ask(tmp_path, slurm, {"7": Progress()}, clock)
    slurm.answers["7"] = RUNNING
    clock.now = 1  # well within the interval, but the runner has written its start since
    answers = polling.ask(tmp_path, slurm, {"7": running()}, clock)
    assert len(slurm.queries) == 2 and answers.states["7"] == RUNNING
    clock.now = 2  # requeued (preemption): the events say so before Slurm is asked
    polling.ask(tmp_path, slurm, {"7": Progress(state="REQUEUED", starts=1)}, clock)
    assert len(slurm.queries) == 3


def test_a_job_whose_events_say_it_ended_is_never_asked_and_resets_the_interval(
        tmp_path, limits):
    slurm, clock = FakeSlurm({"1": RUNNING, "2": RUNNING}), Clock(0)
    asks_at(tmp_path, slurm, clock, {"1": running(), "2": running()}, range(0, 30))
    path = polling.path_of(tmp_path)
    assert polling.load(path, polling.backoff()).interval > 5
    asked = len(slurm.queries)
    clock.now = 30
    ended = Progress(state="COMPLETED", starts=1)
    answers = polling.ask(tmp_path, slurm, {"1": ended, "2": running()}, clock)
    assert len(slurm.queries) == asked and answers.states["1"] is None
    state = polling.load(path, polling.backoff())
    assert state.interval == 5 and set(state.jobs) == {"2"}
    only_ended = FakeSlurm()
    assert polling.ask(tmp_path, only_ended, {"9": ended}, clock).states == {"9": None}
    assert only_ended.queries == []


def test_a_cancel_brings_the_shortest_interval_back(tmp_path, limits):
    slurm, clock = FakeSlurm({"1": RUNNING}), Clock(0)
    asks_at(tmp_path, slurm, clock, {"1": running()}, range(0, 200))
    assert polling.load(polling.path_of(tmp_path), polling.backoff()).interval == 40
    polling.changed(tmp_path)
    assert polling.load(polling.path_of(tmp_path), polling.backoff()).interval == 5


def test_while_another_process_asks_the_remembered_answers_hold(tmp_path, limits):
    slurm, clock = FakeSlurm({"1": RUNNING, "2": PENDING}), Clock(0)
    polling.ask(tmp_path, slurm, {"1": running()}, clock)
    path = polling.path_of(tmp_path)
    state = polling.load(path, polling.backoff())
    state.asking = clock.now = 100  # another process began a query a moment ago
    polling.save(path, state)
    assert polling.ask(tmp_path, slurm, {"1": running()}, clock).states == {"1": RUNNING}
    assert len(slurm.queries) == 1
    polling.ask(tmp_path, slurm, {"1": running(), "2": Progress()}, clock)  # never asked: asks
    assert slurm.queries[1:] == [["1", "2"]]
    assert polling.load(path, polling.backoff()).asking is None


def test_a_failed_query_lets_the_next_process_ask_at_once(tmp_path, limits):
    from hpctrain.core.errors import SchedulerError

    class Down(FakeSlurm):
        def states(self, scheduler_ids):
            raise SchedulerError("sacct (job states) failed: down")

    slurm = FakeSlurm({"1": RUNNING})
    polling.ask(tmp_path, slurm, {"1": running()}, Clock(0))
    with pytest.raises(SchedulerError):
        polling.ask(tmp_path, Down(), {"1": running()}, Clock(10))
    polling.ask(tmp_path, slurm, {"1": running()}, Clock(11))  # not held back by a lease
    assert slurm.queries == [["1"], ["1"]]


@pytest.mark.parametrize("value", ["x", "-1", "inf", "nan"])
def test_a_backoff_that_is_not_a_number_of_seconds_is_one_line(monkeypatch, value):
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", value)
    with pytest.raises(ConfigError, match="HPCTRAIN_SLURM_POLL_MAX=.* is not a number of seconds"):
        polling.backoff()


def test_a_minimum_of_zero_asks_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "0")
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", "0")
    slurm, clock = FakeSlurm({"1": RUNNING}), Clock(0)
    assert asks_at(tmp_path, slurm, clock, {"1": running()}, [0, 0, 0]) == [0, 0, 0]


def test_the_embedded_default_is_asked_every_time_and_writes_no_file(tmp_path, limits):
    local = FakeSlurm({"1": RUNNING})
    local.shared = False
    for _ in range(3):
        polling.ask(tmp_path, local, {"1": running()}, Clock(0))
    assert len(local.queries) == 3 and not polling.path_of(tmp_path).exists()


# -- the file -----------------------------------------------------------------------------------
DAMAGED = {
    "not JSON": b"{\"format\": 1, \"interv",
    "not UTF-8": b"\xff\xfe\x00garbage",
    "empty": b"",
    "a list": b"[1, 2]",
    "another format": json.dumps({"format": 99, "interval": 5, "jobs": {}}).encode(),
    "an unknown state": json.dumps({"format": 1, "interval": 40, "asking": None,
                                    "accounting_off": None, "jobs": {"1": {
                                        "asked": 0, "events": "1:RUNNING",
                                        "state": "EXPLODED"}}}).encode(),
    "a job that is a string": json.dumps({"format": 1, "interval": 40, "asking": None,
                                          "accounting_off": None, "jobs": {"1": "x"}}).encode(),
    "a negative interval": json.dumps({"format": 1, "interval": -3, "asking": None,
                                       "accounting_off": None, "jobs": {}}).encode(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_file_is_ignored_and_replaced(tmp_path, limits, damage):
    path = polling.path_of(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(DAMAGED[damage])
    slurm = FakeSlurm({"1": RUNNING})
    answers = polling.ask(tmp_path, slurm, {"1": running()}, Clock(0))
    assert answers.states == {"1": RUNNING} and slurm.queries == [["1"]]
    data = json.loads(path.read_text())
    assert data["format"] == polling.FORMAT and data["interval"] == 5
    assert data["jobs"]["1"]["state"] == "RUNNING"


def test_the_file_says_what_it_remembers(tmp_path, limits):
    slurm = FakeSlurm({"4242": Live(JobState.PENDING, "Resources", "2026-11-23T17:30:00",
                                    "PENDING"), "4243": None})
    polling.ask(tmp_path, slurm, {"4242": Progress(), "4243": running()}, Clock(10))
    data = json.loads(polling.path_of(tmp_path).read_text())
    assert data == {
        "format": 1, "interval": 5.0, "asking": None, "accounting_off": None,
        "jobs": {
            "4242": {"asked": 10, "events": "0:-", "state": "PENDING", "reason": "Resources",
                     "expected_start": "2026-11-23T17:30:00", "said": "PENDING"},
            "4243": {"asked": 10, "events": "1:RUNNING", "state": None, "reason": None,
                     "expected_start": None, "said": None},
        },
    }
    answers = polling.ask(tmp_path, FakeSlurm(), {"4242": Progress(), "4243": running()},
                          Clock(11))
    assert answers.states == slurm.states(["4242", "4243"]) and not answers.asked


def hammer(root: str, worker: int, rounds: int, start) -> int:
    """Ask every time (the minimum is 0) from one process; count the file's unreadable reads."""
    os.environ["HPCTRAIN_SLURM_POLL_MIN"] = os.environ["HPCTRAIN_SLURM_POLL_MAX"] = "0"
    path, damaged = polling.path_of(Path(root)), 0
    slurm = FakeSlurm({str(n): RUNNING for n in range(40)})
    start.wait(30)
    for n in range(rounds):
        polling.ask(Path(root), slurm, {str(worker * 10 + n % 10): running()})
        try:
            polling._parse(path.read_bytes())
        except (ValueError, TypeError, KeyError, AttributeError):
            damaged += 1
    return damaged


def test_processes_writing_at_once_never_damage_the_file(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [pool.apply_async(hammer, (str(tmp_path), w, 60, start)) for w in range(4)]
            start.set()
            assert [p.get(timeout=120) for p in pending] == [0, 0, 0, 0]
    state = polling._parse(polling.path_of(tmp_path).read_bytes())
    assert state.jobs and all(known.state == "RUNNING" for known in state.jobs.values())
    leftovers = [n for n in os.listdir(tmp_path / ".hpctrain") if n.startswith(".")]
    assert leftovers == []


# -- through the cluster side -------------------------------------------------------------------
def add_job(root: Path, scheduler_id: str, events: list[dict]) -> int:
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", None,
                              lambda i: f"Repertoire_model_finetune/Demo/job{i}-transcription", {})
        registry.update(record.id, state=JobState.PENDING, scheduler_id=scheduler_id)
    job_dir = root / record.job_dir
    job_dir.mkdir(parents=True)
    write_events(job_dir, events)
    return record.id


def write_events(job_dir: Path, events: list[dict]) -> None:
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


STARTED = [{"t": 1.0, "event": "start", "pid": 1}]
ENDED = STARTED + [{"t": 2.0, "event": "end", "exit_code": 0}]


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "cluster"
    ClusterSide(root, Tree(), "slurm").ensure_tree()
    return root


@pytest.fixture
def slurm_stubs(tmp_path, monkeypatch):
    """sacct and squeue on the PATH: each prints what a test sets (None: fails, exit 1), and
    every call is counted."""
    calls, folder = tmp_path / "calls", tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def install(sacct: str | None, squeue: str | None):
        for name, out in (("sacct", sacct), ("squeue", squeue)):
            body = f"cat <<'OUT'\n{out}\nOUT\n" if out is not None else "echo 'down' >&2; exit 1\n"
            script = folder / name
            script.write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}")
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return lambda: calls.read_text().split() if calls.exists() else []

    return install


def test_the_throttle_holds_across_two_cluster_sides_on_one_root(root, slurm_stubs,
                                                                  monkeypatch):
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "300")  # nothing falls due during the test
    calls = slurm_stubs("41|RUNNING\n42|RUNNING", "")
    first, second = add_job(root, "41", STARTED), add_job(root, "42", STARTED)
    one, other = ClusterSide(root, Tree(), "slurm"), ClusterSide(root, Tree(), "slurm")
    assert [r.state for r in one.status().rows] == ["RUNNING", "RUNNING"]
    assert calls() == ["sacct"]  # one query for both jobs
    for _ in range(5):
        assert other.job(first).state == "RUNNING" and one.status().rows[1].state == "RUNNING"
    assert calls() == ["sacct"]  # the other process used the answers the first one got
    write_events(root / other.job(second).job_dir, ENDED)
    assert other.job(second).state == "COMPLETED"  # the events say so: Slurm is not asked
    assert calls() == ["sacct"]


def test_a_job_that_ends_while_slurm_is_asked_keeps_its_own_end(root, monkeypatch, limits):
    """The events are read before the query: what the runner writes meanwhile is read again."""
    job = add_job(root, "41", STARTED)
    side = ClusterSide(root, Tree(), "slurm")
    slurm = FakeSlurm({"41": Live(JobState.COMPLETED, said="COMPLETED")})
    folder = next((root / "Repertoire_model_finetune" / "Demo").iterdir())
    slurm.during = lambda: write_events(folder, ENDED)
    monkeypatch.setattr(ops, "scheduler_for", lambda executor, root: slurm)
    row = side.job(job)
    assert slurm.queries == [["41"]]
    assert (row.state, row.error) == ("COMPLETED", None)
    ends = [line for line in (folder / "events.jsonl").read_text().splitlines() if '"end"' in line]
    assert len(ends) == 1  # no second end, "stopped without reporting", appended by status


def test_accounting_off_states_come_from_squeue_and_events_with_one_warning(
        root, slurm_stubs, limits):
    calls = slurm_stubs(None, "41|RUNNING|None|N/A\n42|PENDING|Priority|N/A")
    running_job, waiting_job = add_job(root, "41", STARTED), add_job(root, "42", [])
    report = ClusterSide(root, Tree(), "slurm").status()
    assert calls() == ["sacct", "squeue"]
    assert [(r.id, r.state) for r in report.rows] == [(running_job, "RUNNING"),
                                                       (waiting_job, "PENDING")]
    assert report.rows[1].waiting.startswith("waiting for its turn")
    assert len(report.warnings) == 1 and "accounting does not answer" in report.warnings[0]
    assert "sacct (job states) failed: down" in report.warnings[0]
    again = ClusterSide(root, Tree(), "slurm").status()  # remembered: still said, once
    assert calls() == ["sacct", "squeue"] and again.warnings == report.warnings


def test_accounting_that_knows_no_job_squeue_runs_is_accounting_off(root, slurm_stubs, limits):
    calls = slurm_stubs("", "41|RUNNING|None|N/A")
    job = add_job(root, "41", STARTED)
    row = ClusterSide(root, Tree(), "slurm").job(job)
    assert calls() == ["sacct", "squeue"] and row.state == "RUNNING"
    assert len(row.warnings) == 1 and "sacct knows no job, squeue shows job 41" in row.warnings[0]


def test_accounting_off_a_job_gone_from_the_queue_ends_as_its_events_say(
        root, slurm_stubs, monkeypatch):
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "0")
    slurm_stubs(None, "")  # every job has left the queue
    completed, killed = add_job(root, "41", ENDED), add_job(root, "42", STARTED)
    never_ran = add_job(root, "43", [])
    report = ClusterSide(root, Tree(), "slurm").status()
    rows = {r.id: r for r in report.rows}
    assert rows[completed].state == "COMPLETED" and rows[completed].error is None
    assert rows[killed].state == "FAILED"  # as with accounting: the runner never said it ended
    assert "stopped without reporting an end" in rows[killed].error
    assert rows[never_ran].state == "FAILED"  # gone before it started: today's rule
    assert len(report.warnings) == 1


def test_status_in_the_cli_prints_the_accounting_warning_once(workspace, cli, slurm_stubs,
                                                               limits):
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))
    slurm_stubs(None, "41|RUNNING|None|N/A\n42|RUNNING|None|N/A")
    for sid in ("41", "42"):
        add_job(workspace / "cluster", sid, STARTED)
    result = cli("status")
    assert result.exit_code == 0 and result.stdout.count("RUNNING") == 2, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("hpctrain: warn")]
    assert len(warnings) == 1 and "Slurm's accounting does not answer" in warnings[0]


def test_an_interval_written_under_other_bounds_keeps_within_these(tmp_path, limits,
                                                                   monkeypatch):
    slurm, clock = FakeSlurm({"1": RUNNING}), Clock(0)
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "100")
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", "100")
    polling.ask(tmp_path, slurm, {"1": running()}, clock)
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "5")
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", "10")
    assert asks_at(tmp_path, slurm, clock, {"1": running()}, [50, 60, 70]) == [50, 60, 70]
