"""The `notify:` setting (core/webhook.py) and what runtime/notify.py makes of a job's events:
validation in one line that never shows the URL's secret, redaction, which events become
notices (each once), and the body each format gets."""

from __future__ import annotations

import json

import pytest

from hpctrain.core.config import load_workspace
from hpctrain.core.errors import ConfigError
from hpctrain.core.webhook import EVENTS, Webhook, choose, redact, scrub, webhook_from_value
from hpctrain.runtime import notify

SECRET = "T0KEN-s3cret"
URL = f"https://hooks.example.org/services/{SECRET}"


def job_with(hook: Webhook) -> notify.JobNotify:
    return notify.JobNotify(hook, 3, "Demo", "transcription", "ab12cd34")


# -- the setting -------------------------------------------------------------------------------
def test_a_bare_url_is_json_bodies_for_every_event():
    hook = webhook_from_value(f"  {URL} ", "hpctrain.yaml")
    assert hook == Webhook(URL, "json", EVENTS, True)
    assert webhook_from_value(None, "x") is None and webhook_from_value(False, "x") is None


def test_a_mapping_is_read_whole():
    hook = webhook_from_value({"url": "https://ntfy.sh/my-topic_1", "format": "ntfy",
                               "on": "failed", "from_node": False}, "x")
    assert hook == Webhook("https://ntfy.sh/my-topic_1", "ntfy", ("failed",), False)


@pytest.mark.parametrize("value, words", [
    (f"ftp://files.example.org/{SECRET}", "must start with https:// or http://"),
    (f"hooks.example.org/{SECRET}", "must start with https:// or http://"),
    (f"https:///{SECRET}", "must start with https:// or http://"),
    (f"https://hooks.example.org:99999/{SECRET}", "is not a URL"),
    (f"https://hooks.example.org/{SECRET} x", "spaces or control characters"),
    ({"url": URL, "format": "teams"}, "format 'teams' is not known; choose one of json, ntfy"),
    ({"url": URL, "on": ["end", "sometimes"]}, "'on' has 'sometimes'; choose from end, failed"),
    ({"url": URL, "on": []}, "'on' is a list of end, failed, alert"),
    ({"url": URL, "from_node": "yes"}, "'from_node' is true or false"),
    ({"url": URL, "tokn": 1}, "unknown key(s) tokn"),
    ({"format": "json"}, "notify needs a 'url'"),
    ({"url": f"https://ntfy.sh/{SECRET}/", "format": "ntfy"}, "ends with its topic"),
    ([URL], "notify is a URL or a mapping"),
], ids=["ftp", "no scheme", "no host", "bad port", "space", "format", "event", "no events",
        "from_node", "unknown key", "no url", "ntfy without topic", "a list"])
def test_a_bad_setting_is_one_line_without_the_secret(value, words):
    with pytest.raises(ConfigError) as refused:
        webhook_from_value(value, "hpctrain.yaml")
    message = str(refused.value)
    assert words in message and message.startswith("hpctrain.yaml")
    assert "\n" not in message and SECRET not in message


def test_the_profile_takes_it_from_the_workspace_file_or_the_environment(workspace):
    config = workspace / "hpctrain.yaml"
    text = config.read_text()
    config.write_text(text.replace("    root: cluster", f"    root: cluster\n    notify: {URL}"))
    assert load_workspace(workspace).profile.notify == Webhook(URL)
    env_url = "https://ntfy.sh/other"
    assert load_workspace(workspace, env={"HPCTRAIN_NOTIFY": env_url}).profile.notify.url == env_url
    config.write_text(text.replace("    root: cluster",
                                   f"    root: cluster\n    notify: {{url: {URL}, format: x}}"))
    with pytest.raises(ConfigError, match=r"hpctrain.yaml: notify format 'x' is not known"):
        load_workspace(workspace)


def test_the_projects_setting_wins_and_false_turns_the_profiles_off(workspace):
    from hpctrain.app.projects import project_from_mapping

    profile = Webhook("https://ntfy.sh/profile", "ntfy")
    own = project_from_mapping("Demo", {"notify": {"url": URL, "format": "slack"}}, "Demo.yaml")
    off = project_from_mapping("Demo", {"notify": False}, "Demo.yaml")
    unset = project_from_mapping("Demo", {}, "Demo.yaml")
    assert choose(own.notify, profile) == Webhook(URL, "slack")
    assert choose(off.notify, profile) is None
    assert choose(unset.notify, profile) == profile
    with pytest.raises(ConfigError, match="Demo.yaml: notify format"):
        project_from_mapping("Demo", {"notify": {"url": URL, "format": "x"}}, "Demo.yaml")


@pytest.mark.parametrize("url, shown", [
    (URL, "https://hooks.example.org/…"),
    (f"https://user:{SECRET}@matrix.example.org:8443/hook/{SECRET}?x=1",
     "https://matrix.example.org:8443/…"),
    (f"http://127.0.0.1:9000/?auth={SECRET}", "http://127.0.0.1:9000/…"),
    (f"user:{SECRET}@hooks.example.org/{SECRET}", "hooks.example.org/…"),
])
def test_a_url_is_shown_as_scheme_and_host_only(url, shown):
    assert redact(url) == shown and SECRET not in redact(url)


def test_scrub_takes_every_part_of_the_url_out_of_an_error():
    url = f"https://u:{SECRET}@h.example.org/p/{SECRET}?auth={SECRET}"
    text = f"cannot POST {url}: path /p/{SECRET} refused; auth={SECRET}"
    assert SECRET not in scrub(text, url)


def test_the_registry_keeps_the_request_without_the_url():
    from hpctrain.jobs.requests import Resources, TorchrunRequest, recorded

    request = TorchrunRequest("her2", "train.py", "print(1)", (), Resources(), 1,
                              notify=Webhook(URL).to_json())
    kept = recorded(request)
    assert kept["notify"]["url"] == "https://hooks.example.org/…"
    assert SECRET not in json.dumps(kept)


# -- which events become notices ---------------------------------------------------------------
START = {"event": "start", "t": 100}


def alert(rule, metric, value, epoch):
    return {"event": "alert", "rule": rule, "metric": metric, "value": value, "min": 0.9,
            "epoch": epoch, "message": f"{metric} {value} < 0.9 at epoch {epoch}", "t": 100 + epoch}


def keys(found, hook=Webhook(URL), noted=None):
    due, ended = notify.wanted(job_with(hook), found, noted or {})
    return [n.key for n in due], ended


def test_an_alert_is_told_when_it_opens_not_at_every_epoch_it_stays_open():
    found = [START, alert(0, "val_auc", 0.5, 1), alert(0, "val_auc", 0.4, 2),
             {"event": "alert_cleared", "rule": 0, "metric": "val_auc", "t": 104},
             alert(0, "val_auc", 0.3, 5), alert(1, "val_loss", 3.0, 5)]
    assert keys(found) == (["alert:val_auc:1", "alert:val_auc:2", "alert:val_loss:1"], False)


def test_the_end_of_a_preempted_run_is_not_the_jobs_end():
    requeued = [START, {"event": "requeue", "t": 101}, {"event": "end", "exit_code": -15}]
    assert keys(requeued) == ([], False)
    again = requeued + [START, {"event": "end", "exit_code": 0, "t": 200}]
    due, ended = notify.wanted(job_with(Webhook(URL)), again, {})
    assert [(n.key, n.state) for n in due] == [("end", "COMPLETED")] and ended


def test_an_end_status_recorded_after_a_requeue_still_counts():
    silent = {"event": "end", "exit_code": None, "scheduler_state": "TIMEOUT",
              "error": "Slurm says TIMEOUT: it reached its time limit", "t": 300}
    due, ended = notify.wanted(job_with(Webhook(URL)),
                               [START, {"event": "requeue"}, silent], {})
    assert [(n.key, n.state) for n in due] == [("end", "TIMEOUT")] and ended
    assert due[0].text == "Slurm says TIMEOUT: it reached its time limit"


def test_only_the_first_end_counts_and_a_noted_cancel_comes_first():
    ends = [START, {"event": "end", "exit_code": 1, "error": "ketos: boom", "t": 150},
            {"event": "end", "exit_code": 0, "t": 160}]
    due, _ = notify.wanted(job_with(Webhook(URL)), ends, {})
    assert [(n.state, n.text) for n in due] == [("FAILED", "ketos: boom")]
    cancel = notify.cancel_notice(job_with(Webhook(URL)), 140.0)
    due, _ = notify.wanted(job_with(Webhook(URL)), ends, {"end": cancel})
    assert [(n.key, n.state) for n in due] == [("end", "CANCELLED")]


@pytest.mark.parametrize("on, exit_code, told", [
    (["end"], 0, True), (["end"], 1, True), (["failed"], 0, False), (["failed"], 1, True),
    (["alert"], 1, False),
])
def test_on_chooses_the_ends_told(on, exit_code, told):
    found = [START, {"event": "end", "exit_code": exit_code, "t": 120}]
    assert keys(found, Webhook(URL, on=tuple(on))) == (["end"] if told else [], True)
    assert keys([START, alert(0, "m", 0.1, 1)], Webhook(URL, on=tuple(on)))[0] == (
        ["alert:m:1"] if "alert" in on else [])


def test_a_completed_end_says_its_time_best_and_test_accuracy():
    found = [START, {"event": "epoch", "epoch": 4, "total": 4, "metrics": {"val_accuracy": 0.9}},
             {"event": "best", "metric": "val_accuracy", "value": 0.93124, "epoch": 3},
             {"event": "test", "char_accuracy": 0.9512}, {"event": "end", "exit_code": 0,
                                                          "t": 100 + 3723}]
    (end,), _ = notify.wanted(job_with(Webhook(URL)), found, {})
    assert end.text == "in 1:02:03, best val_accuracy 0.9312 (epoch 3), test accuracy 95.12%"
    assert end.details["test"] == {"char_accuracy": 0.9512} and end.details["best_epoch"] == 3


# -- the bodies ----------------------------------------------------------------------------------
FAILED = notify.Notice("end", "end", "FAILED", "hpctrain job 3 FAILED", "ketos: <bad> & worse",
                       1700000000.0, {"exit_code": 1, "error": "ketos: <bad> & worse"})


def body(hook: Webhook, notice=FAILED) -> tuple[str, dict]:
    url, data = notify.request(job_with(hook), notice)
    return url, json.loads(data)


def test_a_json_body_has_every_field_a_receiver_needs():
    url, sent = body(Webhook(URL))
    assert url == URL
    assert sent == {"id": "job3-ab12cd34:end", "job": 3, "project": "Demo",
                    "kind": "transcription", "event": "end", "state": "FAILED",
                    "message": "hpctrain job 3 FAILED (Demo transcription): ketos: <bad> & worse",
                    "time": "2023-11-14T22:13:20Z", "exit_code": 1,
                    "error": "ketos: <bad> & worse"}


def test_slack_and_matrix_bodies_are_text_and_html():
    assert body(Webhook(URL, "slack")) == (URL, {
        "text": "hpctrain job 3 FAILED (Demo transcription): ketos: <bad> & worse",
        "id": "job3-ab12cd34:end"})
    _, sent = body(Webhook(URL, "matrix"))
    assert sent["html"] == ("<b>hpctrain job 3 FAILED</b> (Demo transcription): "
                            "ketos: &lt;bad&gt; &amp; worse")
    assert sent["text"].startswith("hpctrain job 3 FAILED") and sent["id"] == "job3-ab12cd34:end"


def test_ntfy_is_published_as_json_to_the_servers_root():
    url, sent = body(Webhook(f"https://push.example.org/ntfy/{SECRET}?auth=tk_1", "ntfy"))
    assert url == "https://push.example.org/ntfy/?auth=tk_1"
    assert sent == {"topic": SECRET, "title": "hpctrain job 3 FAILED",
                    "message": "(Demo transcription) ketos: <bad> & worse", "tags": ["x"],
                    "priority": 4, "id": "job3-ab12cd34:end"}
