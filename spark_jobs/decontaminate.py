"""Decontamination: `near_deduped` (or `exact_deduped`) -> `clean` + `contamination`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages decontaminate

Paper §2.1 removes training files that contain evaluation problems. Two tests per benchmark text (prompt, reference
solution; fields per benchmark in `conf/spark/benchmarks.yaml`):
- **n-gram overlap**: texts are cut into word tokens (`[A-Za-z0-9_]+`, so formatting and punctuation do not
  matter), every `ngram`-token window with at least half informative tokens (2+ characters, not a number) is
  hashed; a file is contaminated by a text when it contains at least `min_overlap` of that text's distinct
  n-grams;
- **exact substring** for short texts (fewer than `ngram` tokens, at least `min_short_chars` characters): their
  token sequence must occur in the file and the stripped text itself must be a substring of it.

`load_benchmarks` and `find_contamination` are reusable (the synthetic-data stage checks generations with them).
Matching runs on the workers in a vectorised `mapInArrow` against a broadcast, sorted array of benchmark n-gram
hashes, so the cost per file is one regex pass plus numpy lookups.

The benchmark index is built once: it is keyed by the sha256 of the benchmark list, every benchmark file and the
settings (`benchmarks_key`), memoised in the process, kept on local disk under `$CODEMILL_CACHE_DIR/decontam/`
(default `~/.cache/codemill/decontam/`) and broadcast once per Spark session. A DataFrame from `load_benchmarks`
carries its key, so `find_contamination` never collects it back to the driver.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING

from codemill import schemas
from codemill.config import CONF_DIR, REPO_ROOT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TOKEN = re.compile(r"[A-Za-z0-9_]+")
# Bump when tokenisation, hashing or the index layout change: it is part of every cache key.
INDEX_VERSION = 3
_BLOOM_BITS = 25  # 4 MB bitmap over ~1 M benchmark n-grams: ~3% of a file's n-grams reach the binary search
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads 32-bit token ids over 64 bits
_BASE = 0x100000001B3


@dataclasses.dataclass
class DecontaminateConfig:
    """`decontaminate.*` keys."""

    benchmarks_file: str = str(CONF_DIR / "spark" / "benchmarks.yaml")
    data_dir: str = str(REPO_ROOT / "data" / "benchmarks")
    # User-supplied JSON Lines benchmarks: globs, the text fields to compare and the id field.
    user_files: list[str] = dataclasses.field(default_factory=list)
    user_text_fields: list[str] = dataclasses.field(default_factory=lambda: ["prompt", "canonical_solution"])
    user_id_field: str = "task_id"
    ngram: int = 10
    # Share of a benchmark text's distinct n-grams that a file must contain to be flagged.
    min_overlap: float = 0.5
    min_matched_ngrams: int = 1
    # Short texts (< ngram tokens) shorter than this are too generic to match on: HumanEval one-liners such as
    # "return [e for e in l if e > 0]" (30 chars) occur in unrelated code.
    min_short_chars: int = 50

    def __post_init__(self):  # relative paths: against the repository root unless they exist from here
        from codemill.config import repo_path

        self.benchmarks_file = repo_path(self.benchmarks_file)
        self.data_dir = repo_path(self.data_dir)

    def validate(self) -> list[str]:
        import glob
        import os

        problems = []
        if not os.path.isfile(self.benchmarks_file):
            problems.append(f"benchmarks_file: {self.benchmarks_file!r} does not exist")
        if not os.path.isdir(self.data_dir):
            problems.append(f"data_dir: {self.data_dir!r} is not a directory")
        for pattern in self.user_files:
            if not glob.glob(pattern):
                problems.append(f"user_files: {pattern!r} matches no file")
        if self.ngram < 3:
            problems.append("ngram: must be >= 3")
        if not 0 < self.min_overlap <= 1:
            problems.append("min_overlap: must be in (0, 1]")
        return problems


# ---------------------------------------------------------------------- benchmark texts
def _read_records(path: str, fmt: str) -> list[dict]:
    import gzip
    import json

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if fmt == "json":
            data = json.load(fh)
            return data if isinstance(data, list) else [data]
        return [json.loads(line) for line in fh if line.strip()]


def benchmark_texts(cfg: DecontaminateConfig) -> list[tuple[str, str, str, str]]:
    """(benchmark, task_id, field, text) for every configured benchmark file and user file."""
    import glob
    import os

    import yaml

    with open(cfg.benchmarks_file) as fh:
        entries = (yaml.safe_load(fh) or {}).get("benchmarks") or []
    specs = [(e["name"], os.path.join(cfg.data_dir, e["files"]), e.get("id"), list(e["fields"]),
              e.get("format", "jsonl")) for e in entries]
    specs += [(os.path.basename(p).split(".")[0], p, cfg.user_id_field, list(cfg.user_text_fields), "jsonl")
              for p in cfg.user_files]
    out: list[tuple[str, str, str, str]] = []
    seen: set[tuple[str, str, str, str]] = set()
    for name, pattern, id_field, fields, fmt in specs:
        files = sorted(glob.glob(pattern))
        if not files:
            from codemill.config import ConfigError

            raise ConfigError([f"decontaminate.benchmarks_file: {name}: {pattern!r} matches no file"])
        for path in files:
            for i, rec in enumerate(_read_records(path, fmt)):
                task_id = str(rec[id_field]) if id_field and rec.get(id_field) is not None else f"{name}/{i}"
                for field in fields:
                    text = rec.get(field)
                    if isinstance(text, str) and text.strip():
                        row = (name, task_id, field, text)
                        if row not in seen:
                            seen.add(row)
                            out.append(row)
    return out


# ---------------------------------------------------------------------- hashing (driver and workers)
class _Crc32(dict):
    """token -> crc32, filled on first sight: code repeats its identifiers, so most lookups are dict hits."""

    def __missing__(self, tok: str) -> int:
        import zlib

        if len(self) > 2_000_000:  # bound the memory of a long-lived worker
            self.clear()
        v = self[tok] = zlib.crc32(tok.encode())
        return v


_CRC = _Crc32()


def token_ids(text: str | list[str]):
    """Stable 64-bit ids of the word tokens of `text` (or of an already split token list)."""
    import numpy as np

    toks = TOKEN.findall(text) if isinstance(text, str) else text
    ids = np.fromiter(map(_CRC.__getitem__, toks), dtype=np.uint64, count=len(toks))
    return ids * np.uint64(_MIX)


def ngram_hashes(ids, n: int):
    """Hashes of every n-token window of `ids` (uint64, wrapping polynomial hash); empty when too short."""
    import numpy as np

    if len(ids) < n:
        return np.empty(0, dtype=np.uint64)
    powers = np.array([pow(_BASE, n - 1 - k, 1 << 64) for k in range(n)], dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    with np.errstate(over="ignore"):
        return windows @ powers


_BASE_INV = pow(_BASE, -1, 1 << 64)  # _BASE is odd, so invertible modulo 2**64


def _powers(base: int, n: int):
    import numpy as np

    a = np.full(n, base, dtype=np.uint64)
    a[:1] = 1
    return np.cumprod(a, dtype=np.uint64)  # wraps modulo 2**64, like the hash


def window_hashes(ids):
    """`k -> ngram_hashes(ids, k)` for any k from one prefix sum: window [i, i+k) hashes to
    (C[i+k] - C[i]) * B^(i+k-1) with C the prefix sums of ids[j] * B^-j (mod 2**64), so every window size costs a
    subtraction and a product per position instead of a k-wide product (the n-grams and each short-text length)."""
    import numpy as np

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
    short: list  # (text index, token count, token-sequence hash, stripped text)
    short_by_len: dict  # token count -> (sorted hashes, positions in `short`)
    key: str = ""  # cache key (`_index_key`); "" for an index built by hand
    bloom: object = None  # (2**_BLOOM_BITS / 8,) uint8 bitmap of the low bits of `hashes`


def build_index(texts: list[tuple[str, str, str, str]], *, ngram: int, min_short_chars: int) -> BenchmarkIndex:
    import numpy as np

    keys, owners, totals, meta, short = [], [], [], [], []
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
        totals.append(len(grams))
        if len(grams):
            keys.append(grams)
            owners.append(np.full(len(grams), i, dtype=np.int32))
        elif 0 < len(ids) < ngram and len(text.strip()) >= min_short_chars:
            short.append((i, len(ids), int(ngram_hashes(ids, len(ids))[0]), text.strip()))
    all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.uint64)
    all_owners = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_owners = all_keys[order], all_owners[order]
    uniq, starts = np.unique(all_keys, return_index=True)
    offsets = np.append(starts, len(all_keys)).astype(np.int64)
    short_by_len = {}
    for k in sorted({s[1] for s in short}):
        pos = np.array([j for j, s in enumerate(short) if s[1] == k], dtype=np.int64)
        hashes = np.array([short[j][2] for j in pos], dtype=np.uint64)
        order = np.argsort(hashes)
        short_by_len[k] = (hashes[order], pos[order])
    bloom = np.zeros(1 << (_BLOOM_BITS - 3), dtype=np.uint8)
    low = (uniq & np.uint64((1 << _BLOOM_BITS) - 1)).astype(np.int64)
    np.bitwise_or.at(bloom, low >> 3, (1 << (low & 7)).astype(np.uint8))
    return BenchmarkIndex(uniq, offsets, all_owners, np.array(totals, dtype=np.int64), meta, short, short_by_len,
                  bloom=bloom)


def cache_dir() -> str:
    """Local folder of the benchmark caches (`$CODEMILL_CACHE_DIR/decontam`, default ~/.cache/codemill/decontam)."""
    root = os.environ.get("CODEMILL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "codemill")
    return os.path.join(root, "decontam")


_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: str) -> str:
    import hashlib

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def benchmarks_key(cfg: DecontaminateConfig) -> str:
    """sha256 of what `benchmark_texts(cfg)` reads: the benchmark list, the content of every benchmark and user file
    (not their paths or dates, so a copied checkout shares the cache) and the user-file settings."""
    import glob
    import hashlib
    import json

    import yaml

    with open(cfg.benchmarks_file) as fh:
        entries = (yaml.safe_load(fh) or {}).get("benchmarks") or []
    parts: list = [INDEX_VERSION, entries, cfg.user_text_fields, cfg.user_id_field]
    for pattern in [os.path.join(cfg.data_dir, e["files"]) for e in entries] + list(cfg.user_files):
        parts.append([(os.path.basename(p), _file_sha256(p)) for p in sorted(glob.glob(pattern))])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


_TEXTS: dict[str, list[tuple[str, str, str, str]]] = {}
_INDEXES: dict[str, BenchmarkIndex] = {}
_BENCH_DFS: dict[tuple[str, str], DataFrame] = {}
_BROADCASTS: dict[tuple[str, str], object] = {}


def cached_texts(cfg: DecontaminateConfig, key: str | None = None) -> list[tuple[str, str, str, str]]:
    """`benchmark_texts(cfg)`, read once per process."""
    key = key or benchmarks_key(cfg)
    if key not in _TEXTS:
        _TEXTS[key] = benchmark_texts(cfg)
    return _TEXTS[key]


def _index_key(texts_key: str, ngram: int, min_short_chars: int) -> str:
    import hashlib

    return hashlib.sha256(f"{INDEX_VERSION}:{texts_key}:{ngram}:{min_short_chars}".encode()).hexdigest()[:32]


def cached_index(texts_key: str, texts_fn, *, ngram: int, min_short_chars: int, disk: bool = True) -> BenchmarkIndex:
    """The index of the texts identified by `texts_key`: from this process's memo, else from the disk cache, else
    built from `texts_fn()` (and saved). A cache file that cannot be read or written is rebuilt or skipped, never
    an error: the cache only saves time."""
    import pickle

    key = _index_key(texts_key, ngram, min_short_chars)
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
        index = build_index(texts_fn(), ngram=ngram, min_short_chars=min_short_chars)
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


def benchmark_index(cfg: DecontaminateConfig, *, ngram: int | None = None,
                    min_short_chars: int | None = None) -> BenchmarkIndex:
    """The prebuilt index of `cfg`'s benchmarks (pass it to `find_contamination(index=...)`)."""
    key = benchmarks_key(cfg)
    return cached_index(key, lambda: cached_texts(cfg, key), ngram=ngram or cfg.ngram,
                        min_short_chars=cfg.min_short_chars if min_short_chars is None else min_short_chars)


def load_benchmarks(spark: SparkSession, cfg: DecontaminateConfig) -> DataFrame:
    """Benchmark texts as a DataFrame (benchmark, task_id, field, text), made once per Spark session. It carries
    the key of its texts, so `find_contamination` takes the cached index instead of collecting it."""
    key = benchmarks_key(cfg)
    memo = (spark.sparkContext.applicationId, key)
    df = _BENCH_DFS.get(memo)
    if df is None:
        df = _local_parquet(spark, key, cfg) if spark.sparkContext.master.startswith("local") else None
        if df is None:  # a cluster's executors cannot read the driver's disk: ship the rows
            import pandas as pd

            texts = pd.DataFrame(cached_texts(cfg, key), columns=schemas.BENCHMARKS.fieldNames())
            df = spark.createDataFrame(texts, schemas.BENCHMARKS)
        df._codemill_benchmarks = (key, cfg)
        _BENCH_DFS[memo] = df
    return df


def _local_parquet(spark: SparkSession, key: str, cfg: DecontaminateConfig) -> DataFrame | None:
    """The texts as a Parquet file in the cache folder, read lazily (an embedded `local` session shares the disk);
    None when the cache folder is not writable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(cache_dir(), f"texts-{key}.parquet")
    if not os.path.exists(path):
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            cols = list(zip(*cached_texts(cfg, key))) or [()] * 4
            table = pa.table({name: pa.array(col, pa.string()) for name, col in zip(schemas.BENCHMARKS.fieldNames(),
                                                                                     cols)})
            tmp = f"{path}.{os.getpid()}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except OSError:
            return None
    return spark.read.schema(schemas.BENCHMARKS).parquet(path)


def match_text(content: str, index: BenchmarkIndex, *, ngram: int, min_overlap: float,
               min_matched: int) -> list[tuple]:
    """(benchmark, task_id, field, method, matched, total, overlap) for every benchmark text found in `content`."""
    import numpy as np

    windows = window_hashes(token_ids(content))
    hits: list[tuple] = []
    grams = np.unique(windows(ngram))
    if len(grams) and index.bloom is not None:
        # Most of a file's n-grams are in no benchmark: a bitmap lookup drops them before the binary search, which
        # was the most expensive step (random reads in a 1 M-entry array).
        low = (grams & np.uint64((1 << _BLOOM_BITS) - 1)).astype(np.int64)
        grams = grams[(index.bloom[low >> 3] >> (low & 7).astype(np.uint8)) & 1 == 1]
    if len(grams) and len(index.hashes):
        pos = np.clip(np.searchsorted(index.hashes, grams), 0, len(index.hashes) - 1)
        found = pos[index.hashes[pos] == grams]
        if len(found):
            owners = np.concatenate([index.text_idx[index.offsets[p]:index.offsets[p + 1]] for p in found])
            counts = np.bincount(owners)
            for t in np.nonzero(counts)[0]:
                matched, total = int(counts[t]), int(index.totals[t])
                overlap = matched / total
                if overlap >= min_overlap and matched >= min_matched:
                    hits.append((*index.meta[t], "ngram", matched, total, overlap))
    for k, (short_hashes, short_pos) in index.short_by_len.items():
        doc_k = windows(k)
        if not len(doc_k):
            continue
        pos = np.clip(np.searchsorted(short_hashes, doc_k), 0, len(short_hashes) - 1)
        for p in np.unique(pos[short_hashes[pos] == doc_k]):
            t, _, _, text = index.short[short_pos[p]]
            if text in content:  # the token match ignores punctuation; the text itself must occur
                hits.append((*index.meta[t], "substring", 0, 0, 1.0))
    return hits


def find_contamination(df: DataFrame, benchmarks_df: DataFrame, *, ngram: int = 10, text_col: str = "content",
                       id_col: str = "doc_id", min_overlap: float = 0.5, min_matched_ngrams: int = 1,
                       min_short_chars: int = 50, index: BenchmarkIndex | None = None) -> DataFrame:
    """One row per (row of `df`, benchmark text) it contains; columns of `schemas.CONTAMINATION` with the id in
    `id_col` (named `doc_id` by default). Rows of `df` without a hit produce nothing.

    The index comes from `index` (built with the same `ngram` and `min_short_chars`, e.g. `benchmark_index(cfg)`),
    else from the cache when `benchmarks_df` is a `load_benchmarks` DataFrame, else from collecting `benchmarks_df`
    (memoised on the sha256 of its texts)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructField, StructType

    if index is None:
        index = _index_of(benchmarks_df, ngram=ngram, min_short_chars=min_short_chars)
    sc = df.sparkSession.sparkContext
    memo = (sc.applicationId, index.key)
    bc = _BROADCASTS.get(memo) if index.key else None
    if bc is None:
        bc = sc.broadcast(index)
        if index.key:  # one broadcast per session and index; workers keep it loaded between tasks
            _BROADCASTS[memo] = bc
    out_schema = StructType([StructField(id_col, schemas.CONTAMINATION["doc_id"].dataType, True)]
                            + schemas.CONTAMINATION.fields[1:])
    arrow_schema = to_arrow_schema(out_schema)

    def run(batches):
        idx = bc.value
        for batch in batches:
            rows = []
            for doc, content in zip(batch.column(id_col).to_pylist(), batch.column(text_col).to_pylist()):
                if content:
                    for hit in match_text(content, idx, ngram=ngram, min_overlap=min_overlap,
                                          min_matched=min_matched_ngrams):
                        rows.append((doc, *hit))
            if rows:
                cols = list(zip(*rows))
                yield pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, arrow_schema)],
                                                 schema=arrow_schema)

    return df.select(id_col, text_col).mapInArrow(run, out_schema)


def _index_of(benchmarks_df: DataFrame, *, ngram: int, min_short_chars: int) -> BenchmarkIndex:
    import hashlib

    tagged = getattr(benchmarks_df, "_codemill_benchmarks", None)
    if tagged is not None:
        key, cfg = tagged
        return cached_index(key, lambda: cached_texts(cfg, key), ngram=ngram, min_short_chars=min_short_chars)
    texts = [(r.benchmark, r.task_id, r.field, r.text) for r in benchmarks_df.collect()]
    h = hashlib.sha256()
    for t in texts:
        h.update("\x1f".join(t).encode() + b"\x1e")
    # An ad-hoc DataFrame (tests, user code) is small: memoise in process only, keep the disk cache for shipped sets.
    return cached_index("df-" + h.hexdigest()[:32], lambda: texts, ngram=ngram, min_short_chars=min_short_chars,
                        disk=False)


def clean_rows(df: DataFrame, contamination: DataFrame, *, id_col: str = "doc_id") -> DataFrame:
    """Rows of `df` with no contamination hit."""
    return df.join(contamination.select(id_col).distinct(), on=id_col, how="left_anti")
