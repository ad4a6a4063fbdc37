"""Phase schedules: shapes from the paper (§3.1) and one rate per optimizer step under gradient accumulation."""

from __future__ import annotations

import math

import pytest

from tests.fixtures.train.helpers import StepRecorder, fit, write_shards
from trainer.schedules import learning_rate, validate_schedule


def test_phase1_warmup_then_cosine_to_min_lr():
    kw = dict(kind="cosine", peak_lr=5.3e-4, warmup_steps=600, total_steps=10_000, min_lr=5.3e-5)
    assert learning_rate(0, **kw) == pytest.approx(5.3e-4 / 600)
    assert learning_rate(599, **kw) == pytest.approx(5.3e-4)
    assert learning_rate(600, **kw) == pytest.approx(5.3e-4)
    mid = 600 + (10_000 - 600) // 2
    assert learning_rate(mid, **kw) == pytest.approx((5.3e-4 + 5.3e-5) / 2, rel=1e-3)
    assert learning_rate(10_000, **kw) == pytest.approx(5.3e-5)
    assert learning_rate(20_000, **kw) == pytest.approx(5.3e-5)  # stays at the floor past the end
    rates = [learning_rate(s, **kw) for s in range(600, 10_001, 50)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_phase2_rewarmup_then_linear_to_zero():
    kw = dict(kind="linear", peak_lr=5.3e-4, warmup_steps=1000, total_steps=5000, min_lr=0.0)
    assert learning_rate(0, **kw) == pytest.approx(5.3e-7)
    assert learning_rate(999, **kw) == pytest.approx(5.3e-4)
    assert learning_rate(3000, **kw) == pytest.approx(5.3e-4 / 2)
    assert learning_rate(5000, **kw) == 0.0
    assert math.isclose(learning_rate(4999, **kw), 5.3e-4 / 4000)


def test_constant_and_validation():
    assert learning_rate(50, kind="constant", peak_lr=1e-3, warmup_steps=10, total_steps=20) == 1e-3
    problems = validate_schedule(kind="step", peak_lr=0.0, warmup_steps=-1, min_lr=1.0, prefix="model.")
    assert [p.split(":")[0] for p in problems] == ["model.schedule", "model.lr", "model.warmup_steps", "model.min_lr"]


def test_schedule_counts_optimizer_steps_under_gradient_accumulation(tmp_path):
    shards = write_shards(tmp_path / "shards", train_sequences=48, val_sequences=8, phases=("phase1",))
    rec = StepRecorder()
    # 12 micro-batches of 4 per pass, accumulation 2 -> 6 optimizer steps: warmup 4, cosine over the last 2.
    fit("debug-phase1.yaml", shards, tmp_path / "run", "--trainer.accumulate_grad_batches", "2",
        "--trainer.max_steps", "6", "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
        callbacks=[rec])
    assert sorted(rec.lrs) == list(range(6))
    expected = [learning_rate(s, kind="cosine", peak_lr=5.3e-3, warmup_steps=4, total_steps=6, min_lr=5.3e-4)
                for s in range(6)]
    assert [rec.lrs[s] for s in range(6)] == pytest.approx(expected)
