"""Exact deduplication: `filtered` -> `exact_deduped` + `exact_duplicates`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages exact_dedup

Files whose normalised content hashes alike form a group (paper §2.1: deduplication before near-dedup); one row per
group is kept, picked deterministically by the `keep` policy (`spark_jobs.keep_policy`; default: most stars, then
smallest `doc_id`), and every other row goes to `exact_duplicates` with a pointer to it.

Public API, each function taking the stage's config whole:
- `ExactDedupConfig`: the `exact_dedup` section (`enabled`, `normalise`, `keep`);
- `with_content_hash(df, cfg)`: the dedup key of each row (`content_hash`), which depends on that row alone, so
  callers that see rows in batches (synth post-processing) hash each batch as it comes and group later;
- `mark_hashed_duplicates(hashed, cfg)`: groups rows by that key and marks each group's kept row;
- `mark_duplicates(df, cfg)`: both; `kept_rows(marked)`, `duplicate_rows(marked)`: the stage's two tables.
"""

from __future__ import annotations

import dataclasses

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from codemill import schemas
from spark_jobs.keep_policy import KeepPolicy, merge_old_key

NORMALISATIONS = ("none", "strip", "trailing_whitespace", "whitespace", "lowercase")
HASH_COL = "content_hash"
DEFAULT_KEEP = ("stars desc", "doc_id asc")


@dataclasses.dataclass
class ExactDedupConfig:
    """`exact_dedup.*` keys."""

    # false: no row is a duplicate (every row is kept).
    enabled: bool = True
    # Applied in order before hashing: strip (ends of the file), trailing_whitespace (end of each line; and CRLF),
    # whitespace (every run of whitespace -> one space), lowercase. [] or [none] hashes the raw content.
    normalise: list[str] = dataclasses.field(default_factory=lambda: ["trailing_whitespace", "strip"])
    # Which row of a group is kept: the first in this order ("column asc|desc"; nulls last, doc_id asc last).
    keep: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_KEEP))
    # Deprecated: the old name of `keep`, still read (configs written before it set it).
    order_by: list[str] | None = None

    def keep_policy(self) -> KeepPolicy:
        """The parsed policy in force (`keep`, or `order_by` when only the old key was set)."""
        return KeepPolicy.parse(merge_old_key(self.keep, self.order_by, DEFAULT_KEEP, old_key="order_by")[0])

    def validate(self) -> list[str]:
        problems = []
        bad = [n for n in self.normalise if n not in NORMALISATIONS]
        if bad:
            problems.append(f"normalise: unknown step(s) {bad}; known: {list(NORMALISATIONS)}")
        keep, key, conflict = merge_old_key(self.keep, self.order_by, DEFAULT_KEEP, old_key="order_by")
        return problems + conflict + KeepPolicy.problems(keep, key=key, columns=schemas.FILES.fieldNames(),
                                                         table="files")


def normalised(content: Column, steps: list[str]) -> Column:
    for step in steps:
        if step == "strip":
            content = F.regexp_replace(content, r"^\s+|\s+$", "")
        elif step == "trailing_whitespace":
            content = F.regexp_replace(content, r"[ \t\r\f\v]+(?=\n|$)", "")
        elif step == "whitespace":
            content = F.regexp_replace(content, r"\s+", " ")
        elif step == "lowercase":
            content = F.lower(content)
    return content


def with_content_hash(df: DataFrame, cfg: ExactDedupConfig, *, content_col: str = "content") -> DataFrame:
    """Adds `content_hash`, the sha256 of the normalised content (`cfg.normalise`): a row's dedup key, which depends
    on that row alone."""
    return df.withColumn(HASH_COL, F.sha2(normalised(F.col(content_col), list(cfg.normalise)), 256))


def mark_hashed_duplicates(hashed: DataFrame, cfg: ExactDedupConfig, *, id_col: str = "doc_id") -> DataFrame:
    """Adds `representative`, the id kept for each row's `content_hash` group (its first row by `cfg.keep`; equal
    to the row's own id when it is kept; every row's own id when `cfg.enabled` is false)."""
    if not cfg.enabled:
        return hashed.withColumn("representative", F.col(id_col))
    w = Window.partitionBy(HASH_COL).orderBy(*cfg.keep_policy().order(id_col))
    return hashed.withColumn("representative", F.first(id_col).over(w))


def mark_duplicates(df: DataFrame, cfg: ExactDedupConfig | None = None, **keys) -> DataFrame:
    """Adds `content_hash` and `representative` (the doc_id kept for the group; equal to doc_id when kept).
    `keys`: ExactDedupConfig keys instead of `cfg` (`normalise=`, `keep=`)."""
    cfg = cfg or ExactDedupConfig(**keys)
    return mark_hashed_duplicates(with_content_hash(df, cfg), cfg)


def kept_rows(marked: DataFrame) -> DataFrame:
    return marked.where(F.col("doc_id") == F.col("representative")).select(*schemas.FILES.fieldNames())


def duplicate_rows(marked: DataFrame) -> DataFrame:
    return marked.where(F.col("doc_id") != F.col("representative")).select(*schemas.EXACT_DUPLICATES.fieldNames())
