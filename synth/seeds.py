"""Seed selection for synthetic data: pure `DataFrame -> DataFrame` transforms (used by `synth.generate`).

Seeds are the annotator's best files (paper §2.4: the synthetic phase rewrites high-quality seeds): rows of
`selected_hq` (doc_id, lang, content, score) or of `scores` joined with a content table. The transforms keep the
files above a per-language score percentile, apply per-language quotas, take a job shard, and cut the text shown to
the model: the whole file (truncated) or, as OSS-Instruct does (Magicoder, arXiv 2312.02120 §2.1), a random span of
consecutive lines, chosen deterministically from the doc_id so a restart shows the model the same snippet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SEED_COLUMNS = ["doc_id", "lang", "score", "seed_text"]


def seeds_from_scores(scores: DataFrame, files: DataFrame) -> DataFrame:
    """doc_id, lang, score, content: the scored files with their content (for `source: scores`)."""
    return scores.select("doc_id", "lang", "score").join(files.select("doc_id", "content"), on="doc_id")


def filter_seeds(df: DataFrame, *, languages: Sequence[str] = (), min_percentile: float = 0.0,
                 quota_per_language: Mapping[str, int] | None = None, default_quota: int | None = None,
                 num_shards: int = 1, shard_index: int = 0) -> DataFrame:
    """The rows to use as seeds: chosen languages, score percentile within the language at least `min_percentile`
    (0.9 = the top 10 %), at most `quota_per_language[lang]` (else `default_quota`) best-scored per language, and
    the job's shard (hash of doc_id) when several jobs share the work."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    out = df.where(F.col("content").isNotNull())
    if languages:
        out = out.where(F.col("lang").isin(list(languages)))
    if num_shards > 1:
        out = out.where(F.pmod(F.xxhash64("doc_id"), F.lit(num_shards)) == shard_index)
    by_lang = Window.partitionBy("lang").orderBy(F.col("score").asc(), F.col("doc_id").desc())
    best_first = Window.partitionBy("lang").orderBy(F.col("score").desc(), F.col("doc_id").asc())
    if min_percentile > 0:
        out = out.withColumn("_pct", F.percent_rank().over(by_lang)).where(F.col("_pct") >= min_percentile)
    quotas = dict(quota_per_language or {})
    if quotas or default_quota is not None:
        quota_map = F.create_map(*[x for k, v in quotas.items() for x in (F.lit(k), F.lit(int(v)))]) \
            if quotas else F.lit(None).cast("map<string,int>")
        limit = F.coalesce(quota_map[F.col("lang")], F.lit(default_quota).cast("int"))
        out = (out.withColumn("_rank", F.row_number().over(best_first))
               .where(limit.isNull() | (F.col("_rank") <= limit)))
    return out.select(*df.columns)


def seed_text(df: DataFrame, *, mode: str = "snippet", min_lines: int = 1, max_lines: int = 15,
              max_chars: int = 6000, seed: int = 0) -> DataFrame:
    """Adds `seed_text`: the whole file (mode "file") or a span of `min_lines`..`max_lines` consecutive lines
    (mode "snippet", OSS-Instruct's 1-15), both truncated to `max_chars`. Returns SEED_COLUMNS."""
    from pyspark.sql import functions as F

    if mode == "file":
        text = F.col("content")
    elif mode == "snippet":
        # Blank lines are dropped before choosing the span so a snippet is never mostly empty.
        lines = F.filter(F.split(F.col("content"), r"\r?\n"), lambda x: F.trim(x) != "")
        n = F.size(lines)
        span = F.lit(min_lines) + F.pmod(F.xxhash64("doc_id", F.lit(seed), F.lit("len")),
                                         F.lit(max_lines - min_lines + 1))
        span = F.least(span, F.greatest(n, F.lit(1)))
        start = F.pmod(F.xxhash64("doc_id", F.lit(seed), F.lit("start")), F.greatest(n - span + 1, F.lit(1)))
        text = F.array_join(F.slice(lines, (start + 1).cast("int"), span.cast("int")), "\n")
    else:
        raise ValueError(f"seeds.mode: unknown mode {mode!r}; use 'snippet' or 'file'")
    return df.withColumn("seed_text", F.substring(text, 1, max_chars)).select(*SEED_COLUMNS)
