"""Pick a kraken < 7 training's best model from its per-epoch files, by their own metadata.

Copied into the job folder and run with kraken's own Python (it imports kraken, never hpctrain;
Python 3.8 syntax): `python pick_best.py PREFIX`. kraken 4.x writes PREFIX_k.mlmodel after each
epoch k (from 0), each holding its validation score (val_metric: val_accuracy for train,
val_mean_iu for segtrain) as the last entry of its `accuracy` metadata. Its own PREFIX_best is
not trusted: it counts the sanity check before epoch 1 (the untrained model can win), and it is
not written at all with a fixed number of epochs. The highest score wins, the earliest epoch on a
tie: the rule hpctrain's log parser follows for the `best` event that `status` shows.

Prints the chosen file's path on stdout, and on stderr two `##hpctrain` events: `best` (what
`status` shows) and `model` (what the runner records as the job's best model, and `fetch`
brings back); prints nothing when no epoch file exists.
"""

import glob
import json
import os
import re
import sys


def score(path):
    """(validation score, the name of the metric it is) from the model's own metadata."""
    from kraken.lib.vgsl import TorchVGSLModel

    meta = TorchVGSLModel.load_model(path).user_metadata
    history = meta.get("accuracy") or []
    name = "val_mean_iu" if meta.get("model_type") == "segmentation" else "val_accuracy"
    return (float(history[-1][1]) if history else float("-inf")), name


def epoch_files(prefix):
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"_([0-9]+)\.mlmodel$")
    found = []
    for path in glob.glob(glob.escape(prefix) + "_*.mlmodel"):
        match = pattern.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def main(prefix):
    best = None
    for epoch, path in epoch_files(prefix):
        value, name = score(path)
        if best is None or value > best[0]:
            best = (value, epoch, path, name)
    if best is None:
        return 0
    value, epoch, path, name = best
    # The best epoch as the model files record it: ketos 4.3 may never print its last epoch's
    # line (it comes after Lightning's "max_epochs reached"), so the log alone can miss it.
    best_event = {"event": "best", "metric": name, "value": value, "epoch": epoch + 1}
    event = {"event": "model", "path": os.path.relpath(path), "epoch": epoch + 1,
             "score": value, "chosen_by": "hpctrain (epoch files' metadata)"}
    for line in (best_event, event):
        sys.stderr.write("##hpctrain " + json.dumps(line) + "\n")
    sys.stderr.flush()
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
