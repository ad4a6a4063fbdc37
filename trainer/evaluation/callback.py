"""Evaluate each trainer phase when it ends: a Lightning callback the trainer config can add after `HFExport`.

    trainer:
      callbacks:
        - class_path: trainer.callbacks.HFExport
        - class_path: trainer.evaluation.callback.EvaluateAtFitEnd
          init_args:
            config: conf/eval/default.yaml
            overrides: {limit: 20}

On rank zero, after `HFExport` has written `<run_dir>/hf` and `run_info.json`, it runs
`trainer.evaluation.run.evaluate` on that folder and logs the scores to the phase's own MLflow run, so the runs
of a phase (and the three phases) show their pass@1 side by side. Other ranks wait at the barrier.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from codemill.config import load_config
from trainer.evaluation.run import EvalConfig, evaluate


class EvaluateAtFitEnd(pl.Callback):
    """Args:
    config: eval YAML file(s) (conf/eval/*.yaml); `model` and the MLflow run come from the finished phase.
    overrides: dotted keys over the YAML (`{"limit": 20, "sandbox.workers": 4}`).
    """

    def __init__(self, config: str | list[str] = "conf/eval/default.yaml", overrides: dict[str, Any] | None = None):
        self.config = [config] if isinstance(config, str) else list(config)
        self.overrides = dict(overrides or {})
        self.result: dict[str, Any] | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.result = self._evaluate(trainer)
        trainer.strategy.barrier()

    def _evaluate(self, trainer: pl.Trainer) -> dict[str, Any]:

        export = next((getattr(cb, "export_path", None) for cb in trainer.callbacks
                       if type(cb).__name__ == "HFExport"), None)
        if export is None:
            raise RuntimeError("EvaluateAtFitEnd needs trainer.callbacks.HFExport listed before it (it evaluates "
                               "the exported Hugging Face folder)")
        overrides = {"model": str(export), **self.overrides}
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id and "mlflow_run_id" not in overrides:
            overrides["mlflow_run_id"] = run_id
        uri = getattr(logger, "_tracking_uri", None)
        if uri and "mlflow_tracking_uri" not in overrides:
            overrides["mlflow_tracking_uri"] = uri
        cfg = load_config(EvalConfig, *self.config, overrides=overrides)
        return evaluate(cfg)
