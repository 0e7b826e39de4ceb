#!/usr/bin/env bash
# The whole kraken fine-tuning cycle on the embedded default (no cluster needed):
# init a workspace, generate sample ground truth, push, train a recognition model with a real
# ketos, wait while printing progress, fetch the model. Usage: scripts/demo.sh [WORKSPACE]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
workspace="${1:-$repo/demo-workspace}"

bash "$repo/scripts/setup_env.sh"
export PATH="$repo/.venv/bin:$PATH"

hpctrain init "$workspace"
cd "$workspace"
if [ ! -f projects/Demo.yaml ]; then
    hpctrain project new Demo
    # The example's settings are the guide's, for fine-tuning on a GPU. This demo trains from
    # scratch on a CPU with a higher rate. From scratch, the accuracy sits near zero for 10 to 35
    # epochs before the network starts reading (seeds 1-3 measured); min_epochs 40 keeps early
    # stopping from ending a run on that plateau, as unseeded runs with 30 sometimes did. The
    # seed makes every run start, and here end, the same way.
    sed -i.bak -e '0,/learning_rate: 0.0001/s//learning_rate: 0.001/' \
        -e '0,/augment: true/s//augment: false/' \
        -e '0,/min_epochs: 20/s//min_epochs: 40/' -e '0,/lag: 10 /s//lag: 5  /' \
        -e '0,/seed: null /s//seed: 3    /' projects/Demo.yaml
    rm -f projects/Demo.yaml.bak
fi
[ -n "$(ls -A ground_truth/Demo 2>/dev/null)" ] || python "$repo/scripts/make_sample_gt.py" ground_truth/Demo --pages 12
hpctrain push Demo
job="$(hpctrain submit transcription Demo --no-base --json | python -c 'import json, sys; print(json.load(sys.stdin)["job"]["id"])')"
echo "== submitted job $job; waiting (ketos on CPU, a few minutes)"
hpctrain wait "$job"
hpctrain status
fetched="$(hpctrain fetch "$job" --json)"
python - "$fetched" <<'SUMMARY'
import json, pathlib, sys
fetched = json.loads(sys.argv[1])
folder = pathlib.Path(fetched["destination"])
about = json.loads((folder / "model.json").read_text())
best, test = about["best"], about.get("test", {})
print(f"== done: the model is {pathlib.Path(fetched['model']).resolve()}")
print(f"   provenance in {folder / 'model.json'}:")
print(f"   job {about['job']} ({about['kind']}, project {about['project']}), "
      f"kraken {about['kraken_version']}, seed {about['parameters']['params'].get('seed')}")
print(f"   best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}; "
      f"test accuracy {test.get('char_accuracy', float('nan')):.2%}")
print(f"   sha256 {about['model']['sha256']}")
SUMMARY
