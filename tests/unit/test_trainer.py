"""The reference trainer: its metrics against hand-computed values, its losses, and a real short
run with resume."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from helpers import load_script  # noqa: E402
from hpctrain import trainer  # noqa: E402

make_sample_images = load_script("make_sample_images")


def test_auc_matches_pairwise_count_with_ties():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert trainer.roc_auc(scores, labels == 1) == pytest.approx(expected)
    assert trainer.roc_auc(scores, torch.zeros(6, dtype=torch.bool)) is None


def test_youden_picks_the_threshold_with_the_largest_j():
    scores = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.6])
    positives = torch.tensor([0, 0, 1, 0, 1, 1]).bool()
    threshold, sensitivity, specificity = trainer.youden(scores, positives)
    assert (
        threshold == pytest.approx(0.5)
        and sensitivity == 1.0
        and specificity == pytest.approx(2 / 3)
    )


def test_per_class_metrics_for_three_classes():
    probs = torch.tensor(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3]]
    )
    labels = torch.tensor([0, 1, 2, 1, 1])
    metrics = trainer.classification_metrics(probs, labels, ["HER2 neg", "her2-low", "HER2+"])
    assert metrics["val_accuracy"] == pytest.approx(0.8)
    assert metrics["val_sensitivity_her2_low"] == pytest.approx(
        2 / 3
    )  # one of three class-1 missed
    assert metrics["val_specificity_her2_neg"] == pytest.approx(3 / 4)
    assert set(metrics) >= {"val_auc", "val_auc_her2", "val_youden_threshold_her2_neg"}


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    logits, target = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    weight = trainer.class_weights(target.tolist(), 3)
    assert weight.tolist() == pytest.approx([8 / (3 * 4), 8 / (3 * 2), 8 / (3 * 2)])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight)
    assert trainer.FocalLoss(0.0, weight)(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    assert trainer.FocalLoss(2.0)(logits, target) < torch.nn.functional.cross_entropy(
        logits, target
    )


def events_of(output: str) -> list[dict]:
    return [
        json.loads(line[len(trainer.MARKER) :])
        for line in output.splitlines()
        if line.startswith(trainer.MARKER)
    ]


def test_short_run_checkpoints_and_resumes(tmp_path, capsys, monkeypatch):
    data = make_sample_images.generate(tmp_path / "data", train=16, val=8, size=16)
    out = tmp_path / "ck"
    common = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--image-size",
        "16",
        "--loss",
        "focal",
        "--class-weights",
        "--accumulation-steps",
        "2",
        "--amp",
        "bf16",
    ]
    monkeypatch.delenv("HPCTRAIN_RESUME_FROM", raising=False)
    assert trainer.main([*common, "--epochs", "2"]) == 0
    first = events_of(capsys.readouterr().out)
    assert [e["epoch"] for e in first if e["event"] == "metrics"] == [1, 2]
    assert all(
        0 <= e["val_auc"] <= 1 and "val_sensitivity_positive" in e
        for e in first
        if e["event"] == "metrics"
    )
    assert (
        (out / "last.pt").is_file() and (out / "best.pt").is_file() and not list(out.glob("*.part"))
    )
    # Same folder, more epochs: it starts from its own last checkpoint, not from epoch 1.
    assert trainer.main([*common, "--epochs", "3"]) == 0
    second = events_of(capsys.readouterr().out)
    assert [e for e in second if e["event"] == "resumed"][0]["epoch"] == 2
    assert [e["epoch"] for e in second if e["event"] == "metrics"] == [3]
    # A new folder started from another run's checkpoint ($HPCTRAIN_RESUME_FROM, as --resume-from
    # sets it).
    monkeypatch.setenv("HPCTRAIN_RESUME_FROM", str(out / "last.pt"))
    assert (
        trainer.main([*common[:2], "--out", str(tmp_path / "ck2"), *common[4:], "--epochs", "4"])
        == 0
    )
    third = events_of(capsys.readouterr().out)
    assert [e["epoch"] for e in third if e["event"] == "metrics"] == [4]


def test_bad_data_folder_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="needs train/CLASS/ and val/CLASS/"):
        trainer.main(["--data", str(tmp_path), "--workers", "0"])
