"""spark_jobs/accounting.py: one outcome per record, earliest stage wins, pending when stages are missing."""

from __future__ import annotations

from codemill import schemas
from spark_jobs.accounting import build_outcomes, summarize, verdicts


def _file(doc_id):
    return (doc_id, f"s-{doc_id}", "src", "repo", f"{doc_id}.py", "python", "x", 1, None, None, "t")


def test_outcomes(spark):
    files = spark.createDataFrame([_file(d) for d in "abcdef"], schemas.FILES)
    quarantine = spark.createDataFrame([("bad-line", "q1", "f.jsonl", 3, "malformed_record", "oops", "{", None, None,
                                         "t")], schemas.QUARANTINE)
    rejected = files.where("doc_id = 'a'").selectExpr("*", "'max_line_length' AS first_reason")
    dups = files.where("doc_id = 'b'").selectExpr("*", "'c' AS representative")
    near = spark.createDataFrame([("c", "c", "c", 1.0), ("d", "c", "c", 0.8)],
                                 "doc_id string, cluster_id string, representative string, similarity double")
    contamination = spark.createDataFrame([("c", "humaneval", "HumanEval/1", "prompt", "ngram", 9, 10, 0.9)],
                                          schemas.CONTAMINATION)
    kept = files.where("doc_id = 'e'")
    decided = verdicts(rejected=rejected, exact_duplicates=dups, near_clusters=near, near_source=files,
                       contamination=contamination, kept=kept)
    out = {r.source_id: (r.outcome, r.reason) for r in build_outcomes(files=files, quarantine=quarantine,
                                                                        decided=decided).collect()}
    assert out == {
        "bad-line": ("quarantined", "malformed_record: oops"), "s-a": ("rejected", "max_line_length"),
        "s-b": ("exact_duplicate", "representative c"), "s-c": ("contaminated", out["s-c"][1]),
        "s-d": ("near_duplicate", "representative c (similarity 0.800)"), "s-e": ("kept", None),
        "s-f": ("pending", "later stages not run"),
    }
    assert "HumanEval/1" in out["s-c"][1]
    summary = summarize(build_outcomes(files=files, quarantine=quarantine, decided=decided))
    assert summary["records"] == 7 and summary["duplicate_doc_ids"] == 0 and summary["by_outcome"]["pending"] == 1


def test_licence_and_redaction_outcomes(spark):
    files = spark.createDataFrame([_file(d) for d in "abcd"], schemas.FILES)
    quarantine = spark.createDataFrame([], schemas.QUARANTINE)
    lic = spark.createDataFrame([("a", "s-a", "repo", "a.py", "python", 1, "GPL-3.0", "licence_rejected",
                                  "licence_not_allowed: gpl-3.0"),
                                 ("b", "s-b", "repo", "b.py", "python", 1, None, "opted_out", "opt-out: owner repo")],
                                schemas.LICENCE_REJECTED)
    red = spark.createDataFrame([("c", "s-c", "repo", "c.py", "python", 1, 60, "too_many_findings",
                                  "60 findings > max_findings 50 (aws_access_key 60)")], schemas.REDACTION_REJECTED)
    # a licence verdict wins over any later stage's (rank 0): `a` also in `rejected` keeps licence_rejected
    rejected = files.where("doc_id = 'a'").selectExpr("*", "'max_line_length' AS first_reason")
    decided = verdicts(licence_rejected=lic, rejected=rejected, redaction_rejected=red,
                       kept=files.where("doc_id = 'd'"))
    out = {r.source_id: (r.outcome, r.reason) for r in build_outcomes(files=files, quarantine=quarantine,
                                                                        decided=decided).collect()}
    assert out == {"s-a": ("licence_rejected", "licence_not_allowed: gpl-3.0"),
                   "s-b": ("opted_out", "opt-out: owner repo"),
                   "s-c": ("redaction_rejected",
                           "too_many_findings: 60 findings > max_findings 50 (aws_access_key 60)"),
                   "s-d": ("kept", None)}
    assert set(schemas.OUTCOME_VALUES) >= {o for o, _ in out.values()}
