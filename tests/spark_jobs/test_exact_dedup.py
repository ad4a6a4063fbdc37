"""spark_jobs/exact_dedup.py: groups by normalised content, deterministic kept row (`keep`), pointers."""

from __future__ import annotations

from codemill import schemas
from codemill.config import CONF_DIR, load_config
from spark_jobs.exact_dedup import ExactDedupConfig, duplicate_rows, kept_rows, mark_duplicates
from spark_jobs.keep_policy import KeepPolicy
from spark_jobs.pipeline import PipelineConfig


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
    cfg = ExactDedupConfig(normalise=["trailing_whitespace", "strip", "lowercase"], keep=["doc_id asc"])
    marked = mark_duplicates(df, cfg)
    assert sorted(r.doc_id for r in kept_rows(marked).collect()) == ["d1", "d5"]
    assert ExactDedupConfig(keep=["nope desc"]).validate() and ExactDedupConfig(normalise=["x"]).validate()
    # The pipeline's keyword form, with the old name of `keep`.
    marked = mark_duplicates(df, normalise=["trailing_whitespace", "strip", "lowercase"], order_by=["doc_id asc"])
    assert sorted(r.doc_id for r in kept_rows(marked).collect()) == ["d1", "d5"]
    # enabled: false marks no duplicate.
    assert kept_rows(mark_duplicates(df, ExactDedupConfig(enabled=False))).count() == 5


def test_order_by_is_the_old_name_of_keep():
    assert ExactDedupConfig(order_by=["doc_id desc"]).keep_policy() == KeepPolicy.parse(["doc_id desc"])
    assert ExactDedupConfig(order_by=["nope desc"]).validate() == ["order_by[0]: 'nope' is not a column of files"]
    # conf/spark/pipeline.yaml sets `keep`: the command line wins.
    cfg = load_config(PipelineConfig, CONF_DIR / "spark" / "pipeline.yaml",
                      overrides={"exact_dedup.keep": '["doc_id desc"]', "stages": "exact_dedup"}).exact_dedup
    assert cfg.keep_policy() == KeepPolicy.parse(["doc_id desc"])
    cfg = load_config(PipelineConfig,
                      overrides={"exact_dedup.order_by": '["doc_id desc"]', "stages": "exact_dedup"}).exact_dedup
    assert cfg.keep_policy() == KeepPolicy.parse(["doc_id desc"])
    both = ExactDedupConfig(keep=["doc_id desc"], order_by=["stars asc"]).validate()
    assert any(p.startswith("order_by: the old name of keep") for p in both)
