"""codemill/benchmarks.py: the benchmark catalogue that decontamination, the alignment set and evaluation read."""

from __future__ import annotations

import gzip
import json

import pytest

from codemill import benchmarks
from codemill.benchmarks import (
    Benchmark,
    MissingBenchmarkFiles,
    folder_benchmark,
    load_catalogue,
    problems,
    read_records,
    user_benchmarks,
)


def test_every_catalogue_benchmark_has_problems():
    catalogue = load_catalogue()
    assert {b.name for b in catalogue} >= {"humaneval", "humaneval_plus", "mbpp", "mbpp_sanitized", "mbpp_plus",
                                           "bigcodebench", "evoeval", "ds1000", "humaneval_x", "multi_humaneval",
                                           "mbxp", "multipl_e"}
    for bench in catalogue:
        assert bench.problems(), bench.name


def test_one_record_type_for_every_consumer():
    first = problems("humaneval")[0]
    assert (first.benchmark, first.task_id, first.language, first.entry_point) == (
        "humaneval", "HumanEval/0", "python", "has_close_elements")
    assert first.solution == first.prompt + first.canonical_solution and "def check(candidate)" in first.tests
    mbpp = problems("mbpp")[0]  # MBPP ships whole functions and a list of asserts
    assert mbpp.prompt == "" and mbpp.solution == mbpp.canonical_solution == mbpp.fields["code"]
    assert mbpp.tests == "\n".join(mbpp.fields["test_list"])
    ds = problems("ds1000")[3]  # no id field: "<benchmark>/<record number>"
    assert ds.task_id == "ds1000/3" and ds.solution == ds.fields["reference_code"]
    assert problems("humaneval_x")[0].language == "cpp"  # `language: task_id`: CPP/0
    assert {p.language for p in problems("mbxp")} >= {"python", "java", "kotlin", "ruby", "typescript", "csharp"}
    assert {p.language for p in problems("multipl_e")} >= {"racket", "go", "haskell", "julia", "shell"}
    combine = problems("evoeval", file="EvoEval_combine.jsonl.gz")
    assert len(combine) == 100 and {p.path.rsplit("/", 1)[-1] for p in combine} == {"EvoEval_combine.jsonl.gz"}


def test_user_files_folders_and_missing_files(tmp_path):
    path = tmp_path / "mine.v1.jsonl"
    path.write_text(json.dumps({"task_id": 7, "prompt": "def f():\n", "solution": "    return 1\n"}) + "\n\n"
                    + json.dumps({"prompt": "def g():\n"}) + "\n")
    mine, = user_benchmarks([str(path)], text_fields=["prompt", "solution"])
    got = mine.problems()
    assert mine.name == "mine" and [p.task_id for p in got] == ["7", "mine/1"]
    assert got[0].text("solution") == "    return 1\n" and got[1].text("solution") is None
    (tmp_path / "folder").mkdir()
    with gzip.open(tmp_path / "folder" / "b.json.gz", "wt") as fh:  # a JSON array; format told by the file name
        json.dump([{"task_id": "x", "code": "print(1)\n"}], fh)
    (tmp_path / "folder" / "a.jsonl").write_text(json.dumps({"task_id": "y", "code": "print(2)\n"}) + "\n")
    folder = folder_benchmark("folder", str(tmp_path))
    assert [(p.task_id, p.solution) for p in folder.problems()] == [("y", "print(2)\n"), ("x", "print(1)\n")]
    assert read_records(tmp_path / "folder" / "a.jsonl") == [{"task_id": "y", "code": "print(2)\n"}]
    with pytest.raises(MissingBenchmarkFiles, match="gone: .* matches no file"):
        Benchmark("gone", "nowhere/*.jsonl", root=str(tmp_path)).problems()
    with pytest.raises(KeyError, match="no benchmark 'nope'"):
        problems("nope")
    assert benchmarks.DATA_DIR.is_dir() and benchmarks.CATALOGUE_FILE.is_file()


def test_translated_benchmarks_are_compared_on_their_tests_too():
    """HumanEval-X, Multi-HumanEval, MBXP and MultiPL-E compare their tests (MultiPL-E ships no solution: prompt and
    tests are what its tasks are recognised by); the Python originals keep prompts and solutions only."""
    fields = {b.name: b.text_fields for b in load_catalogue()}
    assert fields["multipl_e"] == ("prompt", "tests")
    assert all(fields[name] == ("prompt", "canonical_solution", "test")
               for name in ("humaneval_x", "multi_humaneval", "mbxp"))
    assert fields["humaneval"] == ("prompt", "canonical_solution") and fields["mbpp"] == ("text", "code")
    rb = next(p for p in problems("multipl_e", file="humaneval-rb-reworded.jsonl.gz")
              if p.task_id == "HumanEval_102_choose_num")
    assert rb.text("tests").startswith("require 'test/unit'") and rb.canonical_solution == ""
