"""Delivering notifications (runtime/notify.py) to a real HTTP server on loopback: each notice
once, a failed one sent by a later `status`, a damaged record that loses no delivery, the lock
that keeps two senders apart, the runner's part, `status`, `cancel`, `submit` (job.json 0600,
no URL anywhere else) and `hpctrain notify test`."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import socket
import stat
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.cluster.scheduler import Live
from hpctrain.core.config import Tree
from hpctrain.core.webhook import Webhook
from hpctrain.runtime import events, notify

SECRET = "t0ken-9f8e7d"


class Hook:
    """A webhook receiver on 127.0.0.1: what it got, and what it answers."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.tries = 0
        self.status, self.delay = 200, 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                hook.tries += 1
                time.sleep(hook.delay)  # a slow server, not synchronisation
                if hook.status < 300:
                    hook.bodies.append(json.loads(data))
                    hook.paths.append(self.path)
                try:
                    self.send_response(hook.status)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except BrokenPipeError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{SECRET}"

    def ids(self) -> Counter:
        return Counter(body["id"] for body in self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    receiver = Hook()
    yield receiver
    receiver.close()


def closed_port() -> int:
    """A loopback port nobody listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def job_of(url: str, **options) -> notify.JobNotify:
    return notify.JobNotify(Webhook(url, **options), 1, "Demo", "transcription", "ab12cd34")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seconds_pass(folder: Path, seconds: float) -> None:
    """As if the record's failed tries had happened `seconds` earlier."""
    entries = lines(folder / "notifications.jsonl")
    for entry in entries:
        if "failed" in entry:
            entry["failed"] -= seconds
    (folder / "notifications.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


START = {"event": "start", "t": 100.0}
END_OK = {"event": "end", "exit_code": 0, "error": None, "t": 160.0}
ALERT = {"event": "alert", "rule": 0, "metric": "val_auc", "value": 0.5, "min": 0.9,
         "epoch": 1, "message": "val_auc 0.5 < 0.9 at epoch 1", "t": 120.0}


def a_job_folder(folder: Path, *found: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in found))
    (folder / "notifications.jsonl").write_text("")
    return folder


# -- the delivery record -----------------------------------------------------------------------
def test_each_notice_is_delivered_once_however_often_asked(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, ALERT, END_OK)
    job = job_of(hook.url)
    first = notify.deliver(folder, job)
    assert first.sent == ["alert:val_auc:1", "end"] and first.warning("x") is None
    for _ in range(3):
        assert notify.deliver(folder, job, final=True).sent == []
    assert hook.ids() == {"job1-ab12cd34:alert:val_auc:1": 1, "job1-ab12cd34:end": 1}
    assert hook.paths == [f"/hook/{SECRET}"] * 2
    record = lines(folder / "notifications.jsonl")
    assert [(r["format"], r.get("key"), r.get("status")) for r in record] == [
        (1, "alert:val_auc:1", 200), (1, "end", 200), (1, None, None)]
    assert "settled" in record[-1]


def test_a_notice_the_server_refused_is_sent_by_a_later_pass_once(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, END_OK)
    job = job_of(hook.url)
    hook.status = 503
    refused = notify.deliver(folder, job)
    assert refused.left == ["end"] and refused.reason == "HTTP 503 Service Unavailable"
    warning = refused.warning(job.webhook.shown)
    assert warning == ("1 notification(s) (end) not delivered to http://127.0.0.1:"
                       f"{hook.port}/…: HTTP 503 Service Unavailable; tried again 10 s after "
                       "the last try")
    failed = lines(folder / "notifications.jsonl")
    assert failed[0]["key"] == "end" and "failed" in failed[0] and failed[0]["retry_after"] == 10
    hook.status = 200
    soon = notify.deliver(folder, job)  # a server that answered with an error: not at once
    assert soon.warning(job.webhook.shown) == warning and hook.tries == 1  # same words: once
    seconds_pass(folder, 10)
    assert notify.deliver(folder, job).sent == ["end"]
    assert notify.deliver(folder, job).sent == []
    assert hook.ids() == {"job1-ab12cd34:end": 1} and hook.tries == 2


def test_a_server_that_is_down_is_a_reason_without_the_url(tmp_path):
    folder = a_job_folder(tmp_path / "job", START, END_OK)
    job = job_of(f"http://127.0.0.1:{closed_port()}/hook/{SECRET}")
    outcome = notify.deliver(folder, job, timeout=5)
    assert outcome.left == ["end"] and "refused" in outcome.reason.lower()
    assert SECRET not in outcome.warning(job.webhook.shown)
    assert (folder / "notifications.jsonl").read_text() == ""  # tried again at once: no line
    assert notify.deliver(folder, job, timeout=5).left == ["end"]


def test_after_a_timeout_the_next_try_waits(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, END_OK)
    job = job_of(hook.url)
    hook.delay = 1.0
    slow = notify.deliver(folder, job, timeout=0.2)
    assert slow.left == ["end"] and slow.reason == "no answer within 0.2 s"
    hook.delay = 0.0
    waiting = notify.deliver(folder, job, timeout=5)
    assert waiting.warning("h") == ("1 notification(s) (end) not delivered to h: no answer "
                                    "within 0.2 s; tried again 60 s after the last try")
    assert hook.tries == 1
    seconds_pass(folder, 60)
    assert notify.deliver(folder, job, timeout=5).sent == ["end"]
    assert hook.ids() == {"job1-ab12cd34:end": 1}  # the slow one's answer came after its timeout


def test_damaged_record_lines_are_skipped_and_no_delivery_is_lost(tmp_path, hook):
    second = {**ALERT, "rule": 1, "metric": "val_loss"}
    folder = a_job_folder(tmp_path / "job", START, ALERT, second)
    record = folder / "notifications.jsonl"
    record.write_bytes(
        b'{"format":1,"key":"alert:val_auc:1","delivered":1,"status":200}\n'
        b"\xff\xfe not a line\n[1, 2]\n{\"format\": 1}\n"
        b'{"format":1,"key":"alert:val_loss:1","delivered":2,"status":200}\n'
        b'{"format":1,"key":"end","deliv')  # a writer that died mid-line
    assert notify.read_record(folder).damaged == 4
    assert notify.deliver(folder, job_of(hook.url)).sent == []
    with open(folder / "events.jsonl", "a") as sink:
        events.append(sink, END_OK)
    assert notify.deliver(folder, job_of(hook.url)).sent == ["end"]
    assert "end" in notify.read_record(folder).delivered  # on a line of its own
    assert notify.deliver(folder, job_of(hook.url)).sent == []
    assert hook.ids() == {"job1-ab12cd34:end": 1}


def test_a_record_that_cannot_be_read_sends_nothing(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, END_OK)
    (folder / "notifications.jsonl").unlink()
    (folder / "notifications.jsonl").mkdir()
    outcome = notify.deliver(folder, job_of(hook.url))
    assert outcome.sent == [] and "notifications.jsonl cannot be read" in outcome.problem
    assert hook.tries == 0


# -- the lock ------------------------------------------------------------------------------------
def test_while_another_process_holds_the_lock_nothing_is_sent(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, END_OK)
    job = job_of(hook.url)
    fd = os.open(folder / ".notifications.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = notify.deliver(folder, job)
        assert busy.busy and busy.sent == [] and busy.warning("x") is None
        assert notify.from_status(folder, {"notify": job.to_settings()}, True, {}) == []
    finally:
        os.close(fd)
    assert notify.deliver(folder, job).sent == ["end"]
    assert hook.tries == 1


def _deliver_in_child(folder: str, settings: dict, barrier) -> None:
    barrier.wait()
    notify.deliver(Path(folder), notify.JobNotify.from_settings(settings), final=True,
                   lock_wait=20)


def test_processes_that_deliver_at_once_send_each_notice_once(tmp_path, hook):
    folder = a_job_folder(tmp_path / "job", START, ALERT, END_OK)
    settings = {"notify": job_of(hook.url).to_settings()}
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    children = [context.Process(target=_deliver_in_child, args=(str(folder), settings, barrier))
                for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert hook.ids() == {"job1-ab12cd34:alert:val_auc:1": 1, "job1-ab12cd34:end": 1}


# -- the runner ----------------------------------------------------------------------------------
SCRIPT = """echo 'epoch one'
echo '##hpctrain {"event": "metrics", "epoch": 1, "val_auc": 0.5}'
echo '##hpctrain {"event": "metrics", "epoch": 2, "val_auc": 0.4}'
echo 'boom' >&2
exit 3
"""


def runner_job(folder: Path, url: str, **options) -> notify.JobNotify:
    job = job_of(url, **options)
    folder.mkdir(parents=True)
    (folder / "job.sh").write_text(SCRIPT)
    (folder / "job.json").write_text(json.dumps({
        "monitor": "val_auc", "alerts": [{"metric": "val_auc", "min": 0.9}],
        "notify": job.to_settings()}))
    (folder / "notifications.jsonl").write_text("")
    return job


def run(folder: Path) -> None:
    from hpctrain.runtime.runner import JobFailed, JobRunner

    with pytest.raises(JobFailed):
        JobRunner(str(folder))()


def test_the_runner_tells_an_alert_as_it_opens_and_the_end(tmp_path, hook):
    folder = tmp_path / "job"
    runner_job(folder, hook.url)
    run(folder)
    assert [(b["event"], b["state"]) for b in hook.bodies] == [("alert", "ALERT"),
                                                               ("end", "FAILED")]
    assert hook.bodies[0]["message"] == ("hpctrain job 1 ALERT (Demo transcription): "
                                         "val_auc 0.5 < 0.9 at epoch 1")
    assert hook.bodies[1]["error"] == "job script exited with code 3"
    for name in ("events.jsonl", "job.log", "job.sh", "notifications.jsonl"):
        assert SECRET not in (folder / name).read_text()


def test_a_node_that_cannot_reach_the_webhook_says_so_once_and_status_sends_later(tmp_path):
    port = closed_port()
    root = tmp_path / "root"
    side = ClusterSide(root, Tree(), "local")
    side.ensure_tree()
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", None,
                              lambda i: f"Repertoire_model_finetune/Demo/job{i}-transcription", {})
        registry.update(record.id, scheduler_id="1")
    folder = root / record.job_dir
    runner_job(folder, f"http://127.0.0.1:{port}/hook/{SECRET}")
    run(folder)
    found = list(events.read(folder / "events.jsonl"))
    failed = [e for e in found if e["event"] == "notify_failed"]
    assert len(failed) == 1 and failed[0]["to"] == f"http://127.0.0.1:{port}/…"
    assert "refused" in failed[0]["reason"].lower() and failed[0]["keys"] == ["alert:val_auc:1"]
    assert found[-1]["event"] == "end"  # the runner did not try again after it

    (row,) = side.status().rows
    assert row.state == "FAILED"
    assert [w for w in row.warnings if "not delivered" in w] == [
        f"2 notification(s) (alert:val_auc:1, end) not delivered to http://127.0.0.1:{port}/…: "
        f"{failed[0]['reason'].split(';')[0]}; the next 'hpctrain status' tries again"]
    receiver = Hook(port)
    try:
        assert side.status().rows[0].warnings == []
        assert side.status().rows[0].warnings == []
        assert receiver.ids() == {"job1-ab12cd34:alert:val_auc:1": 1, "job1-ab12cd34:end": 1}
    finally:
        receiver.close()


def test_from_node_false_leaves_sending_to_status(tmp_path, hook):
    folder = tmp_path / "job"
    runner_job(folder, hook.url, from_node=False)
    run(folder)
    assert hook.tries == 0
    assert not [e for e in events.read(folder / "events.jsonl") if e["event"] == "notify_failed"]


# -- status, submit, cancel, notify test: as a user does -----------------------------------------
class FakeSlurm:
    """A scheduler that queues nothing: the job stays PENDING until cancelled."""

    name = "fake"
    cancelled: list = []

    def __init__(self, *args):
        pass

    def submit(self, job_dir, time_limit):
        return "4242"

    def states(self, ids):
        return {i: Live(JobState.PENDING) for i in ids}

    shared = False  # asked at every status: no polling.json (cluster/polling.py)
    accounting_off = None

    def accounting(self, ids):
        return {}

    def cancel(self, scheduler_id, job_dir):
        FakeSlurm.cancelled.append(scheduler_id)


@pytest.fixture
def notifying(workspace, hook, monkeypatch, tmp_path):
    """The workspace's profile sends to `hook`; jobs are queued by FakeSlurm."""
    monkeypatch.setattr("hpctrain.cluster.ops.scheduler_for", FakeSlurm)
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace(
        "    root: cluster", f"    root: cluster\n    notify: {{url: {hook.url}, on: [end]}}"))
    script = tmp_path / "train.py"
    script.write_text("print('training')\n")
    return script


def test_submit_keeps_the_url_in_job_json_only_readable_by_its_owner(cli, workspace, hook,
                                                                     notifying):
    done = cli("submit", "torchrun", str(notifying), "--json")
    assert done.exit_code == 0, done.output
    assert SECRET not in done.output
    folder = workspace / "cluster" / json.loads(done.stdout)["job"]["job_dir"]
    settings = json.loads((folder / "job.json").read_text())
    assert settings["notify"]["url"] == hook.url and settings["notify"]["on"] == ["end"]
    assert settings["notify"]["job"]["id"] == 1 and len(settings["notify"]["job"]["uid"]) == 8
    assert stat.S_IMODE((folder / "job.json").stat().st_mode) == 0o600
    assert (folder / "notifications.jsonl").read_text() == ""
    for path in [folder / "job.sh", *(workspace / "cluster" / ".hpctrain").rglob("*.json")]:
        assert SECRET not in path.read_text(), path
    shown = cli("status", "--json")
    assert shown.exit_code == 0 and SECRET not in shown.output and hook.tries == 0


def test_a_cancel_is_told_once_as_cancelled(cli, workspace, hook, notifying):
    job = json.loads(cli("submit", "torchrun", str(notifying), "--json").stdout)["job"]
    done = cli("cancel", str(job["id"]))
    assert done.exit_code == 0 and "CANCELLED" in done.stdout, done.output
    assert [(b["state"], b["message"]) for b in hook.bodies] == [
        ("CANCELLED", "hpctrain job 1 CANCELLED (train torchrun): cancelled with 'hpctrain "
                      "cancel'")]
    folder = workspace / "cluster" / job["job_dir"]
    with open(folder / "events.jsonl", "a") as sink:  # the killed runner's own end, late
        events.append(sink, START)
        events.append(sink, {"event": "end", "exit_code": -15, "error": "killed"})
    assert cli("status").exit_code == 0
    uid = json.loads((folder / "job.json").read_text())["notify"]["job"]["uid"]
    assert hook.ids() == {f"job1-{uid}:end": 1}


def test_a_cancel_that_fails_takes_its_note_back(cli, workspace, hook, notifying, monkeypatch):
    from hpctrain.core.errors import SchedulerError

    job = json.loads(cli("submit", "torchrun", str(notifying), "--json").stdout)["job"]

    def refuse(self, scheduler_id, job_dir):
        raise SchedulerError("scancel failed: try again")

    monkeypatch.setattr(FakeSlurm, "cancel", refuse)
    assert cli("cancel", str(job["id"])).exit_code == 1
    folder = workspace / "cluster" / job["job_dir"]
    assert notify.read_record(folder).noted == {}
    with open(folder / "events.jsonl", "a") as sink:
        events.append(sink, START)
        events.append(sink, END_OK)
    assert cli("status").exit_code == 0
    assert [b["state"] for b in hook.bodies] == ["COMPLETED"]


def test_status_tries_a_failing_webhook_once_per_pass_and_warns_for_each_job(tmp_path, hook,
                                                                            monkeypatch):
    monkeypatch.setitem(notify.RETRY_AFTER, "answer", 0.0)  # the next pass tries again
    root = tmp_path / "root"
    side = ClusterSide(root, Tree(), "local")
    side.ensure_tree()
    for _ in range(3):
        with Registry(root) as registry:
            record = registry.add("transcription", "Demo", None, lambda i: f"jobs/job{i}", {})
            registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
        folder = a_job_folder(root / record.job_dir, START, END_OK)
        job = notify.JobNotify(Webhook(hook.url), record.id, "Demo", "transcription", "u")
        (folder / "job.json").write_text(json.dumps({"notify": job.to_settings()}))
    hook.status = 500
    report = side.status()
    assert hook.tries == 1
    assert [len(row.warnings) for row in report.rows] == [1, 1, 1]
    assert all("HTTP 500" in row.warnings[0] and SECRET not in row.warnings[0]
               for row in report.rows)
    hook.status = 200
    assert [row.warnings for row in side.status().rows] == [[], [], []]
    assert sorted(hook.ids()) == ["job1-u:end", "job2-u:end", "job3-u:end"]
    assert all(notify.read_record(root / f"jobs/job{i}").settled for i in (1, 2, 3))


def test_notify_test_sends_one_message_through_the_cluster_side(cli, workspace, hook,
                                                                notifying):
    sent = cli("notify", "test")
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.startswith(f"sent a test notification to http://127.0.0.1:{hook.port}/… ")
    assert sent.stdout.rstrip().endswith("(HTTP 200)") and SECRET not in sent.output
    (body,) = hook.bodies
    assert body["event"] == "test" and body["state"] == "TEST"
    hook.status = 404
    failed = cli("notify", "test", "--json")
    assert failed.exit_code == 1 and SECRET not in failed.output
    assert failed.stderr.strip() == (
        f"hpctrain: error: the test notification to http://127.0.0.1:{hook.port}/… from "
        f"{socket.gethostname()} failed: HTTP 404 Not Found; check the notify url and that this "
        "machine may reach it")


def test_notify_test_without_a_setting_says_where_to_put_one(cli):
    failed = cli("notify", "test")
    assert failed.exit_code == 1
    assert failed.stderr.strip() == ("hpctrain: error: no notify setting for this profile: add "
                                     "'notify: https://...' to profile 'local' in hpctrain.yaml")


def test_notify_test_crosses_the_rpc_like_every_operation(tmp_path, hook):
    from hpctrain.backends.rpc import RemoteCluster, serve
    from hpctrain.core.errors import HpctrainError

    class Loopback:
        def run(self, argv, input=None, timeout=None):
            return 0, json.dumps(serve(input)), ""

    root = tmp_path / "root"
    proxy = RemoteCluster(Loopback(), str(root), Tree(), "local")
    setting = Webhook(hook.url, "slack").to_json()
    assert proxy.notify_test(setting) == {"to": f"http://127.0.0.1:{hook.port}/…", "status": 200,
                                          "sent_from": socket.gethostname()}
    assert hook.bodies[0]["text"].startswith("hpctrain test notification: sent from ")
    with pytest.raises(HpctrainError, match="must start with https:// or http://") as refused:
        proxy.notify_test({**setting, "url": f"file:///{SECRET}"})
    assert SECRET not in str(refused.value)
