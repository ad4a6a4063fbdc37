#!/usr/bin/env bash
# Synthetic data with vLLM on GPU nodes. Two supported ways to scale out, both through existing engines:
#  1. One node, all its GPUs: vLLM tensor parallelism (Llama-3.1-70B bf16 needs 4-8 x 80 GB):
#       python -m spark_jobs.pipeline --stages synth --lake "$LAKE" --synth conf/synth/vllm-70b.yaml
#  2. Many nodes: run the same command on each node with a disjoint seed shard
#     (--synth.shard_index i --synth.num_shards n); each node commits its own chunks; restarts skip finished seeds.
#     On a Slurm cluster:  srun --nodes=$N --ntasks-per-node=1 --gpus-per-node=8 conf/cluster/synth-gpu.sh
#     With several shards a node skips post-processing; after all shards finish, run once:
#       python -m spark_jobs.pipeline --stages synth --lake "$LAKE" --synth "$SYNTH_CONFIG" --synth.generate false
set -euo pipefail
: "${LAKE:?}"
SHARD=${SLURM_PROCID:-${SHARD_INDEX:-0}}
SHARDS=${SLURM_NTASKS:-${NUM_SHARDS:-1}}
exec python -m spark_jobs.pipeline --stages synth --lake "$LAKE" --synth "${SYNTH_CONFIG:-conf/synth/vllm-70b.yaml}" \
  --synth.shard_index "$SHARD" --synth.num_shards "$SHARDS" "$@"
