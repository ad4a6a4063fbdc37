"""Streaming token shards for one training phase (contract: docs/CONTRACTS.md, "Token shards").

`<shards_root>/<phase>/manifest.json` names the sequence length, vocabulary size, `repeat` (passes over `train`) and
the table versions the shards came from; `train/` and `val/` are litdata optimized datasets whose items are
`{"input_ids": int32[seq_len + 1]}`. litdata's `StreamingDataset` splits chunks across ranks and workers by itself,
and `StreamingDataLoader.state_dict()` records how many samples every worker has yielded: Lightning's fit loop saves
that state in its checkpoint and restores it on resume, so an interrupted run continues at the exact next batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from spark_jobs.config import ConfigError

PHASES = ("phase1", "phase2", "phase3")


def read_manifest(shards_root: str | Path, phase: str) -> tuple[dict[str, Any], list[str]]:
    """The phase's manifest and the problems found with it (each naming the `data.*` key to fix)."""
    problems: list[str] = []
    if phase not in PHASES:
        problems.append(f"data.phase: {phase!r} is not one of {PHASES}")
    path = Path(shards_root) / phase / "manifest.json"
    if not path.is_file():
        problems.append(f"data.shards_root: no {phase}/manifest.json under {shards_root}; run spark_jobs/tokenize.py")
        return {}, problems
    manifest = json.loads(path.read_text())
    for key in ("seq_len", "vocab_size", "splits"):
        if key not in manifest:
            problems.append(f"data.shards_root: {path} lacks {key!r}")
    for split in ("train", "val"):
        info = manifest.get("splits", {}).get(split)
        if info is None:
            problems.append(f"data.shards_root: {path} has no {split!r} split")
        elif not (path.parent / info.get("dir", split) / "index.json").is_file():
            problems.append(f"data.shards_root: {path.parent / info.get('dir', split)} is not a litdata dataset")
    return manifest, problems


class ShardDataModule(pl.LightningDataModule):
    """Streams `<shards_root>/<phase>/{train,val}` and exposes the manifest's facts to the model.

    Args:
        shards_root: folder written by the tokenize stage (holds `phase1/`, `phase2/`, `phase3/`, `tokenizer/`).
        phase: which phase's shards to stream.
        batch_size: sequences per device per micro-batch.
        num_workers: loader worker processes per device (0 = load in the training process).
        shuffle: shuffle chunks and items of `train`; litdata reseeds every pass from `seed` and the epoch.
        seed: shuffle seed, identical on every rank so ranks see disjoint parts of one permutation.
        val_batch_size: micro-batch for validation; defaults to `batch_size`.
    """

    def __init__(self, shards_root: str, phase: str = "phase1", batch_size: int = 8, num_workers: int = 0,
                 shuffle: bool = True, seed: int = 42, val_batch_size: int | None = None):
        super().__init__()
        problems = []
        if batch_size < 1:
            problems.append(f"data.batch_size: must be >= 1, got {batch_size}")
        if num_workers < 0:
            problems.append(f"data.num_workers: must be >= 0, got {num_workers}")
        manifest, manifest_problems = read_manifest(shards_root, phase)
        problems += manifest_problems
        if problems:
            raise ConfigError(problems)
        self.shards_root = Path(shards_root)
        self.phase = phase
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.manifest = manifest
        self.phase_dir = self.shards_root / phase

    # Facts linked into the model by the CLI (`link_arguments(..., apply_on="instantiate")`).
    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def repeat(self) -> int:
        """Passes over `train` (a stream repeat, paper §3.1 phase 2: 4); the CLI maps it to `max_epochs`."""
        return int(self.manifest.get("repeat", 1))

    @property
    def tokenizer_dir(self) -> Path | None:
        path = self.manifest.get("tokenizer") or str(self.shards_root / "tokenizer")
        return Path(path) if Path(path).is_dir() else None

    def _split_dir(self, split: str) -> str:
        return str(self.phase_dir / self.manifest["splits"][split].get("dir", split))

    def _loader(self, split: str, *, shuffle: bool, batch_size: int):
        from litdata import StreamingDataLoader, StreamingDataset

        # drop_last keeps every rank at the same number of batches, which DDP/DeepSpeed collectives need.
        dataset = StreamingDataset(self._split_dir(split), shuffle=shuffle, seed=self.seed, drop_last=True)
        return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers, drop_last=True,
                                   collate_fn=collate_input_ids)

    def train_dataloader(self):
        return self._loader("train", shuffle=self.shuffle, batch_size=self.batch_size)

    def val_dataloader(self):
        return self._loader("val", shuffle=False, batch_size=self.val_batch_size)


def collate_input_ids(items: list[dict[str, Any]]):
    """Stacks items into an int64 tensor of shape (B, seq_len + 1)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack([item["input_ids"] for item in items]).astype(np.int64))
