"""CPUDeepSpeedStrategy: ZeRO config on CPU and the checks it keeps (the 2-process run is in test_deepspeed.py)."""

from __future__ import annotations

import pytest
from lightning.pytorch.accelerators import CPUAccelerator

from trainer.strategies import CPUDeepSpeedStrategy


def test_builds_zero_config_for_the_requested_stage():
    strategy = CPUDeepSpeedStrategy(stage=2)
    assert strategy.config["zero_optimization"]["stage"] == 2
    assert not strategy.zero_stage_3


def test_stage_3_on_cpu_is_refused_with_the_key_to_fix():
    strategy = CPUDeepSpeedStrategy(stage=3)
    strategy.accelerator = CPUAccelerator()
    with pytest.raises(RuntimeError, match="trainer.strategy: DeepSpeed ZeRO stage 3 needs CUDA"):
        strategy.setup_environment()
