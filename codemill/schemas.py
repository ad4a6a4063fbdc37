"""Schemas of the curation tables (docs/tables.md describes every column; docs/CONTRACTS.md fixes the names).

Each stage ends its transforms with `select(*<TABLE>.fieldNames())`, so these StructTypes are the contract.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)


def _s(*fields: tuple[str, object]) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in fields])


FILES = _s(
    ("doc_id", StringType()),
    ("source_id", StringType()),
    ("source_file", StringType()),
    ("repo", StringType()),
    ("path", StringType()),
    ("lang", StringType()),
    ("content", StringType()),
    ("size_bytes", LongType()),
    ("stars", LongType()),
    ("license", StringType()),
    ("ingest_run", StringType()),
)

QUARANTINE = _s(
    ("source_id", StringType()),
    ("doc_id", StringType()),
    ("source_file", StringType()),
    ("line", LongType()),
    ("reason", StringType()),
    ("detail", StringType()),
    ("raw_snippet", StringType()),
    # Language guessed from the path and size (bytes) when known, for per-language funnels.
    ("lang", StringType()),
    ("size_bytes", LongType()),
    ("ingest_run", StringType()),
)

QUARANTINE_REASONS = ("invalid_utf8", "binary", "empty", "too_large", "missing_field", "malformed_record",
                      "unsafe_path", "duplicate_source_id")

# Rows decoded from JSONL lines / tree files before they are classified into `files` or `quarantine`.
RAW = _s(
    ("source_id", StringType()),
    ("source_file", StringType()),
    ("line", LongType()),
    ("repo", StringType()),
    ("path", StringType()),
    ("lang", StringType()),
    ("content", StringType()),
    ("size_bytes", LongType()),
    ("stars", LongType()),
    ("license", StringType()),
    ("error", StringType()),
    ("detail", StringType()),
    ("raw_snippet", StringType()),
)

REJECTED = StructType(FILES.fields + [
    StructField("first_reason", StringType(), True),
    StructField("reasons", ArrayType(StringType(), True), True),
    StructField("measures", MapType(StringType(), DoubleType(), True), True),
])

FILTER_STATS = _s(
    ("run_id", StringType()),
    ("lang", StringType()),
    ("reason", StringType()),
    ("rows", LongType()),
    ("bytes", LongType()),
)

EXACT_DUPLICATES = StructType(FILES.fields + [
    StructField("content_hash", StringType(), True),
    StructField("representative", StringType(), True),
])

CONTAMINATION = _s(
    ("doc_id", StringType()),
    ("benchmark", StringType()),
    ("task_id", StringType()),
    ("field", StringType()),
    ("method", StringType()),
    ("matched_ngrams", LongType()),
    ("total_ngrams", LongType()),
    ("overlap", DoubleType()),
)

BENCHMARKS = _s(
    ("benchmark", StringType()),
    ("task_id", StringType()),
    ("field", StringType()),
    ("text", StringType()),
)

DOCUMENTS = _s(
    ("document_id", StringType()),
    ("lang", StringType()),
    ("repo", StringType()),
    ("part", LongType()),
    ("text", StringType()),
    ("n_files", LongType()),
    ("n_chars", LongType()),
    ("est_tokens", LongType()),
    ("doc_ids", ArrayType(StringType(), True)),
    # Where in `text` the separators documents.py wrote (special tokens) start; only these become special ids.
    ("special_offsets", ArrayType(IntegerType(), True)),
)

OUTCOMES = _s(
    ("source_id", StringType()),
    ("doc_id", StringType()),
    ("outcome", StringType()),
    ("reason", StringType()),
)

OUTCOME_VALUES = ("quarantined", "licence_rejected", "opted_out", "rejected", "exact_duplicate", "near_duplicate",
                  "redaction_rejected", "contaminated", "kept")

# Files the licence stage removed (spark_jobs/licences.py): a licence outside the allow-list, no licence
# information (when `licences.no_licence: reject`), or a repository/owner on the opt-out list.
# Which file a row of a rejection table is about (its text is not copied).
_FILE_REF = (("doc_id", StringType()), ("source_id", StringType()), ("repo", StringType()), ("path", StringType()),
             ("lang", StringType()), ("size_bytes", LongType()))

LICENCE_REJECTED = _s(
    *_FILE_REF,
    ("license", StringType()),
    ("outcome", StringType()),  # licence_rejected | opted_out
    ("reason", StringType()),
)

# One row per span the redaction stage replaced (spark_jobs/redact.py); never the secret, only its salted hash.
REDACTIONS = _s(
    ("doc_id", StringType()),
    ("lang", StringType()),
    ("kind", StringType()),
    ("start", LongType()),  # character offsets in the text before redaction, end exclusive
    ("end", LongType()),
    ("detector", StringType()),
    ("secret_hash", StringType()),
)

# Files with more findings than `redact.max_findings`: dropped, their text not copied.
REDACTION_REJECTED = _s(
    *_FILE_REF,
    ("n_findings", LongType()),
    ("reason", StringType()),
    ("detail", StringType()),
)

STAGE_STATS = _s(
    ("stage", StringType()),
    ("lang", StringType()),
    ("rows_in", LongType()),
    ("bytes_in", LongType()),
    ("rows_out", LongType()),
    ("bytes_out", LongType()),
    ("run_id", StringType()),
)

# One row per run of a pipeline step whose output is not a table (annotator training, trainer phases, evaluation):
# what the pipeline's lineage-based skipping compares, as a table's last commit is for the other stages.
STEP_RUNS = _s(
    ("stage", StringType()),
    ("config_hash", StringType()),
    ("inputs", StringType()),  # JSON {table: version} of what the step read
    ("artifacts", StringType()),  # JSON [paths] the step wrote
    ("run_id", StringType()),
)
