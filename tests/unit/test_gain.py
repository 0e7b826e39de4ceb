"""The gain over the base model: the base model's test read from real ketos 7.1.1 output
(tests/fixtures/ketos7/base_test*.log, captured on this machine), `ketos segtest` scores, the
`base_test` event folded into a job's progress, `gain_line`, the rendered scripts (the base test
only with a base model, before training), and the runner that does not test a requeued job's
base model twice."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import FIXTURES
from hpctrain.jobs.kraken import base_test_marker
from hpctrain.jobs.render import render
from hpctrain.logparse import LogParser, parse_file, parse_lines
from hpctrain.runtime import events
from hpctrain.runtime.events import base_words, gain_line, summarize
from hpctrain.runtime.runner import JobFailed, JobRunner

from test_render import ketos_lines, rendered, request

K7 = FIXTURES / "ketos7"


# -- reading the base model's test ------------------------------------------------------------
def test_the_base_models_test_on_ketos_71_output_is_one_base_test_event():
    found = list(parse_file(K7 / "base_test.log"))
    base = [e for e in found if e["event"] == "base_test"]
    assert base == [{"event": "base_test", "model": "tridis_v2", "char_accuracy": 0.0782,
                     "word_accuracy": 0.0, "accuracy": 0.0782}]
    assert not [e for e in found if e["event"] == "test"], "the base model's score is no test"
    assert found.index(base[0]) < [e.get("step") for e in found].index("train")


def test_the_fine_tuned_models_test_after_it_is_still_a_test_event():
    lines = (K7 / "base_test.log").read_text().splitlines() + [
        '##hpctrain {"event": "step", "step": "test"}'] + (K7 / "test.log").read_text().splitlines()
    found = list(parse_lines(lines))
    progress = summarize(iter(found))
    assert progress.base_test["char_accuracy"] == 0.0782
    assert progress.test == {"char_accuracy": 0.9941, "word_accuracy": 0.9636}
    assert gain_line(progress.base_test, progress.test) == (
        "base 7.8 % → fine-tuned 99.4 % (+91.6)")


def test_a_failing_base_test_is_an_event_with_its_error_not_the_jobs_error():
    parser = LogParser()
    found = [e for line in open(K7 / "base_test_failed.log") for e in parser.feed(line)]
    found += parser.finish()
    assert [e for e in found if e["event"] == "base_test"] == [{
        "event": "base_test", "model": "broken",
        "error": "ValueError: No loader found for broken.mlmodel. Tried:"}]
    assert parser.last_error is None  # a later failure of the training is reported as its own


def test_a_base_test_cut_off_by_the_end_of_the_output_still_says_so():
    found = list(parse_lines([base_test_marker("tridis_v2")]))
    assert found[-1] == {"event": "base_test", "model": "tridis_v2",
                         "error": "the test printed no score"}


def test_a_version_without_segtest_says_it_cannot():
    line = base_test_marker("blla", unsupported="kraken 4.1.2 has no ketos segtest")
    found = list(parse_lines([line]))
    assert found == [{"event": "base_test", "model": "blla",
                      "unsupported": "kraken 4.1.2 has no ketos segtest"}]
    assert base_words(found[0], {}) == "base model not tested: kraken 4.1.2 has no ketos segtest"


SEGTEST_43 = ["Mean Accuracy: 0.951", "Mean IOU: 0.812", "Frequency-weighted IOU: 0.900",
              "Class-independent Baseline IOU: 0.700"]
# kraken 7.1.1's tables (its segtest prints no mean IOU): diagnostics (7 columns, passed over),
# pixel classes, baseline detection.
SEGTEST_71 = [
    "│ baselines │ default    │ 2         │ 2           │ 6        │ 6         │ ok     │",
    "┃ Category ┃ Class Name ┃ Pixel Accuracy ┃ IOU   ┃ Object Count ┃",
    "│ aux      │ _start_separator │ 0.990    │ 0.500 │ N/A          │",
    "│ regions  │ text       │ 0.950          │ 0.700 │ 1            │",
    "│ Overall │ 0.900     │ 0.800  │ 0.847 │",
]


@pytest.mark.parametrize("lines, expected", [
    (SEGTEST_43, {"mean_accuracy": 0.951, "mean_iu": 0.812, "freq_iu": 0.9,
                  "baseline_iu": 0.7}),
    (SEGTEST_71, {"mean_iu": 0.6, "baseline_f1": 0.847}),
], ids=["4.3", "7.1"])
def test_segtest_scores_of_the_base_and_the_fine_tuned_model(lines, expected, tmp_path):
    log = [base_test_marker("blla"), *lines, '##hpctrain {"event": "step", "step": "train"}',
           '##hpctrain {"event": "step", "step": "test"}', *lines]
    found = list(parse_lines(log))
    scored = [e for e in found if e["event"] in ("base_test", "test")]
    assert scored == [{"event": "base_test", "model": "blla", **expected},
                      {"event": "test", **expected}]
    (tmp_path / "seg.log").write_text("\n".join(log) + "\n")
    assert list(parse_file(tmp_path / "seg.log")) == found  # the fast reader sees the same


# -- the gain ---------------------------------------------------------------------------------
@pytest.mark.parametrize("base, test, line", [
    ({"accuracy": 0.812, "char_accuracy": 0.812}, {"char_accuracy": 0.947},
     "base 81.2 % → fine-tuned 94.7 % (+13.5)"),
    ({"char_accuracy": 0.95}, {"char_accuracy": 0.9}, "base 95.0 % → fine-tuned 90.0 % (-5.0)"),
    ({"char_accuracy": 0.9}, {"char_accuracy": 0.9}, "base 90.0 % → fine-tuned 90.0 % (+0.0)"),
    ({"mean_iu": 0.61}, {"mean_iu": 0.8}, "base 61.0 % → fine-tuned 80.0 % (+19.0)"),
    ({}, {"char_accuracy": 0.9}, None),
    ({"char_accuracy": 0.9}, {}, None),
    ({"error": "ValueError: x", "model": "m"}, {"char_accuracy": 0.9}, None),
    ({"char_accuracy": True}, {"char_accuracy": 0.9}, None),
    ({"mean_iu": 0.5}, {"char_accuracy": 0.9}, None),
])
def test_gain_line(base, test, line):
    assert gain_line(base, test) == line


def test_what_is_said_of_the_base_model_before_and_after_the_fine_tuned_test():
    assert base_words({}, {"char_accuracy": 0.9}) is None
    assert base_words({"model": "m", "char_accuracy": 0.8123}, {}) == "base 81.2 %"
    assert base_words({"model": "m", "error": "ValueError: x"}, {}) == (
        "base model's test failed: ValueError: x")
    assert base_words({"char_accuracy": 0.8}, {"char_accuracy": 0.9}).startswith("base 80.0 % →")


def test_a_requeued_job_keeps_the_base_score_it_had():
    found = [{"event": "start"}, {"event": "base_test", "model": "m", "char_accuracy": 0.5},
             {"event": "requeue"}, {"event": "start"}, {"event": "test", "char_accuracy": 0.7}]
    progress = summarize(iter(found))
    assert progress.base_test == {"model": "m", "char_accuracy": 0.5}
    assert summarize(iter(found[:1])).base_test == {}


# -- the rendered scripts ---------------------------------------------------------------------
@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
def test_transcription_tests_the_base_model_before_training_only_with_one(version):
    script = rendered(request(), version)
    tests = [line for line in ketos_lines(script) if "test" in line]
    assert len(tests) == 2  # the base model's, then the fine-tuned one's, on the same pages
    assert tests[0][tests[0].index("-m") + 1].endswith("/Model_de_base/tridis_v2.mlmodel")
    assert tests[1][tests[1].index("-m") + 1] == "${BEST_MODEL}"
    arrows = [line[line.index("binary") + 1] for line in tests]
    assert arrows[0] == arrows[1] and arrows[0].endswith("/test.arrow")
    assert script.index('"step": "base_test", "model": "tridis_v2"') < script.index(
        "hpctrain_step train")
    scratch = rendered(request(base=None), version)
    assert "base_test" not in scratch and "HPCTRAIN_BASE_TESTED" not in scratch


@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
def test_segmentation_segtests_base_and_fine_tuned_models_with_a_base(version):
    script = rendered(request("segmentation", base="blla"), version)
    segtests = [line for line in ketos_lines(script) if "segtest" in line]
    assert len(segtests) == 2
    assert segtests[0][segtests[0].index("-m") + 1].endswith("/Model_de_base/blla.mlmodel")
    assert segtests[1][segtests[1].index("-m") + 1] == "${BEST_MODEL}"
    assert all(line[line.index("-e") + 1].endswith("/split/test.txt") for line in segtests)
    assert "segtest" not in rendered(request("segmentation", base=None), version)


def test_a_kraken_without_segtest_says_so_in_the_script():
    script = rendered(request("segmentation", base="blla"), "4.1.2")
    assert "segtest" not in [w for line in ketos_lines(script) for w in line]
    assert '"event": "base_test", "model": "blla", "unsupported": "kraken 4.1.2 has no ketos ' \
           'segtest' in script


def test_a_hostile_base_name_reaches_the_shell_quoted(tmp_path):
    name = "x'; touch pwned; echo '\"$(id)"
    script = render("kraken/_base_test.sh.j2", {
        "base_test_step": ["true"], "base_test_marker": base_test_marker(name),
        "run_prefix": []})
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert not (tmp_path / "pwned").exists()
    assert json.loads(out.split("##hpctrain ", 1)[1])["model"] == name


# -- the runner: a failing base test, a requeued job ------------------------------------------
def job_folder(tmp_path: Path, ketos_code: int) -> Path:
    """A job whose script is the packaged base test (a fake ketos that prints a score, or fails
    with `ketos_code`), then a training step that leaves a best model."""
    bin_dir, job_dir = tmp_path / "bin", tmp_path / "job"
    bin_dir.mkdir()
    job_dir.mkdir()
    ketos = bin_dir / "ketos"
    ketos.write_text("#!/bin/bash\necho called >> \"$(dirname \"$0\")/calls\"\n" + (
        f"echo 'ValueError: cannot load the base model' >&2\nexit {ketos_code}\n"
        if ketos_code else "printf '81.20%%\\tCharacter Accuracy\\n'\n"))
    ketos.chmod(ketos.stat().st_mode | stat.S_IXUSR)
    base_test = render("kraken/_base_test.sh.j2", {  # the runner puts its own ketos first
        "base_test_step": [str(ketos), "test", "-m", "base model.mlmodel"],
        "base_test_marker": base_test_marker("tridis_v2"), "run_prefix": []})
    (job_dir / "job.sh").write_text(
        "set -euo pipefail\nhpctrain_step() "
        "{ printf '##hpctrain {\"event\": \"step\", \"step\": \"%s\"}\\n' \"$1\"; }\n"
        + base_test + "hpctrain_step train\nmkdir -p model\necho w > model/best_1.mlmodel\n")
    return job_dir


def run(job_dir: Path) -> list[dict]:
    JobRunner(str(job_dir))()
    return list(events.read(job_dir / "events.jsonl"))


def test_a_failing_base_test_does_not_fail_the_job(tmp_path, monkeypatch):
    job_dir = job_folder(tmp_path, ketos_code=3)
    found = run(job_dir)
    base = [e for e in found if e["event"] == "base_test"]
    assert len(base) == 1 and base[0]["error"] == "ValueError: cannot load the base model"
    assert found[-1]["event"] == "end" and found[-1]["exit_code"] == 0
    assert "step" in [e["event"] for e in found[found.index(base[0]):]]  # then it trained


def test_a_requeued_job_does_not_test_its_base_model_again(tmp_path, monkeypatch):
    job_dir = job_folder(tmp_path, ketos_code=0)
    first = run(job_dir)
    assert [e for e in first if e["event"] == "base_test"][0]["char_accuracy"] == 0.812
    monkeypatch.setenv("HPCTRAIN_BASE_TESTED", "1")  # not inherited: the runner decides
    again = run(job_dir)[len(first):]
    assert (tmp_path / "bin" / "calls").read_text() == "called\n"
    assert not [e for e in again if e["event"] == "base_test"]
    assert again[-1]["exit_code"] == 0
    assert summarize(iter(first + again)).base_test["char_accuracy"] == 0.812


def test_a_job_without_a_base_test_yet_runs_it_even_if_the_variable_leaks_in(
        tmp_path, monkeypatch):
    job_dir = job_folder(tmp_path, ketos_code=0)
    monkeypatch.setenv("HPCTRAIN_BASE_TESTED", "1")
    assert [e for e in run(job_dir) if e["event"] == "base_test"]


def test_the_job_still_fails_when_training_fails_after_a_failed_base_test(tmp_path, monkeypatch):
    job_dir = job_folder(tmp_path, ketos_code=2)
    script = job_dir / "job.sh"
    script.write_text(script.read_text() + "echo 'Error: training broke' >&2\nexit 1\n")
    with pytest.raises(JobFailed, match="training broke"):
        run(job_dir)


def test_kraken_71_segtest_crashing_on_its_own_blla_model_is_a_base_test_error():
    """Real output: kraken 7.1.1's segtest of its packaged blla.mlmodel stops with an IndexError
    after its diagnostics table (whose rows are no scores); the job trains all the same."""
    found = list(parse_file(K7 / "segtest_base_failed.log"))
    assert [e for e in found if e["event"] == "base_test"] == [{
        "event": "base_test", "model": "blla", "error": "IndexError: list index out of range"}]
    assert not [e for e in found if e["event"] == "test"]
