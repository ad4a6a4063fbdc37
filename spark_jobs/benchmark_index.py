"""The benchmark index of decontamination: benchmark texts -> a sorted n-gram index, built once, cached, matched.

Pure Python and numpy (no Spark): `spark_jobs.decontaminate` broadcasts the index and matches every training file
against it on the workers; synth post-processing matches the generations it holds in its own process.

- Texts: `benchmark_texts(benchmarks)`: (benchmark, task_id, field, text) for every text field of every problem of
  the benchmarks (`codemill.benchmarks`, the catalogue: conf/spark/benchmarks.yaml and user files), each once.
- Index: texts are cut into word tokens (`[A-Za-z0-9_]+`, so formatting and punctuation do not matter); every
  `ngram`-token window with at least half informative tokens (2+ characters, not a number) is hashed into a
  sorted array of distinct hashes with the texts containing each (`build_index`); an n-gram held by more than
  `max_texts_per_ngram` texts is boilerplate (a test harness, an instruction header) and left out; texts with no
  informative n-gram (shorter than `ngram` tokens, or made of one-letter names and numbers) but at least
  `min_short_chars` characters are kept whole for an exact substring match.
- Matching one text: `match_text(content, index, ngram=, min_overlap=, min_matched=, min_task_ngrams=)`: a text
  is found when the content holds at least `min_overlap` of its distinct n-grams (or, for a short text, the text
  itself); a task (benchmark, task id) is found when the content holds at least `min_task_ngrams` distinct n-grams
  of its texts together (a partial copy spanning prompt and solution, or prompt and tests). One token regex pass,
  token ids from a per-process crc32 memo (code repeats its identifiers), numpy look-ups.
- Caching: the index is keyed by the sha256 of the benchmarks' settings and file contents (`texts_key`) and of
  the index settings (`index_key`), memoised in the process and kept on local disk under
  `$CODEMILL_CACHE_DIR/decontam/` (default `~/.cache/codemill/decontam/`): `cached_texts`, `cached_index`.

Public API: `BenchmarkIndex`, `build_index`, `match_text`, `benchmark_texts`, `texts_key`, `index_key`,
`cached_texts`, `cached_index`, `cache_dir`, `token_ids`, `ngram_hashes`, `window_hashes`, `INDEX_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from codemill.benchmarks import Benchmark

TOKEN = re.compile(r"[A-Za-z0-9_]+")
# Bump when tokenisation, hashing or the index layout change: it is part of every cache key.
INDEX_VERSION = 5
_BLOOM_BITS = 26  # 8 MB bitmap over ~2 M benchmark n-grams: ~3% of a file's n-grams reach the binary search
_SHORT_BLOOM_BITS = 20  # 128 KB bitmap over the ~1,600 substring texts
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads 32-bit token ids over 64 bits
_BASE = 0x100000001B3

# (benchmark, task_id, field, text)
Text = tuple[str, str, str, str]


# ---------------------------------------------------------------------- benchmark texts
def benchmark_texts(benchmarks: Sequence[Benchmark]) -> list[Text]:
    """(benchmark, task_id, field, text) for every text field (`Benchmark.text_fields`) of every problem of
    `benchmarks`, in catalogue order, each distinct row once. Raises `MissingBenchmarkFiles` (naming the benchmark
    and its glob) when a benchmark matches no file."""
    out: list[Text] = []
    seen: set[Text] = set()
    for bench in benchmarks:
        for problem in bench.problems():
            for field in bench.text_fields:
                text = problem.text(field)
                if text is not None:
                    row = (bench.name, problem.task_id, field, text)
                    if row not in seen:
                        seen.add(row)
                        out.append(row)
    return out


# ---------------------------------------------------------------------- hashing (driver and workers)
class _Crc32(dict):
    """token -> crc32, filled on first sight: code repeats its identifiers, so most lookups are dict hits."""

    def __missing__(self, tok: str) -> int:
        if len(self) > 2_000_000:  # bound the memory of a long-lived worker
            self.clear()
        v = self[tok] = zlib.crc32(tok.encode())
        return v


_CRC = _Crc32()


def token_ids(text: str | list[str]):
    """Stable 64-bit ids of the word tokens of `text` (or of an already split token list)."""
    toks = TOKEN.findall(text) if isinstance(text, str) else text
    ids = np.fromiter(map(_CRC.__getitem__, toks), dtype=np.uint64, count=len(toks))
    return ids * np.uint64(_MIX)


def ngram_hashes(ids, n: int):
    """Hashes of every n-token window of `ids` (uint64, wrapping polynomial hash); empty when too short."""
    if len(ids) < n:
        return np.empty(0, dtype=np.uint64)
    powers = np.array([pow(_BASE, n - 1 - k, 1 << 64) for k in range(n)], dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    with np.errstate(over="ignore"):
        return windows @ powers


_BASE_INV = pow(_BASE, -1, 1 << 64)  # _BASE is odd, so invertible modulo 2**64


def _powers(base: int, n: int):
    a = np.full(n, base, dtype=np.uint64)
    a[:1] = 1
    return np.cumprod(a, dtype=np.uint64)  # wraps modulo 2**64, like the hash


def window_hashes(ids):
    """`k -> ngram_hashes(ids, k)` for any k from one prefix sum: window [i, i+k) hashes to
    (C[i+k] - C[i]) * B^(i+k-1) with C the prefix sums of ids[j] * B^-j (mod 2**64), so every window size costs a
    subtraction and a product per position instead of a k-wide product (the n-grams and each short-text length)."""
    n = len(ids)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(ids * _powers(_BASE_INV, n), out=prefix[1:])
    powers = _powers(_BASE, n + 1)

    def of(k: int):
        if n < k or k < 1:
            return np.empty(0, dtype=np.uint64)
        return (prefix[k:] - prefix[:n - k + 1]) * powers[k - 1:n]

    return of


@dataclasses.dataclass
class BenchmarkIndex:
    """Sorted distinct n-gram hashes -> benchmark texts containing them (CSR), plus short texts."""

    hashes: object  # (H,) uint64 sorted
    offsets: object  # (H + 1,) int64
    text_idx: object  # (sum of postings,) int32
    totals: object  # (T,) distinct n-grams per text
    meta: list  # (benchmark, task_id, field) per text
    short: list  # (text index, k = min(token count, ngram), hash of its first k tokens, stripped text)
    short_by_len: dict  # k -> (sorted hashes, positions in `short`)
    key: str = ""  # cache key (`index_key`); "" for an index built by hand
    bloom: object = None  # (2**_BLOOM_BITS / 8,) uint8 bitmap of the low bits of `hashes`
    short_bloom: object = None  # the same over the hashes of `short` (_SHORT_BLOOM_BITS)
    task_of: object = None  # (T,) int32: the task (benchmark, task_id) of each text, numbered in text order
    task_texts: list = dataclasses.field(default_factory=list)  # task number -> its text indexes


def build_index(texts: Sequence[Text], *, ngram: int, min_short_chars: int,
                max_texts_per_ngram: int = 0) -> BenchmarkIndex:
    """The index of `texts` (`benchmark_texts` rows) for windows of `ngram` tokens, leaving out n-grams held by more
    than `max_texts_per_ngram` texts (0: none left out)."""
    keys, owners, meta, short = [], [], [], []
    for i, (bench, task, field, text) in enumerate(texts):
        meta.append((bench, task, field))
        toks = TOKEN.findall(text)
        ids = token_ids(toks)
        grams = ngram_hashes(ids, ngram)
        if len(grams):
            # Keep n-grams with at least half informative tokens (2+ chars, not a number): runs such as
            # "a b c d e f g h i j" (alphabet tables) or "return a b a c a c" match unrelated code.
            informative = np.fromiter((len(t) > 1 and not t.isdigit() for t in toks), dtype=np.int64,
                                      count=len(toks))
            grams = grams[np.convolve(informative, np.ones(ngram, dtype=np.int64), "valid") >= (ngram + 1) // 2]
        grams = np.unique(grams)
        if len(grams):
            keys.append(grams)
            owners.append(np.full(len(grams), i, dtype=np.int32))
        elif 0 < len(ids) and len(text.strip()) >= min_short_chars:
            # No informative n-gram: a short text, or one of one-letter names and numbers (`if (x % 1 === 0 && y %
            # 1 === 0 ...`). Found as an exact substring, looked up by the hash of its first min(ngram, length)
            # tokens, so a long one costs no extra pass over the file.
            k = min(len(ids), ngram)
            short.append((i, k, int(ngram_hashes(ids[:k], k)[0]), text.strip()))
    all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.uint64)
    all_owners = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_owners = all_keys[order], all_owners[order]
    uniq, starts, counts = np.unique(all_keys, return_index=True, return_counts=True)
    if max_texts_per_ngram > 0 and (counts > max_texts_per_ngram).any():
        # Boilerplate: an n-gram in hundreds of texts (MBXP's "You are an expert PHP programmer" header, a test
        # harness) names no task. One task's texts across the translated benchmarks share fewer (HumanEval's
        # docstring: ~50 texts over HumanEval-X, Multi-HumanEval, MultiPL-E), so these stay.
        specific = counts <= max_texts_per_ngram
        keep = np.repeat(specific, counts)
        all_keys, all_owners, uniq, counts = all_keys[keep], all_owners[keep], uniq[specific], counts[specific]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    offsets = np.append(starts, len(all_keys)).astype(np.int64)
    totals = np.bincount(all_owners, minlength=len(meta)).astype(np.int64)  # distinct n-grams kept per text
    task_numbers: dict[tuple[str, str], int] = {}
    task_of = np.array([task_numbers.setdefault((b, t), len(task_numbers)) for b, t, _ in meta], dtype=np.int32)
    task_texts: list[list[int]] = [[] for _ in task_numbers]
    for i, task in enumerate(task_of.tolist()):
        task_texts[task].append(i)
    short_by_len = {}
    for k in sorted({s[1] for s in short}):
        pos = np.array([j for j, s in enumerate(short) if s[1] == k], dtype=np.int64)
        hashes = np.array([short[j][2] for j in pos], dtype=np.uint64)
        order = np.argsort(hashes)
        short_by_len[k] = (hashes[order], pos[order])
    return BenchmarkIndex(uniq, offsets, all_owners, totals, meta, short, short_by_len,
                          bloom=_bloom(uniq, _BLOOM_BITS),
                          short_bloom=_bloom(np.array([s[2] for s in short], dtype=np.uint64), _SHORT_BLOOM_BITS),
                          task_of=task_of, task_texts=task_texts)


def _bloom(hashes, bits: int):
    """A bitmap of the low `bits` bits of `hashes` (one hash function: the hashes are already uniform)."""
    bloom = np.zeros(1 << (bits - 3), dtype=np.uint8)
    low = (hashes & np.uint64((1 << bits) - 1)).astype(np.int64)
    np.bitwise_or.at(bloom, low >> 3, (1 << (low & 7)).astype(np.uint8))
    return bloom


def _in_bloom(bloom, values):
    """Mask of `values` whose low bits are set in `bloom` (no false negatives). The bit count is the bitmap's own,
    so an index pickled with other settings still reads right."""
    bits = (len(bloom) * 8).bit_length() - 1
    low = (values & np.uint64((1 << bits) - 1)).astype(np.int64)
    return (bloom[low >> 3] >> (low & 7).astype(np.uint8)) & 1 == 1


# ---------------------------------------------------------------------- caching
def cache_dir() -> str:
    """Local folder of the benchmark caches (`$CODEMILL_CACHE_DIR/decontam`, default ~/.cache/codemill/decontam)."""
    root = os.environ.get("CODEMILL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "codemill")
    return os.path.join(root, "decontam")


_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def texts_key(benchmarks: Sequence[Benchmark]) -> str:
    """sha256 of what `benchmark_texts(benchmarks)` reads: each benchmark's name, id and text fields and format, and
    the content of every file it matches (not their paths or dates, so a copied checkout shares the cache)."""
    parts: list = [INDEX_VERSION]
    for b in benchmarks:
        parts.append([b.name, b.id_field, list(b.text_fields), b.format,
                      [(os.path.basename(p), _file_sha256(p)) for p in b.paths()]])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


_TEXTS: dict[str, list[Text]] = {}
_INDEXES: dict[str, BenchmarkIndex] = {}


def cached_texts(benchmarks: Sequence[Benchmark], key: str | None = None) -> list[Text]:
    """`benchmark_texts(benchmarks)`, read once per process (`key`: their `texts_key`, when known)."""
    key = key or texts_key(benchmarks)
    if key not in _TEXTS:
        _TEXTS[key] = benchmark_texts(benchmarks)
    return _TEXTS[key]


def index_key(texts_key: str, ngram: int, min_short_chars: int, max_texts_per_ngram: int = 0) -> str:
    """The cache key of the index of the texts `texts_key` names, for these settings."""
    return hashlib.sha256(f"{INDEX_VERSION}:{texts_key}:{ngram}:{min_short_chars}:{max_texts_per_ngram}"
                          .encode()).hexdigest()[:32]


def cached_index(texts_key: str, texts_fn: Callable[[], Sequence[Text]], *, ngram: int, min_short_chars: int,
                 max_texts_per_ngram: int = 0, disk: bool = True) -> BenchmarkIndex:
    """The index of the texts identified by `texts_key`: from this process's memo, else from the disk cache, else
    built from `texts_fn()` (and saved). A cache file that cannot be read or written is rebuilt or skipped, never
    an error: the cache only saves time."""
    key = index_key(texts_key, ngram, min_short_chars, max_texts_per_ngram)
    if key in _INDEXES:
        return _INDEXES[key]
    path = os.path.join(cache_dir(), f"index-{key}.pkl")
    index = None
    if disk and os.path.exists(path):
        try:
            with open(path, "rb") as fh:
                index = pickle.load(fh)  # our own file, named by its content hash
        except Exception:  # noqa: BLE001 - a truncated or stale cache file is rebuilt
            index = None
    if not isinstance(index, BenchmarkIndex) or index.key != key:
        index = build_index(texts_fn(), ngram=ngram, min_short_chars=min_short_chars,
                            max_texts_per_ngram=max_texts_per_ngram)
        index.key = key
        if disk:
            try:
                os.makedirs(cache_dir(), exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)  # atomic: concurrent jobs never read a half-written index
            except OSError:
                pass
    _INDEXES[key] = index
    return index


# ---------------------------------------------------------------------- matching one text
def match_text(content: str, index: BenchmarkIndex, *, ngram: int, min_overlap: float, min_matched: int,
               min_task_ngrams: int = 0) -> list[tuple]:
    """(benchmark, task_id, field, method, matched, total, overlap) for every benchmark text found in `content`
    (method `ngram` or `substring`), and for every task none of whose texts is found alone but whose texts together
    have at least `min_task_ngrams` distinct n-grams in `content` (0: no such test): method `task`, field the
    matched fields joined by "+", matched/total over the task's texts."""
    windows = window_hashes(token_ids(content))
    hits: list[tuple] = []
    doc_grams = windows(ngram)
    grams = np.unique(doc_grams)
    if len(grams) and index.bloom is not None:
        # Most of a file's n-grams are in no benchmark: a bitmap lookup drops them before the binary search, which
        # was the most expensive step (random reads in a 2 M-entry array).
        grams = grams[_in_bloom(index.bloom, grams)]
    if len(grams) and len(index.hashes):
        pos = np.clip(np.searchsorted(index.hashes, grams), 0, len(index.hashes) - 1)
        found = pos[index.hashes[pos] == grams]
        if len(found):
            owners = np.concatenate([index.text_idx[index.offsets[p]:index.offsets[p + 1]] for p in found])
            # np.unique, not bincount: a file meets a few texts of the ~80,000; bincount would scan them all
            texts, counts = np.unique(owners, return_counts=True)
            found_tasks = set()
            for t, matched in zip(texts.tolist(), counts.tolist()):
                total = int(index.totals[t])
                overlap = matched / total
                if overlap >= min_overlap and matched >= min_matched:
                    hits.append((*index.meta[t], "ngram", matched, total, overlap))
                    found_tasks.add(int(index.task_of[t]))
            if min_task_ngrams > 0 and len(found) >= min_task_ngrams:
                hits.extend(_task_hits(index, found, owners, dict(zip(texts.tolist(), counts.tolist())),
                                       found_tasks, min_task_ngrams))
    for k, (short_hashes, short_pos) in index.short_by_len.items():
        doc_k = doc_grams if k == ngram else windows(k)
        if index.short_bloom is not None and len(doc_k):
            doc_k = doc_k[_in_bloom(index.short_bloom, doc_k)]
        if not len(doc_k):
            continue
        pos = np.clip(np.searchsorted(short_hashes, doc_k), 0, len(short_hashes) - 1)
        for p in np.unique(pos[short_hashes[pos] == doc_k]):
            t, _, _, text = index.short[short_pos[p]]
            if text in content:  # the token match ignores punctuation; the text itself must occur
                hits.append((*index.meta[t], "substring", 0, 0, 1.0))
    return hits


def _task_hits(index: BenchmarkIndex, found, owners, text_counts: dict[int, int], found_tasks: set[int],
               min_task_ngrams: int):
    """Task-level hits: distinct n-grams of `content` (positions `found` in the index; `owners` their texts, in
    order; `text_counts` n-grams per text) per task, for tasks not already found by one of their texts."""
    lengths = index.offsets[found + 1] - index.offsets[found]
    gram = np.repeat(np.arange(len(found), dtype=np.int64), lengths)  # the n-gram each posting belongs to
    pairs = np.unique(index.task_of[owners].astype(np.int64) * len(found) + gram)  # distinct (task, n-gram)
    tasks, per_task = np.unique(pairs // len(found), return_counts=True)
    for task, matched in zip(tasks[per_task >= min_task_ngrams].tolist(),
                             per_task[per_task >= min_task_ngrams].tolist()):
        if task in found_tasks:
            continue
        texts = index.task_texts[task]
        fields = [index.meta[t][2] for t in texts if text_counts.get(t)]
        total = int(sum(index.totals[t] for t in texts))  # an upper bound of the distinct n-grams of the task
        bench, task_id, _ = index.meta[texts[0]]
        yield bench, task_id, "+".join(fields), "task", matched, total, matched / max(total, matched)
