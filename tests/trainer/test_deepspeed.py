"""DeepSpeed ZeRO-2 on two CPU processes over gloo, launched like a real job (`python -m trainer fit`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.fixtures.train.helpers import REPO, write_shards


@pytest.mark.slow
def test_zero2_on_two_cpu_processes(tmp_path):
    shards = write_shards(tmp_path / "shards", train_sequences=32, val_sequences=8, phases=("phase1",))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "fit", "--config", "conf/train/debug-phase1.yaml",
           "--data.shards_root", str(shards), "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "false",
           "--trainer.devices", "2", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
           "--trainer.strategy", "trainer.strategies.CPUDeepSpeedStrategy", "--trainer.strategy.stage", "2"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "max_steps=4" in proc.stderr + proc.stdout

    # ZeRO-2 partitions optimizer states: one shard per rank in the DeepSpeed checkpoint folder.
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    parts = sorted(p.name for p in (ckpt / "checkpoint").glob("zero_pp_rank_*_optim_states.pt"))
    assert parts == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    # The rank-0 HF export and the consolidated DeepSpeed checkpoint hold the same trained weights, and the
    # checkpoint folder works as a `model.init_from` source for the next phase.
    from safetensors.torch import load_file

    from trainer.export import init_source_problem, read_state_dict

    exported = load_file(str(run_dir / "hf" / "model.safetensors"))
    consolidated = read_state_dict(str(ckpt))
    assert init_source_problem(str(ckpt)) == []
    for key, value in exported.items():
        torch.testing.assert_close(consolidated[key].float(), value.float())
