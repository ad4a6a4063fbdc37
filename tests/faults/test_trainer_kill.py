"""The trainer SIGKILLed mid-phase (a `python -m trainer fit` child, killed as soon as its step-16 checkpoint is on
disk, 4 batches into its second pass) and resumed from that checkpoint reproduces the uninterrupted run step for
step. tests/trainer/test_resume.py
covers the same with an exception raised inside the process; this is the real kill: no `finally`, no flush."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.train.helpers import REPO, StepRecorder, fit, write_shards

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# 48 train sequences / batch 4 = 12 steps per pass, two passes: 24 steps, a checkpoint every 8.
SHARDS = dict(train_sequences=48, val_sequences=8, repeat=2, phases=("phase1",))
CONFIG = "debug-phase1.yaml"


def test_trainer_killed_mid_phase_resumes_identically(tmp_path):
    shards = write_shards(tmp_path / "shards", **SHARDS)
    full = StepRecorder()
    fit(CONFIG, shards, tmp_path / "full", callbacks=[full])

    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "fit", "--config", str(REPO / "conf" / "train" / CONFIG),
                             "--data.shards_root", str(shards), "--trainer.default_root_dir", str(run_dir),
                             "--trainer.logger", "false"], cwd=REPO, env=env, start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            ckpts = list((run_dir / "checkpoints").glob("*step=16.ckpt"))
            if ckpts:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, "the trainer finished before it was killed:\n" + \
        (tmp_path / "killed.log").read_text(errors="replace")[-2000:]
    (ckpt,) = ckpts
    resumed = StepRecorder()
    fit(CONFIG, shards, run_dir, callbacks=[resumed], ckpt_path=str(ckpt))
    assert sorted(resumed.losses) == list(range(16, 24))
    for step in range(16, 24):
        assert resumed.first_rows[step] == full.first_rows[step], f"data position differs at step {step}"
        assert resumed.losses[step] == full.losses[step], f"loss differs at step {step}"
