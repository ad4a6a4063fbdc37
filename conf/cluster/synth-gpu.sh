#!/usr/bin/env bash
# Synthetic data with vLLM on GPU nodes. Two supported ways to scale out, both through existing engines:
#  1. One node, all its GPUs: vLLM tensor parallelism (Llama-3.1-70B bf16 needs 4-8 x 80 GB):
#       python -m synth.generate --config conf/synth/vllm-70b.yaml --lake "$LAKE"
#  2. Many nodes: run the same command on each node with a disjoint seed shard
#     (--shard_index i --num_shards n); each node commits its own chunks; restarts skip finished seeds.
#     On a Slurm cluster:  srun --nodes=$N --ntasks-per-node=1 --gpus-per-node=8 conf/cluster/synth-gpu.sh
#     With several shards a node skips post-processing; after all shards finish, run once:
#       python -m synth.generate --config "$SYNTH_CONFIG" --lake "$LAKE" --generate false   # rebuilds `synthetic`
set -euo pipefail
: "${LAKE:?}"
SHARD=${SLURM_PROCID:-${SHARD_INDEX:-0}}
SHARDS=${SLURM_NTASKS:-${NUM_SHARDS:-1}}
exec python -m synth.generate --config "${SYNTH_CONFIG:-conf/synth/vllm-70b.yaml}" --lake "$LAKE" \
  --shard_index "$SHARD" --num_shards "$SHARDS" "$@"
