"""Learning-rate schedules of the three Arctic-SnowCoder phases, as pure functions of the optimizer step.

Paper §3.1 (arXiv 2409.02326): phase 1 (general pretraining) warms up linearly for 600 steps and then follows a
cosine decay from 5.3e-4 to 5.3e-5; phases 2 and 3 (continued pretraining on high-quality / synthetic data) re-warm
from 0 to 5.3e-4 over 1000 steps and then decay linearly to 0. The step counted here is the *optimizer* step, so
gradient accumulation never stretches or squeezes a schedule; Lightning steps a scheduler with `interval: step` once
per optimizer step.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["cosine", "linear", "constant"]
SCHEDULE_KINDS = ("cosine", "linear", "constant")


def learning_rate(step: int, *, kind: ScheduleKind, peak_lr: float, warmup_steps: int, total_steps: int,
                  min_lr: float = 0.0) -> float:
    """The learning rate for optimizer step `step` (0-based: the rate used by the step's update).

    Warmup rises linearly from `peak_lr / warmup_steps` at step 0 to `peak_lr` at step `warmup_steps - 1`, so
    no update is wasted at lr 0. After warmup, `cosine` and `linear` decay to `min_lr` at `total_steps` and stay
    there; `constant` holds `peak_lr`.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return peak_lr
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    if kind == "cosine":
        return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return peak_lr + (min_lr - peak_lr) * progress
    raise ValueError(f"unknown schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}")


def validate_schedule(*, kind: str, peak_lr: float, warmup_steps: int, min_lr: float, prefix: str = "") -> list[str]:
    """Configuration problems of a schedule, each naming its key."""
    problems = []
    if kind not in SCHEDULE_KINDS:
        problems.append(f"{prefix}schedule: {kind!r} is not one of {SCHEDULE_KINDS}")
    if peak_lr <= 0:
        problems.append(f"{prefix}lr: must be > 0, got {peak_lr}")
    if warmup_steps < 0:
        problems.append(f"{prefix}warmup_steps: must be >= 0, got {warmup_steps}")
    if not 0 <= min_lr <= peak_lr:
        problems.append(f"{prefix}min_lr: must lie in [0, lr={peak_lr}], got {min_lr}")
    return problems


def lambda_lr(optimizer, *, kind: ScheduleKind, peak_lr: float, warmup_steps: int, total_steps: int,
              min_lr: float = 0.0):
    """A `torch.optim.lr_scheduler.LambdaLR` following `learning_rate`; the optimizer's base lr must be `peak_lr`."""
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        return learning_rate(step, kind=kind, peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                             min_lr=min_lr) / peak_lr

    return LambdaLR(optimizer, factor)
