from __future__ import annotations

import pytest

from spark_jobs.mixtures import PhaseConfig, SourceConfig, boost_weight, source_documents, weight_documents


def test_boost_weight_reaches_the_target_share():
    tokens = {("hq", "python"): 100, ("hq", "java"): 300, ("syn", "python"): 50, ("syn", "go"): 150}
    w = boost_weight(tokens, lang="python", share=0.5, boost_sources=["hq"])
    python = w * 100 + 50
    assert python / (python + 450) == pytest.approx(0.5)
    # Already above the share through the fixed sources alone: weight clipped at 0, never negative.
    assert boost_weight({("hq", "python"): 10, ("syn", "python"): 900, ("syn", "go"): 100}, lang="python",
                        share=0.5, boost_sources=["hq"]) == 0.0
    with pytest.raises(ValueError, match="boost_lang"):
        boost_weight({("hq", "java"): 10}, lang="python", share=0.5, boost_sources=["hq"])


def test_weight_documents_replicates_and_subsamples_only_the_boosted_rows(spark):
    rows = [(f"k{i}", "hq" if i % 2 else "syn", "python" if i % 3 else "go", "x") for i in range(3000)]
    df = spark.createDataFrame(rows, "doc_key string, source string, lang string, text string")
    out = [r.asDict() for r in weight_documents(df, weight=2.25, lang="python", sources=["hq"], seed=3).collect()]
    counts: dict[tuple[str, str], int] = {}
    copies: dict[str, list[int]] = {}
    for r in out:
        counts[(r["source"], r["lang"])] = counts.get((r["source"], r["lang"]), 0) + 1
        copies.setdefault(r["doc_key"], []).append(r["copy"])
    n_boost = sum(1 for r in rows if r[1] == "hq" and r[2] == "python")
    assert counts[("hq", "go")] == sum(1 for r in rows if r[1] == "hq" and r[2] == "go")
    assert counts[("syn", "python")] == sum(1 for r in rows if r[1] == "syn" and r[2] == "python")
    assert abs(counts[("hq", "python")] / n_boost - 2.25) < 0.05  # fractional part by seeded Bernoulli
    boosted = {r[0] for r in rows if r[1] == "hq" and r[2] == "python"}
    assert {tuple(sorted(copies[k])) for k in boosted} == {(0, 1), (0, 1, 2)}
    assert all(copies[r[0]] == [0] for r in rows if r[0] not in boosted)
    again = weight_documents(df, weight=2.25, lang="python", sources=["hq"], seed=3).collect()
    assert sorted(tuple(r) for r in again) == sorted(tuple(r.values()) for r in out)
    kept = weight_documents(df, weight=0.0, lang="python", sources=["hq"], seed=3).select("doc_key").collect()
    assert {r["doc_key"] for r in kept} == {r[0] for r in rows} - boosted  # weight 0 drops exactly those


def test_source_documents_unifies_columns_and_applies_the_predicate(spark):
    df = spark.createDataFrame([("a", "Python", "print(1)", "accepted"), ("b", "go", "x", "rejected"),
                                ("c", None, None, "accepted")],
                               "synth_id string, lang string, content string, status string")
    out = source_documents(df, table="synthetic", text_column="content", key_column="synth_id",
                           where="status = 'accepted'")
    assert out.columns == ["doc_key", "source", "lang", "text", "special_offsets"]
    assert [tuple(r) for r in out.collect()] == [("a", "synthetic", "python", "print(1)", [])]


def test_source_documents_carries_separator_offsets_and_names_a_missing_column(spark):
    df = spark.createDataFrame([("d", "go", "<|repo_name|>r\n", [0])],
                               "document_id string, lang string, text string, special_offsets array<int>")
    out = source_documents(df, table="documents", text_column="text", key_column="document_id",
                           special_offsets_column="special_offsets")
    assert out.first()["special_offsets"] == [0]
    with pytest.raises(ValueError, match="documents: no column 'special_offsets'"):
        source_documents(df.drop("special_offsets"), table="documents", text_column="text",
                         key_column="document_id", special_offsets_column="special_offsets")


def test_phase_config_validation_names_keys():
    bad = PhaseConfig(name="phase7", sources=[SourceConfig(table="")], repeat=0, boost_share=1.5,
                      boost_sources=["nope"])
    problems = "\n".join(bad.validate())
    for key in ("name:", "repeat:", "boost_share:", "boost_sources:", "sources[0].table:"):
        assert key in problems
    assert PhaseConfig(name="phase2", sources=[SourceConfig()], repeat=4).validate() == []


def test_shipped_phases_declare_the_paper_recipe():
    from codemill.config import CONF_DIR, parse_config
    from spark_jobs.tokenize_shards import TokenizeConfig

    cfg = parse_config(TokenizeConfig, ["--config", str(CONF_DIR / "spark" / "tokenize.yaml")],
                       default_config_files=[CONF_DIR / "spark" / "phases.yaml"])
    phases = {p.name: p for p in cfg.phases}
    assert [s.table for s in phases["phase1"].sources] == ["documents"]
    assert phases["phase1"].sources[0].special_offsets_column == "special_offsets"
    assert phases["phase2"].repeat == 4 and [s.table for s in phases["phase2"].sources] == ["selected_hq"]
    p3 = phases["phase3"]
    assert p3.boost_lang == "python" and p3.boost_share == 0.5
    assert {s.table for s in p3.sources} == {"synthetic", "selected_hq"}
    assert next(s for s in p3.sources if s.table == "synthetic").where == "status = 'accepted'"
    assert cfg.seq_len == 8192 and cfg.tokenizer.vocab_size == 64000
