#!/bin/bash
#SBATCH --job-name=hpctrain-Projet_A-segmentation-7
#SBATCH --partition=publicgpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=05:00:00
#SBATCH --gres=gpu:1
#SBATCH --constraint=gputc
#SBATCH --mail-user=someone@example.org
#SBATCH --mail-type=END
# Rendered by hpctrain 0.1.0: job 7, segmentation of project Projet_A.
# hpctrain's runner executes this script and turns its output into events.jsonl.
set -euo pipefail

# A batch job and a non-login shell may lack `module`: load the site's module system first.
if ! type module >/dev/null 2>&1; then
    set +u
    for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash /etc/profile.d/modules.sh \
            /usr/share/Modules/init/bash; do
        if [ -r "$init" ]; then . "$init"; break; fi
    done
    set -u
fi
if ! type module >/dev/null 2>&1; then
    echo "Error: no module system (Lmod or Environment Modules) on this node to run 'module load': set 'venv' in the profile instead of 'modules'" >&2
    exit 1
fi
module load kraken
export COLUMNS=250 PYTHONUNBUFFERED=1
# Data loader workers and threads follow the CPUs allocated to the job, not a constant.
CPUS="${SLURM_CPUS_PER_TASK:-$(nproc)}"
hpctrain_step() { printf '##hpctrain {"event": "step", "step": "%s"}\n' "$1"; }
cd /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation

# The base model's score on the same test pages, before training: what the fine-tuned model
# gains over it. Its failure does not stop the training, and a requeued job that has the score
# (the runner sets HPCTRAIN_BASE_TESTED) does not test again.
if [ -z "${HPCTRAIN_BASE_TESTED:-}" ]; then
    printf '%s\n' '##hpctrain {"event": "step", "step": "base_test", "model": "blla"}'
    ketos segtest -d cuda:0 --workers "${CPUS}" -m /home/alice/hpc/Model_de_base/blla.mlmodel -f page -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/split/test.txt || echo "Error: testing the base model failed (exit code $?); the training goes on"
fi

hpctrain_step train
mkdir -p /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/model
ketos segtrain -d cuda:0 --workers "${CPUS}" -f page -o /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/model/model --optimizer Adam -r 0.0001 --augment -q early --lag 20 --min-epochs 60 -N 200 -i /home/alice/hpc/Model_de_base/blla.mlmodel --resize new -t /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/split/train.txt -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/split/validation.txt

# kraken < 7: hpctrain picks the best epoch's file by its metadata (pick_best.py explains why).
KETOS_PYTHON="$(dirname "$(command -v ketos || true)")/python"
[ -x "$KETOS_PYTHON" ] || KETOS_PYTHON=python3
BEST_MODEL="$("${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/pick_best.py /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/model/model)"
if [ -n "$BEST_MODEL" ]; then
    hpctrain_step test
    ketos segtest -d cuda:0 --workers "${CPUS}" -m "${BEST_MODEL}" -f page -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-segmentation/split/test.txt || echo "warning: testing the fine-tuned model failed (exit code $?)"
fi
