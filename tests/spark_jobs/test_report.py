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
