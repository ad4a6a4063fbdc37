"""The trainer's command line: LightningCLI over `CodeLM` and `ShardDataModule`.

    python -m trainer fit --config conf/train/debug-phase1.yaml
    python -m trainer fit --config conf/train/phase2.yaml --model.init_from runs/phase1/hf
    python -m trainer fit --config conf/train/phase1.yaml --ckpt_path runs/phase1/checkpoints/last.ckpt

`data.vocab_size` and `data.seq_len` (read from the shard manifest) are linked into the model; the manifest's
`repeat` becomes `trainer.max_epochs` unless that is set. `model.init_from` (start a phase from earlier weights with a
fresh optimizer and schedule) and `ckpt_path` (resume an interrupted run, data position included) are exclusive.
The resolved config, phase, shard manifest, table versions and git commit go to MLflow (`MLflowConfigSaver`).

Shards, run folder, checkpoints and `init_from` may be on an object store (`s3://bucket/runs/phase1`; `s3a://` is
the same store to s3fs): Lightning writes and resumes checkpoints through fsspec (s3fs), the rest goes through
`codemill.storage`; all of them read the standard AWS_* environment (`AWS_ENDPOINT_URL` for an S3-compatible
server, which botocore honours).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from codemill import storage
from codemill.config import ConfigError
from trainer.callbacks import git_commit, mlflow_logger
from trainer.data import ShardDataModule
from trainer.model import CodeLM


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values (MLflow params are flat strings of at most 6000 characters)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        out = {}
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): str(tree)[:6000]}


class MLflowConfigSaver(SaveConfigCallback):
    """Writes the resolved config to `<default_root_dir>/config.yaml` and logs it to MLflow as params (flattened),
    artifacts (`config.yaml`, `manifest.json`) and tags (phase, manifest, table versions, git commit)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        import yaml

        text = self.parser.dump(self.config, skip_none=False)
        root = str(trainer.default_root_dir)
        if storage.is_local(root):
            path = Path(root) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        else:
            storage.write_text(storage.join(root, self.config_filename), text)
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        logger.log_hyperparams(flatten(yaml.safe_load(text)))
        datamodule = trainer.datamodule
        client, run_id = logger.experiment, logger.run_id
        manifest_path = storage.join(datamodule.phase_dir, "manifest.json")
        tags = {
            "phase": datamodule.phase,
            "shard_manifest": str(Path(manifest_path).resolve()) if storage.is_local(manifest_path) else manifest_path,
            "table_versions": json.dumps(datamodule.manifest.get("table_versions", {}), sort_keys=True)[:5000],
            "git_commit": git_commit(),
            "init_from": str(pl_module.hparams.init_from),
        }
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if storage.is_local(root) and storage.is_local(manifest_path):
            client.log_artifact(run_id, str(path))
            client.log_artifact(run_id, manifest_path)
            return
        with tempfile.TemporaryDirectory(prefix="codemill-config-") as tmp:  # MLflow logs local files
            for name, content in ((self.config_filename, text), ("manifest.json", storage.read_text(manifest_path))):
                with open(os.path.join(tmp, name), "w") as fh:
                    fh.write(content)
                client.log_artifact(run_id, os.path.join(tmp, name))


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The shards decide vocabulary and context; the model follows (paper §3.1 uses one tokenizer throughout).
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.seq_len", "model.seq_len", apply_on="instantiate")
        # Short forms for drivers that chain phases (scripts/demo.py): one folder per phase, previous phase's export.
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="Short for --trainer.default_root_dir (checkpoints/, hf/, run_info.json go there)")
        parser.add_argument("--init_from", type=Optional[str], default=None, help="Short for --model.init_from")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.run_dir:
            config.trainer.default_root_dir = config.run_dir
        if config.init_from:
            config.model.init_from = config.init_from
        if config.model.init_from and config.get("ckpt_path"):
            raise ConfigError([
                f"model.init_from / ckpt_path: give one, not both: ckpt_path={config.ckpt_path} resumes an "
                f"interrupted run (optimizer, schedule and data position included); model.init_from="
                f"{config.model.init_from} starts a new phase from earlier weights with a fresh optimizer and schedule"
            ])

    def _instantiate_trainer(self, config, callbacks):
        if config.get("max_epochs") is None:
            config["max_epochs"] = self.datamodule.repeat  # `repeat` passes over train (docs/CONTRACTS.md)
        trainer = super()._instantiate_trainer(config, callbacks)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = storage.join(str(trainer.default_root_dir), "checkpoints")
        return trainer


def main(args: list[str] | None = None, run: bool = True) -> TrainCLI:
    return TrainCLI(
        CodeLM,
        ShardDataModule,
        save_config_callback=MLflowConfigSaver,
        save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
        args=args,
        run=run,
    )
