"""DeepSpeed ZeRO on CPU over gloo, as well as on CUDA GPUs.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA and insists that device indices match local
ranks, which CPU devices (index None) never do. DeepSpeed itself runs ZeRO stages 1 and 2 on CPU when
`DS_ACCELERATOR=cpu` (it also falls back to CPU when no GPU is found), using gloo collectives. This subclass only
skips those two checks on CPU; on CUDA it behaves exactly like its parent, so the phase YAMLs for GPU clusters and the
debug YAMLs for this machine name the same class.
"""

from __future__ import annotations

import os

from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """`DeepSpeedStrategy` that also runs on CPU processes (gloo); ZeRO stage 3 still needs GPUs."""

    strategy_name = "deepspeed_any"

    def _on_cpu(self) -> bool:
        return not isinstance(self.accelerator, CUDAAccelerator)

    def setup_environment(self) -> None:
        if not self._on_cpu():
            return super().setup_environment()
        if isinstance(self.config, dict) and self.zero_stage_3:
            raise RuntimeError("trainer.strategy: DeepSpeed ZeRO stage 3 needs CUDA; use stage 1 or 2 on CPU")
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DDPStrategy.setup_environment: set up the (CPU) root device, then call self.setup_distributed().
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        if not self._on_cpu():
            return super().setup_distributed()
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()  # the process group backend resolves to gloo on CPU

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        if not self._on_cpu():
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)
        import argparse

        import deepspeed

        # Lightning passes the root device's index, which is None on CPU; DeepSpeed wants the local rank there.
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False,
        )
        return engine, ds_optimizer
