"""Notifications from real Slurm jobs of the test cluster to a webhook receiver this test starts
on loopback (the compute node is this machine, so the runner reaches it): one delivery per
notice, from the node; and, with the receiver down while the job ends, from a later `status`,
still once. The webhook's secret never lands in the job's files."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import set_project, use_slurm
from test_slurm import states_until_final

pytestmark = pytest.mark.integration
pytest.importorskip("torch")  # the job runs its script with torchrun

SECRET = "s3cret-topic-7f3a"
SCRIPT = """import sys
print("##hpctrain " + '{"event": "metrics", "epoch": 1, "total": 1, "val_auc": 0.5}', flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


class Receiver:
    """A webhook receiver on 127.0.0.1:`port` that keeps every body it got."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def ids(self) -> Counter:
        return Counter(body["id"] for body in self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def notifying_project(cli, workspace, tmp_path):
    """Project 'alerts' on Slurm: one alert that fires at epoch 1; a script that reports it."""
    use_slurm(workspace)
    assert cli("project", "new", "alerts").exit_code == 0
    script = tmp_path / "report.py"
    script.write_text(SCRIPT)

    def with_webhook(port: int):
        set_project(workspace, "alerts",
                    resources={"cpus": 1, "time": "00:05:00", "partition": "publicgpu"},
                    alerts=[{"metric": "val_auc", "min": 0.9}],
                    notify={"url": f"http://127.0.0.1:{port}/hook/{SECRET}", "format": "json"})
        return script

    return with_webhook


def submit(cli, script, *args) -> dict:
    done = cli("submit", "torchrun", str(script), "--project", "alerts", "--nproc-per-node", "1",
               "--json", "--", *args)
    assert done.exit_code == 0, done.output
    assert SECRET not in done.output
    return json.loads(done.stdout)["job"]


def secret_free(workspace, job) -> None:
    """Nothing in the job's folder but job.json (mode 0600) holds the webhook's secret."""
    folder = workspace / "cluster" / job["job_dir"]
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "job.json":
            assert SECRET.encode() not in path.read_bytes(), path
    for name in ("job.log", "events.jsonl", "job.sh"):
        assert (folder / name).is_file()
    assert (folder / "job.json").stat().st_mode & 0o777 == 0o600


def test_a_slurm_job_tells_its_alert_and_its_end_once_from_the_node(cli, workspace,
                                                                    notifying_project):
    receiver = Receiver()
    try:
        job = submit(cli, notifying_project(receiver.port))
        seen = states_until_final(cli, job["id"], timeout=600)
        assert seen[-1] == "COMPLETED", (seen, cli("logs", str(job["id"])).stdout[-3000:])
        for _ in range(2):
            assert cli("status").exit_code == 0
    finally:
        receiver.close()
    uid = json.loads((workspace / "cluster" / job["job_dir"] / "job.json").read_text())[
        "notify"]["job"]["uid"]
    assert receiver.ids() == {f"job{job['id']}-{uid}:alert:val_auc:1": 1,
                              f"job{job['id']}-{uid}:end": 1}
    end = next(b for b in receiver.bodies if b["event"] == "end")
    assert (end["job"], end["project"], end["kind"], end["state"], end["exit_code"]) == (
        job["id"], "alerts", "torchrun", "COMPLETED", 0)
    assert end["message"].startswith(f"hpctrain job {job['id']} COMPLETED (alerts torchrun): in ")
    alert = next(b for b in receiver.bodies if b["event"] == "alert")
    assert (alert["metric"], alert["value"], alert["min"], alert["epoch"]) == ("val_auc", 0.5,
                                                                               0.9, 1)
    events = (workspace / "cluster" / job["job_dir"] / "events.jsonl").read_text()
    assert "notify_failed" not in events
    secret_free(workspace, job)


def test_with_the_receiver_down_a_later_status_delivers_the_end_once(cli, workspace,
                                                                    notifying_project):
    port = free_port()  # nobody listens yet: the runner's POST is refused
    job = submit(cli, notifying_project(port), "1")  # the script fails
    seen = states_until_final(cli, job["id"], timeout=600)
    assert seen[-1] == "FAILED", seen
    folder = workspace / "cluster" / job["job_dir"]
    failed = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()
              if '"notify_failed"' in line]
    assert len(failed) == 1 and failed[0]["to"] == f"http://127.0.0.1:{port}/…"

    down = cli("status")
    assert down.exit_code == 0
    warnings = [line for line in down.stderr.splitlines() if "not delivered" in line]
    assert warnings == [
        f"hpctrain: warning: job {job['id']}: 2 notification(s) (alert:val_auc:1, end) not "
        f"delivered to http://127.0.0.1:{port}/…: {warnings[0].split(': ', 4)[-1]}"]
    assert "refused" in warnings[0].lower() and SECRET not in down.output

    receiver = Receiver(port)
    try:
        up = cli("status")
        assert up.exit_code == 0 and "not delivered" not in up.stderr
        assert cli("status").exit_code == 0
    finally:
        receiver.close()
    uid = json.loads((folder / "job.json").read_text())["notify"]["job"]["uid"]
    assert receiver.ids() == {f"job{job['id']}-{uid}:alert:val_auc:1": 1,
                              f"job{job['id']}-{uid}:end": 1}
    end = next(b for b in receiver.bodies if b["event"] == "end")
    assert end["state"] == "FAILED" and end["exit_code"] != 0 and end["error"]
    secret_free(workspace, job)
