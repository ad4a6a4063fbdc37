"""MLflow tracking: resolved config as params, training metrics, phase/manifest/git tags, config + HF artifacts."""

from __future__ import annotations

import json

from tests.fixtures.train.helpers import fit, write_shards
from trainer.callbacks import DEFAULT_TRACKING_URI, MLflowLogger


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # constructing the logger creates the relative SQLite files
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MLflowLogger()._tracking_uri == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert MLflowLogger()._tracking_uri == "sqlite:///from-env.db"
    assert MLflowLogger(tracking_uri="sqlite:///explicit.db")._tracking_uri == "sqlite:///explicit.db"


def test_run_holds_params_metrics_tags_and_artifacts(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # the SQLite store's default artifact root is ./mlruns
    shards = write_shards(tmp_path / "shards", train_sequences=32, val_sequences=8, phases=("phase1",))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit("debug-phase1.yaml", shards, tmp_path / "run", "--trainer.max_steps", "4", "--trainer.val_check_interval",
        "4", tracking_uri=uri)

    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["mlflow_tracking_uri"] == uri and info["hf_export"] == str((tmp_path / "run" / "hf").resolve())
    client = mlflow.MlflowClient(uri)
    run = client.get_run(info["mlflow_run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["model.hidden_size"] == "64" and params["data.phase"] == "phase1"
    assert params["trainer.max_steps"] == "4" and params["data.shards_root"] == str(shards)
    assert params["vocab_size"] == "260"  # the model's hyperparameters after the manifest link
    assert tags["phase"] == "phase1"
    assert tags["shard_manifest"] == str((shards / "phase1" / "manifest.json").resolve())
    assert json.loads(tags["table_versions"]) == {"documents": 3, "selected_hq": 1}
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    metrics = run.data.metrics
    assert {"train/loss", "val/loss", "lr", "tokens_seen", "tokens_per_s", "mfu"} <= set(metrics)
    assert metrics["tokens_seen"] == 4 * 4 * 64  # steps x batch x seq_len
    assert metrics["tokens_per_s"] > 0 and 0 < metrics["mfu"] < 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "lr")] == [0, 1, 2, 3]
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "manifest.json", "run_info.json", "hf"} <= top
    assert {a.path for a in client.list_artifacts(run.info.run_id, "hf")} >= {"hf/config.json",
                                                                               "hf/model.safetensors"}


def test_no_logger_still_exports(tmp_path):
    shards = write_shards(tmp_path / "shards", train_sequences=16, val_sequences=8, phases=("phase1",))
    fit("debug-phase1.yaml", shards, tmp_path / "run", "--trainer.max_steps", "2", "--trainer.val_check_interval",
        "null", "--trainer.limit_val_batches", "0")
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["mlflow_run_id"] is None and info["global_step"] == 2
