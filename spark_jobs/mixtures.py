"""Phase mixtures: which documents go into each pretraining phase, and with what weight.

Declared in `conf/spark/phases.yaml` and consumed by `spark_jobs.tokenize_shards` (not runnable on its own).
The three phases of Arctic-SnowCoder (arXiv 2409.02326 §2):

- phase 1: all clean documents (`documents.text`, one row per repository-level document);
- phase 2: the selected high-quality files (`selected_hq.content`, one document per file) repeated k = 4 times as a
  stream repeat (`repeat` in the manifest: the trainer makes k passes), never as k physical copies;
- phase 3: the accepted synthetic documents (`synthetic.content` where status = 'accepted') plus the high-quality
  files, with Python raised to a target share of the phase's tokens (paper: about 50%) by weighting Python files
  of the re-weighted sources; every other language keeps weight 1, so their relative proportions are unchanged.

A weight w becomes floor(w) copies plus one more with probability frac(w), decided per document by a seeded hash
(deterministic). Documents dropped by a weight below 1 are counted in the report, never dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Unified document rows every phase is built from (the tokenization job's input). `special_offsets`: where in
# `text` a separator (special token) starts; empty for sources without separators (docs/tokenization.md).
DOC_COLUMNS = ("doc_key", "source", "lang", "text", "special_offsets")
HASH_BUCKETS = 1_000_000


@dataclasses.dataclass
class SourceConfig:
    """One input table of a phase."""

    table: str = "documents"
    text_column: str = "text"
    key_column: str = "document_id"
    # SQL predicate applied before tokenization (e.g. "status = 'accepted'"); rows it excludes are counted.
    where: str | None = None
    # Column (array<int>) of the character offsets in `text_column` where a separator special token starts
    # (`documents.special_offsets`); only those become special ids. None: the text holds no separators, and a
    # special-token string anywhere in it is ordinary text.
    special_offsets_column: str | None = None

    def validate(self) -> list[str]:
        problems = []
        for key in ("table", "text_column", "key_column"):
            if not getattr(self, key):
                problems.append(f"{key}: must not be empty")
        return problems


@dataclasses.dataclass
class PhaseConfig:
    name: str = "phase1"
    sources: list[SourceConfig] = dataclasses.field(default_factory=list)
    # Passes the trainer makes over `train` (paper §2: 4 for phase 2). Recorded in the manifest only.
    repeat: int = 1
    # Target share of `boost_lang` tokens in the phase (paper phase 3: ~0.5); None keeps natural proportions.
    boost_share: float | None = None
    boost_lang: str = "python"
    # Tables whose `boost_lang` documents are re-weighted to reach `boost_share` (others are taken once).
    boost_sources: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        problems = []
        if self.name not in ("phase1", "phase2", "phase3"):
            problems.append(f"name: {self.name!r} is not one of phase1, phase2, phase3 (docs/CONTRACTS.md)")
        if not self.sources:
            problems.append("sources: a phase needs at least one source table")
        if self.repeat < 1:
            problems.append(f"repeat: must be >= 1, got {self.repeat}")
        if self.boost_share is not None:
            if not 0.0 < self.boost_share < 1.0:
                problems.append(f"boost_share: must be in (0, 1), got {self.boost_share}")
            tables = {s.table for s in self.sources}
            if not self.boost_sources:
                problems.append("boost_sources: name the tables whose documents are re-weighted")
            unknown = sorted(set(self.boost_sources) - tables)
            if unknown:
                problems.append(f"boost_sources: {unknown} are not among this phase's sources {sorted(tables)}")
        for i, src in enumerate(self.sources):
            problems.extend(f"sources[{i}].{p}" for p in src.validate())
        return problems


def source_documents(df: DataFrame, *, table: str, text_column: str, key_column: str,
                     where: str | None = None, special_offsets_column: str | None = None) -> DataFrame:
    """Rows of one input table as unified documents (doc_key, source, lang, text, special_offsets); null texts are
    left out."""
    from pyspark.sql import functions as F

    if special_offsets_column is not None and special_offsets_column not in df.columns:
        raise ValueError(f"{table}: no column {special_offsets_column!r} (special_offsets_column); a documents "
                         f"table written before separators were recorded must be rebuilt (stage documents)")
    if where:
        df = df.where(F.expr(where))
    offsets = (F.coalesce(F.col(special_offsets_column).cast("array<int>"), F.array().cast("array<int>"))
               if special_offsets_column else F.array().cast("array<int>"))
    return (df.where(F.col(text_column).isNotNull())
            .select(F.col(key_column).cast("string").alias("doc_key"), F.lit(table).alias("source"),
                    F.coalesce(F.lower(F.col("lang")), F.lit("unknown")).alias("lang"),
                    F.col(text_column).alias("text"), offsets.alias("special_offsets"))
            .select(*DOC_COLUMNS))


def boost_weight(tokens: Mapping[tuple[str, str], int], *, lang: str, share: float,
                 boost_sources: list[str]) -> float:
    """Weight of `lang` documents of `boost_sources` that gives `lang` the target `share` of all tokens.

    `tokens` maps (source, lang) to token counts. With P_b / P_f the boosted / fixed tokens of `lang` and O the
    tokens of every other language: (w P_b + P_f) / (w P_b + P_f + O) = share  =>  w = (share O - (1-share) P_f) /
    ((1-share) P_b). Clipped at 0 (fixed sources alone already exceed the share).
    """
    p_boost = sum(v for (src, lg), v in tokens.items() if lg == lang and src in boost_sources)
    p_fixed = sum(v for (src, lg), v in tokens.items() if lg == lang and src not in boost_sources)
    other = sum(v for (_, lg), v in tokens.items() if lg != lang)
    if p_boost == 0:
        raise ValueError(f"boost_lang: no {lang!r} tokens in {boost_sources}; cannot raise its share to {share}")
    return max(0.0, (share * other - (1.0 - share) * p_fixed) / ((1.0 - share) * p_boost))


def weight_documents(df: DataFrame, *, weight: float, lang: str, sources: list[str], seed: int) -> DataFrame:
    """Replicates (w > 1) or subsamples (w < 1) the `lang` documents of `sources`; adds `copy` (0, 1, ...).

    Copies get distinct `copy` numbers so the job's shuffle spreads them over different shards and positions.
    Other rows pass through with copy = 0.
    """
    from pyspark.sql import functions as F

    whole = int(weight)
    frac = weight - whole
    u = F.pmod(F.xxhash64(F.lit(seed), F.lit("weight"), F.col("doc_key"), F.col("source")), F.lit(HASH_BUCKETS))
    boosted = (F.col("lang") == F.lit(lang)) & F.col("source").isin(*sources)
    copies = F.when(boosted, F.lit(whole) + (u < F.lit(int(round(frac * HASH_BUCKETS)))).cast("int")).otherwise(1)
    # sequence(0, -1) counts down in Spark, so zero copies must be an explicit empty array.
    indices = F.when(F.col("_copies") > 0, F.sequence(F.lit(0), F.col("_copies") - 1)).otherwise(
        F.array().cast("array<int>"))
    return (df.withColumn("_copies", copies).withColumn("copy", F.explode(indices))
            .select(*[c for c in df.columns if c != "copy"], "copy"))
