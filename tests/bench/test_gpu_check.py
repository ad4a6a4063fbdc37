"""bench/gpu_check.sh --dry-run: the GPU check's whole path on CPU with tiny models, ending with RESULT {json}."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_ends_with_a_result_holding_every_figure():
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    result = json.loads(last[len("RESULT "):])
    assert result["dry_run"] is True and result["device"] == "cpu" and result["skipped"] == []
    assert set(result["trainer"]) == {"64", "128"}
    for seq_len, run in result["trainer"].items():
        assert run["seq_len"] == int(seq_len) and run["steps"] == 2 and run["tokens_per_s"] > 0
        assert run["flops_per_token"] > 6 * run["params"]  # 6N plus attention
        assert run["mfu"] is None  # no known peak for a CPU
    assert result["annotator"]["windows"] == 64 and result["annotator"]["windows_per_s"] > 0


def test_gpu_check_refuses_to_measure_without_a_gpu():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--steps", "1"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "no CUDA device; run with --dry-run" in out.stderr
