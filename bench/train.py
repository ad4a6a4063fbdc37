"""Trainer throughput: the debug model reading streamed litdata shards vs the same model fed in-memory tokens.

    .venv/bin/python bench/train.py                 # debug model on CPU (make bench-train)
    .venv/bin/python bench/train.py --arch 1.3b --seq-len 8192 --batch-size 4   # on a GPU: tokens/s and MFU

Both variants run through the same Lightning Trainer and `CodeLM`; only the data source differs: shards written in
the tokenize stage's format (docs/CONTRACTS.md) and read by `ShardDataModule` (litdata StreamingDataLoader), or a
DataLoader over a random token tensor already in memory. Rounds alternate which variant runs first so that load from
other processes hits both alike; the median round counts. Ends with one line `RESULT {json}`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, bench/ leads sys.path and bench/tokenize.py would shadow the stdlib `tokenize` that numpy and
# torch import: put the repository root there instead, before any other import.
sys.path = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ARCHS = {
    # conf/train/debug-phase*.yaml
    "debug": dict(hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4, num_kv_heads=4),
    # conf/train/phase*.yaml (paper §3.1)
    "1.3b": dict(hidden_size=2048, intermediate_size=5632, num_layers=24, num_heads=16, num_kv_heads=16),
}


def write_random_shards(root: Path, *, sequences: int, seq_len: int, vocab_size: int) -> Path:
    from litdata.streaming.writer import BinaryWriter

    rng = np.random.default_rng(0)
    for split, n in (("train", sequences), ("val", 8)):
        out = root / "phase1" / split
        out.mkdir(parents=True, exist_ok=True)
        writer = BinaryWriter(str(out), chunk_bytes="8MB")
        for i in range(n):
            writer.add_item(i, {"input_ids": rng.integers(0, vocab_size, seq_len + 1, dtype=np.int32)})
        writer.done()
        writer.merge()
    manifest = {"phase": "phase1", "seq_len": seq_len, "vocab_size": vocab_size, "repeat": 1000,
                "splits": {"train": {"dir": "train", "sequences": sequences}, "val": {"dir": "val", "sequences": 8}}}
    (root / "phase1" / "manifest.json").write_text(json.dumps(manifest))
    return root


def timed_fit(*, arch: str, seq_len: int, vocab_size: int, batch_size: int, steps: int, warmup: int, data,
              precision: str) -> tuple[float, float]:
    """Runs `steps` optimizer steps; returns (tokens/s over the steps after `warmup`, flops per token)."""
    import lightning.pytorch as pl
    import torch

    from trainer.model import CodeLM

    class Clock(pl.Callback):
        start = end = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    pl.seed_everything(0, verbose=False)
    model = CodeLM(vocab_size=vocab_size, seq_len=seq_len, max_position_embeddings=max(seq_len, 8192),
                   warmup_steps=2, **ARCHS[arch])
    clock = Clock()
    trainer = pl.Trainer(accelerator="auto", devices=1, precision=precision, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    if isinstance(data, pl.LightningDataModule):
        trainer.fit(model, datamodule=data)
    else:
        trainer.fit(model, train_dataloaders=data)
    tokens = (steps - warmup) * batch_size * seq_len
    return tokens / (clock.end - clock.start), model.flops_per_token()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="debug")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=8000)  # conf/spark/tokenize_local.yaml
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import logging

    import torch
    from torch.utils.data import DataLoader

    from trainer.callbacks import device_peak_flops
    from trainer.data import ShardDataModule

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cuda = torch.cuda.is_available()
    precision = "bf16-mixed" if cuda else "32-true"
    sequences = args.steps * args.batch_size
    common = dict(arch=args.arch, seq_len=args.seq_len, vocab_size=args.vocab_size, batch_size=args.batch_size,
                  steps=args.steps, warmup=args.warmup, precision=precision)
    streamed, in_memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_random_shards(Path(tmp), sequences=sequences, seq_len=args.seq_len,
                                     vocab_size=args.vocab_size)
        tokens = torch.randint(0, args.vocab_size, (sequences, args.seq_len + 1))  # (N, T + 1) in memory
        for r in range(args.rounds):
            # Alternate which variant goes first, so neither always meets the warmer (or busier) machine.
            for variant in ("streamed", "in_memory") if r % 2 == 0 else ("in_memory", "streamed"):
                if variant == "streamed":
                    rate, flops_per_token = timed_fit(
                        data=ShardDataModule(str(shards), batch_size=args.batch_size, shuffle=True), **common)
                    streamed.append(rate)
                else:
                    loader = DataLoader(tokens, batch_size=args.batch_size, shuffle=True, drop_last=True)
                    in_memory.append(timed_fit(data=loader, **common)[0])
            print(f"round {r}: streamed {streamed[-1]:,.0f} tok/s, in-memory {in_memory[-1]:,.0f} tok/s")
        # The loaders alone, no model: what streaming costs per batch, free of the training-time noise.
        loader_s = {}
        makers = {"streamed": lambda: ShardDataModule(str(shards), batch_size=args.batch_size).train_dataloader(),
                  "in_memory": lambda: DataLoader(tokens, batch_size=args.batch_size, shuffle=True)}
        for name, make in makers.items():
            times = []
            for _ in range(3):
                start = time.perf_counter()
                n_batches = sum(1 for _ in make())
                times.append((time.perf_counter() - start) / n_batches)
            loader_s[name] = min(times)
    peak = device_peak_flops()
    s, m = statistics.median(streamed), statistics.median(in_memory)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    mfu = s * flops_per_token / peak
    print(f"{args.arch} model on {device}, batch {args.batch_size} x seq {args.seq_len}, {precision}")
    print(f"streamed shards : {s:,.0f} tokens/s  (1.00x of in-memory would be no loader cost)")
    print(f"in-memory tokens: {m:,.0f} tokens/s  (baseline)")
    print(f"streamed / in-memory = {s / m:.3f}; loader overhead = {1 - s / m:.3%} (goal <= 5%)")
    step_s = args.batch_size * args.seq_len / m
    print(f"loaders alone: streamed {loader_s['streamed'] * 1e3:.2f} ms/batch, in-memory "
          f"{loader_s['in_memory'] * 1e3:.2f} ms/batch, a training step {step_s * 1e3:.0f} ms: streaming adds "
          f"{(loader_s['streamed'] - loader_s['in_memory']) / step_s:.3%} per step")
    print(f"MFU (streamed): {mfu:.2%} of {peak / 1e12:.3f} TFLOP/s peak "
          f"({'data sheet' if cuda else 'measured fp32 matmul rate'}), {flops_per_token:,.0f} FLOP/token")
    result = {"tokens_per_s_streamed": round(s, 1), "tokens_per_s_in_memory": round(m, 1),
              "loader_overhead": round(1 - s / m, 4),
              "loader_ms_per_batch_streamed": round(loader_s["streamed"] * 1e3, 3),
              "loader_ms_per_batch_in_memory": round(loader_s["in_memory"] * 1e3, 3), "mfu": round(mfu, 4),
              "device": device, "arch": args.arch}
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
