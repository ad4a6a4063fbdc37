"""Documents: `clean` -> `documents` (paper §2.1: "partitioned by programming language, grouped by repository,
and concatenated in a random order").

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages documents

Files of one (language, repository) are shuffled with a seeded hash of their `doc_id` (reproducible, independent
of Spark's partitioning), prefixed with configurable metadata headers and joined with a separator. A repository
whose text exceeds `max_chars` is cut into parts at file boundaries: a file starts a new part when the characters
before it cross the next multiple of `max_chars`, so a part exceeds `max_chars` by at most one file.

Separators: the special-token strings the header templates hold (`<|repo_name|>`, `<|file_sep|>`; any of
`spark_jobs.tokenizer.SPECIAL_TOKENS`) are written as text, and `special_offsets` lists where in `text` (character
offsets) each of them starts. Only those become special-token ids in the shards (`shard_transforms`); the same string
inside a file's content, a repository name or a path is ordinary text there, encoded byte-level like any other
characters and decoded back unchanged (docs/tokenization.md, "Separators").
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from codemill import schemas
from spark_jobs.tokenizer import SPECIAL_TOKENS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Bumped when the table's layout changes without a config change, so the pipeline rebuilds old documents tables
# (2: `special_offsets`).
FORMAT_VERSION = 2
_PLACEHOLDER = re.compile(r"(\{repo\}|\{path\}|\{lang\})")


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


def _header(template: str) -> tuple[Column, Column]:
    """The filled template and the offsets in it where its special tokens start (array<int>).

    A special token is recognised in the template's own text only: one that a {repo}, {path} or {lang} value
    spells stays ordinary text, since its offset is not listed.
    """
    from pyspark.sql import functions as F

    pieces, offsets = [], []
    at: Column | int = 0  # characters before the current piece: literal lengths + lengths of filled values
    for piece in _PLACEHOLDER.split(template):
        if not piece:
            continue
        if _PLACEHOLDER.fullmatch(piece):
            value = F.coalesce(F.col(piece[1:-1]), F.lit(""))
            pieces.append(value)
            at = F.length(value) + at
            continue
        pieces.append(F.lit(piece))
        for i in sorted(m.start() for t in SPECIAL_TOKENS for m in re.finditer(re.escape(t), piece)):
            offsets.append(F.lit(i) + at if not isinstance(at, int) else F.lit(at + i))
        at = at + len(piece)
    text = F.concat(*pieces) if pieces else F.lit("")
    return text, F.array(*offsets).cast("array<int>")


def build_documents(df: DataFrame, *, seed: int = 42, repo_header: str = "<|repo_name|>{repo}\n",
                    file_header: str = "<|file_sep|>{path}\n", file_separator: str = "\n",
                    max_chars: int = 1_000_000, chars_per_token: float = 3.5) -> DataFrame:
    """Files (lang, repo, path, content, doc_id) -> one row per document part (schemas.DOCUMENTS)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    file_text, file_marks = _header(file_header)
    repo_text, repo_marks = _header(repo_header)
    ordered = (df.withColumn("_key", F.xxhash64(F.lit(seed), F.col("doc_id")))
               .withColumn("_piece", F.concat(file_text, F.col("content")))
               .withColumn("_marks", file_marks)
               .withColumn("_len", F.length("_piece").cast("long")))
    w = Window.partitionBy("lang", "repo").orderBy("_key", "doc_id")
    before = F.coalesce(F.sum("_len").over(w.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0))
    ordered = (ordered.withColumn("_before", before)
               .withColumn("part", F.floor(F.col("_before") / F.lit(max_chars)).cast("long")))
    grouped = ordered.groupBy("lang", "repo", "part").agg(
        F.sort_array(F.collect_list(F.struct("_key", "doc_id", "_piece", "_before", "_marks"))).alias("_files"))
    text = F.concat(repo_text, F.array_join(F.col("_files._piece"), file_separator))
    # File i of a part starts after the repository header, the pieces before it in the part (their lengths are
    # _before minus the first file's _before) and i separators.
    first = F.col("_files")[0]["_before"]
    start = F.length(repo_text).cast("long")
    sep = len(file_separator)
    file_offsets = F.flatten(F.transform("_files", lambda f, i: F.transform(
        f["_marks"], lambda m: (m + start + f["_before"] - first + i * sep).cast("int"))))
    n_chars = F.length("text").cast("long")
    return (grouped.withColumn("text", text)
            .withColumn("special_offsets", F.concat(repo_marks, file_offsets))
            .withColumn("document_id", F.substring(F.sha2(F.concat_ws("\u001f", "lang", "repo", F.col("part")
                                                                      .cast("string")), 256), 1, 16))
            .withColumn("n_files", F.size("_files").cast("long"))
            .withColumn("n_chars", n_chars)
            .withColumn("est_tokens", F.ceil(n_chars / F.lit(chars_per_token)).cast("long"))
            .withColumn("doc_ids", F.col("_files.doc_id"))
            .select(*schemas.DOCUMENTS.fieldNames()))
