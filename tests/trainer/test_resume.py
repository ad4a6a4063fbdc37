"""A run killed mid-phase and resumed from its checkpoint reproduces the uninterrupted run step for step, and the
debug config's per-step losses match the golden file (tests/fixtures/train/golden_losses_debug.json).

Regenerate the golden file after an intended numeric change with:
    CODEMILL_WRITE_GOLDEN=1 .venv/bin/pytest -q tests/trainer/test_resume.py
"""

from __future__ import annotations

import json
import os

import pytest

from tests.fixtures.train.helpers import REPO, StepRecorder, fit, write_shards

GOLDEN = REPO / "tests" / "fixtures" / "train" / "golden_losses_debug.json"
# 48 train sequences / batch 4 = 12 steps per pass; repeat 2 -> the debug config's 24 steps span two passes.
SHARDS = dict(train_sequences=48, val_sequences=8, repeat=2, phases=("phase1",))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    shards = write_shards(root / "shards", **SHARDS)
    rec = StepRecorder()
    fit("debug-phase1.yaml", shards, root / "full", callbacks=[rec])
    return root, shards, rec


def test_killed_and_resumed_run_matches_uninterrupted(uninterrupted):
    root, shards, full = uninterrupted
    killed = StepRecorder(crash_after=20)
    fit("debug-phase1.yaml", shards, root / "killed", callbacks=[killed])
    assert sorted(killed.losses) == list(range(20))
    # Checkpoints every 8 steps: resume from step 16, 4 batches into the second pass over the shards.
    ckpt = root / "killed" / "checkpoints" / "epoch=1-step=16.ckpt"
    assert ckpt.is_file()
    resumed = StepRecorder()
    fit("debug-phase1.yaml", shards, root / "killed", callbacks=[resumed], ckpt_path=str(ckpt))
    assert sorted(resumed.losses) == list(range(16, 24))
    for step in range(16, 24):
        assert resumed.first_rows[step] == full.first_rows[step], f"data position differs at step {step}"
        assert resumed.lrs[step] == full.lrs[step]
        assert resumed.losses[step] == full.losses[step], f"loss differs at step {step}"


def test_losses_match_golden(uninterrupted):
    _, _, full = uninterrupted
    losses = [full.losses[s] for s in range(24)]
    if os.environ.get("CODEMILL_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"config": "conf/train/debug-phase1.yaml", "shards": SHARDS,
                                      "losses": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    # Bitwise equality is not portable across CPUs/BLAS builds; 1e-3 relative still catches any real change.
    assert losses == pytest.approx(golden, rel=1e-3)
    assert losses[-1] < losses[0] - 1.5  # and the debug model learns
