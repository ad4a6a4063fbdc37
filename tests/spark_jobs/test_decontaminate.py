"""spark_jobs/decontaminate.py and spark_jobs/benchmark_index.py: n-gram overlap, short-solution substring match,
benchmark loading, the cached index."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from codemill import schemas
from codemill.config import REPO_ROOT, ConfigError
from spark_jobs import benchmark_index as bi
from spark_jobs import decontaminate as dc
from spark_jobs.benchmark_index import (
    benchmark_texts,
    build_index,
    match_text,
    ngram_hashes,
    token_ids,
    window_hashes,
)
from spark_jobs.decontaminate import (
    DecontaminateConfig,
    benchmark_hits,
    clean_rows,
    find_contamination,
    load_benchmarks,
)

SOLUTION = ("def running_max(values):\n    best = None\n    out = []\n    for v in values:\n"
            "        best = v if best is None or v > best else best\n        out.append(best)\n    return out\n")
SHORT = "return sorted(set(l1) & set(l2), key=abs)"


def test_match_text_overlap_and_short_substring():
    texts = [("bench", "T/1", "canonical_solution", SOLUTION), ("bench", "T/2", "canonical_solution", SHORT)]
    idx = build_index(texts, ngram=10, min_short_chars=20)
    # reformatted copy (other whitespace, extra code around it) still matches on word n-grams
    copy = "import x\n\n" + SOLUTION.replace("    ", "\t") + "\nprint(running_max([1, 3, 2]))\n"
    hits = match_text(copy, idx, ngram=10, min_overlap=0.5, min_matched=1)
    assert [(h[1], h[3], h[6]) for h in hits] == [("T/1", "ngram", 1.0)]
    half = "\n".join(SOLUTION.splitlines()[:3])
    assert not match_text(half, idx, ngram=10, min_overlap=0.5, min_matched=1)
    hits = match_text(f"def common(l1, l2):\n    {SHORT}\n", idx, ngram=10, min_overlap=0.5, min_matched=1)
    assert [(h[1], h[3]) for h in hits] == [("T/2", "substring")]
    # same tokens, different punctuation: the token hash matches but the text does not
    assert not match_text("return sorted set l1 set l2 key abs", idx, ngram=10, min_overlap=0.5, min_matched=1)


def test_find_contamination_dataframe(spark):
    bench = spark.createDataFrame([("bench", "T/1", "canonical_solution", SOLUTION)], schemas.BENCHMARKS)
    files = spark.createDataFrame([
        ("a", "repo", SOLUTION + "\n# more\n"), ("b", "repo", "def unrelated():\n    return 42\n"),
    ], "doc_id string, repo string, content string")
    hits = find_contamination(files, bench, ngram=5).collect()
    assert [(h.doc_id, h.benchmark, h.task_id, h.overlap) for h in hits] == [("a", "bench", "T/1", 1.0)]
    assert hits[0].matched_ngrams == hits[0].total_ngrams > 0
    assert [r.doc_id for r in clean_rows(files, spark.createDataFrame(hits)).collect()] == ["b"]


def test_shipped_benchmarks_load_and_humaneval_is_found(tmp_path):
    user = tmp_path / "mine.jsonl"
    user.write_text(json.dumps({"task_id": "mine/1", "prompt": "def secret_task(a, b):\n", "solution": SOLUTION})
                    + "\n")
    cfg = DecontaminateConfig(user_files=[str(user)], user_text_fields=["solution"])
    texts = benchmark_texts(cfg.benchmarks())
    names = {t[0] for t in texts}
    assert {"humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "bigcodebench", "evoeval", "ds1000", "humaneval_x",
            "multi_humaneval", "mbxp", "multipl_e", "mine"} <= names
    with gzip.open(REPO_ROOT / "data/benchmarks/humaneval/HumanEval.jsonl.gz", "rt") as fh:
        task = json.loads(fh.readline())
    he = [t for t in texts if t[0] in ("humaneval", "mine")]
    idx = build_index(he, ngram=10, min_short_chars=50)
    hits = match_text(task["prompt"] + task["canonical_solution"], idx, ngram=10, min_overlap=0.5, min_matched=1)
    assert {(h[1], h[2]) for h in hits} == {("HumanEval/0", "prompt"), ("HumanEval/0", "canonical_solution")}
    assert DecontaminateConfig(ngram=1).validate()


def test_index_is_built_once_cached_on_disk_and_keyed_by_content(spark, tmp_path, monkeypatch):
    for module, memo in ((bi, "_TEXTS"), (bi, "_INDEXES"), (dc, "_BENCH_DFS"), (dc, "_BROADCASTS")):
        monkeypatch.setattr(module, memo, {})  # isolate from other tests' memos
    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))
    user = tmp_path / "mine.jsonl"
    user.write_text(json.dumps({"task_id": "mine/1", "solution": SOLUTION}) + "\n")
    cfg = DecontaminateConfig(user_files=[str(user)], user_text_fields=["solution"])
    bench = load_benchmarks(spark, cfg)
    assert load_benchmarks(spark, cfg) is bench
    with gzip.open(REPO_ROOT / "data/benchmarks/humaneval/HumanEval.jsonl.gz", "rt") as fh:
        task = json.loads(fh.readline())
    # An alphabet table: single-letter tokens, the false positive docs/curation.md reports (EvoEval/24), stays out.
    table = "MAP = {" + ", ".join(f"'{chr(97 + i)}': '{'+-*/%'[i % 5]}'" for i in range(26)) + "}\n"
    files = spark.createDataFrame([("he", task["prompt"] + task["canonical_solution"]), ("mine", "x = 1\n" + SOLUTION),
                                   ("table", table), ("other", "def unrelated():\n    return 42\n")],
                                  "doc_id string, content string")
    kw = dict(ngram=cfg.ngram, min_overlap=cfg.min_overlap, min_short_chars=cfg.min_short_chars)
    hits = {(h.doc_id, h.task_id) for h in find_contamination(files, bench, **kw).collect()}
    assert {("he", "HumanEval/0"), ("mine", "mine/1")} <= hits and {h[0] for h in hits} == {"he", "mine"}
    saved = list((tmp_path / "cache" / "decontam").glob("index-*.pkl"))
    assert len(saved) == 1
    # Same process: the memoised index and broadcast; a new process: the disk copy. Neither rebuilds nor collects.
    monkeypatch.setattr(bi, "build_index", lambda *a, **k: pytest.fail("index rebuilt"))
    monkeypatch.setattr(bench, "collect", lambda: pytest.fail("benchmarks collected"))
    assert {(h.doc_id, h.task_id) for h in find_contamination(files, bench, **kw).collect()} == hits
    monkeypatch.setattr(bi, "_INDEXES", {})
    assert dc.benchmark_index(cfg).key == saved[0].stem.removeprefix("index-")
    # Another n or another benchmark file content is another index.
    key = bi.texts_key(cfg.benchmarks())
    user.write_text(json.dumps({"task_id": "mine/1", "solution": SOLUTION + "# v2\n"}) + "\n")
    assert bi.texts_key(cfg.benchmarks()) != key
    assert bi.index_key(key, 10, 50) != bi.index_key(key, 8, 50)


def test_window_hashes_equal_direct_ngram_hashes():
    ids = token_ids(SOLUTION * 3)
    windows = window_hashes(ids)
    for k in (1, 2, 9, 10, len(ids)):
        assert (windows(k) == ngram_hashes(ids, k)).all() and len(windows(k)) == len(ids) - k + 1
    assert len(windows(len(ids) + 1)) == 0 and len(window_hashes(ids[:0])(3)) == 0


def test_matching_a_text_held_in_process_equals_the_spark_matcher(spark):
    """`benchmark_hits` (synth's in-process check) gives the rows `find_contamination` gives, with one config;
    `enabled: false` finds nothing."""
    cfg = DecontaminateConfig(ngram=5, min_short_chars=20)
    texts = [("bench", "T/1", "canonical_solution", SOLUTION), ("bench", "T/2", "canonical_solution", SHORT)]
    bench = spark.createDataFrame(texts, schemas.BENCHMARKS)
    contents = {"a": SOLUTION + "\n# more\n", "b": f"def common(l1, l2):\n    {SHORT}\n", "c": "x = 1\n", "d": ""}
    files = spark.createDataFrame(list(contents.items()), "doc_id string, content string")
    want = sorted(tuple(r) for r in find_contamination(files, bench, cfg).collect())
    index = build_index(texts, ngram=cfg.ngram, min_short_chars=cfg.min_short_chars)
    got = sorted((doc, *hit) for doc, text in contents.items() for hit in benchmark_hits(text, index, cfg))
    assert got == want and {r[0] for r in want} == {"a", "b"}
    off = DecontaminateConfig(enabled=False, ngram=5, min_short_chars=20)
    assert find_contamination(files, bench, off).count() == 0 and benchmark_hits(SOLUTION, index, off) == []


def test_a_benchmark_without_files_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))
    catalogue = tmp_path / "benchmarks.yaml"
    catalogue.write_text("benchmarks:\n  - {name: gone, files: nowhere/*.jsonl.gz, fields: [prompt]}\n")
    with pytest.raises(ConfigError, match="decontaminate.benchmarks_file: gone: .*nowhere.* matches no file"):
        dc.benchmark_index(DecontaminateConfig(benchmarks_file=str(catalogue)))


def test_indexed_texts_are_unchanged_plus_the_translated_benchmarks_tests():
    """The shipped benchmarks' texts as decontamination indexed them before the benchmark catalogue
    (codemill/benchmarks.py) read them (count and sha256 prefix), in the same order, plus the tests of HumanEval-X,
    Multi-HumanEval, MBXP and MultiPL-E (issue 20 §6)."""
    texts = benchmark_texts(DecontaminateConfig().benchmarks())
    before = [t for t in texts if t[2] not in ("test", "tests")]
    assert [len(before), hashlib.sha256(json.dumps(before).encode()).hexdigest()[:16]] == [50741, 'dccaf07d0318654f']
    tests = {t[0] for t in texts if t[2] in ("test", "tests")}
    assert tests == {"humaneval_x", "multi_humaneval", "mbxp", "multipl_e"} and len(texts) == 79147


# ---------------------------------------------------------------------- beyond Python (issue 20 §6)
def _problem(file: str, task_id: str):
    from codemill.benchmarks import problems

    bench = {"humaneval_": "humaneval_x", "mb": "mbxp", "humaneval-": "multipl_e"}
    name = next(v for k, v in bench.items() if file.startswith(k))
    return next(p for p in problems(name, file=file) if p.task_id == task_id)


def _index_of(*problems_, fields=("prompt", "canonical_solution", "test"), **kw):
    texts = [(p.benchmark, p.task_id, f, p.fields[f]) for p in problems_ for f in fields if p.text(f)]
    return build_index(texts, ngram=10, min_short_chars=50, **kw)


def test_a_partial_copy_across_prompt_and_solution_is_found_as_its_task():
    """Lines 15-33 of the 39 of a HumanEval-X Go program (55% of it) hold under half of the prompt's n-grams and
    under half of the solution's, so no text alone is found; together they are the task."""
    go = _problem("humaneval_go.jsonl.gz", "Go/10")
    program = go.prompt + go.canonical_solution
    middle = "".join(program.splitlines(keepends=True)[14:33])
    assert 0.5 < len(middle) / len(program) < 0.6
    idx = _index_of(go)
    assert not match_text(middle, idx, ngram=10, min_overlap=0.5, min_matched=1)  # each text alone: below 0.5
    hits = match_text("package util\n\n" + middle, idx, ngram=10, min_overlap=0.5, min_matched=1,
                      min_task_ngrams=16)
    assert [(h[1], h[2], h[3]) for h in hits] == [("Go/10", "prompt+canonical_solution", "task")]
    assert hits[0][4] >= 16 and hits[0][5] == sum(int(idx.totals[t]) for t in range(len(idx.meta)))
    # a task already found by one of its texts is not reported again as a task
    full = match_text(program, idx, ngram=10, min_overlap=0.5, min_matched=1, min_task_ngrams=16)
    assert {h[3] for h in full} == {"ngram"}


def test_a_function_header_with_another_body_is_not_a_copy():
    """Near-miss: the task's name and parameters with a body of its own, and a call, are no contamination."""
    kt = _problem("mbkp_release_v1.2.jsonl.gz", "MBKP/87")  # a long header: 8 of its 10-grams are in the prompt
    header = next(ln for ln in kt.prompt.splitlines() if ln.startswith("fun mergeDictionariesThree"))
    near = header + "\n    return dict1 + dict2 + dict3\n}\n\nval merged = mergeDictionariesThree(a, b, c)\n"
    idx = _index_of(kt)
    assert not match_text(near, idx, ngram=10, min_overlap=0.5, min_matched=1,
                          min_task_ngrams=DecontaminateConfig().min_task_ngrams)
    assert match_text(near, idx, ngram=10, min_overlap=0.5, min_matched=1, min_task_ngrams=5)  # it is that close


def test_multipl_e_is_matched_on_its_prompt_and_tests():
    """MultiPL-E ships no solution: a copy of the evaluation program (prompt, a solution, the tests) is found by its
    tests even when only the tail of the prompt is there."""
    rb = _problem("humaneval-rb-reworded.jsonl.gz", "HumanEval_102_choose_num")
    body = "  x > y ? -1 : (y.even? ? y : (y - 1 >= x ? y - 1 : -1))\nend\n"
    copy = rb.prompt.splitlines(keepends=True)[-1] + body + rb.tests
    cfg = DecontaminateConfig()
    hits = benchmark_hits(copy, dc.benchmark_index(cfg), cfg)  # the shipped catalogue and settings
    assert ("multipl_e", "HumanEval_102_choose_num", "tests") in {h[:3] for h in hits}
    # the prompt alone would not have found it
    assert not match_text(copy, _index_of(rb, fields=("prompt",)), ngram=10, min_overlap=0.5, min_matched=1)


def test_a_solution_of_one_letter_names_is_found_as_a_substring():
    """HumanEval-X JavaScript/92's solution has no informative 10-gram (x, y, z and numbers): it is matched whole."""
    js = _problem("humaneval_js.jsonl.gz", "JavaScript/92")
    idx = _index_of(js, fields=("canonical_solution",))
    assert idx.totals[0] == 0 and len(idx.short) == 1
    content = "function check(x, y, z) {\n" + js.canonical_solution + "module.exports = check;\n"
    hits = match_text(content, idx, ngram=10, min_overlap=0.5, min_matched=1)
    assert [(h[1], h[3]) for h in hits] == [("JavaScript/92", "substring")]
    assert not match_text(content.replace("=== z", "=== w"), idx, ngram=10, min_overlap=0.5, min_matched=1)


def test_boilerplate_ngrams_shared_by_many_texts_count_for_none():
    header = "You are an expert PHP programmer and here is your task to write a function\n"
    texts = [("b", f"T/{i}", "prompt", header + f"that {w} the given list of numbers carefully") for i, w in
             enumerate(("sorts", "reverses", "shuffles"))]
    everything = build_index(texts, ngram=10, min_short_chars=50)
    specific = build_index(texts, ngram=10, min_short_chars=50, max_texts_per_ngram=2)
    assert len(specific.hashes) < len(everything.hashes) and (specific.totals < everything.totals).all()
    # the shared header alone is half of every text's n-grams with them all, none without
    assert len(match_text(header, everything, ngram=10, min_overlap=0.4, min_matched=1)) == 3
    assert not match_text(header, specific, ngram=10, min_overlap=0.4, min_matched=1)
    assert [h[1] for h in match_text(texts[1][3], specific, ngram=10, min_overlap=0.5, min_matched=1)] == ["T/1"]


def test_labelled_multilingual_set_recall_and_precision():
    """The labelled set (tests/fixtures/decontam/build.py; this repository's own code as carriers, so the test is
    the same on every machine) with the shipped benchmarks and settings: recall >= 0.98, precision >= 0.99, in 8+
    languages, and the set is deterministic."""
    from tests.fixtures.decontam import build

    roots = [str(REPO_ROOT / "spark_jobs"), str(REPO_ROOT / "codemill")]
    samples = build.samples(tasks=4, seed=3, roots=roots)
    assert build.digest(build.samples(tasks=4, seed=3, roots=roots)) == build.digest(samples)
    assert {s.kind for s in samples} == set(build.POSITIVE_KINDS + build.NEGATIVE_KINDS)
    assert len({s.language for s in samples if s.label}) >= 8
    cfg = DecontaminateConfig()
    index = dc.benchmark_index(cfg)
    flagged = [bool(benchmark_hits(s.content, index, cfg)) for s in samples]
    tp = sum(f for s, f in zip(samples, flagged) if s.label)
    fp = sum(f for s, f in zip(samples, flagged) if not s.label)
    positives = sum(s.label for s in samples)
    assert tp / positives >= 0.98 and tp / (tp + fp) >= 0.99, (tp, positives, fp)
