"""Callbacks and the MLflow logger of the trainer: throughput/MFU metrics and the end-of-phase Hugging Face export.

`ThroughputMonitor` logs, per optimizer step, the learning rate, tokens seen (kept in the checkpoint, so it survives a
resume), tokens/s over all ranks and an MFU estimate. `HFExport` writes `<run_dir>/hf` when a phase ends and a small
`<run_dir>/run_info.json` naming that folder and the MLflow run, which is the hook for checkpoint evaluation
(`trainer/evaluation/`) and for the next phase's `model.init_from`. The run folder may be on an object store
(`s3://bucket/runs/phase1`): the export is written locally, logged to MLflow from there and uploaded.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from codemill import storage
from trainer.export import export_hf, publish_folder

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# Dense bf16 peak FLOP/s per device (vendor data sheets), used when `peak_flops` is not given.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


class MLflowLogger(MLFlowLogger):
    """Lightning's `MLFlowLogger` whose tracking URI comes from the config, else `MLFLOW_TRACKING_URI`, else a local
    SQLite store (`sqlite:///mlflow.db`, relative to the working directory)."""

    def __init__(self, experiment_name: str = "codemill", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, str] | None = None, save_dir: str = "./mlruns",
                 log_model: bool = False, run_id: str | None = None):
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags,
                         save_dir=save_dir, log_model=log_model, run_id=run_id)


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def measure_cpu_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """Achievable fp32 matmul FLOP/s of this CPU process: the MFU denominator on CPU, where no data sheet applies."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the BLAS threads
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * n**3 * repeats / (time.perf_counter() - start)


def device_peak_flops() -> float:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops
    return measure_cpu_peak_flops()


class ThroughputMonitor(pl.Callback):
    """Logs `lr`, `tokens_seen`, `tokens_per_s` (all ranks) and `mfu` once per optimizer step.

    Args:
        peak_flops: peak FLOP/s of one device for the MFU estimate; None = data sheet for known GPUs, a measured
            matmul rate on CPU.
    """

    def __init__(self, peak_flops: float | None = None):
        self.peak_flops = peak_flops
        self.tokens_seen = 0
        self._tokens_since = 0
        self._since: float | None = None
        self._flops_per_token: float | None = None
        self._lr = 0.0
        self._logged_step = -1

    def state_dict(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tokens_seen = state_dict["tokens_seen"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.peak_flops is None:
            self.peak_flops = device_peak_flops()
        self._flops_per_token = pl_module.flops_per_token()
        self._since = time.perf_counter()
        self._logged_step = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._lr = optimizer.param_groups[0]["lr"]  # the rate this update uses; the scheduler steps right after

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tokens = (batch.size(1) - 1) * batch.size(0) * trainer.world_size  # input tokens, all ranks
        self.tokens_seen += tokens
        self._tokens_since += tokens
        if trainer.global_step == self._logged_step:
            return  # still accumulating gradients: no optimizer step since the last log
        self._logged_step = trainer.global_step
        now = time.perf_counter()
        tokens_per_s = self._tokens_since / max(now - self._since, 1e-9)
        self._tokens_since, self._since = 0, now
        mfu = tokens_per_s / trainer.world_size * self._flops_per_token / self.peak_flops
        metrics = {"lr": self._lr, "tokens_seen": float(self.tokens_seen), "tokens_per_s": tokens_per_s, "mfu": mfu}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_dir(trainer: pl.Trainer) -> str:
    """The run folder (`trainer.default_root_dir`): a local path or an object-store URI."""
    return str(trainer.default_root_dir)


class HFExport(pl.Callback):
    """At the end of `fit`, writes the weights in Hugging Face format and records where.

    Args:
        dirpath: export folder (local or an object-store URI); default `<trainer.default_root_dir>/hf`.
        log_artifacts: also log the export and `run_info.json` as MLflow artifacts (`hf/`, `run_info.json`).
    """

    def __init__(self, dirpath: str | None = None, log_artifacts: bool = True):
        self.dirpath = dirpath
        self.log_artifacts = log_artifacts
        self.export_path: Path | str | None = None  # a Path when local, else the URI

    def on_fit_end(self, trainer, pl_module) -> None:
        from contextlib import nullcontext

        out = str(self.dirpath) if self.dirpath else storage.join(run_dir(trainer), "hf")
        gather = nullcontext()
        if getattr(trainer.strategy, "zero_stage_3", False):
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(pl_module.model.parameters()), modifier_rank=None)
        with gather:
            self._export(trainer, pl_module, out)
        trainer.strategy.barrier()
        self.export_path = Path(out) if storage.is_local(out) else storage.absolute(out)

    @rank_zero_only
    def _export(self, trainer, pl_module, out: str) -> None:
        with tempfile.TemporaryDirectory(prefix="codemill-hf-") as tmp:  # staging for an object-store run folder
            self._export_via(trainer, pl_module, out, tmp)

    def _export_via(self, trainer, pl_module, out: str, tmp: str) -> None:

        datamodule = trainer.datamodule
        remote = not storage.is_local(out)
        local = os.path.join(tmp, "hf") if remote else out
        export_hf(pl_module.model, local, tokenizer_dir=getattr(datamodule, "tokenizer_dir", None))
        if remote:
            publish_folder(local, out)
        logger = mlflow_logger(trainer)
        info = {
            "hf_export": storage.absolute(out) if remote else str(Path(out).resolve()),
            "phase": getattr(datamodule, "phase", None),
            "global_step": trainer.global_step,
            "tokens_seen": next((cb.tokens_seen for cb in trainer.callbacks if isinstance(cb, ThroughputMonitor)),
                                None),
            "mlflow_run_id": logger.run_id if logger else None,
            "mlflow_tracking_uri": logger._tracking_uri if logger else None,
        }
        text = json.dumps(info, indent=2) + "\n"
        root = run_dir(trainer)
        info_path = Path(root if storage.is_local(root) else tmp) / "run_info.json"
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(text)
        if not storage.is_local(root):
            storage.write_text(storage.join(root, "run_info.json"), text)
        if logger and self.log_artifacts:  # MLflow logs local files: the staged copy of a remote export
            logger.experiment.log_artifacts(logger.run_id, local, artifact_path="hf")
            logger.experiment.log_artifact(logger.run_id, str(info_path))
