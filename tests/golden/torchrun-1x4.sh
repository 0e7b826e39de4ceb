#!/bin/bash
#SBATCH --job-name=hpctrain-trainer-torchrun-1
#SBATCH --partition=publicgpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=05:00:00
#SBATCH --gres=gpu:4
# Rendered by hpctrain 0.1.0: job 1, torchrun of project trainer.
# hpctrain's runner executes this script and turns its output into events.jsonl.
set -euo pipefail

export COLUMNS=250 PYTHONUNBUFFERED=1
# Data loader workers and threads follow the CPUs allocated to the job, not a constant.
CPUS="${SLURM_CPUS_PER_TASK:-$(nproc)}"
hpctrain_step() { printf '##hpctrain {"event": "step", "step": "%s"}\n' "$1"; }
cd WS/cluster/Repertoire_model_finetune/trainer/job1-torchrun

# One torchrun per node; they meet at a c10d rendezvous on the first node of the allocation.
NNODES="$SLURM_JOB_NUM_NODES"
# sed, not head: head may exit before scontrol has written all, and pipefail would end the job.
HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
# The address Slurm itself reaches that node at (node names need not resolve everywhere).
HEAD_ADDR="$(scontrol show node "$HEAD_NODE" -o | sed -n 's/.* NodeAddr=\([^ ]*\).*/\1/p')"
HEAD_NODE="${HEAD_ADDR:-$HEAD_NODE}"
RDZV_ID="$SLURM_JOB_ID"
# A port of its own per job, below Linux's ephemeral range so that no client socket holds it.
RDZV_PORT=$(( 15000 + SLURM_JOB_ID % 15000 ))
NPROC_PER_NODE=4
# The task's CPUs are shared among the node's processes.
export OMP_NUM_THREADS=$(( CPUS / NPROC_PER_NODE > 0 ? CPUS / NPROC_PER_NODE : 1 ))
export HPCTRAIN_DIST_BACKEND=nccl
export HPCTRAIN_JOB_DIR=WS/cluster/Repertoire_model_finetune/trainer/job1-torchrun
echo "torchrun: $NNODES node(s) x $NPROC_PER_NODE process(es), rendezvous $HEAD_NODE:$RDZV_PORT ($RDZV_ID), $OMP_NUM_THREADS thread(s) each"

hpctrain_step train
srun --overlap --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --cpus-per-task="$CPUS" \
torchrun \
    --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$RDZV_PORT" --rdzv-id="$RDZV_ID" \
    --max-restarts=0 \
    WS/cluster/Repertoire_model_finetune/trainer/job1-torchrun/code/trainer.py --data /scratch/her2
