"""bench/scale.py: the skew cases at small size through phase 1, event-log skew figures, cost fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale import MAX_SKEW, PHASE1, SKEW_CASES, skew_corpus, summarise, task_skew

REPO = Path(__file__).resolve().parents[2]


def test_skew_corpora_have_their_shape(tmp_path):
    dup = skew_corpus(tmp_path / "d", "duplicated_file", scale=0.002)
    copies = [p for p in dup.rglob("copy_*.py")]
    assert len(copies) == 100 and len({p.read_text() for p in copies}) == 1
    repo = skew_corpus(tmp_path / "r", "huge_repository", scale=0.002)
    assert len(list((repo / "monorepo").rglob("*.py"))) == 400
    lang = skew_corpus(tmp_path / "l", "one_language", scale=0.002)
    sizes = {}
    for p in lang.rglob("*.*"):
        sizes[p.suffix] = sizes.get(p.suffix, 0) + p.stat().st_size
    assert 0.85 < sizes[".py"] / sum(sizes.values()) < 0.95
    big = skew_corpus(tmp_path / "b", "huge_file", scale=0.01)
    assert 150_000 < (big / "big" / "generated.py").stat().st_size <= 200_000


def test_task_skew_reads_spark_event_logs(tmp_path):
    events = [{"Event": "SparkListenerJobStart", "Stage IDs": [1, 2], "Properties": {"spark.jobGroup.id": "ingest"}},
              {"Event": "SparkListenerJobStart", "Stage IDs": [3], "Properties": {"spark.jobGroup.id": "filter"}}]
    for stage, times in ((1, [1, 1, 1, 6]), (2, [0.1, 0.1, 0.1, 0.4]), (3, [2, 2, 3, 2])):
        for t in times:
            events.append({"Event": "SparkListenerTaskEnd", "Stage ID": stage,
                           "Task Info": {"Launch Time": 1000, "Finish Time": 1000 + int(t * 1000), "Failed": False,
                                         "Killed": False}})
    # Spark 4's rolling layout: a folder per application, the events in numbered files, an empty status marker.
    app = tmp_path / "eventlog_v2_local-1"
    app.mkdir()
    (app / "events_1_local-1").write_text("\n".join(json.dumps(e) for e in events[:4]))
    (app / "events_2_local-1").write_text("\n".join(json.dumps(e) for e in events[4:]))
    (app / "appstatus_local-1").write_text("")
    (app / ".appstatus_local-1.crc").write_bytes(b"crc\x00\x00")
    skew = task_skew(tmp_path, floor_s=0.5)
    assert skew["ingest"]["spark_stages"] == 2 and skew["ingest"]["max_skew"] == 6.0  # stage 2 is under the floor
    assert skew["ingest"]["worst"]["spark_stage"] == 1 and skew["filter"]["max_skew"] == 1.5


def test_summarise_fits_each_stage_and_extrapolates_to_1p6_tb():
    runs = [{"mb": mb, "stages": {"ingest": {"cpu_s": 10 + 0.5 * mb}, "score": {"cpu_s": 5 + 2 * mb}}}
            for mb in (100, 200, 400)]
    fits = summarise(runs)
    assert fits["ingest"]["marginal_cpu_s_per_mb"] == pytest.approx(0.5)
    assert fits["end_to_end"]["fixed_cpu_s"] == pytest.approx(15)
    assert fits["end_to_end"]["core_hours_1p6tb"] == pytest.approx(1.6e6 * 2.5 / 3600, rel=1e-3)
    assert fits["phase1"]["marginal_cpu_s_per_mb"] == pytest.approx(0.5)


@pytest.mark.bench
def test_skew_cases_finish_through_phase_1_without_a_hot_task():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), "--skip-sizes", "--skew-scale", "0.002",
                          "--master", "local[2]", "--stages", ",".join(PHASE1)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1][len("RESULT "):])
    assert set(result["skew"]) == set(SKEW_CASES)
    for case, figures in result["skew"].items():
        assert set(figures["stages"]) == set(PHASE1), case
        assert figures["max_skew"] <= MAX_SKEW and figures["ok"], (case, figures)
