"""bench/dedup.py: its labels come from a similarity neither dedup system computes; scoring and fits."""

from __future__ import annotations

import re

import pytest

from bench.dedup import evaluate, fit, label_similarity, lexical_tokens
from spark_jobs import minhash


def _handlers(n: int) -> str:
    return "".join(f"def handler_{i}(request, context):\n    value = request.get('field_{i}', {i})\n"
                   f"    if value > {i * 3}:\n        return context.reply(value * {i + 1}, status='ok_{i}')\n"
                   f"    return None\n" for i in range(n))


def _classes(n: int) -> str:
    return "".join(f"class Store{i}:\n    items = []\n\n    @staticmethod\n    def total_{i}(rows):\n"
                   f"        s = 0\n        for r in rows:\n            s += r[{i}] ** 2\n        return s / {i + 2}\n"
                   for i in range(n))


def _codemill_jaccard(a: str, b: str) -> float:
    """What codemill's near dedup verifies with: Jaccard of 5-gram sets of its normalised code tokens."""
    sa, sb = minhash.shingle_sets([a, b], 5)
    return minhash.jaccard(sa, sb)


def _word_5gram_jaccard(a: str, b: str) -> float:
    """The set similarity datatrove's MinHash estimates: 5-grams of lowercased words, punctuation dropped."""
    def grams(t):
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_labels_differ_from_what_either_system_computes():
    original = _handlers(6) + _classes(6)
    # The same two halves in the other order: every 5-gram set is (almost) unchanged, the token sequence is not.
    reordered = _classes(6) + _handlers(6)
    assert _codemill_jaccard(original, reordered) > 0.9 and _word_5gram_jaccard(original, reordered) > 0.9
    assert label_similarity(original, reordered) < 0.75
    # Renamed identifiers: most 5-grams change, the token sequence keeps its shape.
    renamed = re.sub(r"\b(request|context|value|rows|items)\b", lambda m: m.group(1)[:3] + "_x", original)
    assert _codemill_jaccard(original, renamed) < 0.5 and _word_5gram_jaccard(original, renamed) < 0.5
    assert label_similarity(original, renamed) > 0.75
    assert label_similarity(original, original) == 1.0 and label_similarity(original, "") == 0.0


def test_lexical_tokens_keep_punctuation_and_case():
    assert lexical_tokens("x = Foo(a, 1)") == ["x", "=", "Foo", "(", "a", ",", "1", ")"]


def test_evaluate_and_fit():
    pairs = [("a", "b", 0.9), ("c", "d", 0.75), ("e", "f", 0.5)]
    assign = {"a": 1, "b": 1, "c": 2, "d": 3, "e": 4, "f": 4}
    at7, at8 = evaluate(assign, pairs, 0.7), evaluate(assign, pairs, 0.8)
    assert (at7["tp"], at7["fp"], at7["fn"]) == (1, 1, 1) and at7["f1"] == pytest.approx(0.5)
    assert (at8["tp"], at8["fp"], at8["fn"]) == (1, 1, 0)
    f = fit([10, 20, 40], [12, 22, 42])
    assert f["fixed_s"] == pytest.approx(2) and f["marginal_s_per_mb"] == pytest.approx(1)
    assert 0.8 < f["growth_exponent"] < 1.0
