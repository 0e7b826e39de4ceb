"""runtime/pick_best.py, which picks a kraken < 7 training's best epoch file by its metadata, run
as jobs run it (a separate Python) against a stand-in kraken whose models are JSON files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hpctrain.runtime import pick_best

FAKE_VGSL = """import json
class TorchVGSLModel:
    def __init__(self, meta):
        self.user_metadata = meta
    @classmethod
    def load_model(cls, path):
        return cls(json.load(open(path)))
"""


def fake_kraken(root: Path) -> Path:
    lib = root / "fake" / "kraken" / "lib"
    lib.mkdir(parents=True)
    (root / "fake" / "kraken" / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("")
    (lib / "vgsl.py").write_text(FAKE_VGSL)
    return root / "fake"


def epochs(folder: Path, scores: list[float]) -> None:
    """model_k.mlmodel for each epoch k, with the score history kraken 4.3 keeps."""
    (folder / "model").mkdir()
    for k, value in enumerate(scores):
        history = [[10 * (i + 1), v] for i, v in enumerate(scores[: k + 1])]
        (folder / "model" / f"model_{k}.mlmodel").write_text(json.dumps({"accuracy": history}))


def run(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, pick_best.__file__, str(tmp_path / "model" / "model")], cwd=tmp_path,
        env={"PYTHONPATH": str(fake_kraken(tmp_path))}, capture_output=True, text=True, check=True)


def test_the_highest_score_wins_and_its_event_names_the_epoch(tmp_path):
    # a sanity check before epoch 1 would make ketos move model_0; the epoch files decide here
    epochs(tmp_path, [0.02, 0.4, 0.61, 0.55, 0.61])
    (tmp_path / "model" / "model_best.mlmodel").write_text(json.dumps({"accuracy": [[0, 0.9]]}))
    done = run(tmp_path)
    assert done.stdout.strip() == str(tmp_path / "model" / "model_2.mlmodel")
    markers = done.stderr.strip().splitlines()[-2:]
    assert all(m.startswith("##hpctrain ") for m in markers)
    best, event = (json.loads(m[len("##hpctrain "):]) for m in markers)
    assert best == {"event": "best", "metric": "val_accuracy", "value": 0.61, "epoch": 3}
    assert event["event"] == "model" and event["path"] == "model/model_2.mlmodel"
    assert event["epoch"] == 3 and event["score"] == 0.61  # the earliest of the tied epochs


def test_a_segmentation_model_names_its_metric(tmp_path):
    epochs(tmp_path, [0.2, 0.3])
    for path in (tmp_path / "model").glob("*.mlmodel"):
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, "model_type": "segmentation"}))
    best = json.loads(run(tmp_path).stderr.splitlines()[0][len("##hpctrain "):])
    assert (best["metric"], best["epoch"]) == ("val_mean_iu", 2)


def test_epoch_ten_sorts_after_epoch_nine(tmp_path):
    epochs(tmp_path, [0.1] * 10 + [0.7])
    assert run(tmp_path).stdout.strip().endswith("model_10.mlmodel")


def test_no_epoch_file_prints_nothing(tmp_path):
    (tmp_path / "model").mkdir()
    done = run(tmp_path)
    assert done.stdout == "" and done.stderr == ""
