"""Exact deduplication: `filtered` -> `exact_deduped` + `exact_duplicates`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages exact_dedup

Files whose normalised content hashes alike form a group (paper §2.1: deduplication before near-dedup); one
representative per group is kept, picked deterministically by `order_by` (default: most stars, then smallest
`doc_id`), and every other row goes to `exact_duplicates` with a pointer to it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from codemill import schemas

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

NORMALISATIONS = ("none", "strip", "trailing_whitespace", "whitespace", "lowercase")


@dataclasses.dataclass
class ExactDedupConfig:
    """`exact_dedup.*` keys."""

    # Applied in order before hashing: strip (ends of the file), trailing_whitespace (end of each line; and CRLF),
    # whitespace (every run of whitespace -> one space), lowercase. [] or [none] hashes the raw content.
    normalise: list[str] = dataclasses.field(default_factory=lambda: ["trailing_whitespace", "strip"])
    # Representative policy: columns of `files` with asc/desc; doc_id last makes it a total order.
    order_by: list[str] = dataclasses.field(default_factory=lambda: ["stars desc", "doc_id asc"])

    def validate(self) -> list[str]:
        problems = []
        bad = [n for n in self.normalise if n not in NORMALISATIONS]
        if bad:
            problems.append(f"normalise: unknown step(s) {bad}; known: {list(NORMALISATIONS)}")
        for item in self.order_by:
            parts = item.split()
            if not parts or parts[0] not in schemas.FILES.fieldNames() or (
                    len(parts) > 1 and parts[1].lower() not in ("asc", "desc")) or len(parts) > 2:
                problems.append(f"order_by: {item!r} is not '<files column> [asc|desc]'")
        return problems


def normalised(content: Column, steps: list[str]) -> Column:
    from pyspark.sql import functions as F

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


def _orderings(order_by: list[str]) -> list[Column]:
    from pyspark.sql import functions as F

    cols = []
    for item in order_by:
        name, *direction = item.split()
        desc = bool(direction) and direction[0].lower() == "desc"
        cols.append(F.col(name).desc_nulls_last() if desc else F.col(name).asc_nulls_last())
    if not any(item.split()[0] == "doc_id" for item in order_by):
        cols.append(F.col("doc_id").asc())
    return cols


def with_content_hash(df: DataFrame, *, normalise: list[str] = ("trailing_whitespace", "strip")) -> DataFrame:
    """Adds `content_hash`, the sha256 of the normalised `content`: a row's group key, which depends on that row
    alone (callers that see rows in batches can hash each batch as it comes and group later)."""
    from pyspark.sql import functions as F

    return df.withColumn("content_hash", F.sha2(normalised(F.col("content"), list(normalise)), 256))


def mark_hashed_duplicates(hashed: DataFrame, *, order_by: list[str] = ("stars desc", "doc_id asc")) -> DataFrame:
    """Adds `representative` to rows that carry `content_hash` (`with_content_hash`): see `mark_duplicates`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("content_hash").orderBy(*_orderings(list(order_by)))
    return hashed.withColumn("representative", F.first("doc_id").over(w))


def mark_duplicates(df: DataFrame, *, normalise: list[str] = ("trailing_whitespace", "strip"),
                    order_by: list[str] = ("stars desc", "doc_id asc")) -> DataFrame:
    """Adds `content_hash` and `representative` (the doc_id kept for the group; equal to doc_id when kept)."""
    return mark_hashed_duplicates(with_content_hash(df, normalise=normalise), order_by=order_by)


def kept_rows(marked: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return marked.where(F.col("doc_id") == F.col("representative")).select(*schemas.FILES.fieldNames())


def duplicate_rows(marked: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return marked.where(F.col("doc_id") != F.col("representative")).select(*schemas.EXACT_DUPLICATES.fieldNames())
