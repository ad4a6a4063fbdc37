"""The LightningCLI entry point: shipped YAMLs, manifest links, exclusivity of init_from / ckpt_path, and the three
debug phases chained on CPU from real shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spark_jobs.config import ConfigError
from tests.fixtures.train.helpers import REPO, VOCAB_SIZE, StepRecorder, fit, write_shards
from trainer.cli import TrainCLI, main
from trainer.data import ShardDataModule
from trainer.model import CodeLM
from trainer.schedules import learning_rate

CONFIGS = sorted((REPO / "conf" / "train").glob("*.yaml"))


class ParseOnlyCLI(TrainCLI):
    def instantiate_classes(self) -> None:  # parse and validate types, build nothing
        pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), train_sequences=48, val_sequences=8, repeat=2)


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"phase1.yaml", "phase2.yaml", "phase3.yaml", "debug-phase1.yaml", "debug-phase2.yaml",
            "debug-phase3.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_parses(config):
    cli = ParseOnlyCLI(CodeLM, ShardDataModule, run=False, args=["--config", str(config)])
    cfg = cli.config
    assert cfg.data.phase in config.name
    if not config.name.startswith("debug"):
        assert (cfg.model.hidden_size, cfg.model.intermediate_size, cfg.model.num_layers) == (2048, 5632, 24)
        assert cfg.trainer.precision == "bf16-mixed"
        assert cfg.trainer.strategy["class_path"] == "trainer.strategies.CPUDeepSpeedStrategy"
    phase1 = cfg.data.phase == "phase1"
    assert cfg.model.schedule == ("cosine" if phase1 else "linear")
    assert (cfg.model.init_from is None) == phase1


def test_debug_yaml_instantiates_with_manifest_links(shards, tmp_path):
    cli = main(["--config", str(REPO / "conf/train/debug-phase1.yaml"), "--data.shards_root", str(shards),
                "--run_dir", str(tmp_path), "--trainer.logger", "false"], run=False)  # --run_dir: short form
    assert (cli.model.hparams.vocab_size, cli.model.hparams.seq_len) == (VOCAB_SIZE, 64)
    assert cli.trainer.max_epochs == 2  # the manifest's `repeat`
    assert cli.trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")


def test_init_from_and_ckpt_path_are_exclusive(shards, tmp_path):
    for init_key in ("--model.init_from", "--init_from"):
        with pytest.raises(ConfigError) as err:
            main(["fit", "--config", str(REPO / "conf/train/debug-phase2.yaml"), "--data.shards_root", str(shards),
                  init_key, str(tmp_path), "--ckpt_path", str(tmp_path / "last.ckpt")])
        assert "model.init_from" in str(err.value) and "ckpt_path" in str(err.value)


def test_missing_shards_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.shards_root"):
        main(["--config", str(REPO / "conf/train/debug-phase1.yaml"), "--data.shards_root", str(tmp_path),
              "--trainer.logger", "false"], run=False)


def test_three_debug_phases_chain_on_cpu(shards, tmp_path):
    steps = ["--trainer.max_steps", "6", "--trainer.val_check_interval", "3"]
    recs = {}
    for n in (1, 2, 3):
        # Phase 2 names the key in full, phase 3 uses the short form scripts/demo.py uses.
        init = [] if n == 1 else ["--model.init_from" if n == 2 else "--init_from", str(tmp_path / f"p{n - 1}" / "hf")]
        recs[n] = StepRecorder()
        fit(f"debug-phase{n}.yaml", shards, tmp_path / f"p{n}", *steps, *init, callbacks=[recs[n]])
        info = json.loads((tmp_path / f"p{n}" / "run_info.json").read_text())
        assert info["phase"] == f"phase{n}" and info["global_step"] == 6
        assert Path(info["hf_export"], "model.safetensors").is_file()
        assert all(math_isfinite(v) for v in recs[n].losses.values())
    for n in (2, 3):
        # Phase n starts from phase n-1's final weights ...
        from safetensors.torch import load_file

        previous = load_file(str(tmp_path / f"p{n - 1}" / "hf" / "model.safetensors"))
        for key, value in previous.items():
            torch.testing.assert_close(recs[n].first_weights[key], value)
        # ... with a fresh schedule: step counter from 0, re-warmup from lr / warmup_steps, linear decay to 0.
        assert sorted(recs[n].lrs) == list(range(6))
        expected = [learning_rate(s, kind="linear", peak_lr=5.3e-3, warmup_steps=4, total_steps=6) for s in range(6)]
        assert [recs[n].lrs[s] for s in range(6)] == pytest.approx(expected)
    # Phase 2 continues learning: its first loss is far below phase 1's first (near-uniform) loss.
    assert recs[2].losses[0] < recs[1].losses[0] - 1.0


def math_isfinite(x: float) -> bool:
    import math

    return math.isfinite(x)
