#!/usr/bin/env bash
# Multi-node DDP training of aspp-seg under SLURM, with Lightning's own SLURM launcher:
# SLURM starts one task per GPU on every node and Lightning reads its rank, world size
# and master address from SLURM's environment (SLURM_PROCID, SLURM_NTASKS, ...).
#
#   sbatch scripts/slurm_ddp.sh configs/dl1.yaml --data.init_args.root /data/cityscapes
#
# Nodes and GPUs per node are set here once; the script passes the same numbers to the
# Trainer (Lightning checks that they match SLURM's). The global batch stays at the
# config's 8 crops on any number of GPUs (data.global_batch_size, see
# configs/trainer/ddp.yaml), so the study's LR 0.007 still applies.
#SBATCH --job-name=aspp-seg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4          # one task per GPU: must equal --gpus-per-node
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8            # data workers per GPU (docs/scaling.md)
#SBATCH --mem=0                      # all of each node's memory
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90          # Lightning saves and requeues before the time limit
#SBATCH --output=slurm-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_ddp.sh <config.yaml> [more aspp-seg fit arguments]}
shift

# Activate the environment the job runs in (edit to match your cluster).
# . .venv/bin/activate

export OMP_NUM_THREADS=1             # the data workers are the CPU parallelism
export NCCL_ASYNC_ERROR_HANDLING=1   # a failed rank stops the job instead of hanging it

GLOBAL_BATCH=${GLOBAL_BATCH:-8}

# srun starts the tasks; Lightning's SLURMEnvironment wires them into one process group.
srun aspp-seg fit \
    --config "$CONFIG" \
    --config configs/trainer/ddp.yaml \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" \
    --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --data.init_args.global_batch_size "$GLOBAL_BATCH" \
    --data.init_args.num_workers "$SLURM_CPUS_PER_TASK" \
    "$@"
