"""The kraken fine-tuning cycle end to end on the embedded default, with a real ketos on CPU.

Nothing is faked: submitit's local executor runs hpctrain's runner, which runs the rendered
script, which runs ketos compile/train/test/segtrain on generated pages.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import set_project
from helpers import load_with_kraken

pytestmark = pytest.mark.integration
pytest.importorskip("kraken")

JOB_TIMEOUT = 900  # seconds; a 3-epoch job takes about 30 s on 2 cores


def status_of(cli, job_id) -> dict:
    result = cli("status", str(job_id), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


def wait_for(cli, job_id, states=("COMPLETED", "FAILED", "CANCELLED"), timeout=JOB_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = status_of(cli, job_id)
        if row["state"] in states:
            return row
        assert time.monotonic() < deadline, f"job {job_id} still {row['state']} after {timeout} s"
        time.sleep(
            0.5
        )  # polling interval, not synchronisation: the loop ends on the observed state


def submit(cli, *args) -> int:
    result = cli("submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["job"]["id"]


@pytest.fixture
def trained_project(cli, workspace, demo_project):
    set_project(
        workspace,
        "Demo",
        transcription={"early_stopping": False, "epochs": 3},
        segmentation={"early_stopping": False, "epochs": 2},
        resources={"cpus": 2, "time": "00:30:00"},
    )
    assert cli("push", "Demo").exit_code == 0
    return "Demo"


def test_transcription_cycle_then_fine_tune_from_the_result(cli, workspace, trained_project):
    first = submit(cli, "transcription", "Demo", "--no-base")
    row = wait_for(cli, first)
    assert row["state"] == "COMPLETED", row
    assert row["epoch"] == 3 and row["total_epochs"] == 3
    assert row["best_metric"] == "val_accuracy" and row["best_value"] is not None
    assert "char_accuracy" in row["test"], "ketos test of the best model on the held-out pages"

    table = cli("status").stdout
    assert "COMPLETED" in table and "3/3" in table and "val_accuracy" in table

    fetched = cli("fetch", "Demo", "--json")
    assert fetched.exit_code == 0, fetched.output
    files = json.loads(fetched.stdout)["files"]
    model = next(workspace / f for f in files if f.endswith(".mlmodel"))
    assert {"events.jsonl", "job.log", "job.sh"} <= {f.rsplit("/", 1)[-1] for f in files}
    assert model.parent == workspace / "models" / "finetuned" / "Demo" / f"job{first}"
    assert load_with_kraken(model) == "recognition"

    assert cli("models", "push", str(model), "--name", "demo_v1").exit_code == 0
    second = submit(cli, "transcription", "Demo", "--base", "demo_v1")
    followed = cli("logs", str(second), "-f")  # returns only when the job has ended
    assert followed.exit_code == 0
    assert "stage 2/2" in followed.stdout and "Character Accuracy" in followed.stdout
    row = wait_for(cli, second)
    assert row["state"] == "COMPLETED", row
    assert row["base"] == "demo_v1" and row["epoch"] == 3
    script = (workspace / "cluster" / row["job_dir"] / "job.sh").read_text()
    assert "Model_de_base/demo_v1.mlmodel --resize new" in script

    split = workspace / "cluster" / row["job_dir"] / "split"
    first_split = workspace / "models" / "finetuned" / "Demo" / f"job{first}" / "split"
    assert (split / "test.txt").read_text() == (first_split / "test.txt").read_text(), (
        "seeded split"
    )
    assert cli("logs", str(second)).stdout == followed.stdout


def test_segmentation_from_scratch(cli, workspace, trained_project):
    job = submit(cli, "segmentation", "Demo", "--no-base")
    row = wait_for(cli, job)
    assert row["state"] == "COMPLETED", row
    assert row["best_metric"] == "val_mean_iu" and row["epoch"] == 2
    fetched = json.loads(cli("fetch", str(job), "--json").stdout)
    model = next(workspace / f for f in fetched["files"] if f.endswith(".mlmodel"))
    assert load_with_kraken(model) == "segmentation"


def test_broken_base_model_fails_with_the_ketos_error_line(
    cli, workspace, trained_project, tmp_path
):
    broken = tmp_path / "broken.mlmodel"
    broken.write_bytes(b"this is not a model")
    assert cli("models", "push", str(broken)).exit_code == 0
    job = submit(cli, "transcription", "Demo", "--base", "broken")
    row = wait_for(cli, job)
    assert row["state"] == "FAILED"
    assert row["error"] and ("Error" in row["error"] or "Exception" in row["error"]), row
    shown = cli("status")
    assert f"job {job}: " in shown.stdout
    waited = cli("wait", str(job))
    assert waited.exit_code != 0 and "ended FAILED" in waited.stderr


def test_cancel_stops_a_running_training(cli, workspace, trained_project):
    set_project(workspace, "Demo", transcription={"epochs": 500})
    job = submit(cli, "transcription", "Demo", "--no-base")
    row = wait_for(cli, job, states=("RUNNING",), timeout=120)
    deadline = time.monotonic() + 300
    while status_of(cli, job)["step"] != "train":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    events = (workspace / "cluster" / row["job_dir"] / "events.jsonl").read_text().splitlines()
    pgid = next(json.loads(e)["pgid"] for e in events if '"process"' in e)
    result = cli("cancel", str(job))
    assert result.exit_code == 0 and "CANCELLED" in result.stdout
    assert status_of(cli, job)["state"] == "CANCELLED"
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "ketos still running after cancel"
        time.sleep(0.2)
    again = cli("cancel", str(job))
    assert again.exit_code != 0 and "already CANCELLED" in again.stderr


def test_compile_job_then_clean_frees_the_arrows_and_logs(cli, workspace, trained_project):
    job = submit(cli, "compile", "Demo")
    row = wait_for(cli, job)
    assert row["state"] == "COMPLETED", row
    compiled = workspace / "cluster" / "GT_compile" / "Demo" / f"job{job}"
    arrows = sorted(p.name for p in compiled.glob("*.arrow"))
    assert arrows == ["test.arrow", "train.arrow", "validation.arrow"]
    assert all((compiled / a).stat().st_size > 0 for a in arrows)
    log = workspace / "cluster" / row["job_dir"] / "job.log"
    assert "Output file written to" in log.read_text()
    cleaned = cli("clean", "Demo", "--yes", "--json")
    assert cleaned.exit_code == 0, cleaned.output
    assert json.loads(cleaned.stdout)["removed"] >= 4
    assert not list(compiled.glob("*.arrow")) and not log.exists()
    assert (workspace / "cluster" / row["job_dir"] / "job.sh").exists(), (
        "scripts and events are kept"
    )
