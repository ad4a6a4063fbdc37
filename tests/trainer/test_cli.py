"""The LightningCLI entry point: shipped YAMLs, manifest links, exclusivity of init_from / ckpt_path, and the three
debug phases chained on CPU from real shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codemill.config import ConfigError
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


# ---------------------------------------------------------------------- on object storage
@pytest.mark.slow  # ~30 s: a trainer process (imports, MLflow) and 8 CPU steps
def test_fit_streams_s3_shards_and_writes_the_run_folder_to_s3(shards, s3, bucket, tmp_path, monkeypatch):
    """A trainer process that knows the store only from the AWS_* environment (AWS_ENDPOINT_URL names the server):
    it streams the shards with litdata, Lightning writes checkpoints through s3fs, and the config, the HF export
    (with the tokenizer the manifest names) and run_info.json land in the s3:// run folder and in MLflow; a
    checkpoint and the export then serve as `init_from` sources; no object or MLflow field holds a credential."""
    import subprocess
    import sys

    import mlflow

    from codemill import storage
    from tests.fixtures.objectstore import environ_with
    from trainer.export import init_source_problem, read_state_dict

    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))  # local copies made by read_state_dict
    name = bucket[len("s3a://"):]
    storage.upload_dir(str(shards / "phase1"), f"{bucket}/shards/phase1")
    manifest = json.loads((shards / "phase1" / "manifest.json").read_text())
    manifest["tokenizer"] = f"{bucket}/shards/tokenizer"  # as the tokenize job records it
    storage.write_text(f"{bucket}/shards/phase1/manifest.json", json.dumps(manifest))
    storage.write_text(f"{bucket}/shards/tokenizer/tokenizer.json", "{}")  # stands in for the tokenizer folder
    run = f"s3://{name}/runs/p1"
    env = environ_with({**s3.env, "PYTHONPATH": str(REPO), "LITDATA_CACHE_DIR": str(tmp_path / "litdata"),
                        "CODEMILL_CACHE_DIR": str(tmp_path / "cache")})
    env.pop("PYSPARK_GATEWAY_PORT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "fit", "--config", str(REPO / "conf/train/debug-phase1.yaml"),
         "--data.shards_root", f"s3a://{name}/shards", "--run_dir", run,
         "--trainer.logger.init_args.tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--trainer.max_steps", "8", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "s3:").exists()  # nothing took the URI for a local path

    objects = {k for k in s3.objects(name, "runs/") if not k.endswith("/")}
    assert {"runs/p1/config.yaml", "runs/p1/run_info.json", "runs/p1/checkpoints/last.ckpt",
            "runs/p1/checkpoints/epoch=0-step=8.ckpt", "runs/p1/hf/config.json", "runs/p1/hf/model.safetensors",
            "runs/p1/hf/tokenizer.json"} <= objects
    info = json.loads(storage.read_text(f"{run}/run_info.json"))
    assert info["hf_export"] == f"{run}/hf" and info["global_step"] == 8
    assert init_source_problem(f"{run}/hf") == [] == init_source_problem(f"{run}/checkpoints/last.ckpt")
    assert init_source_problem(f"{run}/nothing")[0].startswith(f"model.init_from: {run}/nothing is neither")
    exported, trained = read_state_dict(f"{run}/hf"), read_state_dict(f"{run}/checkpoints/last.ckpt")
    assert exported.keys() <= trained.keys()
    for key, value in exported.items():
        torch.testing.assert_close(trained[key], value)
    secret = s3.settings().secret_key.encode()
    for key in objects:
        assert secret not in s3.client().get_object(Bucket=name, Key=key)["Body"].read(), key

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(info["mlflow_run_id"])
    assert logged.data.tags["shard_manifest"] == f"s3a://{name}/shards/phase1/manifest.json"
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} >= {"config.yaml", "manifest.json",
                                                                          "run_info.json", "hf"}
    assert "hf/model.safetensors" in {a.path for a in client.list_artifacts(logged.info.run_id, "hf")}
    fields = json.dumps([logged.data.params, logged.data.tags])
    assert secret.decode() not in fields and s3.settings().access_key not in fields
