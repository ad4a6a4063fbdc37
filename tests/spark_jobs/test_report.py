"""Funnel report: the page and its plots written to, and the shard manifests read from, an object store."""

from __future__ import annotations

import json

from codemill import storage
from spark_jobs.report import Report, phases_section


def test_report_reads_manifests_from_and_writes_its_page_to_s3(s3, bucket):
    for phase, tokens in (("phase1", {"python": 600, "go": 400}), ("phase2", {"python": 300, "go": 100})):
        storage.write_text(f"{bucket}/shards/{phase}/manifest.json",
                           json.dumps({"phase": phase, "seq_len": 128, "repeat": 1, "tokens_per_language": tokens}))
    report = Report(f"{bucket}/report")
    phases_section(report, f"{bucket}/shards")
    assert report.write("codemill report") == f"{bucket}/report/index.html"
    name = bucket[len("s3a://"):]
    assert sorted(k for k in s3.objects(name, "report/") if not k.endswith("/")) == ["report/index.html",
                                                                                    "report/phases.png"]
    page = storage.read_text(f"{bucket}/report/index.html")
    assert "Token mix of the three phases" in page and '<img src="phases.png"' in page and "Not run yet" not in page
    assert not report.out.exists()  # the local staging folder is gone


def test_score_histograms_are_counted_in_spark_and_match_numpy(spark):
    import numpy as np

    from spark_jobs.report import score_histograms

    rnd = np.random.default_rng(3)
    py, go = rnd.normal(0.5, 0.2, 700), rnd.uniform(-1, 2, 300)
    rows = [("python", float(x)) for x in py] + [("go", float(x)) for x in go] + [("c", 0.25)] * 4
    scores = spark.createDataFrame(rows, "lang string, score double")
    hist = score_histograms(scores, ["python", "go", "c"], bins=30)
    for lang, values in (("python", py), ("go", go)):
        h = hist[hist["lang"] == lang]
        want, edges = np.histogram(values, bins=30)
        got = np.zeros(30, dtype=int)
        got[h["bin"].to_numpy()] = h["count"].to_numpy()
        assert got.tolist() == want.tolist()
        assert np.allclose(h["lo"], edges[h["bin"].to_numpy()])
    assert hist[hist["lang"] == "c"][["bin", "count"]].values.tolist() == [[0, 4]]  # one value: one bin
    assert len(hist) <= 3 * 30  # the driver gets bins, not scores


def test_licence_and_redaction_sections(spark, lake, tmp_path):
    from codemill import schemas
    from spark_jobs.report import licences_section, redaction_section

    lic = [("a", "s-a", "o/r", "a.py", "python", 10, "GPL-3.0", "licence_rejected", "licence_not_allowed: gpl-3.0"),
           ("b", "s-b", "gone/x", "b.py", "python", 10, "MIT", "opted_out", "opt-out: owner gone")]
    lake.overwrite("licence_rejected", spark.createDataFrame(lic, schemas.LICENCE_REJECTED))
    spans = [("c", "python", "email", 3, 20, "regex:email", "h1"), ("c", "python", "aws_access_key", 30, 50,
                                                                       "regex:aws_access_key", "h2")]
    lake.overwrite("redactions", spark.createDataFrame(spans, schemas.REDACTIONS))
    lake.overwrite("redaction_rejected", spark.createDataFrame(
        [("d", "s-d", "o/k", "k.py", "python", 99, 80, "too_many_findings", "80 findings > max_findings 50")],
        schemas.REDACTION_REJECTED))
    report = Report(str(tmp_path / "report"))
    licences_section(report, lake)
    redaction_section(report, lake)
    page = open(report.write("r"), encoding="utf-8").read()
    assert "licence_not_allowed: gpl-3.0" in page and "opt-out: owner gone" in page
    assert "aws_access_key" in page and "1 files had more findings" in page
    assert '<img src="licences.png"' in page and '<img src="redaction.png"' in page
