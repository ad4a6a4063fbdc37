"""bench/phase1.py: the corpus's planted parts and the scoring (a whole run, even at 0.5 MB, takes ~4 minutes on
2 cores: two Spark processes and datatrove's index of the benchmark catalogue)."""

from __future__ import annotations

import random

import pytest

from bench.phase1 import benchmark_copies, build_phase1_corpus, merge_exact, rejected_file, score, warm_sample


def test_rejected_files_are_unique_and_break_a_heuristic():
    rng = random.Random(0)
    files = [rejected_file(k, rng) for k in range(6)]
    assert len(set(files)) == 6
    assert max(len(ln) for ln in files[0].splitlines()) > 1000  # max_line_length
    assert max(len(ln) for ln in files[1].splitlines()) > 1024  # encoded_data (a base64 blob)
    assert "DO NOT EDIT" in files[2][:500]  # auto_generated


def test_benchmark_copies_hold_a_whole_problem():
    copies = benchmark_copies(4, ["def carrier():\n    return 1\n"])
    assert all(c.startswith("def carrier()") for c in copies)
    assert "def has_close_elements" in copies[0] and copies[1].count("\n# ") >= 1


def test_merge_exact_and_score():
    near = {"a": 1, "b": 1, "c": 2}
    assign = merge_exact(near, [("a2", "a"), ("e2", "e")])
    assert assign["a2"] == 1 and assign["e"] == assign["e2"] == "exact:e"
    planted = {"benchmark_copies": ["c1", "c2"], "rejects": ["r1"], "exact": [["a2", "a"], ["e2", "e"]]}
    pairs = [("a", "b", 0.9), ("c", "d", 0.8), ("e", "f", 0.3), ("r1", "b", 0.9)]
    s = score(assign, pairs, removed={"b", "a2", "c1", "x"}, planted=planted, contaminated={"c1", "x"},
              filtered_out={"r1"})
    # (r1, b) is left out: r1 never reaches codemill's dedup. (a, b) tp, (c, d) fn, (e, f) tn.
    assert s["pairs_scored"] == 3 and s["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["decontam_recall"] == 0.5 and s["decontam_other_removed"] == 1
    assert s["rejects_removed"] == 0 and s["exact_removed"] == 1


@pytest.mark.bench
def test_corpus_has_every_planted_kind():
    records, pairs, planted = build_phase1_corpus(300_000, seed=1)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) and all(r["text"] and r["repo"] and r["path"] for r in records)
    assert pairs and all(len(v) >= 1 for v in planted.values())
    by_id = {r["id"]: r["text"] for r in records}
    texts = {}
    for i, t in by_id.items():
        texts.setdefault(t, []).append(i)
    assert all(by_id[x] == by_id[o] and len(texts[by_id[x]]) == 2 for x, o in planted["exact"])
    assert all(len(texts[by_id[c]]) == 1 for c in planted["benchmark_copies"])  # carriers are new files
    assert 0 < len(warm_sample(records)) < len(records) / 4
