#!/bin/bash
#SBATCH --job-name=hpctrain-Projet_A-compile-7
#SBATCH --partition=publicgpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=05:00:00
#SBATCH --gres=gpu:1
#SBATCH --constraint=gputc
#SBATCH --mail-user=someone@example.org
#SBATCH --mail-type=END
# Rendered by hpctrain 0.1.0: job 7, compile of project Projet_A.
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
cd /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile

hpctrain_step compile
mkdir -p /home/alice/hpc/GT_compile/Projet_A/job7
# A requeued job reuses what it compiled before when every .arrow is whole: kraken's own Python
# checks them with arrow_check.py (beside this script) and says which happened in an event.
KETOS_PYTHON="$(dirname "$(command -v ketos || true)")/python"
[ -x "$KETOS_PYTHON" ] || KETOS_PYTHON=python3
if ! "${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/arrow_check.py check /home/alice/hpc/GT_compile/Projet_A/job7 /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/split; then
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/train.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/split/train.txt
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/validation.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/split/validation.txt
    ketos -d cuda:0 --workers "${CPUS}" --threads "${CPUS}" compile -f page -o /home/alice/hpc/GT_compile/Projet_A/job7/test.arrow -F /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/split/test.txt
    "${KETOS_PYTHON}" /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/arrow_check.py record /home/alice/hpc/GT_compile/Projet_A/job7 /home/alice/hpc/Repertoire_model_finetune/Projet_A/job7-compile/split \
        || echo "warning: could not record the compiled data; a requeue will compile again"
fi
