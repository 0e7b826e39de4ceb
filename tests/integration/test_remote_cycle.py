"""The cycle from a "laptop" against the real cluster: SSH to the non-root user, real Slurm,
real ketos.

init → setup → push → submit transcription → status walks Slurm's states → logs -f → fetch a
loadable model; cancel; a broken base model FAILS with the ketos error line; version mismatch.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import Cli, load_with_kraken, sample_gt, set_project, slurm_over_ssh, ssh_workspace

pytestmark = pytest.mark.integration


@pytest.fixture
def remote(tmp_path, cluster, remote_root):
    name, path = remote_root
    ws = slurm_over_ssh(ssh_workspace(tmp_path, cluster, name), cluster)
    cli = Cli(ws)
    assert cli("init", str(ws)).exit_code == 0
    setup = cli("setup", "--json")
    assert setup.exit_code == 0, setup.output
    assert (
        json.loads(setup.stdout)["version"] == json.loads(cli("setup", "--json").stdout)["version"]
    )
    assert not json.loads(cli("setup", "--json").stdout)["changed"], "same version: nothing to do"
    cli("project", "new", "Demo")
    sample_gt.generate(ws / "ground_truth" / "Demo", pages=12, lines=4)
    set_project(
        ws,
        "Demo",
        transcription={"early_stopping": False, "epochs": 3},
        resources={"cpus": 2, "time": "00:20:00", "partition": "publicgpu"},
    )
    assert cli("push", "Demo").exit_code == 0
    return cli, ws, path


def cluster_user() -> str:
    from helpers import ENV_FILE

    return dict(line.split("=", 1) for line in ENV_FILE.read_text().split())["HPCTRAIN_TEST_USER"]


def poll(cli, job, until, timeout=900):
    seen, deadline = [], time.monotonic() + timeout
    while True:
        row = json.loads(cli("status", str(job), "--json").stdout)[0]
        if not seen or seen[-1] != row["state"]:
            seen.append(row["state"])
        if row["state"] in until:
            return seen, row
        assert time.monotonic() < deadline, seen
        time.sleep(0.3)


def test_remote_transcription_cycle(remote):
    cli, ws, path = remote
    submitted = cli("submit", "transcription", "Demo", "--no-base", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)["job"]
    # A second job asking for the same 2 CPUs must wait: its states walk
    # PENDING → RUNNING → COMPLETED.
    queued = json.loads(cli("submit", "transcription", "Demo", "--no-base", "--json").stdout)["job"]
    seen, _ = poll(cli, queued["id"], ("COMPLETED", "FAILED"))
    assert seen == ["PENDING", "RUNNING", "COMPLETED"], seen
    followed = cli("logs", str(job["id"]), "-f")
    assert "stage 2/2" in followed.stdout and "Character Accuracy" in followed.stdout
    seen, row = poll(cli, job["id"], ("COMPLETED", "FAILED"))
    assert row["state"] == "COMPLETED", (seen, row)
    assert row["epoch"] == 3 and row["best_metric"] == "val_accuracy"
    owner = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "User", "-j", job["scheduler_id"]],
        capture_output=True,
        text=True,
    )
    assert owner.stdout.strip() == cluster_user(), "submitted through sshd as the non-root user"
    fetched = json.loads(cli("fetch", "Demo", "--json").stdout)
    model = next(ws / f for f in fetched["files"] if f.endswith(".mlmodel"))
    assert load_with_kraken(model) == "recognition"
    assert (path / job["job_dir"] / "events.jsonl").stat().st_uid == (
        path / "Ground_Truth"
    ).stat().st_uid


def test_remote_cancel_and_failure(remote, tmp_path):
    cli, ws, path = remote
    set_project(ws, "Demo", transcription={"epochs": 500})
    job = json.loads(cli("submit", "transcription", "Demo", "--no-base", "--json").stdout)["job"]
    seen, _ = poll(cli, job["id"], ("RUNNING",), timeout=120)
    assert cli("cancel", str(job["id"])).exit_code == 0
    _, row = poll(cli, job["id"], ("CANCELLED",), timeout=60)
    assert row["state"] == "CANCELLED"

    broken = tmp_path / "broken.mlmodel"
    broken.write_bytes(b"not a model")
    assert cli("models", "push", str(broken)).exit_code == 0
    set_project(ws, "Demo", transcription={"epochs": 2})
    failing = json.loads(
        cli("submit", "transcription", "Demo", "--base", "broken", "--json").stdout
    )["job"]
    _, row = poll(cli, failing["id"], ("COMPLETED", "FAILED"))
    assert row["state"] == "FAILED" and row["error"], row
    assert f"job {failing['id']}: " in cli("status").stdout


def test_version_mismatch_is_refused(remote, monkeypatch):
    cli, ws, path = remote
    import hpctrain.backends.rpc

    monkeypatch.setattr(hpctrain.backends.rpc, "__version__", "0.0.1")
    result = cli("status")
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "version mismatch" in last and "0.0.1" in last and "hpctrain setup" in last


def test_workspace_template_overrides_reach_remote_jobs(remote):
    cli, ws, path = remote
    override = ws / "templates" / "kraken" / "compile.sh.j2"
    override.parent.mkdir(parents=True)
    override.write_text(
        '{% extends "packaged/kraken/compile.sh.j2" %}\n'
        "{% block environment %}{{ super() }}export FROM_MY_WORKSPACE=1\n"
        "{% endblock %}\n"
    )
    dry = cli("submit", "compile", "Demo", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "export FROM_MY_WORKSPACE=1\n" in dry.stdout
    job = json.loads(cli("submit", "compile", "Demo", "--json").stdout)["job"]
    assert "export FROM_MY_WORKSPACE=1\n" in (path / job["job_dir"] / "job.sh").read_text()
    cli("cancel", str(job["id"]))
