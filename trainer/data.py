"""Streaming token shards for one training phase (contract: docs/CONTRACTS.md, "Token shards").

`<shards_root>/<phase>/manifest.json` names the sequence length, vocabulary size, `repeat` (passes over `train`) and
the table versions the shards came from; `train/` and `val/` are litdata optimized datasets whose items are
`{"input_ids": int32[seq_len + 1]}`. litdata's `StreamingDataset` splits chunks across ranks and workers by itself,
and `StreamingDataLoader.state_dict()` records how many samples every worker has yielded: Lightning's fit loop saves
that state in its checkpoint and restores it on resume, so an interrupted run continues at the exact next batch.

`shards_root` may be on an object store (`s3://bucket/shards` or `s3a://...`): the manifest is read through
`codemill.storage` and litdata streams the chunks (`storage.litdata_source`), both reaching the store with
the standard AWS_* environment (`AWS_ENDPOINT_URL` for an S3-compatible server). Credentials go to the clients only:
they are not in the manifest, the config or the loader state that checkpoints hold.
"""

from __future__ import annotations

import json
from typing import Any

import lightning.pytorch as pl

from codemill import storage
from codemill.config import ConfigError

PHASES = ("phase1", "phase2", "phase3")


def read_manifest(shards_root: str, phase: str) -> tuple[dict[str, Any], list[str]]:
    """The phase's manifest and the problems found with it (each naming the `data.*` key to fix)."""
    problems: list[str] = []
    if phase not in PHASES:
        problems.append(f"data.phase: {phase!r} is not one of {PHASES}")
    root = str(shards_root)
    path = storage.join(root, phase, "manifest.json")
    try:
        found = storage.isfile(path)
    except OSError as exc:  # unreachable store, no permission: name the path, keep the client's reason
        problems.append(f"data.shards_root: cannot read {path}: {exc}")
        return {}, problems
    if not found:
        problems.append(f"data.shards_root: no {phase}/manifest.json under {shards_root}; run the tokenize stage "
                        "(python -m spark_jobs.pipeline --stages tokenize)")
        return {}, problems
    manifest = json.loads(storage.read_text(path))
    for key in ("seq_len", "vocab_size", "splits"):
        if key not in manifest:
            problems.append(f"data.shards_root: {path} lacks {key!r}")
    for split in ("train", "val"):
        info = manifest.get("splits", {}).get(split)
        if info is None:
            problems.append(f"data.shards_root: {path} has no {split!r} split")
        elif not storage.isfile(storage.join(root, phase, info.get("dir", split), "index.json")):
            problems.append(f"data.shards_root: {storage.join(root, phase, info.get('dir', split))} is not a litdata "
                            "dataset")
    return manifest, problems


class ShardDataModule(pl.LightningDataModule):
    """Streams `<shards_root>/<phase>/{train,val}` and exposes the manifest's facts to the model.

    Args:
        shards_root: folder written by the tokenize stage (holds `phase1/`, `phase2/`, `phase3/`, `tokenizer/`);
            local or an object-store URI (`s3://bucket/shards`).
        phase: which phase's shards to stream.
        batch_size: sequences per device per micro-batch.
        num_workers: loader worker processes per device (0 = load in the training process).
        shuffle: shuffle chunks and items of `train`; litdata reseeds every pass from `seed` and the epoch.
        seed: shuffle seed, identical on every rank so ranks see disjoint parts of one permutation.
        val_batch_size: micro-batch for validation; defaults to `batch_size`.
        cache_dir: local folder for the chunks of object-store shards; None = litdata's default
            (`$LITDATA_CACHE_DIR`, else `~/.lightning/chunks`).
    """

    def __init__(self, shards_root: str, phase: str = "phase1", batch_size: int = 8, num_workers: int = 0,
                 shuffle: bool = True, seed: int = 42, val_batch_size: int | None = None,
                 cache_dir: str | None = None):
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
        self.shards_root = str(shards_root)
        self.phase = phase
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.cache_dir = cache_dir
        self.manifest = manifest
        self.phase_dir = storage.join(self.shards_root, phase)

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
    def tokenizer_dir(self) -> str | None:
        """The tokenizer folder the manifest names (else `<shards_root>/tokenizer`), None when it does not exist."""
        path = self.manifest.get("tokenizer") or storage.join(self.shards_root, "tokenizer")
        return path if storage.isdir(path) else None

    def _split_dir(self, split: str) -> str:
        return storage.join(self.phase_dir, self.manifest["splits"][split].get("dir", split))

    def _loader(self, split: str, *, shuffle: bool, batch_size: int):
        from litdata import StreamingDataLoader, StreamingDataset

        input_dir, options = storage.litdata_source(self._split_dir(split))
        # drop_last keeps every rank at the same number of batches, which DDP/DeepSpeed collectives need.
        dataset = StreamingDataset(input_dir, shuffle=shuffle, seed=self.seed, drop_last=True,
                                   cache_dir=self.cache_dir, storage_options=options or None)
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
