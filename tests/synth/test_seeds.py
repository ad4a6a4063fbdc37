from __future__ import annotations

from synth.seeds import filter_seeds, seed_text

ROWS = [(f"{lang}-{i}", lang, float(i), "\n".join(f"line {j} of {lang}-{i}" for j in range(40)))
        for lang in ("python", "java") for i in range(10)]


def _df(spark):
    return spark.createDataFrame(ROWS, "doc_id string, lang string, score double, content string")


def test_percentile_quota_languages_and_shards(spark):
    df = _df(spark)
    top = {r.doc_id for r in filter_seeds(df, min_percentile=0.7).collect()}
    assert top == {f"{lang}-{i}" for lang in ("python", "java") for i in (7, 8, 9)}
    quota = filter_seeds(df, quota_per_language={"python": 2}, default_quota=1).collect()
    assert sorted(r.doc_id for r in quota) == ["java-9", "python-8", "python-9"]
    assert {r.lang for r in filter_seeds(df, languages=["java"]).collect()} == {"java"}
    shards = [{r.doc_id for r in filter_seeds(df, num_shards=3, shard_index=i).collect()} for i in range(3)]
    assert sum(len(s) for s in shards) == 20 and set().union(*shards) == {r[0] for r in ROWS}


def test_snippet_mode_takes_a_deterministic_span_of_lines(spark):
    df = _df(spark)
    a = {r.doc_id: r.seed_text for r in seed_text(df, mode="snippet", min_lines=2, max_lines=5).collect()}
    b = {r.doc_id: r.seed_text for r in seed_text(df, mode="snippet", min_lines=2, max_lines=5).collect()}
    assert a == b
    content = {r[0]: r[3] for r in ROWS}
    spans = set()
    for doc, text in a.items():
        lines = text.split("\n")
        assert 2 <= len(lines) <= 5
        assert text in content[doc]  # consecutive lines of the file
        spans.add(len(lines))
    assert len(spans) > 1  # lengths vary with the doc_id
    other = {r.doc_id: r.seed_text for r in seed_text(df, mode="snippet", min_lines=2, max_lines=5, seed=1).collect()}
    assert other != a


def test_file_mode_truncates(spark):
    rows = seed_text(_df(spark), mode="file", max_chars=30).collect()
    assert all(len(r.seed_text) == 30 and r.seed_text.startswith("line 0") for r in rows)
    assert rows[0].asDict().keys() == {"doc_id", "lang", "score", "seed_text"}
