"""spark_jobs/pipeline.py end to end on a corpus with every kind of bad input: accounting holds per record,
unchanged stages are skipped, the funnel and stage_stats add up."""

from __future__ import annotations

import pytest

from spark_jobs.pipeline import STAGES, PipelineConfig, Stage, _normalise_argv, main, register
from tests.fixtures.curation.build import TREE_OUTCOMES, make_tree

pytestmark = pytest.mark.slow


def test_pipeline_tree_accounting_and_skip(spark, tmp_path, capsys):
    repos = make_tree(tmp_path / "repos")
    lake_dir = tmp_path / "lake"
    argv = ["--input", str(repos), "--lake", str(lake_dir), "--ingest.max_bytes", "2000",
            "--near_dedup.num_perm", "64", "--documents.max_chars", "1000"]
    summary = main(argv)
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 9
    from codemill.lake import Lake

    lake = Lake(spark, str(lake_dir))
    outcomes = {r.source_id: r for r in lake.read("outcomes").collect()}
    assert {k: v.outcome for k, v in outcomes.items()} == TREE_OUTCOMES
    assert summary["accounting"]["records"] == len(TREE_OUTCOMES) and summary["accounting"]["duplicate_doc_ids"] == 0
    assert "humaneval" in outcomes["beta/lib/close.py"].reason.lower()  # several benchmarks ship HumanEval/0
    # in = out: every files row is in exactly one of the per-stage tables
    n = {t: lake.read(t).count() for t in ("files", "quarantine", "rejected", "filtered", "exact_duplicates",
                                           "exact_deduped", "near_deduped", "clean", "contamination", "licensed",
                                           "redacted", "redaction_rejected")}
    assert n["files"] + n["quarantine"] == len(TREE_OUTCOMES) and n["licensed"] == n["files"]  # no licence: kept
    assert n["files"] == n["rejected"] + n["filtered"] and n["filtered"] == n["exact_duplicates"] + n["exact_deduped"]
    assert n["exact_deduped"] == n["near_deduped"] + 1 and n["near_deduped"] == n["redacted"] + n["redaction_rejected"]
    assert n["redacted"] == n["clean"] + 1
    docs = lake.read("documents").collect()
    assert sorted(d for doc in docs for d in doc.doc_ids) == sorted(r.doc_id for r in lake.read("clean").collect())
    funnel = capsys.readouterr().out
    assert "ingest" in funnel and "documents" in funnel and "(all)" in funnel
    stats = {(r.stage, r.lang): r for r in lake.read("stage_stats").collect()}
    assert stats[("ingest", "python")].rows_in == sum(1 for k in TREE_OUTCOMES if k.endswith(".py"))

    again = main(argv)
    assert [s["status"].split()[0] for s in again["stages"]] == ["skipped"] * 9
    # a config change re-runs that stage and everything after it, not the stages before
    third = main(argv + ["--exact_dedup.order_by", "[doc_id desc]", "--stages", "exact_dedup", "near_dedup"])
    assert [s["status"] for s in third["stages"]] == ["ran", "ran"]


def test_stage_registry_and_config(tmp_path):
    assert list(STAGES)[:9] == ["ingest", "licences", "filter", "exact_dedup", "near_dedup", "redact",
                                "decontaminate", "documents", "outcomes"]
    assert _normalise_argv(["--stages", "ingest", "filter", "--lake", "x"]) == ["--stages", "ingest,filter",
                                                                                  "--lake", "x"]
    cfg = PipelineConfig(stages="filter,bogus")
    assert any(p.startswith("stages:") for p in cfg.validate())
    assert any(p.startswith("input:") for p in PipelineConfig().validate())
    register(Stage("extra", lambda ctx, lineage: None, ("extra",)), after="documents")
    try:
        assert list(STAGES).index("extra") == list(STAGES).index("documents") + 1
    finally:
        STAGES.pop("extra")


def test_write_ids_cover_config_inputs_and_code_and_force_writes(spark, tmp_path, monkeypatch):
    """A re-run with a fixed run id after a config change, or with --force, writes (the write id was `run:stage`,
    already in the table's history, so both were skipped while reporting "ran"); an unchanged one is skipped; a
    stage killed inside its transaction is re-run even though its outputs' lineage is current."""
    from codemill.lake import Lake
    from spark_jobs.pipeline import Context, run_stage, write_id

    def run(ctx, lineage):
        rows = [(ctx.cfg.documents.max_chars,)]
        ctx.lake.overwrite("toy", ctx.spark.createDataFrame(rows, "max_chars long"), lineage=lineage)

    stage = Stage("toy", run, ("toy",), section=lambda c: c.documents, code=("spark_jobs.documents",))
    monkeypatch.setitem(STAGES, "toy", stage)
    cfg = PipelineConfig(lake=str(tmp_path / "lake"))
    lake = Lake(spark, cfg.lake)
    ctx = Context(spark, lake, cfg, "fixed-run")

    def value():
        return lake.read("toy").collect()[0]["max_chars"]

    assert run_stage(ctx, stage)["status"] == "ran" and value() == cfg.documents.max_chars
    assert run_stage(ctx, stage)["status"].startswith("skipped")
    cfg.documents.max_chars += 1
    assert run_stage(ctx, stage)["status"] == "ran" and value() == cfg.documents.max_chars
    v = lake.version("toy")
    cfg.force = True
    assert run_stage(ctx, stage)["status"] == "ran" and lake.version("toy") == v + 1
    cfg.force = False
    # a pending record (a run killed inside the stage) makes the stage run, whatever its outputs' lineage says
    with pytest.raises(RuntimeError):
        with lake.stage("toy", ["toy"], write_id="w"):
            raise RuntimeError("killed")
    assert run_stage(ctx, stage)["status"] == "ran" and lake.pending_stages() == {}
    # the id names the config digest (code version included) and the input versions; force makes it unique
    assert write_id("s", "d1", {"a": 1}) == write_id("s", "d1", {"a": 1}) != write_id("s", "d2", {"a": 1})
    assert write_id("s", "d1", {"a": 1}) != write_id("s", "d1", {"a": 2})
    assert write_id("s", "d1", {}, force=True, run_id="r1") != write_id("s", "d1", {}, force=True, run_id="r2")
    assert stage.code_version() != Stage("toy", run, code=("spark_jobs.filter",)).code_version()
