"""Why a job waits: Slurm's pending reasons in plain words, read from one batched squeue, and a
requeued job's reuse of compiled data that is whole (runtime/arrow_check.py)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from hpctrain.cluster.registry import JobState
from hpctrain.cluster.scheduler import SlurmScheduler, waiting
from hpctrain.runtime import arrow_check

NEVER = ["PartitionConfig", "ReqNodeNotAvail, UnavailableNodes:n1", "PartitionTimeLimit",
         "DependencyNeverSatisfied", "QOSMaxWallDurationPerJobLimit", "InvalidAccount"]
LATER = ["Priority", "Resources", "BeginTime", "Dependency", "QOSMaxJobsPerUserLimit",
         "AssocGrpCpuLimit", "JobHeldUser", "PartitionDown"]


@pytest.mark.parametrize("reason", NEVER)
def test_reasons_that_never_clear_are_flagged(reason):
    why = waiting(reason)
    assert why.never and "never start" in why.words


@pytest.mark.parametrize("reason", LATER)
def test_reasons_that_clear_in_time_are_not_flagged(reason):
    why = waiting(reason)
    assert not why.never and why.words and "never" not in why.words


def test_plain_words_for_the_common_reasons():
    assert waiting("Resources").words == "waiting for free nodes (resources)"
    assert "its turn" in waiting("Priority").words
    assert "per-user limit" in waiting("QOSMaxJobsPerUserLimit").words
    assert "requeued" in waiting("BeginTime").words
    assert waiting("SomethingNew").words == "waiting (SomethingNew)"
    assert waiting(None) is None and waiting("") is None


@pytest.fixture
def slurm_stubs(tmp_path, monkeypatch):
    """sacct and squeue that print what a test sets, and count their calls."""
    calls = tmp_path / "calls"

    def install(sacct: str, squeue: str | None):
        for name, out in (("sacct", sacct), ("squeue", squeue)):
            script = tmp_path / name
            body = f"cat <<'OUT'\n{out}\nOUT\n" if out is not None else "echo 'down' >&2; exit 1\n"
            script.write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}")
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return lambda: calls.read_text().split() if calls.exists() else []

    return install


def test_one_squeue_gives_reasons_and_start_times(slurm_stubs, tmp_path):
    calls = slurm_stubs("5|PENDING\n6|PENDING\n7|RUNNING",
                        "5|PENDING|PartitionConfig|N/A\n6|PENDING|Resources|2026-11-23T17:30:00\n"
                        "7|RUNNING|None|2026-11-23T16:00:00\n99|PENDING|Priority|N/A")
    found = SlurmScheduler(tmp_path).states(["5", "6", "7"])
    assert calls() == ["sacct", "squeue"]
    assert (found["5"].state, found["5"].reason, found["5"].expected_start) == \
        (JobState.PENDING, "PartitionConfig", None)
    assert (found["6"].reason, found["6"].expected_start) == ("Resources", "2026-11-23T17:30:00")
    assert (found["7"].state, found["7"].reason, found["7"].expected_start) == \
        (JobState.RUNNING, None, None)


def test_no_squeue_when_nothing_waits(slurm_stubs, tmp_path):
    calls = slurm_stubs("7|RUNNING\n8|COMPLETED", "")
    assert {k: v.state for k, v in SlurmScheduler(tmp_path).states(["7", "8"]).items()} == \
        {"7": JobState.RUNNING, "8": JobState.COMPLETED}
    assert calls() == ["sacct"]


def test_squeue_down_still_answers_from_accounting(slurm_stubs, tmp_path):
    slurm_stubs("5|PENDING", None)
    found = SlurmScheduler(tmp_path).states(["5"])
    assert found["5"].state == JobState.PENDING and found["5"].reason is None


def test_a_node_failure_the_queue_still_holds_is_a_requeue_not_a_failure(slurm_stubs, tmp_path):
    # What the test cluster showed: accounting says NODE_FAIL while Slurm requeues the job.
    calls = slurm_stubs("5|NODE_FAIL\n6|NODE_FAIL\n7|COMPLETED", "5|PENDING|BeginTime|N/A")
    found = SlurmScheduler(tmp_path).states(["5", "6", "7"])
    assert calls() == ["sacct", "squeue"]
    assert (found["5"].state, found["5"].reason) == (JobState.PENDING, "BeginTime")
    assert (found["6"].state, found["6"].said) == (JobState.FAILED, "NODE_FAIL")  # not requeued
    assert found["7"].said == "COMPLETED"


# -- compiled data a requeued job may reuse ----------------------------------------------------
def write_arrow(path, rows: int, recorded: int | None = None) -> None:
    pa = pytest.importorskip("pyarrow")
    lines = {"counts": {"all": rows if recorded is None else recorded}}
    schema = pa.schema([("lines", pa.string())]).with_metadata({"lines": json.dumps(lines)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write(pa.record_batch([pa.array([f"line {i}" for i in range(rows)])], schema))


@pytest.fixture
def compiled(tmp_path):
    out, split = tmp_path / "compiled", tmp_path / "split"
    out.mkdir()
    split.mkdir()
    for part, rows in (("train", 8), ("validation", 2), ("test", 3)):
        write_arrow(out / f"{part}.arrow", rows)
        (split / f"{part}.txt").write_text(f"/gt/{part}.xml\n")
    return str(out), str(split)


def test_whole_compiled_data_is_reused(compiled, capsys):
    assert arrow_check.check(*compiled) == ""  # nothing recorded yet: compile, quietly
    assert arrow_check.main(["record", *compiled]) == 0
    assert arrow_check.check(*compiled) is None
    assert arrow_check.main(["check", *compiled]) == 0
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert events == [{"event": "compiled", "reused": False,
                       "lines": {"train": 8, "validation": 2, "test": 3}},
                      {"event": "compiled", "reused": True,
                       "lines": {"train": 8, "validation": 2, "test": 3}}]


def test_a_cut_arrow_is_compiled_again(compiled, capsys):
    arrow_check.record(*compiled)
    train = os.path.join(compiled[0], "train.arrow")
    data = open(train, "rb").read()
    open(train, "wb").write(data[: len(data) // 2])
    assert arrow_check.check(*compiled)
    assert arrow_check.main(["check", *compiled]) == 1
    assert "compiling again" in capsys.readouterr().out


def test_other_line_counts_or_a_changed_split_are_compiled_again(compiled):
    arrow_check.record(*compiled)
    write_arrow(os.path.join(compiled[0], "test.arrow"), 2)
    assert "test.arrow has 2 lines, 3 were compiled" in arrow_check.check(*compiled)
    arrow_check.record(*compiled)
    with open(os.path.join(compiled[1], "validation.txt"), "a") as handle:
        handle.write("/gt/more.xml\n")
    assert "validation split changed" in arrow_check.check(*compiled)


def test_an_arrow_that_contradicts_its_own_metadata_is_not_whole(compiled):
    arrow_check.record(*compiled)
    write_arrow(os.path.join(compiled[0], "train.arrow"), 8, recorded=9)
    assert "kraken recorded 9" in arrow_check.check(*compiled)
