#!/bin/bash
#SBATCH --job-name=hpctrain-Projet_A-transcription-7
#SBATCH --partition=publicgpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=05:00:00
#SBATCH --gres=gpu:1
#SBATCH --constraint=gputc
#SBATCH --mail-user=someone@example.org
#SBATCH --mail-type=END
# Rendered by hpctrain 0.1.0: job 7, transcription of project Projet_A.
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
cd /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription

hpctrain_step compile
mkdir -p /home/alice/hpc/GT_compile/Projet_A/job7
# A requeued job reuses what it compiled before when every .arrow is whole: kraken's own Python
# checks them with arrow_check.py (beside this script) and says which happened in an event.
KETOS_PYTHON="$(dirname "$(command -v ketos || true)")/python"
[ -x "$KETOS_PYTHON" ] || KETOS_PYTHON=python3
if ! "${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/arrow_check.py check /home/alice/hpc/GT_compile/Projet_A/job7 /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split; then
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/train.txt
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/validation.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/validation.txt
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/test.txt
    "${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/arrow_check.py record /home/alice/hpc/GT_compile/Projet_A/job7 /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split \
        || echo "warning: could not record the compiled data; a requeue will compile again"
fi

# The base model's score on the same test pages, before training: what the fine-tuned model
# gains over it. Its failure does not stop the training, and a requeued job that has the score
# (the runner sets HPCTRAIN_BASE_TESTED) does not test again.
if [ -z "${HPCTRAIN_BASE_TESTED:-}" ]; then
    printf '%s\n' '##hpctrain {"event": "step", "step": "base_test", "model": "tridis_v2"}'
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" test -m /home/alice/hpc/Model_de_base/tridis_v2.mlmodel -f binary /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow || echo "Error: testing the base model failed (exit code $?); the training goes on"
fi

hpctrain_step train
mkdir -p /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model
# A requeued job starts again here: it continues from the newest checkpoint ketos left, if any
# (the best model is converted again at the end, so the earlier conversion goes first).
RESUME="$(ls -1t /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model/*.ckpt 2>/dev/null | head -n 1 || true)"
if [ -n "$RESUME" ]; then
    echo "resuming from $RESUME"
    rm -f /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model/best_*.mlmodel
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" train --resume "${RESUME}" -f binary -o /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model --weights-format coreml --optimizer Adam -r 0.0001 --augment -q early --lag 10 --min-epochs 20 -N 50 --pad 24 -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/validation_arrow.txt /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow
else
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" train -f binary -o /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model --weights-format coreml --optimizer Adam -r 0.0001 --augment -q early --lag 10 --min-epochs 20 -N 50 -i /home/alice/hpc/Model_de_base/tridis_v2.mlmodel --resize new --pad 24 -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/validation_arrow.txt /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow
fi

BEST_MODEL="$(ls -1t /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model/best_*.mlmodel 2>/dev/null | head -n 1 || true)"
if [ -z "$BEST_MODEL" ]; then
    echo "Error: ketos train finished without writing a best model" >&2
    exit 1
fi

hpctrain_step test
ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" test -m "${BEST_MODEL}" -f binary /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow
