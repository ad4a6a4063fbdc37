#!/usr/bin/env bash
# Multi-node training with Lightning + DeepSpeed. Lightning's launchers read the standard environment:
# under Slurm (srun) it uses SLURM_* directly; elsewhere (Kubernetes, bare metal) torchrun sets
# MASTER_ADDR/MASTER_PORT/NODE_RANK/WORLD_SIZE. Example, 4 nodes x 8 GPUs, phase 1 of the 1.3B model:
#   Slurm:     sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --wrap "srun conf/cluster/train-multinode.sh phase1"
#   torchrun:  torchrun --nnodes=4 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD:29500 \
#                -m trainer fit --config conf/train/phase1.yaml --trainer.num_nodes 4 --trainer.devices 8
set -euo pipefail
PHASE=${1:-phase1}
shift || true
NODES=${SLURM_NNODES:-${NUM_NODES:-1}}
GPUS=${GPUS_PER_NODE:-8}
exec python -m trainer fit --config "conf/train/${PHASE}.yaml" \
  --trainer.num_nodes "$NODES" --trainer.devices "$GPUS" "$@"
