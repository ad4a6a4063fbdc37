#!/usr/bin/env bash
# GPU check: trainer tokens/s and MFU of the 1.3B model at sequence lengths 2048 and 8192, and annotator scoring
# windows/s, on one GPU, in at most 8 minutes; the last line is `RESULT {json}` (bench/gpu_check.py explains).
#
#   bash bench/gpu_check.sh                 # on the GPU machine (torch, lightning, transformers; no Spark, no vLLM)
#   bash bench/gpu_check.sh --dry-run       # on CPU with tiny models (tests/bench/test_gpu_check.py)
#
# PYTHON picks the interpreter (default: the repository's .venv if there is one, else python3). Nothing is
# installed: codemill's trainer/ and codemill/ packages are used from this checkout (PYTHONPATH).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# 8 minutes at most, whatever happens (the script itself stops starting measurements after --budget-s, 420 s).
exec timeout --signal=TERM --kill-after=10 480 "$python" "$repo/bench/gpu_check.py" "$@"
