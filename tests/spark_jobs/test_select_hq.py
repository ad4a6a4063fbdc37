"""Selection: each language gets its phase-1 share of the token budget, best-scored files first."""

from __future__ import annotations

import random

import pytest

from spark_jobs.select_hq import attach_files, select_top_per_language, selection_stats


@pytest.fixture(scope="module")
def scores(spark):
    rng = random.Random(0)
    rows = []
    # Unequal languages (python 60%, java 30%, go 10% of files) with ties in scores and skewed sizes.
    for i in range(3000):
        lang = rng.choices(["python", "java", "go"], weights=[6, 3, 1])[0]
        score = round(rng.gauss(0.0 if lang != "go" else 1.0, 1.0), 2)  # rounded: many ties
        rows.append((f"d{i}", lang, score, rng.randint(20, 2000)))
    return spark.createDataFrame(rows, "doc_id string, lang string, score double, n_tokens long")


def per_lang(rows):
    out = {}
    for r in rows:
        out.setdefault(r["lang"], []).append(r)
    return out


@pytest.mark.parametrize("fraction", [0.05, 0.5])
def test_selection_meets_budget_and_language_mix(scores, fraction):
    everything = scores.collect()
    total = sum(r["n_tokens"] for r in everything)
    budget = int(fraction * total)
    selected = scores.transform(select_top_per_language, token_budget=budget, repeat=4, n_buckets=50).collect()
    assert len({r["doc_id"] for r in selected}) == len(selected)
    assert {r["repeat"] for r in selected} == {4}
    chosen = {r["doc_id"] for r in selected}
    for lang, rows in per_lang(everything).items():
        lang_tokens = sum(r["n_tokens"] for r in rows)
        share = lang_tokens / total * budget
        picked = [r for r in rows if r["doc_id"] in chosen]
        got = sum(r["n_tokens"] for r in picked)
        # Stated tolerance: at least the language's share, less than the share plus its largest file.
        assert share <= got < share + max(r["n_tokens"] for r in rows), lang
        # Best first: nothing left out scores above anything taken.
        left = [r["score"] for r in rows if r["doc_id"] not in chosen]
        assert not left or max(left) <= min(r["score"] for r in picked), lang
    mix_total = sum(r["n_tokens"] for r in selected)
    for lang, rows in per_lang(selected).items():
        phase1 = sum(r["n_tokens"] for r in everything if r["lang"] == lang) / total
        assert abs(sum(r["n_tokens"] for r in rows) / mix_total - phase1) < 0.02, lang


def test_budget_beyond_corpus_takes_everything(scores):
    total = sum(r["n_tokens"] for r in scores.collect())
    selected = scores.transform(select_top_per_language, token_budget=10 * total, n_buckets=20)
    assert selected.count() == scores.count()


def test_attach_files_and_stats(spark, scores):
    files = spark.createDataFrame([("d0", "r0", "a.py", "print(0)"), ("d1", "r1", "b.py", "print(1)")],
                                  "doc_id string, repo string, path string, content string")
    selected = scores.where("doc_id IN ('d0', 'd1')").transform(select_top_per_language, token_budget=10**9)
    out = selected.transform(attach_files, files)
    assert out.columns == ["doc_id", "lang", "repo", "path", "content", "score", "n_tokens", "repeat"]
    assert {r["content"] for r in out.collect()} == {"print(0)", "print(1)"}
    stats = {r["lang"]: r for r in selection_stats(scores, out, token_budget=10**9).collect()}
    assert sum(r["files"] for r in stats.values()) == 2
