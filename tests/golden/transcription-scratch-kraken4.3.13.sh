#!/bin/bash
#SBATCH --job-name=hpctrain-Projet_A-transcription-7
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=05:00:00
# Rendered by hpctrain 0.1.0: job 7, transcription of project Projet_A.
# hpctrain's runner executes this script and turns its output into events.jsonl.
set -euo pipefail

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
    ketos compile --workers "${CPUS}" -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/train.txt
    ketos compile --workers "${CPUS}" -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/validation.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/validation.txt
    ketos compile --workers "${CPUS}" -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/test.txt
    "${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/arrow_check.py record /home/alice/hpc/GT_compile/Projet_A/job7 /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split \
        || echo "warning: could not record the compiled data; a requeue will compile again"
fi

hpctrain_step train
mkdir -p /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model
ketos train -d cpu --workers "${CPUS}" -f binary -o /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model/model --optimizer Adam -r 0.0001 --augment -q early --lag 10 --min-epochs 20 -N 50 -s '[1,128,0,1 Cr4,16,32 Do0.1,2 Mp2,2 Cr4,16,32 Do0.1,2 Mp2,2 Cr3,8,64 Do0.1,2 Mp2,2 Cr3,8,64 Do0.1,2 S1(1x0)1,3 Lbx256 Do0.3,2 Lbx256 Do0.3,2 Lbx256 Do0.3]' --pad 24 -e /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/split/validation_arrow.txt /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow

# kraken < 7: hpctrain picks the best epoch's file by its metadata (pick_best.py explains why).
KETOS_PYTHON="$(dirname "$(command -v ketos || true)")/python"
[ -x "$KETOS_PYTHON" ] || KETOS_PYTHON=python3
BEST_MODEL="$("${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/pick_best.py /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-transcription/model/model)"
if [ -z "$BEST_MODEL" ]; then
    echo "Error: ketos train finished without writing a best model" >&2
    exit 1
fi

hpctrain_step test
ketos test -d cpu --workers "${CPUS}" -m "${BEST_MODEL}" -f binary /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow
