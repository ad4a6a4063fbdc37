"""Annotator trainer: shipped YAMLs parse, a few CPU steps log to MLflow and export a loadable annotator."""

from __future__ import annotations

import glob
import inspect
import math

import pytest
import yaml

from spark_jobs.annotate_dataset import _records, instruction_pairs, render_instruction
from tests.spark_jobs.test_annotate import machine_code_files
from trainer.annotator import AnnotatorData, AnnotatorModel, alignment_aucs, main

CONFIGS = sorted(glob.glob("conf/annotator/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_name_real_arguments(path):
    import lightning as L

    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    for section, target in (("model", AnnotatorModel), ("data", AnnotatorData), ("trainer", L.Trainer)):
        unknown = set(cfg.get(section, {})) - set(inspect.signature(target.__init__).parameters)
        assert not unknown, f"{path}: {section} keys {unknown}"
    assert cfg["trainer"]["logger"]["class_path"] == "trainer.annotator.AnnotatorMLflowLogger"


def test_alignment_aucs_per_benchmark():
    logits = [3.0, 2.0, 0.5, -1.0, 1.0, 0.0]
    labels = [1, 1, 1, 1, 0, 0]
    benches = ["he", "he", "mbpp", "mbpp", "corpus", "corpus"]
    out = alignment_aucs(logits, labels, benches)
    assert out["align_auc/he"] == 1.0 and out["align_auc/mbpp"] == 0.25
    assert out["align_auc_mean"] == pytest.approx(0.625)


@pytest.fixture
def tiny_lake(tmp_path):
    """annotator_train and alignment_set (written with delta-rs, as the Spark job's tables read back)."""
    import pandas as pd
    from deltalake import write_deltalake

    pos = [render_instruction(i, o) for i, o in
           instruction_pairs(_records("data/instruct/evol_instruct_code/evol-codealpaca-2k-1.json.gz")[:48])]
    neg = [r["content"] for r in machine_code_files(48, min_chars=300)]
    rows = [{"text": t, "label": y, "source": "s", "split": "val" if i % 4 == 0 else "train"}
            for y, texts in ((1, pos), (0, neg)) for i, t in enumerate(texts)]
    write_deltalake(str(tmp_path / "lake" / "annotator_train"), pd.DataFrame(rows))
    align = [{"text": t, "label": 1, "benchmark": "humaneval"} for t in pos[:6]]
    align += [{"text": t, "label": 0, "benchmark": "corpus"} for t in neg[:10]]
    write_deltalake(str(tmp_path / "lake" / "alignment_set"), pd.DataFrame(align))
    return tmp_path / "lake"


def test_fit_logs_to_mlflow_and_exports(tiny_lake, tmp_path):
    from mlflow.tracking import MlflowClient

    from trainer.annotator_model import Annotator

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    export = tmp_path / "annotator"
    main(["fit", "--config", "conf/annotator/debug.yaml", "--data.lake", str(tiny_lake),
          "--model.export_dir", str(export), "--trainer.logger.init_args.tracking_uri", uri,
          "--trainer.default_root_dir", str(tmp_path)])
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("codemill-annotator-debug").experiment_id])
    metrics = run.data.metrics
    assert {"train_loss", "val_loss", "val_auc", "align_auc/humaneval"} <= set(metrics)
    assert 0.0 <= metrics["val_auc"] <= 1.0 and not math.isnan(metrics["train_loss"])

    for name in ("config.json", "model.safetensors", "tokenizer.json", "head.safetensors", "annotator.json"):
        assert (export / name).is_file(), name
    model = Annotator(str(export))
    assert model.annotator_id.startswith("debug-") and model.window_tokens == 128 and model.pooling == "mean"
    res = model.score_texts(["def f(x):\n    return x\n", "int main() { return 0; }"])
    assert all(math.isfinite(s) for s in res.score)


@pytest.mark.slow  # ~20-40 s: a few CPU steps of the debug annotator
def test_fit_reads_an_s3_lake_and_exports_the_annotator_to_s3(tiny_lake, s3, bucket, tmp_path, monkeypatch):
    """Training set on the store (read with delta-rs), export to the store, and the exported folder loads for
    scoring (the AWS_* variables are what a trainer process has)."""
    from deltalake import DeltaTable, write_deltalake

    from codemill import storage
    from trainer.annotator_model import Annotator

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))
    lake = f"{bucket}/lake"
    for table in ("annotator_train", "alignment_set"):
        write_deltalake(storage.delta_uri(f"{lake}/{table}"), DeltaTable(str(tiny_lake / table)).to_pandas(),
                        storage_options=storage.storage_options(lake))
    export = f"{bucket}/annotator"
    main(["fit", "--config", "conf/annotator/debug.yaml", "--data.lake", lake, "--model.export_dir", export,
          "--trainer.logger", "false", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path)])
    names = {k.rsplit("/", 1)[-1] for k in s3.objects(bucket[len("s3a://"):], "annotator/")}
    assert {"config.json", "model.safetensors", "tokenizer.json", "head.safetensors", "annotator.json"} <= names
    model = Annotator(export)
    assert model.annotator_id.startswith("debug-") and model.path == export
    assert all(math.isfinite(s) for s in model.score_texts(["def f(x):\n    return x\n"]).score)
