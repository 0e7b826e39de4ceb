"""`hpctrain plot`: curves folded from events (runtime/curves.py), drawn as a PNG (app/plot.py),
and fetch's curves.png; without matplotlib, one line says how to install it."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from helpers import one_line_error

from hpctrain.app import plot
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.runtime.curves import Curve, base_score, fold

JOBS = "Repertoire_model_finetune"


def ketos_epoch(epoch: int, accuracy: float, loss: float) -> dict:
    return {"event": "epoch", "epoch": epoch, "total": 4, "t": 10 + epoch,
            "metrics": {"train_loss_step": 9.9, "val_accuracy": accuracy,
                        "val_word_accuracy": accuracy / 2, "train_loss_epoch": loss}}


def training(accuracies=(0.2, 0.5, 0.7, 0.65), losses=(3.0, 2.0, 1.2, 1.1), base=None) -> list:
    found = [{"event": "start", "t": 1}]
    if base is not None:
        found.append({"event": "base_test", "t": 2, "model": "tridis_v2", "accuracy": base})
    best = None
    for epoch, (accuracy, loss) in enumerate(zip(accuracies, losses)):
        found.append(ketos_epoch(epoch, accuracy, loss))
        if best is None or accuracy > best:
            best = accuracy
            found.append({"event": "best", "metric": "val_accuracy", "value": accuracy,
                          "epoch": epoch, "t": 10 + epoch})
    found += [{"event": "result", "best_model": "model/best.mlmodel", "t": 20},
              {"event": "test", "char_accuracy": 0.91, "t": 21},
              {"event": "end", "exit_code": 0, "t": 22}]
    return found


def add_job(workspace: Path, job_events: list, project: str = "Demo") -> int:
    root = workspace / "cluster"
    with Registry(root) as registry:
        record = registry.add("transcription", project, "tridis_v2",
                              lambda i: f"{JOBS}/{project}/job{i}-transcription", {})
        registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
    job_dir = root / record.job_dir
    (job_dir / "model").mkdir(parents=True)
    (job_dir / "model" / "best.mlmodel").write_bytes(b"weights")
    (job_dir / "job.sh").write_text("#!/bin/bash\nketos train\n")
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in job_events))
    return record.id


def pixels(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[:, :, :3]


def colours_like(path: Path, rgb: tuple[float, float, float], tolerance: float = 0.05) -> int:
    """How many pixels of the PNG have about this colour."""
    found = pixels(path)
    return int((abs(found - rgb).max(axis=2) < tolerance).sum())


BLUE, ORANGE = (0x1F / 255, 0x77 / 255, 0xB4 / 255), (0xFF / 255, 0x7F / 255, 0x0E / 255)


# -- the fold -----------------------------------------------------------------------------------
def test_a_ketos_training_folds_into_its_series():
    curve = fold(iter(training(base=0.4)))
    assert curve.epochs == [0, 1, 2, 3]
    assert curve.metric == "val_accuracy" and curve.values == [0.2, 0.5, 0.7, 0.65]
    assert curve.loss == "train_loss_epoch" and curve.losses == [3.0, 2.0, 1.2, 1.1]
    assert (curve.best_epoch, curve.best_value) == (2, 0.7)
    assert curve.base_value == 0.4 and curve.base_test["model"] == "tridis_v2"
    assert curve.test == {"char_accuracy": 0.91}


def test_a_real_ketos_7_log_folds_into_its_curve():
    from hpctrain.runtime.logparse import parse_file

    fixtures = Path(__file__).parents[1] / "fixtures" / "ketos7"
    curve = fold(parse_file(fixtures / "train_fixed.log"))
    assert curve.epochs == list(range(1, 26)) and curve.metric == "val_accuracy"
    assert curve.values[0] == 0.0 and curve.values[-1] == 0.988
    assert curve.loss == "train_loss_epoch" and curve.losses[0] == 84.601
    assert (curve.best_epoch, curve.best_value) == (25, 0.988)
    segmentation = fold(parse_file(fixtures / "segtrain_fixed.log"))
    assert segmentation.metric == "val_mean_iu" and segmentation.values == [0.29, 0.3]


def test_a_scripts_flat_metrics_and_a_requeue_keep_the_last_value_of_an_epoch():
    flat = [{"event": "metrics", "epoch": e, "total": 3, "train_loss": 1.0 / e, "val_auc": v,
             "seconds": 4.2, "t": e} for e, v in ((1, 0.6), (2, 0.7), (2, 0.75), (3, 0.8))]
    curve = fold(iter(flat))
    assert curve.metric == "val_auc" and curve.epochs == [1, 2, 3]
    assert curve.values == [0.6, 0.75, 0.8] and curve.loss == "train_loss"
    assert curve.best_epoch is None and curve.base_value is None


def test_no_loss_no_nan_and_a_damaged_event_are_left_out():
    curve = fold(iter([{"event": "epoch", "epoch": 0, "metrics": {"val_mean_iu": float("nan")}},
                       {"event": "epoch", "epoch": "1", "metrics": {"val_mean_iu": 0.3}},
                       {"event": "epoch", "epoch": 2, "metrics": {"val_mean_iu": 0.4}}]))
    assert curve.epochs == [0, 2] and curve.values == [None, 0.4]
    assert curve.loss is None and curve.losses == []
    json.dumps(curve.to_json(), allow_nan=False)  # crosses SSH as plain JSON


@pytest.mark.parametrize("base_test, metric, expected", [
    ({"accuracy": 0.8}, "val_accuracy", 0.8),
    ({"char_accuracy": 0.7}, "val_accuracy", 0.7),
    ({"mean_iu": 0.5, "accuracy": 0.9}, "val_mean_iu", 0.5),
    ({"unsupported": "kraken 4.3.13 has no ketos segtest"}, "val_mean_iu", None),
    ({"accuracy": 0.8}, "val_mean_iu", None),
    ({}, "val_accuracy", None),
])
def test_the_base_score_is_read_on_the_metrics_scale(base_test, metric, expected):
    assert base_score(base_test, metric) == expected


# -- the picture --------------------------------------------------------------------------------
def curve(job=3, values=(0.2, 0.5, 0.7, 0.68), base=None, loss=True) -> Curve:
    epochs = list(range(len(values)))
    return Curve(job=job, project="Demo", kind="transcription", metric="val_accuracy",
                 epochs=epochs, values=list(values), loss="train_loss_epoch" if loss else None,
                 losses=[3.0 - e * 0.5 for e in epochs] if loss else [],
                 best_epoch=values.index(max(values)), best_value=max(values),
                 base_test={"model": "tridis_v2", "accuracy": base} if base else {},
                 base_value=base)


def test_one_job_draws_curves_not_an_empty_figure(tmp_path):
    path = plot.save([curve()], tmp_path / "c.png")
    assert path.stat().st_size > 10_000
    found = pixels(path)
    assert found.shape[0] > 500 and found.shape[1] > 700  # two panels
    assert (found < 0.9).any(axis=2).mean() > 0.02  # ink, not a blank page
    assert colours_like(path, BLUE) > 500  # the curves themselves


def bluish_per_row(path: Path):
    found = pixels(path)
    return ((found[:, :, 2] - found[:, :, 0]) > 0.2).sum(axis=1)  # blue, or blue on white


def test_the_base_models_score_is_a_line_across_the_panel(tmp_path):
    without = plot.save([curve(loss=False)], tmp_path / "without.png")
    with_base = plot.save([curve(base=0.4, loss=False)], tmp_path / "with.png")
    width = pixels(with_base).shape[1]
    assert bluish_per_row(with_base).max() > width * 0.5  # a dashed row across the plot
    assert bluish_per_row(without).max() < width * 0.2


def test_several_jobs_overlay_one_colour_each(tmp_path):
    one = plot.save([curve()], tmp_path / "one.png")
    two = plot.save([curve(), curve(job=4, values=(0.3, 0.6, 0.75))], tmp_path / "two.png")
    assert colours_like(one, ORANGE) < 20
    assert colours_like(two, ORANGE) > 300 and colours_like(two, BLUE) > 300


def test_a_job_without_loss_gets_one_panel(tmp_path):
    path = plot.save([curve(loss=False)], tmp_path / "c.png")
    assert pixels(path).shape[0] < 450


def test_jobs_without_epochs_are_refused_or_left_out():
    with pytest.raises(plot.HpctrainError, match="no per-epoch metrics yet"):
        plot.drawable([Curve(job=5)])
    drawn, notes = plot.drawable([curve(), Curve(job=5)])
    assert [c.job for c in drawn] == [3] and "job 5" in notes[0]


@pytest.fixture
def no_matplotlib(monkeypatch):
    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


def test_without_matplotlib_the_error_says_how_to_install_it(no_matplotlib):
    with pytest.raises(plot.MissingMatplotlib, match=r"pip install 'hpctrain\[plot\]'"):
        plot.render([curve()])


# -- the commands -------------------------------------------------------------------------------
def test_plot_command_writes_the_png(cli, workspace, tmp_path):
    first = add_job(workspace, training(base=0.4))
    second = add_job(workspace, training(accuracies=(0.3, 0.6, 0.8)))
    out = tmp_path / "sweep.png"
    result = cli("plot", str(first), str(second), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (2 jobs)" in result.stdout
    assert colours_like(out, ORANGE) > 300 and colours_like(out, BLUE) > 300
    data = json.loads(cli("plot", str(first), "--json", "-o", str(out)).stdout)
    assert data["jobs"][0]["values"] == [0.2, 0.5, 0.7, 0.65]


def test_plot_without_matplotlib_is_one_line(cli, workspace, no_matplotlib):
    job = add_job(workspace, training())
    one_line_error(cli("plot", str(job)), "pip install 'hpctrain[plot]'")


def test_plot_of_an_unknown_job_or_one_without_epochs_is_one_line(cli, workspace):
    one_line_error(cli("plot", "9"), "no job 9")
    job = add_job(workspace, [{"event": "start", "t": 1}])
    one_line_error(cli("plot", str(job)), "no per-epoch metrics yet")


def test_fetch_writes_curves_png_beside_the_model(cli, workspace):
    job = add_job(workspace, training(base=0.4))
    result = cli("fetch", str(job), "--json")
    assert result.exit_code == 0, result.output
    picture = workspace / "models" / "finetuned" / "Demo" / f"job{job}" / "curves.png"
    assert str(picture.relative_to(workspace)) in json.loads(result.stdout)["files"]
    assert colours_like(picture, BLUE) > 500


def test_fetch_without_matplotlib_notes_it_and_still_fetches(cli, workspace, no_matplotlib):
    job = add_job(workspace, training())
    result = cli("fetch", str(job))
    assert result.exit_code == 0, result.output
    folder = workspace / "models" / "finetuned" / "Demo" / f"job{job}"
    assert (folder / "model.json").is_file() and not (folder / "curves.png").exists()
    assert "curves.png not drawn" in result.stderr and "hpctrain[plot]" in result.stderr
