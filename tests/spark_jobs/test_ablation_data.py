"""The ablation's data variants (spark_jobs/ablation_data.py): selections are filled greedily per language within
their budget; the random-selection control matches the annotator's selection in LM tokens per language and repeats
but not in files; repository-only documents mix languages."""

from __future__ import annotations

import json
import random

import pytest

from codemill.lake import Lineage
from spark_jobs.ablation_data import (
    MIXED,
    build_table,
    file_lm_tokens,
    greedy_fill,
    random_control,
    repository_documents,
    tokens_per_language,
    top_selection,
)
from trainer.ablate.config import TableSpec

LANGS = ("python", "java", "c")


def _uneven_counts(spark, *, seed: int = 1):
    """Per language ~250 small files (30-2,000 tokens) and 6 big ones (50k-160k tokens): the demo lake's shape, where
    one big file past a 48k budget used to double a selection."""
    rng = random.Random(seed)
    rows = []
    for lang in LANGS:
        sizes = [rng.randint(30, 2000) for _ in range(250)] + [rng.randint(50_000, 160_000) for _ in range(6)]
        rows += [(f"{lang}{i}", lang, rng.random(), n) for i, n in enumerate(sizes)]
    return rows, spark.createDataFrame(rows, "doc_id string, lang string, score double, n_tokens long")


def test_greedy_fill_skips_a_file_that_would_overflow_and_goes_on_with_smaller_ones(spark):
    ranked = spark.createDataFrame(
        [("a", "x", 0.9, 4), ("b", "x", 0.8, 8), ("c", "x", 0.7, 3), ("d", "x", 0.6, 5), ("e", "x", 0.5, 2),
         ("f", "y", 0.9, 20), ("g", "y", 0.1, 1), ("h", "z", 0.5, 1)],
        "doc_id string, lang string, score double, n_tokens long")
    budgets = spark.createDataFrame([("x", 10.0), ("y", 5.0)], "lang string, budget double")
    got = greedy_fill(ranked, budgets, repeat=3).collect()
    # x: a (4), b overflows, c (7), d overflows, e (9); y: f overflows, g; z has no budget
    assert sorted(r["doc_id"] for r in got) == ["a", "c", "e", "g"]
    assert {r["repeat"] for r in got} == {3}


def test_random_control_matches_the_selections_tokens_per_language_with_big_uneven_files(spark):
    rows, counts = _uneven_counts(spark)
    budget = 48_000
    top = top_selection(counts, token_budget=budget, repeat=4)
    ctl = random_control(counts, top, seed=7, repeat=4)
    top_rows, ctl_rows = top.collect(), ctl.collect()
    again = random_control(counts, top, seed=7, repeat=4).collect()
    assert sorted(r["doc_id"] for r in ctl_rows) == sorted(r["doc_id"] for r in again)  # seeded: reproducible
    sel_tokens, ctl_tokens = tokens_per_language(top), tokens_per_language(ctl)
    lang_total = {lang: sum(n for _, lg, _, n in rows if lg == lang) for lang in LANGS}
    for lang in LANGS:
        share = budget * lang_total[lang] / sum(lang_total.values())
        # the selection never passes its language's share, and misses it by less than one small file
        assert share - 2000 < sel_tokens[lang] <= share
        # the control: within 5% of the selection's actual tokens (and never above them)
        assert 0.95 * sel_tokens[lang] <= ctl_tokens[lang] <= sel_tokens[lang], (lang, sel_tokens, ctl_tokens)
    assert {r["repeat"] for r in top_rows} == {r["repeat"] for r in ctl_rows} == {4}
    top_ids, ctl_ids = {r["doc_id"] for r in top_rows}, {r["doc_id"] for r in ctl_rows}
    assert len(top_ids & ctl_ids) < 0.5 * len(top_ids)  # the ranking is gone
    best = {d for d, _, s, _ in rows if s > 0.8}
    assert len(top_ids & best) > 2 * len(ctl_ids & best)


@pytest.fixture
def word_tokenizer(tmp_path):
    """A tokenizer with one token per whitespace-separated word (+ end of document): LM counts are easy to state."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "w": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_tables_count_lm_tokens_and_record_the_controls_match(spark, lake, word_tokenizer):
    rng = random.Random(3)
    sizes = {f"{lang}{i}": (lang, rng.randint(10, 300) if i % 25 else rng.randint(3000, 6000))
             for lang in LANGS for i in range(100)}
    # The annotator's n_tokens (WordPiece) are deliberately wrong: the budget counts the LM tokenizer's.
    lake.overwrite("scores", lake.spark.createDataFrame(
        [(d, lang, rng.random(), 1) for d, (lang, _) in sizes.items()], "doc_id string, lang string, score double, "
        "n_tokens long"), lineage=Lineage("test", "x", {}))
    lake.overwrite("clean", lake.spark.createDataFrame(
        [(d, lang, "r", f"{d}.x", " ".join(["w"] * n)) for d, (lang, n) in sizes.items()],
        "doc_id string, lang string, repo string, path string, content string"), lineage=Lineage("test", "x", {}))
    counted = file_lm_tokens(spark, lake.read("clean"), tokenizer=word_tokenizer)
    top = build_table(lake, TableSpec(name="ablate_top", kind="top_selection", token_budget=6000),
                      Lineage("test", "x", {}), file_tokens=counted)
    ctl = build_table(lake, TableSpec(name="ablate_ctl", kind="random_selection", token_budget=6000, seed=7),
                      Lineage("test", "x", {}), file_tokens=counted)
    assert ctl["matched_to_per_language"] == top["tokens_per_language"]
    lm = {lang: sum(n + 1 for lg, n in sizes.values() if lg == lang) for lang in LANGS}
    for lang in LANGS:
        share = 6000 * lm[lang] / sum(lm.values())
        t, c = top["tokens_per_language"][lang], ctl["tokens_per_language"][lang]
        assert share - 301 < t <= share and 0.95 * t <= c <= t, (lang, share, t, c)
    written = {r["doc_id"]: r for r in lake.read("ablate_ctl").collect()}
    assert all(r["n_tokens"] == sizes[d][1] + 1 for d, r in written.items())  # words + end of document
    assert sum(r["n_tokens"] for r in written.values()) == sum(ctl["tokens_per_language"].values())
    json.dumps(ctl)  # recorded in the data step's output line


def test_repository_only_documents_mix_the_languages_of_a_repository(spark):
    files = spark.createDataFrame(
        [("a1", "python", "repoA", "a.py", "print(1)"), ("a2", "c", "repoA", "a.c", "int x;"),
         ("a3", "python", "repoA", "b.py", "print(2)"), ("b1", "java", "repoB", "B.java", "class B {}")],
        "doc_id string, lang string, repo string, path string, content string")
    docs = {r["repo"]: r for r in repository_documents(files).collect()}
    assert set(docs) == {"repoA", "repoB"}
    assert docs["repoA"]["lang"] == MIXED and sorted(docs["repoA"]["doc_ids"]) == ["a1", "a2", "a3"]
    assert "int x;" in docs["repoA"]["text"] and "print(2)" in docs["repoA"]["text"]
