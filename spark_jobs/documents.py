"""Documents: `clean` -> `documents` (paper §2.1: "partitioned by programming language, grouped by repository,
and concatenated in a random order").

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages documents

Files of one (language, repository) are shuffled with a seeded hash of their `doc_id` (reproducible, independent
of Spark's partitioning), prefixed with configurable metadata headers and joined with a separator. A repository
whose text exceeds `max_chars` is cut into parts at file boundaries: a file starts a new part when the characters
before it cross the next multiple of `max_chars`, so a part exceeds `max_chars` by at most one file.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from codemill import schemas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclasses.dataclass
class DocumentsConfig:
    """`documents.*` keys. Headers may use {repo}, {path} and {lang}."""

    seed: int = 42
    repo_header: str = "<|repo_name|>{repo}\n"
    file_header: str = "<|file_sep|>{path}\n"
    file_separator: str = "\n"
    max_chars: int = 1_000_000
    # Code tokenizers average ~3-4 characters per token; only used for the est_tokens column.
    chars_per_token: float = 3.5

    def validate(self) -> list[str]:
        problems = []
        if self.max_chars <= 0:
            problems.append("max_chars: must be positive")
        if self.chars_per_token <= 0:
            problems.append("chars_per_token: must be positive")
        return problems


def _fill(template: str):
    from pyspark.sql import functions as F

    out = F.lit(template)
    for key in ("repo", "path", "lang"):
        if "{" + key + "}" in template:
            out = F.replace(out, F.lit("{" + key + "}"), F.coalesce(F.col(key), F.lit("")))
    return out


def build_documents(df: DataFrame, *, seed: int = 42, repo_header: str = "<|repo_name|>{repo}\n",
                    file_header: str = "<|file_sep|>{path}\n", file_separator: str = "\n",
                    max_chars: int = 1_000_000, chars_per_token: float = 3.5) -> DataFrame:
    """Files (lang, repo, path, content, doc_id) -> one row per document part (schemas.DOCUMENTS)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    piece = F.concat(_fill(file_header), F.col("content"))
    ordered = (df.withColumn("_key", F.xxhash64(F.lit(seed), F.col("doc_id")))
               .withColumn("_piece", piece)
               .withColumn("_len", F.length("_piece").cast("long")))
    w = Window.partitionBy("lang", "repo").orderBy("_key", "doc_id")
    before = F.sum("_len").over(w.rowsBetween(Window.unboundedPreceding, -1))
    ordered = ordered.withColumn("part", F.floor(F.coalesce(before, F.lit(0)) / F.lit(max_chars)).cast("long"))
    grouped = ordered.groupBy("lang", "repo", "part").agg(
        F.sort_array(F.collect_list(F.struct("_key", "doc_id", "_piece"))).alias("_files"))
    text = F.concat(_fill(repo_header), F.array_join(F.col("_files._piece"), file_separator))
    n_chars = F.length("text").cast("long")
    return (grouped.withColumn("text", text)
            .withColumn("document_id", F.substring(F.sha2(F.concat_ws("\u001f", "lang", "repo", F.col("part")
                                                                      .cast("string")), 256), 1, 16))
            .withColumn("n_files", F.size("_files").cast("long"))
            .withColumn("n_chars", n_chars)
            .withColumn("est_tokens", F.ceil(n_chars / F.lit(chars_per_token)).cast("long"))
            .withColumn("doc_ids", F.col("_files.doc_id"))
            .select(*schemas.DOCUMENTS.fieldNames()))
