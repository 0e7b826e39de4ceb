"""Job notifications: which of a job's events its webhook hears of, the body each format gets,
sending it (urllib: the cluster side needs nothing beyond the standard library), and the
delivery record that makes each notice go out once and never be lost.

Owns `notifications.jsonl` in the job folder, append-only, one JSON object a line, each with
`"format": 1` (RECORD_VERSION) and one of:

    {"key": "end", "delivered": T, "status": 200}             the webhook accepted it (2xx)
    {"key": "end", "failed": T, "reason": "...", "retry_after": 60} a try that timed out or
                                                             had an error answer (redacted)
    {"key": "end", "noted": T, "notice": {...}}                a notice no event says (a cancel)
    {"key": "end", "withdrawn": T}                             that note taken back
    {"settled": T}                                             over: nothing left to send

It is created empty at submission for a job with a webhook (its presence tells `status` that
the job has one). A damaged line is skipped and the lines after it still count; a record that
cannot be read at all stops sending (never twice beats never late).

Keys: `end` (the job's one end: COMPLETED, FAILED, TIMEOUT, or CANCELLED by `hpctrain cancel`)
and `alert:METRIC:N` (the N-th time an alert on METRIC opened). Every body carries
`id` = `jobN-UID:KEY` (UID drawn at submission), so a receiver can drop a duplicate.

Sending happens under an exclusive flock of `.notifications.lock` in the job folder: lock, read
the record, send what is due and not delivered, record each after its 2xx, unlock. The runner
on the compute node (when `from_node`) and `status`/`wait` on a login node therefore never both
send one notice. A failed send is tried again by the next `status` or `wait` poll: at once after
a refused or unreachable connection (it costs milliseconds, and nothing is recorded), and after
RETRY_AFTER seconds when the try timed out or the server answered with an error (a `failed`
line says so), so that `wait`'s polling keeps its pace and does not hammer a failing server.
Only a crash between a 2xx and its record line sends a notice twice.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from ..core.layout import EVENTS, NOTIFICATIONS, NOTIFY_LOCK
from ..core.webhook import Webhook, scrub, webhook_from_json
from . import events

RECORD_VERSION = 1
TIMEOUT = 10.0  # seconds a webhook has to answer
RETRY_AFTER = {"timeout": 60.0, "answer": 10.0}  # seconds before trying again after these
NODE_LOCK_WAIT = 30.0  # how long the runner waits for a `status` that is sending
MAX_RECORD = 4 << 20  # bytes; a record is a few hundred
FAILED_STATES = ("FAILED", "TIMEOUT")


@dataclass(frozen=True)
class JobNotify:
    """A job's webhook and what its bodies say of the job (job.json's `notify`)."""

    webhook: Webhook
    job: int | None
    project: str
    kind: str
    uid: str

    @classmethod
    def from_settings(cls, settings: dict) -> "JobNotify | None":
        """From job.json's settings; None without a webhook; ValueError if damaged."""
        data = settings.get("notify")
        if not data:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
            raise ValueError("damaged ('notify' is not a webhook setting)")
        job = data["job"]
        try:
            return cls(webhook_from_json(data), job.get("id"), str(job.get("project", "")),
                       str(job.get("kind", "")), str(job.get("uid", "")))
        except Exception as e:  # a ConfigError's words never hold the URL
            raise ValueError(f"damaged ({e})") from None

    def to_settings(self) -> dict:
        """job.json's `notify`: the webhook, and the job it speaks of."""
        return {**self.webhook.to_json(), "job": {"id": self.job, "project": self.project,
                                                  "kind": self.kind, "uid": self.uid}}

    def notice_id(self, key: str) -> str:
        return f"job{self.job}-{self.uid}:{key}"


@dataclass(frozen=True)
class Notice:
    """One thing to tell the webhook: a job's end or an alert."""

    key: str  # "end", "alert:val_loss:1": what the delivery record counts
    event: str  # end, alert, test
    state: str  # COMPLETED, FAILED, TIMEOUT, CANCELLED; ALERT; TEST
    title: str  # "hpctrain job 3 COMPLETED"
    text: str  # what happened, in words
    time: float
    details: dict = field(default_factory=dict)  # exit_code, error, metric, value, epoch, ...

    def to_json(self) -> dict:
        return asdict(self)


# -- which notices a job's events call for ---------------------------------------------------
def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def end_notice(job: JobNotify, end: dict, progress: events.Progress) -> Notice:
    """The notice of the runner's `end` event, or of the one `status` wrote for a silent end."""
    said = end.get("scheduler_state")
    if end.get("exit_code") == 0:
        state, parts = "COMPLETED", []
        if progress.started and end.get("t"):
            parts.append(f"in {_elapsed(end['t'] - progress.started)}")
        if progress.best_metric and progress.best_value is not None:
            at = f" (epoch {progress.best_epoch})" if progress.best_epoch else ""
            parts.append(f"best {progress.best_metric} {progress.best_value:.4f}{at}")
        if isinstance(progress.test.get("char_accuracy"), (int, float)):
            parts.append(f"test accuracy {progress.test['char_accuracy']:.2%}")
        text = ", ".join(parts) or "completed"
    else:
        state = "TIMEOUT" if said == "TIMEOUT" else "FAILED"
        text = end.get("error") or f"exit code {end.get('exit_code')}"
    details = {"exit_code": end.get("exit_code"), "error": end.get("error"),
               "scheduler_state": said, "best_metric": progress.best_metric,
               "best_value": progress.best_value, "best_epoch": progress.best_epoch,
               "test": progress.test or None}
    return Notice("end", "end", state, f"hpctrain job {job.job} {state}", text,
                  end.get("t") or time.time(), {k: v for k, v in details.items() if v is not None})


def cancel_notice(job: JobNotify, at: float) -> Notice:
    return Notice("end", "end", "CANCELLED", f"hpctrain job {job.job} CANCELLED",
                  "cancelled with 'hpctrain cancel'", at)


def alert_notice(job: JobNotify, alert: dict, number: int) -> Notice:
    metric = str(alert.get("metric"))
    details = {k: alert.get(k) for k in ("metric", "value", "min", "max", "epoch")}
    return Notice(f"alert:{metric}:{number}", "alert", "ALERT", f"hpctrain job {job.job} ALERT",
                  str(alert.get("message") or metric), alert.get("t") or time.time(),
                  {k: v for k, v in details.items() if v is not None})


def wanted(job: JobNotify, found: list[dict], noted: dict[str, Notice]) -> tuple[list[Notice],
                                                                                   bool]:
    """The notices the job's events (and the record's notes) call for, in order, that its
    webhook wants; and whether the job has ended.

    The end is the first that ends the job: a note of `hpctrain cancel`, else an `end` event
    that no requeue preceded in its run (a preempted run's end is not the job's). An alert is
    told when it opens, not at every epoch it stays open."""
    end: Notice | None = noted.get("end")
    requeued, opened, openings = False, set(), {}
    alerts: list[Notice] = []
    for event in found:
        kind = event.get("event")
        if kind == "start":
            requeued = False
        elif kind == "requeue":
            requeued = True
        elif kind == "alert":
            rule = (event.get("rule"), event.get("metric"))
            if rule not in opened:
                opened.add(rule)
                openings[rule[1]] = openings.get(rule[1], 0) + 1
                alerts.append(alert_notice(job, event, openings[rule[1]]))
        elif kind == "alert_cleared":
            opened.discard((event.get("rule"), event.get("metric")))
        elif kind == "end" and end is None and (not requeued or "scheduler_state" in event):
            end = end_notice(job, event, events.summarize(iter(found)))
    due = [n for n in alerts if job.webhook.wants(None)]
    if end is not None and job.webhook.wants(end.state):
        due.append(end)
    return due, end is not None


# -- the bodies ------------------------------------------------------------------------------
def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _label(job: JobNotify) -> str:
    return f"({job.project} {job.kind})" if job.project else ""


def message(job: JobNotify, notice: Notice) -> str:
    """One line: 'hpctrain job 3 FAILED (Demo transcription): ketos: error ...'."""
    return " ".join(p for p in (notice.title, _label(job)) if p) + f": {notice.text}"


TAGS = {"COMPLETED": "white_check_mark", "FAILED": "x", "TIMEOUT": "hourglass",
        "CANCELLED": "no_entry_sign", "ALERT": "warning", "TEST": "bell"}


def request(job: JobNotify, notice: Notice) -> tuple[str, bytes]:
    """(URL to POST to, JSON body) for the webhook's format."""
    from html import escape
    from urllib.parse import urlsplit, urlunsplit

    hook, ident = job.webhook, job.notice_id(notice.key)
    url, line = hook.url, message(job, notice)
    if hook.format == "slack":
        body: dict = {"text": line, "id": ident}
    elif hook.format == "matrix":  # hookshot's generic webhooks take text and html
        html = f"<b>{escape(notice.title)}</b> {escape(_label(job))}: {escape(notice.text)}"
        body = {"text": line, "html": html, "id": ident}
    elif hook.format == "ntfy":  # JSON publishing goes to the server's root, the topic inside
        parts = urlsplit(hook.url)
        head, _, topic = parts.path.rpartition("/")
        url = urlunsplit((parts.scheme, parts.netloc, head + "/", parts.query, ""))
        body = {"topic": topic, "title": notice.title,
                "message": f"{_label(job)} {notice.text}".strip(),
                "tags": [TAGS.get(notice.state, "bell")],
                "priority": 4 if notice.state in (*FAILED_STATES, "ALERT") else 3, "id": ident}
    else:
        body = {"id": ident, "job": job.job, "project": job.project, "kind": job.kind,
                "event": notice.event, "state": notice.state, "message": line,
                "time": _iso(notice.time), **notice.details}
    return url, json.dumps(body, ensure_ascii=False).encode("utf-8")


# -- sending ---------------------------------------------------------------------------------
class SendError(Exception):
    """A POST that the webhook did not accept; `reason` never holds the URL."""

    def __init__(self, reason: str, kind: str = "unreachable"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind  # unreachable, timeout, answer

    @property
    def retry_after(self) -> float:
        return RETRY_AFTER.get(self.kind, 0.0)


def post(url: str, data: bytes, timeout: float = TIMEOUT) -> int:
    """POST a JSON body; the 2xx status, or SendError. Redirects are not followed (a webhook
    that moved is a setting to fix, and a redirected POST loses its body)."""
    import http.client
    import socket
    import urllib.error
    import urllib.request

    from .. import __version__

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect())
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"hpctrain/{__version__}"})
    slow_errors = (socket.timeout, TimeoutError)
    try:
        with opener.open(req, timeout=timeout) as answer:
            answer.read(1 << 16)
            status = answer.status
    except urllib.error.HTTPError as e:
        moved = " (a redirect: put the address it gives in notify)" if 300 <= e.code < 400 else ""
        raise SendError(scrub(f"HTTP {e.code} {e.reason}{moved}", url), "answer") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, slow_errors):
            raise SendError(f"no answer within {timeout:g} s", "timeout") from None
        why = e.reason.strerror if isinstance(e.reason, OSError) else None
        raise SendError(scrub(str(why or e.reason), url)) from None
    except slow_errors:
        raise SendError(f"no answer within {timeout:g} s", "timeout") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise SendError(scrub(f"{type(e).__name__}: {e}", url)) from None
    if not 200 <= status < 300:
        raise SendError(f"HTTP {status}", "answer")
    return status


# -- the delivery record ---------------------------------------------------------------------
@dataclass
class Record:
    """What notifications.jsonl says: delivered keys, notes, the last try, whether settled."""

    delivered: dict = field(default_factory=dict)  # key -> time
    noted: dict = field(default_factory=dict)  # key -> Notice
    last_try: dict | None = None  # the last `failed` or `delivered` line
    settled: bool = False
    damaged: int = 0  # lines skipped
    unreadable: str | None = None  # why the record could not be read at all


def read_record(job_dir: Path) -> Record:
    record = Record()
    try:
        with open(job_dir / NOTIFICATIONS, "rb") as handle:
            data = handle.read(MAX_RECORD)
    except FileNotFoundError:
        return record
    except OSError as e:
        record.unreadable = e.strerror or type(e).__name__
        return record
    for line in data.split(b"\n"):
        if line.strip():
            _fold(record, line)
    return record


def _fold(record: Record, line: bytes) -> None:
    try:
        entry = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        entry = None
    key = entry.get("key") if isinstance(entry, dict) else None
    if isinstance(entry, dict) and "settled" in entry:
        record.settled = True
    elif not isinstance(key, str):
        record.damaged += 1
    elif "delivered" in entry:
        record.delivered[key] = entry["delivered"]
        record.last_try = entry
    elif "failed" in entry:
        record.last_try = entry
    elif "noted" in entry and isinstance(entry.get("notice"), dict):
        try:
            record.noted[key] = Notice(**entry["notice"])
        except TypeError:
            record.damaged += 1
    elif "withdrawn" in entry:
        record.noted.pop(key, None)
    else:
        record.damaged += 1


def _append(job_dir: Path, entry: dict) -> None:
    """One whole line, flushed to the disk; after a cut last line, on a line of its own."""
    data = json.dumps({"format": RECORD_VERSION, **entry}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8") + b"\n"
    with open(job_dir / NOTIFICATIONS, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def start_record() -> str:
    """The record's text at submission: empty (its presence marks a job with a webhook)."""
    return ""


def has_webhook(job_dir: Path) -> bool:
    return (job_dir / NOTIFICATIONS).exists()


@contextmanager
def _lock(job_dir: Path, wait: float) -> Iterator[bool]:
    """Hold the job's notification lock (True), or give up after `wait` seconds (False).

    flock works across NFS clients on Linux (it becomes a POSIX lock there); a filesystem that
    has no locks at all (ENOLCK) is used without one: the ids let a receiver drop a duplicate."""
    import errno
    import fcntl

    fd = os.open(job_dir / NOTIFY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
            except OSError as e:
                if e.errno != errno.ENOLCK:
                    raise
                yield True
                return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- delivering ------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one delivery pass did: keys sent, keys left (and why), or a problem."""

    sent: list = field(default_factory=list)
    left: list = field(default_factory=list)
    reason: str | None = None  # why `left` were not sent
    retry_after: float | None = None  # seconds between tries (after a timeout, an error)
    problem: str | None = None  # the record cannot be read or written
    busy: bool = False  # another process holds the lock: it sends them

    def warning(self, shown: str) -> str | None:
        """One line for `status`, or None when nothing is wrong."""
        if self.problem:
            return f"notifications to {shown}: {self.problem}"
        if self.left:
            when = (f"tried again {self.retry_after:.0f} s after the last try"
                    if self.retry_after else "the next 'hpctrain status' tries again")
            return (f"{len(self.left)} notification(s) ({', '.join(self.left)}) not delivered "
                    f"to {shown}: {self.reason}; {when}")
        return None


def _due(job_dir: Path, job: JobNotify, record: Record) -> tuple[list[Notice], bool]:
    notices, ended = wanted(job, list(events.read(job_dir / EVENTS)), record.noted)
    return [n for n in notices if n.key not in record.delivered], ended


def _backing_off(record: Record, now: float) -> tuple[str, float] | None:
    """(why, its retry_after) when the last try failed less than its `retry_after` ago. The
    same words at every poll until then: `wait` prints a warning once."""
    last = record.last_try or {}
    at, wait = last.get("failed"), last.get("retry_after")
    if not isinstance(at, (int, float)) or not isinstance(wait, (int, float)):
        return None
    return (str(last.get("reason")), wait) if now - at < wait else None


def deliver(job_dir: Path, job: JobNotify, final: bool = False, lock_wait: float = 0.0,
            timeout: float = TIMEOUT, failing: dict | None = None) -> Outcome:
    """Send the notices the job's events call for that the record does not hold yet.

    `final`: the caller knows the job is over (its scheduler says so). `failing` is shared by
    one `status` pass over many jobs (URL -> (why, seconds before the next try)): a webhook
    that failed for one job is not tried again for the others in the same pass."""
    record = read_record(job_dir)
    if record.unreadable:
        return Outcome(problem=f"{NOTIFICATIONS} cannot be read ({record.unreadable}); nothing "
                               "is sent until it can")
    if record.settled:
        return Outcome()
    due, ended = _due(job_dir, job, record)
    if not due and not (final or ended):
        return Outcome()
    with _lock(job_dir, lock_wait) as held:
        if not held:
            return Outcome(busy=True)
        record = read_record(job_dir)  # again: another process may have sent them meanwhile
        if record.unreadable:
            return Outcome(problem=f"{NOTIFICATIONS} cannot be read ({record.unreadable})")
        if record.settled:
            return Outcome()
        due, ended = _due(job_dir, job, record)
        outcome = _send(job_dir, job, due, record, timeout, failing)
        if (final or ended) and not outcome.left and not outcome.problem:
            _settle(job_dir)
        return outcome


def _send(job_dir: Path, job: JobNotify, due: list[Notice], record: Record, timeout: float,
          failing: dict | None) -> Outcome:
    outcome, url = Outcome(), job.webhook.url
    failing = {} if failing is None else failing
    waiting = _backing_off(record, time.time())
    for notice in due:
        if url in failing or waiting:
            outcome.left.append(notice.key)
            outcome.reason, outcome.retry_after = waiting or failing[url]
            continue
        try:
            status = post(*request(job, notice), timeout=timeout)
        except SendError as e:
            failing[url] = (e.reason, e.retry_after)
            outcome.left.append(notice.key)
            outcome.reason, outcome.retry_after = e.reason, e.retry_after
            if e.retry_after:
                try:
                    _append(job_dir, {"key": notice.key, "failed": round(time.time(), 3),
                                      "reason": e.reason, "retry_after": e.retry_after})
                except OSError:
                    pass  # the next pass tries again at once
            continue
        try:
            _append(job_dir, {"key": notice.key, "delivered": round(time.time(), 3),
                              "status": status})
        except OSError as e:
            outcome.problem = (f"{notice.key} was delivered but {NOTIFICATIONS} cannot be "
                               f"written ({e.strerror or type(e).__name__}): it may be sent again")
            return outcome
        outcome.sent.append(notice.key)
    return outcome


def _settle(job_dir: Path) -> None:
    try:
        _append(job_dir, {"settled": round(time.time(), 3)})
    except OSError:
        pass  # settling only spares later passes a read of the events


def note_cancel(job_dir: Path, job: JobNotify) -> bool:
    """Before `hpctrain cancel` stops the job: note that its end is a cancel, so that the end
    the killed runner then writes is told as CANCELLED (once). False if the job had already
    ended (that end is told) or its webhook does not want a cancel."""
    if not job.webhook.wants("CANCELLED"):
        return False
    try:
        with _lock(job_dir, NODE_LOCK_WAIT):  # the note is one line: written even without it
            record = read_record(job_dir)
            if "end" in record.delivered or "end" in record.noted or record.settled:
                return False
            if wanted(job, list(events.read(job_dir / EVENTS)), {})[1]:
                return False
            notice = cancel_notice(job, round(time.time(), 3))
            _append(job_dir, {"key": "end", "noted": notice.time, "notice": notice.to_json()})
            return True
    except OSError:
        return False  # the killed runner's end is told instead (as FAILED)


def withdraw_cancel(job_dir: Path) -> None:
    """The cancel failed after all: its note no longer holds."""
    try:
        _append(job_dir, {"key": "end", "withdrawn": round(time.time(), 3)})
    except OSError:
        pass  # the job's end is then told as CANCELLED: the lesser harm than a lost end


def from_status(job_dir: Path, settings: dict, final: bool, failing: dict) -> list[str]:
    """`status`'s part for one job: send what is due; warnings (one line each, URL redacted).
    Never raises."""
    try:
        job = JobNotify.from_settings(settings)
    except ValueError as e:
        return [f"job.json's notify setting is {e}: no notification is sent"]
    if job is None:
        return []
    try:
        warning = deliver(job_dir, job, final=final, failing=failing).warning(job.webhook.shown)
    except Exception as e:  # a notification never stops status
        warning = (f"notifications to {job.webhook.shown} failed: "
                   f"{scrub(f'{type(e).__name__}: {e}', job.webhook.url)}")
    return [warning] if warning else []


def send_test(job: JobNotify, timeout: float = TIMEOUT) -> int:
    """One test notice, not recorded: the webhook's 2xx status, or SendError."""
    import socket

    notice = Notice("test", "test", "TEST", "hpctrain test notification",
                    f"sent from {socket.gethostname()}: job notifications reach you here",
                    time.time())
    return post(*request(job, notice), timeout=timeout)


class FromNode:
    """The runner's sender. While the compute node reaches the webhook it sends each notice as
    its event is written; after one failure it leaves the rest to `status` (a node that cannot
    reach out would otherwise hold up the job's log at every alert), saying so in one
    `notify_failed` event. Never raises."""

    def __init__(self, job_dir: Path, settings: dict):
        self.job_dir = job_dir
        try:
            self.job = JobNotify.from_settings(settings)
        except ValueError:
            self.job = None
        if self.job is not None and not self.job.webhook.from_node:
            self.job = None
        self.gave_up = False

    def send(self, sink: IO[str]) -> None:
        if self.job is None or self.gave_up:
            return
        hook = self.job.webhook
        try:
            outcome = deliver(self.job_dir, self.job, lock_wait=NODE_LOCK_WAIT)
            reason, keys = outcome.problem or outcome.reason, outcome.left
        except Exception as e:
            reason, keys = scrub(f"{type(e).__name__}: {e}", hook.url), []
        if reason:
            self.gave_up = True
            events.append(sink, {"event": "notify_failed", "to": hook.shown, "keys": keys,
                                 "reason": f"{reason}; 'hpctrain status' sends it later"})
