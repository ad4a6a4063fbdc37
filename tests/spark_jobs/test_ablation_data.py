"""The ablation's data variants (spark_jobs/ablation_data.py): the random-selection control matches the
annotator's selection in tokens per language and repeats but not in files; repository-only documents mix languages."""

from __future__ import annotations

import random

from spark_jobs.ablation_data import MIXED, random_scores, repository_documents, selection


def test_random_control_has_the_selections_tokens_per_language_but_other_files(spark):
    rng = random.Random(1)
    rows = [(f"d{i}", lang, rng.random(), rng.randint(50, 400)) for i, lang in
            enumerate(rng.choices(["python", "java", "c"], weights=[5, 3, 2], k=1200))]
    scores = spark.createDataFrame(rows, "doc_id string, lang string, score double, n_tokens long")
    files = spark.createDataFrame([(d, lang, "r", f"{d}.x", f"text {d}") for d, lang, _, _ in rows],
                                  "doc_id string, lang string, repo string, path string, content string")
    budget = 20_000
    top = selection(scores, files, token_budget=budget, repeat=4).collect()
    ctl = selection(random_scores(scores, seed=7), files, token_budget=budget, repeat=4).collect()
    again = selection(random_scores(scores, seed=7), files, token_budget=budget, repeat=4).collect()
    assert sorted(r["doc_id"] for r in ctl) == sorted(r["doc_id"] for r in again)  # seeded: reproducible
    for lang in ("python", "java", "c"):
        t = sum(r["n_tokens"] for r in top if r["lang"] == lang)
        c = sum(r["n_tokens"] for r in ctl if r["lang"] == lang)
        assert abs(t - c) <= 400  # both stop at the language's budget, within one file
    assert {r["repeat"] for r in top} == {r["repeat"] for r in ctl} == {4}
    top_ids, ctl_ids = {r["doc_id"] for r in top}, {r["doc_id"] for r in ctl}
    assert len(top_ids & ctl_ids) < 0.5 * len(top_ids)  # the ranking is gone
    best = {d for d, _, s, _ in rows if s > 0.9}
    assert len(top_ids & best) > 3 * len(ctl_ids & best)


def test_repository_only_documents_mix_the_languages_of_a_repository(spark):
    files = spark.createDataFrame(
        [("a1", "python", "repoA", "a.py", "print(1)"), ("a2", "c", "repoA", "a.c", "int x;"),
         ("a3", "python", "repoA", "b.py", "print(2)"), ("b1", "java", "repoB", "B.java", "class B {}")],
        "doc_id string, lang string, repo string, path string, content string")
    docs = {r["repo"]: r for r in repository_documents(files).collect()}
    assert set(docs) == {"repoA", "repoB"}
    assert docs["repoA"]["lang"] == MIXED and sorted(docs["repoA"]["doc_ids"]) == ["a1", "a2", "a3"]
    assert "int x;" in docs["repoA"]["text"] and "print(2)" in docs["repoA"]["text"]
