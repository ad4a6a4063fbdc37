"""Accounting: every input record ends in exactly one outcome, recorded in the `outcomes` table.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages outcomes

Outcomes (schemas.OUTCOME_VALUES): quarantined (ingest), licence_rejected and opted_out (licences), rejected
(filter), exact_duplicate, near_duplicate, redaction_rejected (more secrets than `redact.max_findings`),
contaminated, kept (in `clean`). A file whose later stages have not run yet is `pending`. Users ask why a file is
missing with SQL, e.g. `SELECT outcome, reason FROM outcomes WHERE source_id = 'repo/path/to/file.py'`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codemill import schemas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PENDING = "pending"


def verdicts(*, rejected: DataFrame | None = None, exact_duplicates: DataFrame | None = None,
             near_clusters: DataFrame | None = None, near_source: DataFrame | None = None,
             contamination: DataFrame | None = None, kept: DataFrame | None = None,
             licence_rejected: DataFrame | None = None,
             redaction_rejected: DataFrame | None = None) -> DataFrame | None:
    """(doc_id, outcome, reason, rank) for every file a stage decided on; lower rank = earlier stage wins."""
    from pyspark.sql import functions as F

    frames = []
    if licence_rejected is not None:  # the licences stage runs before the filters
        frames.append(licence_rejected.select("doc_id", "outcome", "reason", F.lit(0).alias("rank")))
    if rejected is not None:
        frames.append(rejected.select("doc_id", F.lit("rejected").alias("outcome"),
                                      F.col("first_reason").alias("reason"), F.lit(1).alias("rank")))
    if exact_duplicates is not None:
        frames.append(exact_duplicates.select("doc_id", F.lit("exact_duplicate").alias("outcome"),
                                              F.concat(F.lit("representative "), "representative").alias("reason"),
                                              F.lit(2).alias("rank")))
    if near_clusters is not None and near_source is not None:
        near = near_clusters.where(F.col("doc_id") != F.col("representative")) \
            .join(near_source.select("doc_id"), on="doc_id", how="left_semi")
        frames.append(near.select("doc_id", F.lit("near_duplicate").alias("outcome"),
                                  F.format_string("representative %s (similarity %.3f)", "representative",
                                                  "similarity").alias("reason"), F.lit(3).alias("rank")))
    if redaction_rejected is not None:  # the redaction stage runs between near dedup and decontamination
        frames.append(redaction_rejected.select("doc_id", F.lit("redaction_rejected").alias("outcome"),
                                                F.concat_ws(": ", "reason", "detail").alias("reason"),
                                                F.lit(3).alias("rank")))
    if contamination is not None:
        # the strongest hit names the reason; ties broken by name so that the text is the same on every run
        best = contamination.groupBy("doc_id").agg(
            F.min_by(F.format_string("%s %s %s (%s, overlap %.2f)", "benchmark", "task_id", "field", "method",
                                     "overlap"),
                     F.struct(-F.col("overlap"), "benchmark", "task_id", "field")).alias("reason"))
        frames.append(best.select("doc_id", F.lit("contaminated").alias("outcome"), "reason", F.lit(4).alias("rank")))
    if kept is not None:
        frames.append(kept.select("doc_id", F.lit("kept").alias("outcome"), F.lit(None).cast("string").alias("reason"),
                                  F.lit(5).alias("rank")))
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def build_outcomes(*, files: DataFrame, quarantine: DataFrame, decided: DataFrame | None) -> DataFrame:
    """One row per input record: quarantine rows, and every `files` row with its earliest verdict (or pending)."""
    from pyspark.sql import functions as F

    q = quarantine.select("source_id", "doc_id", F.lit("quarantined").alias("outcome"),
                          F.concat_ws(": ", "reason", "detail").alias("reason"))
    if decided is None:
        f = files.select("source_id", "doc_id", F.lit(PENDING).alias("outcome"),
                         F.lit("filter not run").alias("reason"))
    else:
        first = decided.groupBy("doc_id").agg(F.min_by(F.struct("outcome", "reason"), "rank").alias("_v"))
        f = (files.select("source_id", "doc_id").join(first, on="doc_id", how="left")
             .select("source_id", "doc_id", F.coalesce(F.col("_v.outcome"), F.lit(PENDING)).alias("outcome"),
                     F.when(F.col("_v").isNull(), F.lit("later stages not run")).otherwise(F.col("_v.reason"))
                     .alias("reason")))
    return q.unionByName(f).select(*schemas.OUTCOMES.fieldNames())


def summarize(outcomes: DataFrame) -> dict:
    """Counts per outcome, the number of records, and ids that appear more than once (should be 0)."""
    from pyspark.sql import functions as F

    by = {r["outcome"]: r["count"] for r in outcomes.groupBy("outcome").count().collect()}
    dup = outcomes.where(F.col("doc_id").isNotNull()).groupBy("doc_id").count().where("count > 1").count()
    return {"records": sum(by.values()), "by_outcome": dict(sorted(by.items())), "duplicate_doc_ids": dup}
