"""GPU check: trainer tokens/s and MFU of the paper's 1.3B model, and annotator scoring windows/s, on one GPU.

    bash bench/gpu_check.sh               # one H200 (or any CUDA GPU), at most 8 minutes; ends with RESULT {json}
    bash bench/gpu_check.sh --dry-run     # CPU, tiny models, seconds: what tests/bench/test_gpu_check.py runs

It needs only what a GPU training image holds: torch, lightning, transformers, and codemill's own `trainer/`
package (pure Python, no Spark, no vLLM); nothing is downloaded and no wheel is shipped with it.

Trainer: `trainer.model.CodeLM` (Arctic-SnowCoder-1.3B, paper §3.1: hidden 2048, FFN 5632, 24 layers, 16 heads,
vocab 64000) through a Lightning `Trainer` (bf16-mixed, attention by PyTorch SDPA, which dispatches to its flash
kernel on Hopper) and the model's own AdamW, on random tokens already on the host: what the GPU does per step, not
the data loader (`bench/train.py` compares the loaders). For each sequence length (2048 and 8192), a few warm-up
steps (CUDA context, cuBLAS/SDPA autotuning, allocator growth) are followed by timed steps, each closed by a CUDA
synchronise; tokens/s = timed tokens / timed seconds. MFU = tokens/s x `CodeLM.flops_per_token()` (6N + 12·L·H·T,
PaLM App. B) / the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOPS; `--peak-tflops` for others).

Annotator: the scoring path of `trainer.annotator_model.Annotator` (`score_windows`: length batches, padding,
encoder, pooling, head, in bf16) on an encoder of snowflake-arctic-embed-m's shape (BERT-base, 110M, the paper's
annotator, §2.3) with random weights (throughput does not depend on them; the image has no network), on 512-token
windows: windows/s.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from trainer.annotator_model import Annotator  # noqa: E402
from trainer.model import CodeLM  # noqa: E402

# Dense bf16 peak of the GPU, FLOP/s, by a substring of torch.cuda.get_device_name() (vendor datasheets, SXM parts).
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12}

ARCHS = {
    # conf/train/phase*.yaml (paper §3.1)
    "1.3b": dict(vocab_size=64000, hidden_size=2048, intermediate_size=5632, num_layers=24, num_heads=16,
                 num_kv_heads=16),
    # conf/train/debug-phase*.yaml, for --dry-run
    "debug": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4, num_kv_heads=4),
}
ENCODERS = {
    # snowflake-arctic-embed-m: BERT-base
    "arctic-embed-m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           vocab_size=30522, max_position_embeddings=512),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=512,
                 max_position_embeddings=128),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, debug model, tiny encoder: checks the script runs")
    p.add_argument("--seq-lens", default=None, help="comma-separated sequence lengths (default 2048,8192)")
    p.add_argument("--tokens-per-step", type=int, default=None,
                   help="tokens per optimizer step (batch = this / seq len; default 16384)")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per sequence length")
    p.add_argument("--windows", type=int, default=None, help="annotator windows scored in the timed run")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, if not known here")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop starting new measurements after this many seconds (the shell wrapper kills at 480)")
    args = p.parse_args(argv)
    defaults = dict(seq_lens="64,128", tokens_per_step=256, warmup_steps=1, steps=2, windows=64) if args.dry_run \
        else dict(seq_lens="2048,8192", tokens_per_step=16384, warmup_steps=3, steps=8, windows=4096)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


class StepTimer:
    """Wall time of every training step, each closed by a device synchronise (kernels are asynchronous)."""

    def __init__(self, sync):
        self.sync, self.times, self._t0 = sync, [], 0.0

    def callback(self):
        import lightning.pytorch as pl

        timer = self

        class _Timer(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                timer.sync()
                timer._t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                timer.sync()
                timer.times.append(time.perf_counter() - timer._t0)

        return _Timer()


def trainer_run(*, arch: dict, seq_len: int, batch: int, warmup: int, steps: int, device: str, peak: float | None):
    """tokens/s, MFU and peak memory of `CodeLM` training steps at one sequence length."""
    import lightning.pytorch as pl
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = CodeLM(**arch, seq_len=seq_len, max_position_embeddings=max(8192, seq_len), attn_implementation="sdpa",
                   warmup_steps=1, lr=1e-4, min_lr=1e-5)
    data = torch.randint(0, arch["vocab_size"], ((warmup + steps) * batch, seq_len + 1), dtype=torch.long)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, num_workers=0, pin_memory=cuda)
    timer = StepTimer(sync)
    trainer = pl.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, precision="bf16-mixed",
                         max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[timer.callback()])
    trainer.fit(model, train_dataloaders=loader)
    timed = timer.times[warmup:]
    if len(timed) < steps:
        raise RuntimeError(f"seq_len {seq_len}: {len(timed)} timed steps ran, {steps} expected")
    tokens_per_s = batch * seq_len * len(timed) / sum(timed)
    flops = model.flops_per_token()
    out = {"seq_len": seq_len, "batch": batch, "steps": len(timed), "step_s_median": statistics.median(timed),
           "tokens_per_s": tokens_per_s, "params": model.num_parameters(), "flops_per_token": flops,
           "mfu": tokens_per_s * flops / peak if peak else None,
           "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return out


def annotator_run(*, encoder: dict, windows: int, device: str, precision: str):
    """Windows/s of `Annotator.score_windows` with an encoder of the given shape (random weights)."""
    import torch
    from transformers import BertConfig, BertModel


    torch.manual_seed(0)
    length = encoder["max_position_embeddings"]
    model = BertModel(BertConfig(**encoder, attn_implementation="sdpa"), add_pooling_layer=False).eval()
    scorer = _annotator_from_modules(model, torch.nn.Linear(encoder["hidden_size"], 1), device=device,
                                     precision=precision)
    rnd = torch.Generator().manual_seed(1)
    sample = torch.randint(1000 % encoder["vocab_size"], encoder["vocab_size"], (windows, length), generator=rnd)
    batch = [row.tolist() for row in sample]
    scorer.score_windows(batch[:max(1, windows // 8)])  # warm-up: kernels, allocator
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    logits = scorer.score_windows(batch)
    sync()
    seconds = time.perf_counter() - t0
    if len(logits) != windows or not all(math.isfinite(x) for x in logits):
        raise RuntimeError("annotator scoring returned missing or non-finite logits")
    return {"windows": windows, "window_tokens": length, "precision": precision, "seconds": seconds,
            "windows_per_s": windows / seconds, "max_batch": scorer.max_batch, "max_tokens": scorer.max_tokens}


def _annotator_from_modules(encoder, head, *, device: str, precision: str):
    """An `Annotator` around in-memory modules: `Annotator(path)` loads an exported folder (weights, tokenizer),
    which this machine cannot fetch; the scoring path measured (`score_windows` -> `forward`) is the same code."""
    import types

    import torch

    scorer = Annotator.__new__(Annotator)
    scorer.device = torch.device(device)
    scorer.encoder, scorer.head = encoder.to(scorer.device), head.to(scorer.device).eval()
    scorer.pooling, scorer.precision = "cls", precision
    scorer.tokenizer = types.SimpleNamespace(pad_token_id=0)
    scorer.max_batch, scorer.max_tokens = 64, 16384  # the scoring stage's defaults (conf/spark/pipeline.yaml)
    return scorer


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if not args.dry_run and device != "cuda":
        raise SystemExit("gpu_check: no CUDA device; run with --dry-run to check the script on CPU")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if k in name), None)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    arch = ARCHS["debug" if args.dry_run else "1.3b"]
    result = {"device": name, "dry_run": args.dry_run, "peak_bf16_flops": peak, "torch": torch.__version__,
              "trainer": {}, "skipped": []}
    for seq_len in (int(x) for x in args.seq_lens.split(",")):
        if time.perf_counter() - start > args.budget_s:
            result["skipped"].append(f"trainer seq_len {seq_len}: budget")
            continue
        batch = max(1, args.tokens_per_step // seq_len)
        result["trainer"][str(seq_len)] = trainer_run(arch=arch, seq_len=seq_len, batch=batch,
                                                      warmup=args.warmup_steps, steps=args.steps, device=device,
                                                      peak=peak)
        print(f"trainer seq_len={seq_len}: {json.dumps(result['trainer'][str(seq_len)])}", flush=True)
    if time.perf_counter() - start > args.budget_s:
        result["skipped"].append("annotator: budget")
    else:
        result["annotator"] = annotator_run(encoder=ENCODERS["tiny" if args.dry_run else "arctic-embed-m"],
                                            windows=args.windows, device=device,
                                            precision="bf16" if device == "cuda" else "fp32")
        print(f"annotator: {json.dumps(result['annotator'])}", flush=True)
    result["wall_s"] = time.perf_counter() - start
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
