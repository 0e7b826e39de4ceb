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
    # The example's rates are the guide's fine-tuning ones; this demo trains from scratch.
    sed -i.bak -e '0,/learning_rate: 0.0001/s//learning_rate: 0.001/' -e '0,/augment: true/s//augment: false/' \
        -e '0,/min_epochs: 20/s//min_epochs: 30/' -e '0,/lag: 10 /s//lag: 5  /' projects/Demo.yaml
    rm -f projects/Demo.yaml.bak
fi
[ -n "$(ls -A ground_truth/Demo 2>/dev/null)" ] || python "$repo/scripts/make_sample_gt.py" ground_truth/Demo --pages 12
hpctrain push Demo
job="$(hpctrain submit transcription Demo --no-base --json | python -c 'import json, sys; print(json.load(sys.stdin)["job"]["id"])')"
echo "== submitted job $job; waiting (ketos on CPU, about a minute)"
hpctrain wait "$job"
hpctrain status
hpctrain fetch "$job"
echo "== done: the model is in $workspace/models/finetuned/Demo/job$job/"
