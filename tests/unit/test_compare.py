"""`hpctrain compare`: the ranking, ties, jobs on other test pages, unfinished jobs, --json.

Jobs are made as `submit` and the runner leave them (registry record, split lists, events) on
the embedded default's cluster; the command runs through the real cluster side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpctrain.app.compare import expand_targets, gpu_hours, rank
from hpctrain.cluster.api import JobOutcome, JobStatus
from hpctrain.cluster.outcomes import time_to_best
from hpctrain.cluster.registry import JobState, Registry

JOBS = "Repertoire_model_finetune"
PAGES = "/gt/Demo/p1.xml\n/gt/Demo/p2.xml\n"
OTHER_PAGES = "/gt/Demo/p3.xml\n/gt/Demo/p4.xml\n/gt/Demo/p5.xml\n"


def add_job(workspace: Path, accuracy: float | None, state=JobState.COMPLETED,
            test_pages: str | None = PAGES, learning_rate: float = 0.0001, best_epoch: int = 2,
            gpus: int = 1, extra_events: tuple = ()) -> int:
    root = workspace / "cluster"
    request = {"kind": "transcription", "base": "tridis",
               "params": {"learning_rate": learning_rate, "augment": True, "epochs": 50},
               "resources": {"partition": "publicgpu", "gpus": gpus, "nodes": 1, "cpus": 4,
                             "time": "05:00:00"}}
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", "tridis",
                              lambda i: f"{JOBS}/Demo/job{i}-transcription", {"request": request})
        registry.update(record.id, state=state, scheduler_id=str(record.id))
    job_dir = root / record.job_dir
    (job_dir / "split").mkdir(parents=True)
    if test_pages is not None:
        (job_dir / "split" / "test.txt").write_text(test_pages)
    lines = [{"event": "start", "t": 1000},
             {"event": "step", "step": "train", "t": 1060},
             {"event": "metrics", "epoch": 1, "t": 1100, "val_accuracy": 0.5},
             {"event": "metrics", "epoch": 2, "t": 1160, "val_accuracy": 0.6},
             {"event": "best", "metric": "val_accuracy", "value": 0.6, "epoch": best_epoch,
              "t": 1160},
             *extra_events]
    if state == JobState.COMPLETED:
        lines += [{"event": "result", "best_model": "model/best.mlmodel", "t": 1200},
                  *([{"event": "test", "char_accuracy": accuracy, "t": 1300}]
                    if accuracy is not None else []),
                  {"event": "end", "exit_code": 0, "t": 3600 + 1000}]
    with open(job_dir / "events.jsonl", "w") as sink:
        sink.writelines(json.dumps(e) + "\n" for e in lines)
    return record.id


def test_jobs_rank_by_test_accuracy_best_first(workspace, cli):
    worse = add_job(workspace, 0.90, learning_rate=0.0001)
    best = add_job(workspace, 0.95, learning_rate=0.001)
    middle = add_job(workspace, 0.93, learning_rate=0.0003)
    result = cli("compare", str(worse), str(best), str(middle), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ranked_by"] == "test char_accuracy"
    assert [(r["rank"], r["job"]) for r in data["ranked"]] == [(1, best), (2, middle),
                                                               (3, worse)]
    top = data["ranked"][0]
    assert top["score"] == 0.95
    assert top["settings"] == {"learning_rate": 0.001}  # what differs between the jobs
    assert top["best_epoch"] == 2
    assert top["time_to_best"] == 160  # first start at 1000, best recorded at 1160
    assert top["gpu_hours"] == 1.0  # elapsed 3600 s (start 1000, end 4600) x 1 GPU
    assert data["test_sha256"] and data["test_pages"] == 2
    assert data["reference_job"] == worse
    assert data["unranked"] == [] and data["other_test_pages"] == []


def test_equal_scores_share_a_rank_and_keep_job_order(workspace, cli):
    a = add_job(workspace, 0.9)
    b = add_job(workspace, 0.95)
    c = add_job(workspace, 0.95)
    data = json.loads(cli("compare", str(a), str(c), str(b), "--json").output)
    assert [(r["rank"], r["job"]) for r in data["ranked"]] == [(1, b), (1, c), (3, a)]


def test_a_job_on_other_test_pages_is_flagged_and_not_ranked(workspace, cli):
    first = add_job(workspace, 0.90)
    other = add_job(workspace, 0.99, test_pages=OTHER_PAGES)  # better, but on other pages
    same = add_job(workspace, 0.92)
    result = cli("compare", str(first), str(other), str(same))
    assert result.exit_code == 0, result.output
    assert [r for r in json.loads(cli("compare", str(first), str(other), str(same),
                                      "--json").output)["ranked"]][0]["job"] == same
    flagged = [line for line in result.output.splitlines() if "different test pages" in line]
    assert len(flagged) == 1 and f"job {other} (sha256 " in flagged[0]
    assert f"vs job {first}'s" in flagged[0] and "3 pages" in flagged[0]
    rows = result.output.split("different test pages")[0].splitlines()[3:]
    assert [row.split()[1] for row in rows] == [str(same), str(first)]  # not in the table


def test_the_first_job_names_the_test_pages(workspace, cli):
    """The reference is the first job named, even when more jobs share other pages."""
    lone = add_job(workspace, 0.8, test_pages=OTHER_PAGES)
    a, b = add_job(workspace, 0.9), add_job(workspace, 0.95)
    data = json.loads(cli("compare", str(lone), str(a), str(b), "--json").output)
    assert [r["job"] for r in data["ranked"]] == [lone]
    assert sorted(r["job"] for r in data["other_test_pages"]) == [a, b]
    data = json.loads(cli("compare", str(a), str(lone), str(b), "--json").output)
    assert [r["job"] for r in data["ranked"]] == [b, a]


def test_unfinished_and_untested_jobs_are_listed_unranked(workspace, cli):
    done = add_job(workspace, 0.9)
    running = add_job(workspace, None, state=JobState.RUNNING)
    failed = add_job(workspace, None, state=JobState.FAILED)
    untested = add_job(workspace, None)
    # the local executor forgets jobs it never ran: a RUNNING record it does not know ends
    # FAILED; what matters here is that neither ranks, each with why
    data = json.loads(cli("compare", str(done), str(running), str(failed), str(untested),
                          "--json").output)
    assert [r["job"] for r in data["ranked"]] == [done]
    notes = {r["job"]: r["note"] for r in data["unranked"]}
    assert set(notes) == {running, failed, untested}
    assert all(r["rank"] is None for r in data["unranked"])
    assert notes[untested] == "no test char_accuracy"
    assert notes[failed].startswith("FAILED")
    text = cli("compare", str(done), str(running), str(failed), str(untested)).output
    assert "not ranked" in text and "no test char_accuracy" in text


def test_the_table_says_what_it_ranks_by(workspace, cli):
    a, b = add_job(workspace, 0.9123, learning_rate=0.001), add_job(workspace, 0.95)
    result = cli("compare", str(a), str(b))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ranked by test char_accuracy (higher is better) on job "
                               f"{a}'s 2 test pages (sha256 ")
    header = lines[1]
    for column in ("rank", "job", "kind", "settings", "base", "test char_accuracy", "best epoch",
                   "time to best", "GPU h"):
        assert column in header
    first = lines[3].split()
    assert first[:3] == ["1", str(b), "transcription"] and "95.00%" in first
    assert "0:02:40" in lines[3] and "1.00" in lines[3]
    assert "learning_rate=0.001" in lines[4] and "91.23%" in lines[4]


def test_a_job_id_that_does_not_exist_is_one_line(workspace, cli):
    add_job(workspace, 0.9)
    result = cli("compare", "1", "99")
    assert result.exit_code != 0
    assert "hpctrain: error: no job 99" in result.output
    result = cli("compare", "1", "Projet_A")
    assert result.exit_code != 0 and "invalid job id 'Projet_A'" in result.output


# -- the ranking as a function: what the cluster side cannot easily make --------------------
def outcome(job_id: int, **fields) -> JobOutcome:
    test = fields.pop("test", {})
    sha = fields.pop("sha", "a" * 64)
    row = JobStatus(id=job_id, kind=fields.pop("kind", "segmentation"), project="P", base=None,
                    state=fields.pop("state", "COMPLETED"), scheduler_id=None, elapsed=7200.0,
                    step=None, epoch=10, total_epochs=None, best_metric=fields.pop("metric", None),
                    best_value=fields.pop("value", None), best_model=None, test=test)
    for name, value in fields.items():
        setattr(row, name, value)
    return JobOutcome(row, sha, 3, {"resources": {"gpus": 2, "nodes": 2}})


def test_segmentation_without_a_test_metric_ranks_by_its_best_validation_metric():
    found = rank([outcome(1, metric="val_mean_iu", value=0.7),
                  outcome(2, metric="val_mean_iu", value=0.8)])
    assert found.ranked_by == "validation val_mean_iu"
    assert [r.job for r in found.ranked] == [2, 1]


def test_a_test_metric_wins_over_the_validation_metric():
    found = rank([outcome(1, metric="val_mean_iu", value=0.9, test={"mean_iu": 0.6}),
                  outcome(2, metric="val_mean_iu", value=0.7, test={"mean_iu": 0.8})])
    assert found.ranked_by == "test mean_iu" and [r.job for r in found.ranked] == [2, 1]


def test_a_loss_ranks_lowest_first():
    found = rank([outcome(1, kind="torchrun", metric="val_loss", value=0.3, sha=None),
                  outcome(2, kind="torchrun", metric="val_loss", value=0.1, sha=None)])
    assert found.lower_is_better and [r.job for r in found.ranked] == [2, 1]
    assert any("has no test split list" in w for w in found.warnings)


def test_the_base_score_is_read_when_the_job_has_one():
    with_base = outcome(1, kind="transcription", test={"char_accuracy": 0.9})
    with_base.job.base_test = {"accuracy": 0.8}  # the gain helper's field, after the merge
    found = rank([with_base, outcome(2, kind="transcription", test={"char_accuracy": 0.85})])
    assert {r.job: r.base_score for r in found.ranked} == {1: 0.8, 2: None}


def test_sweep_values_are_the_settings_shown():
    tagged = outcome(1, test={"mean_iu": 0.5})
    tagged.job.sweep_values = {"learning_rate": 0.001}
    found = rank([tagged, outcome(2, test={"mean_iu": 0.6})])
    assert {r.job: r.settings for r in found.ranked}[1] == {"learning_rate": 0.001}


def test_gpu_hours_from_efficiency_else_elapsed_times_gpus_asked():
    measured = outcome(1, efficiency={"elapsed": 1800.0, "gpus": 4})
    assert gpu_hours(measured) == 2.0
    assert gpu_hours(outcome(2)) == 8.0  # 7200 s x 2 GPUs x 2 nodes


def test_time_to_best_counts_from_the_training_stage_and_skips_damaged_times():
    assert time_to_best([{"event": "start", "stage": "compile", "t": 10},
                         {"event": "start", "stage": "train", "t": 100},
                         {"event": "best", "t": "x"},
                         {"event": "best", "t": 130},
                         {"event": "start", "stage": "train", "t": 500},  # requeued
                         {"event": "best", "t": 530}]) == 430
    assert time_to_best([{"event": "start", "t": 1}]) is None


def test_a_target_that_is_not_a_job_id_is_refused_before_the_cluster_is_asked():
    with pytest.raises(Exception, match="invalid job id"):
        expand_targets(None, ["3;rm"])
