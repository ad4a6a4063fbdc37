"""spark_jobs/exact_dedup.py: groups by normalised content, deterministic representative, pointers."""

from __future__ import annotations

from codemill import schemas
from spark_jobs.exact_dedup import ExactDedupConfig, duplicate_rows, kept_rows, mark_duplicates


def _row(doc_id, content, stars):
    return (doc_id, doc_id, "src", "repo", f"{doc_id}.py", "python", content, len(content), stars, None, "t")


def test_representative_and_normalisation(spark):
    df = spark.createDataFrame([
        _row("d1", "x = 1\n", 1), _row("d2", "x = 1   \n\n", 7), _row("d3", "x = 1\n", None),
        _row("d4", "X = 1\n", 100), _row("d5", "y = 2\n", None),
    ], schemas.FILES)
    marked = mark_duplicates(df).cache()
    assert sorted(r.doc_id for r in kept_rows(marked).collect()) == ["d2", "d4", "d5"]
    dups = {r.doc_id: r.representative for r in duplicate_rows(marked).collect()}
    assert dups == {"d1": "d2", "d3": "d2"}
    # lowercase joins d4; ascending doc_id policy picks d1
    marked = mark_duplicates(df, normalise=["trailing_whitespace", "strip", "lowercase"], order_by=["doc_id asc"])
    assert sorted(r.doc_id for r in kept_rows(marked).collect()) == ["d1", "d5"]
    assert ExactDedupConfig(order_by=["nope desc"]).validate() and ExactDedupConfig(normalise=["x"]).validate()
