"""A sweep on the test cluster's real Slurm: a 2x2 grid is one Slurm job array (sacct shows
ARRAY_0..3), each task trains with real ketos in its own folder with its own events, all on the
same split lists, and status shows the sweep as one row; cancelling the sweep cancels the whole
array."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from helpers import set_project, use_slurm, wait_until_running

pytestmark = pytest.mark.integration
pytest.importorskip("kraken")

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


@pytest.fixture
def slurm_project(cli, workspace, demo_project):
    use_slurm(workspace)
    set_project(
        workspace,
        "Demo",
        transcription={"early_stopping": False, "epochs": 1},
        resources={"cpus": 1, "time": "00:20:00", "partition": "publicgpu"},
    )
    assert cli("push", "Demo").exit_code == 0
    return "Demo"


def sacct_tasks(array: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array],
                         capture_output=True, text=True).stdout
    return dict(line.split("|", 1) for line in out.split() if "|" in line)


def rows_until_final(cli, sweep_id: int, timeout: float = 900) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(cli("status", str(sweep_id), "--json").stdout)
        if all(row["state"] in FINAL for row in rows):
            return rows
        assert time.monotonic() < deadline, [(r["id"], r["state"]) for r in rows]
        time.sleep(0.5)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_2x2_sweep_runs_as_one_slurm_array(cli, workspace, slurm_project):
    result = cli("sweep", "transcription", "Demo", "--no-base", "--set",
                 "learning_rate=1e-4,3e-4", "--set", "augment=true,false", "--max-parallel", "2",
                 "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    jobs, sweep_id = done["jobs"], done["sweep"]
    array = jobs[0]["scheduler_id"].split("_")[0]
    assert [j["scheduler_id"] for j in jobs] == [f"{array}_{i}" for i in range(4)]
    assert "#SBATCH --array=0-3%2" in done["array_script"]
    table = cli("status").stdout
    assert len([line for line in table.splitlines() if " Demo " in line]) == 1
    assert f"{sweep_id} (sweep)" in table

    rows = rows_until_final(cli, sweep_id)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 4, [r["error"] for r in rows]
    assert [r["sweep"] for r in rows] == [sweep_id] * 4
    assert [r["sweep_values"] for r in rows] == [
        {"learning_rate": 1e-4, "augment": True}, {"learning_rate": 1e-4, "augment": False},
        {"learning_rate": 3e-4, "augment": True}, {"learning_rate": 3e-4, "augment": False}]
    assert all("char_accuracy" in r["test"] for r in rows)

    deadline = time.monotonic() + 60
    while sacct_tasks(array) != {f"{array}_{i}": "COMPLETED" for i in range(4)}:
        assert time.monotonic() < deadline, sacct_tasks(array)  # accounting may lag the end
        time.sleep(0.5)

    folders = [workspace / "cluster" / r["job_dir"] for r in rows]
    assert len(set(folders)) == 4
    for folder in folders:
        lines = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
        assert lines[-1]["event"] == "end" and lines[-1]["exit_code"] == 0
    for part in ("train", "validation", "test"):
        assert len({digest(f / "split" / f"{part}.txt") for f in folders}) == 1, part
    scripts = [(f / "job.sh").read_text() for f in folders]
    assert " -r 0.0003 " in scripts[2] and " -r 0.0003 " not in scripts[0]

    compared = cli("compare", str(sweep_id), "--json")
    assert compared.exit_code == 0, compared.output
    ranking = json.loads(compared.stdout)
    assert sorted(r["job"] for r in ranking["ranked"]) == [r["id"] for r in rows]
    assert ranking["other_test_pages"] == [] and ranking["unranked"] == []
    assert ranking["test_sha256"] == digest(folders[0] / "split" / "test.txt")
    scores = [r["score"] for r in ranking["ranked"]]
    assert scores == sorted(scores, reverse=True)

    table = cli("status").stdout
    assert "4/4 COMPLETED" in table
    assert len([line for line in table.splitlines() if " Demo " in line]) == 1


def test_cancelling_the_sweep_cancels_the_whole_array(cli, workspace, slurm_project):
    set_project(workspace, "Demo", transcription={"epochs": 500})
    done = json.loads(cli("sweep", "transcription", "Demo", "--no-base", "--set",
                          "learning_rate=1e-4,3e-4,1e-3", "--max-parallel", "1",
                          "--json").stdout)
    sweep_id, array = done["sweep"], done["jobs"][0]["scheduler_id"].split("_")[0]
    wait_until_running(cli, sweep_id)
    result = cli("cancel", str(sweep_id), "--sweep")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("CANCELLED") == 3
    deadline = time.monotonic() + 60
    while not all(state.startswith("CANCELLED") for state in sacct_tasks(array).values()):
        assert time.monotonic() < deadline, sacct_tasks(array)
        time.sleep(0.5)
    assert sacct_tasks(array)  # Slurm knows the array, every task of it cancelled
