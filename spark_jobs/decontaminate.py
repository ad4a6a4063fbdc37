"""Decontamination: `near_deduped` (or `exact_deduped`) -> `clean` + `contamination`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages decontaminate

Paper §2.1 removes training files that contain evaluation problems. Two tests per benchmark text (prompt, reference
solution; fields per benchmark in the catalogue, `conf/spark/benchmarks.yaml`, read by `codemill.benchmarks`):
- **n-gram overlap**: texts are cut into word tokens (`[A-Za-z0-9_]+`, so formatting and punctuation do not
  matter), every `ngram`-token window with at least half informative tokens (2+ characters, not a number) is
  hashed; a file is contaminated by a text when it contains at least `min_overlap` of that text's distinct
  n-grams;
- **task**: a file holding at least `min_task_ngrams` distinct n-grams of one task's texts together (prompt,
  solution, and for the translated benchmarks the tests) contains the task even when no text reaches
  `min_overlap` alone: a partial copy spanning prompt and solution, or prompt and tests. N-grams in more than
  `max_texts_per_ngram` texts are boilerplate and count for none;
- **exact substring** for texts with no informative n-gram (fewer than `ngram` tokens, or one-letter names and
  numbers) of at least `min_short_chars` characters: their first tokens must occur in the file and the stripped
  text itself must be a substring of it.

The index and the matching of one text are `spark_jobs.benchmark_index` (pure Python). This module is the Spark
side: matching runs on the workers in a vectorised `mapInArrow` against the index, broadcast once per Spark
session, so the cost per file is one regex pass plus numpy lookups. The index is built once per benchmark set and
settings and cached on local disk (`benchmark_index.cached_index`); a DataFrame from `load_benchmarks` carries
its key, so `find_contamination` never collects it back to the driver.

Public API, each taking a `DecontaminateConfig` whole (the annotator's training set and synth post-processing call
them):
- `DecontaminateConfig`: the `decontaminate` section; `.benchmarks()`: its benchmarks (catalogue + user files);
- `load_benchmarks(spark, cfg)`: the benchmark texts as a DataFrame; `benchmark_index(cfg)`: their index;
- `find_contamination(df, benchmarks_df, cfg)`: one row per (row of `df`, benchmark text it contains);
- `benchmark_hits(content, index, cfg)`: the same for one text held in this process;
- `clean_rows(df, contamination)`: the rows without a hit.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructField, StructType

from codemill import schemas
from codemill.benchmarks import (
    CATALOGUE_FILE,
    DATA_DIR,
    Benchmark,
    MissingBenchmarkFiles,
    load_catalogue,
    user_benchmarks,
)
from codemill.config import ConfigError, repo_path
from spark_jobs.benchmark_index import (
    BenchmarkIndex,
    Text,
    cache_dir,
    cached_index,
    cached_texts,
    match_text,
    texts_key,
)


@dataclasses.dataclass
class DecontaminateConfig:
    """`decontaminate.*` keys."""

    # false: no row is contaminated (every row is clean).
    enabled: bool = True
    benchmarks_file: str = str(CATALOGUE_FILE)
    data_dir: str = str(DATA_DIR)
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
    # A file holding at least this many distinct n-grams of one task's texts together (prompt, solution, tests)
    # contains the task even when no single text reaches min_overlap: a 50-80% partial copy spanning prompt and
    # solution, or prompt and tests. 0 turns the test off. 16 distinct 10-grams = a shared run of 25 tokens at
    # least; a function header with the task's name and parameters alone gives up to ~11 (MBXP Kotlin's
    # `fun mergeDictionariesThree(dict1 : Map<String, String>, ...)`): bench/decontam_quality.py.
    min_task_ngrams: int = 16
    # An n-gram in more than this many benchmark texts is boilerplate (MBXP's instruction header, test harnesses)
    # and counts for no text; one task's docstring shared by its translations sits in ~50 texts. 0 keeps all.
    max_texts_per_ngram: int = 64

    def __post_init__(self):  # relative paths: against the repository root unless they exist from here
        self.benchmarks_file = repo_path(self.benchmarks_file)
        self.data_dir = repo_path(self.data_dir)

    def benchmarks(self) -> list[Benchmark]:
        """The benchmarks compared with training files: the catalogue's, then one per user file glob."""
        return load_catalogue(self.benchmarks_file, self.data_dir) + user_benchmarks(
            self.user_files, text_fields=self.user_text_fields, id_field=self.user_id_field)

    def validate(self) -> list[str]:
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
        if self.min_task_ngrams < 0:
            problems.append("min_task_ngrams: must be >= 0 (0 = off)")
        if self.max_texts_per_ngram < 0:
            problems.append("max_texts_per_ngram: must be >= 0 (0 = keep every n-gram)")
        return problems


# ---------------------------------------------------------------------- benchmark texts and their index
_BENCH_DFS: dict[tuple[str, str], DataFrame] = {}
_BROADCASTS: dict[tuple[str, str], object] = {}


def _texts(cfg: DecontaminateConfig, key: str) -> list[Text]:
    """`cfg`'s benchmark texts (read once per process), a benchmark without files named as a config error."""
    try:
        return cached_texts(cfg.benchmarks(), key)
    except MissingBenchmarkFiles as exc:
        raise ConfigError([f"decontaminate.benchmarks_file: {exc}"]) from None


def benchmark_index(cfg: DecontaminateConfig) -> BenchmarkIndex:
    """The index of `cfg`'s benchmarks for its `ngram` and `min_short_chars` (pass it to
    `find_contamination(index=...)` or `benchmark_hits`): memoised, else from the disk cache, else built."""
    key = texts_key(cfg.benchmarks())
    return cached_index(key, lambda: _texts(cfg, key), ngram=cfg.ngram, min_short_chars=cfg.min_short_chars,
                        max_texts_per_ngram=cfg.max_texts_per_ngram)


def load_benchmarks(spark: SparkSession, cfg: DecontaminateConfig) -> DataFrame:
    """Benchmark texts as a DataFrame (benchmark, task_id, field, text), made once per Spark session. It carries
    the key of its texts, so `find_contamination` takes the cached index instead of collecting it."""
    key = texts_key(cfg.benchmarks())
    memo = (spark.sparkContext.applicationId, key)
    df = _BENCH_DFS.get(memo)
    if df is None:
        df = _local_parquet(spark, key, cfg) if spark.sparkContext.master.startswith("local") else None
        if df is None:  # a cluster's executors cannot read the driver's disk: ship the rows
            texts = pd.DataFrame(_texts(cfg, key), columns=schemas.BENCHMARKS.fieldNames())
            df = spark.createDataFrame(texts, schemas.BENCHMARKS)
        df._codemill_benchmarks = (key, cfg)
        _BENCH_DFS[memo] = df
    return df


def _local_parquet(spark: SparkSession, key: str, cfg: DecontaminateConfig) -> DataFrame | None:
    """The texts as a Parquet file in the cache folder, read lazily (an embedded `local` session shares the disk);
    None when the cache folder is not writable."""
    path = os.path.join(cache_dir(), f"texts-{key}.parquet")
    if not os.path.exists(path):
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            cols = list(zip(*_texts(cfg, key))) or [()] * 4
            table = pa.table({name: pa.array(col, pa.string()) for name, col in zip(schemas.BENCHMARKS.fieldNames(),
                                                                                     cols)})
            tmp = f"{path}.{os.getpid()}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except OSError:
            return None
    return spark.read.schema(schemas.BENCHMARKS).parquet(path)


# ---------------------------------------------------------------------- matching
def find_contamination(df: DataFrame, benchmarks_df: DataFrame, cfg: DecontaminateConfig | None = None, *,
                       text_col: str = "content", id_col: str = "doc_id", index: BenchmarkIndex | None = None,
                       **keys: Any) -> DataFrame:
    """One row per (row of `df`, benchmark text it contains); columns of `schemas.CONTAMINATION` with the id in
    `id_col` (named `doc_id` by default). Rows of `df` without a hit produce nothing; nothing at all when
    `cfg.enabled` is false. `keys`: DecontaminateConfig keys instead of `cfg` (`ngram=`, `min_overlap=`, ...).

    The index comes from `index` (built with `cfg`'s `ngram` and `min_short_chars`, e.g. `benchmark_index(cfg)`),
    else from the cache when `benchmarks_df` is a `load_benchmarks` DataFrame, else from collecting `benchmarks_df`
    (memoised on the sha256 of its texts)."""
    cfg = cfg or DecontaminateConfig(**keys)
    out_schema = StructType([StructField(id_col, schemas.CONTAMINATION["doc_id"].dataType, True)]
                            + schemas.CONTAMINATION.fields[1:])
    if not cfg.enabled:
        return df.sparkSession.createDataFrame([], out_schema)
    if index is None:
        index = _index_of(benchmarks_df, ngram=cfg.ngram, min_short_chars=cfg.min_short_chars,
                          max_texts_per_ngram=cfg.max_texts_per_ngram)
    sc = df.sparkSession.sparkContext
    memo = (sc.applicationId, index.key)
    bc = _BROADCASTS.get(memo) if index.key else None
    if bc is None:
        bc = sc.broadcast(index)
        if index.key:  # one broadcast per session and index; workers keep it loaded between tasks
            _BROADCASTS[memo] = bc
    arrow_schema = to_arrow_schema(out_schema)
    ngram, min_overlap, min_matched, min_task = cfg.ngram, cfg.min_overlap, cfg.min_matched_ngrams, cfg.min_task_ngrams

    def run(batches):
        idx = bc.value
        for batch in batches:
            rows = []
            for doc, content in zip(batch.column(id_col).to_pylist(), batch.column(text_col).to_pylist()):
                if content:
                    for hit in match_text(content, idx, ngram=ngram, min_overlap=min_overlap,
                                          min_matched=min_matched, min_task_ngrams=min_task):
                        rows.append((doc, *hit))
            if rows:
                cols = list(zip(*rows))
                yield pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, arrow_schema)],
                                                 schema=arrow_schema)

    return df.select(id_col, text_col).mapInArrow(run, out_schema)


def benchmark_hits(content: str, index: BenchmarkIndex, cfg: DecontaminateConfig) -> list[tuple]:
    """(benchmark, task_id, field, method, matched, total, overlap) for every benchmark text found in `content`
    (the rows `find_contamination` gives a row with this content, without its id), for a text held in this
    process; `index`: `benchmark_index(cfg)`."""
    if not content or not cfg.enabled:
        return []
    return match_text(content, index, ngram=cfg.ngram, min_overlap=cfg.min_overlap,
                      min_matched=cfg.min_matched_ngrams, min_task_ngrams=cfg.min_task_ngrams)


def _index_of(benchmarks_df: DataFrame, *, ngram: int, min_short_chars: int,
              max_texts_per_ngram: int) -> BenchmarkIndex:
    tagged = getattr(benchmarks_df, "_codemill_benchmarks", None)
    if tagged is not None:
        key, cfg = tagged
        return cached_index(key, lambda: _texts(cfg, key), ngram=ngram, min_short_chars=min_short_chars,
                            max_texts_per_ngram=max_texts_per_ngram)
    texts = [(r.benchmark, r.task_id, r.field, r.text) for r in benchmarks_df.collect()]
    h = hashlib.sha256()
    for t in texts:
        h.update("\x1f".join(t).encode() + b"\x1e")
    # An ad-hoc DataFrame (tests, user code) is small: memoise in process only, keep the disk cache for shipped sets.
    return cached_index("df-" + h.hexdigest()[:32], lambda: texts, ngram=ngram, min_short_chars=min_short_chars,
                        max_texts_per_ngram=max_texts_per_ngram, disk=False)


def clean_rows(df: DataFrame, contamination: DataFrame, *, id_col: str = "doc_id") -> DataFrame:
    """Rows of `df` with no contamination hit."""
    return df.join(contamination.select(id_col).distinct(), on=id_col, how="left_anti")
