"""Bits per byte of benchmark solutions given their prompts, and the check that no benchmark is in the training data.

A proxy model too small to pass a single test still ranks data: the cross-entropy it assigns to a reference solution,
conditioned on the problem's prompt, moves smoothly with data quality long before pass@1 leaves zero (DCLM's
proxy-model evaluation, arXiv 2406.11794 §3; bits per byte rather than per token so tokenizers compare). Per
benchmark: sum over the solution's tokens of -log2 p(token | prompt, earlier solution tokens), divided by the
solution's UTF-8 bytes. Prompt and solution are tokenized separately (lm-evaluation-harness's context/continuation
split), so every scored token belongs to the solution. Sequences longer than the model's context are scored with a
sliding window: each block of `seq_len / 2` targets sees at least `seq_len / 2` tokens before it.

Benchmarks (`BENCHMARKS`): HumanEval(+), MBPP(+) and the five EvoEval categories with the prompts pass@1 uses
(`trainer.evaluation.benchmarks`), BigCodeBench and HumanEval-X per language (`codemill.benchmarks`).

They are held out by construction (decontamination removed them from the training files), and `contamination`
checks that on the actual training shards: a problem whose canonical solution has at least `overlap` of its token
n-grams in a training shard is a copy, and a benchmark with any copy is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from codemill import benchmarks as catalogue
from codemill import storage
from codemill.benchmarks import DATA_DIR
from trainer.evaluation.benchmarks import EVOEVAL_CATEGORIES, load_benchmark

BENCHMARKS = ("humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "bigcodebench", "evoeval", "humaneval_x")
# The annotator's alignment benchmark (trainer/annotator.py `align_auc/<name>`) each evaluation key belongs to.
ALIGNMENT = {"humaneval": "humaneval", "mbpp": "mbpp", "bigcodebench": "bigcodebench", "evoeval": "evoeval",
             "humaneval_x": "humaneval_x"}


class ContaminatedBenchmark(RuntimeError):
    """A benchmark whose solutions are in the training shards: its bits per byte would measure memorisation."""


@dataclasses.dataclass(frozen=True)
class Problem:
    benchmark: str  # the key of `BENCHMARKS`
    task_id: str
    prompt: str
    solution: str
    keys: tuple[str, ...]  # the result keys it counts in: its benchmark, and `humaneval_x/<lang>` for HumanEval-X


def _from_tasks(benchmark: str, names: Iterable[str], data_dir: Path) -> list[Problem]:
    out = []
    for name in names:
        for t in load_benchmark(name, data_dir):
            prompt = t.render_prompt()
            if not t.canonical_solution.startswith(prompt):  # every shipped task is prompt + body; keep it so
                raise ValueError(f"{name}/{t.task_id}: canonical solution does not continue its prompt")
            out.append(Problem(benchmark, t.task_id, prompt, t.canonical_solution[len(prompt):], (benchmark,)))
    return out


def load_problems(benchmark: str, *, data_dir: str | Path = DATA_DIR, limit: int | None = None) -> list[Problem]:
    """The benchmark's problems with non-empty solutions; with `limit`, the first `limit` (HumanEval-X: per
    language; EvoEval: spread over its categories)."""
    data_dir = Path(data_dir)
    if benchmark in ("humaneval", "humaneval_plus", "mbpp", "mbpp_plus"):
        out = _from_tasks(benchmark, [benchmark], data_dir)
    elif benchmark == "evoeval":  # the five categories pooled; `limit` spread evenly over them
        per = None if limit is None else -(-limit // len(EVOEVAL_CATEGORIES))
        out = []
        for c in EVOEVAL_CATEGORIES:
            out += _from_tasks(benchmark, [f"evoeval_{c}"], data_dir)[:per]
    elif benchmark in ("bigcodebench", "humaneval_x"):
        seen, out = set(), []
        per_key: dict[str, int] = defaultdict(int)
        for p in catalogue.problems(benchmark, data_dir=data_dir):
            if p.task_id in seen or not p.canonical_solution.strip() or not p.prompt:
                continue  # BigCodeBench ships each task in two files
            seen.add(p.task_id)
            keys = (benchmark, f"{benchmark}/{p.language}") if benchmark == "humaneval_x" else (benchmark,)
            if limit is not None and per_key[keys[-1]] >= limit:
                continue
            per_key[keys[-1]] += 1
            out.append(Problem(benchmark, p.task_id, p.prompt, p.canonical_solution, keys))
        limit = None
    else:
        raise KeyError(f"unknown benchmark {benchmark!r}; known: {BENCHMARKS}")
    return [p for p in out if p.solution.strip()][:limit]


# ------------------------------------------------------------------------------------------ contamination
def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit polynomial hashes of every window of `n` token ids along the last axis (wrapping arithmetic)."""
    if ids.shape[-1] < n:
        return np.empty(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(ids.astype(np.uint64), n, axis=-1)
    powers = np.power(np.uint64(1_000_003), np.arange(n, dtype=np.uint64))
    with np.errstate(over="ignore"):
        return (windows * powers).sum(axis=-1, dtype=np.uint64).reshape(-1)


def shard_ngrams(split_dir: str, n: int, *, cache: str | None = None) -> np.ndarray:
    """Sorted unique n-gram hashes of every item of a litdata split (cached by the split's index.json)."""
    from litdata import StreamingDataset

    index = storage.read_text(storage.join(split_dir, "index.json"))
    key = hashlib.sha256(f"{split_dir}|{n}|{index}".encode()).hexdigest()[:20]
    path = Path(cache) / f"ngrams-{key}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    input_dir, options = storage.litdata_source(split_dir)
    dataset = StreamingDataset(input_dir, shuffle=False, storage_options=options or None)
    parts, batch = [], []
    for item in dataset:
        batch.append(np.asarray(item["input_ids"]))
        if len(batch) == 512:
            parts.append(np.unique(ngram_hashes(np.stack(batch), n)))
            batch = []
    if batch:
        parts.append(np.unique(ngram_hashes(np.stack(batch), n)))
    out = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out


def contamination(problems: Sequence[Problem], tokenizer, train_ngrams: np.ndarray, *, n: int,
                  overlap: float) -> dict[str, list[tuple[str, float]]]:
    """Per benchmark, the problems (task id, share of solution n-grams found) at or above `overlap`."""
    found: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for p in problems:
        hashes = ngram_hashes(np.asarray(tokenizer.encode(p.solution, add_special_tokens=False).ids), n)
        if len(hashes) == 0:
            continue  # shorter than one n-gram: nothing to compare
        share = float(in_sorted(hashes, train_ngrams).mean())
        if share >= overlap:
            found[p.benchmark].append((p.task_id, round(share, 3)))
    return dict(found)


def in_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """`np.isin(values, sorted_unique)` by binary search: `shard_ngrams` returns its hashes sorted, and `np.isin`
    would sort the millions of training n-grams again for every problem's few dozen (the check took longer than
    the demo's training)."""
    if len(sorted_unique) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[at] == values


def refuse_contaminated(found: dict[str, list[tuple[str, float]]], *, where: str) -> None:
    if found:
        detail = "; ".join(f"{b}: {len(v)} problems, e.g. {v[:3]}" for b, v in sorted(found.items()))
        raise ContaminatedBenchmark(
            f"benchmark solutions found in the training shards ({where}): {detail}. Decontaminate the lake "
            "(python -m spark_jobs.pipeline --stages decontaminate ...) or drop these benchmarks from "
            "eval.benchmarks")


# ------------------------------------------------------------------------------------------ bits per byte
def _windows(n_prompt: int, n_total: int, seq_len: int) -> list[tuple[int, int, int]]:
    """(start, first target, end) per block: input ids[start:end-1] predicts targets ids[first:end]."""
    stride = max(seq_len // 2, 1)
    out = []
    for first in range(max(n_prompt, 1), n_total, stride):
        end = min(first + stride, n_total)
        out.append((max(0, end - 1 - seq_len), first, end))
    return out


def bits_per_byte(model, tokenizer, problems: Sequence[Problem], *, seq_len: int, batch_size: int = 32,
                  device: str = "cpu") -> dict[str, dict[str, float]]:
    """`{key: {"bpb", "bits", "bytes", "problems"}}` for every result key of `problems`."""
    import torch

    items = []  # (problem index, input ids, target ids, offset of the first target in the input)
    for i, p in enumerate(problems):
        prompt = tokenizer.encode(p.prompt, add_special_tokens=False).ids
        ids = prompt + tokenizer.encode(p.solution, add_special_tokens=False).ids
        for start, first, end in _windows(len(prompt), len(ids), seq_len):
            items.append((i, ids[start:end - 1], ids[first:end], first - 1 - start))
    items.sort(key=lambda it: len(it[1]))  # similar lengths per batch: less padding
    bits = np.zeros(len(problems))
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(items), batch_size):
            batch = items[b:b + batch_size]
            width = max(len(it[1]) for it in batch)
            x = torch.zeros((len(batch), width), dtype=torch.long)  # right padding: causal attention ignores it
            for r, it in enumerate(batch):
                x[r, :len(it[1])] = torch.tensor(it[1])
            logits = model(input_ids=x.to(device)).logits  # (B, T, V)
            for r, (i, _, targets, offset) in enumerate(batch):
                # only the target positions are normalised: (n_targets, V)
                rows = torch.log_softmax(logits[r, offset:offset + len(targets)].float(), dim=-1)
                picked = rows.gather(1, torch.tensor(targets, device=rows.device).unsqueeze(1))
                bits[i] -= float(picked.sum()) / math.log(2)
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"bits": 0.0, "bytes": 0.0, "problems": 0.0})
    for i, p in enumerate(problems):
        for key in p.keys:
            totals[key]["bits"] += bits[i]
            totals[key]["bytes"] += len(p.solution.encode("utf-8"))
            totals[key]["problems"] += 1
    return {k: {**v, "bpb": v["bits"] / v["bytes"]} for k, v in sorted(totals.items())}


def load_model(hf_dir: str):
    """The exported proxy (`<run>/hf`, local or on an object store) in fp32."""
    from transformers import AutoModelForCausalLM

    local = hf_dir if storage.is_local(hf_dir) else storage.local_copy(hf_dir)
    return AutoModelForCausalLM.from_pretrained(local, dtype="float32")


def load_tokenizer(path: str):
    """The shards' tokenizer (`tokenizers.Tokenizer` from `<dir>/tokenizer.json`)."""
    from tokenizers import Tokenizer

    file = path if path.endswith(".json") else os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no tokenizer.json at {path} (the shard manifest's `tokenizer`)")
    return Tokenizer.from_file(file)


def problems_digest(problems: Sequence[Problem]) -> str:
    return hashlib.sha256(json.dumps([(p.benchmark, p.task_id) for p in problems]).encode()).hexdigest()[:12]
