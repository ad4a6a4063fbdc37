"""Annotator training set: source formats, dedup/conflict/contamination marking, balance, split, alignment set."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest

from codemill import storage
from spark_jobs.annotate_dataset import (
    DatasetConfig,
    PositiveSource,
    alignment_set,
    balance_and_split,
    benchmark_solutions,
    instruction_pairs,
    length_filter,
    mark_contaminated,
    mark_duplicates,
    ossinstruct_pairs,
    read_positives,
    render_instruction,
    with_text_hash,
)
from spark_jobs.pipeline import main
from tests.spark_jobs.test_annotate import machine_code_files

OSS = "data/instruct/starcoder2_instruct/self-ossinstruct-fewshot.txt"


def test_instruction_formats():
    records = [
        {"instruction": "Add two numbers.", "input": "a=1, b=2", "output": "def add(a, b):\n    return a + b"},
        {"problem": "Reverse a list.", "solution": "xs[::-1]"},
        {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Sort it."},
                      {"role": "assistant", "content": "sorted(xs)"}]},
        {"conversations": [{"from": "human", "value": "Max?"}, {"from": "gpt", "value": "max(xs)"}]},
        {"title": "no known fields"},
        {"instruction": "empty answer", "output": "  "},
    ]
    assert instruction_pairs(records) == [
        ("Add two numbers.\na=1, b=2", "def add(a, b):\n    return a + b"),
        ("Reverse a list.", "xs[::-1]"), ("Sort it.", "sorted(xs)"), ("Max?", "max(xs)"),
    ]


def test_render_instruction_as_code_document():
    doc = render_instruction("Write add.\n\nIt adds.", "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n")
    assert doc == "# Write add.\n#\n# It adds.\n\nHere:\ndef add(a, b):\n    return a + b\n"


def test_shipped_ossinstruct_file_parses():
    with open(OSS, encoding="utf-8") as fh:
        pairs = ossinstruct_pairs(fh.read())
    assert len(pairs) >= 10
    assert all(ins and out and "[Instruction]" not in out for ins, out in pairs)
    assert any("def " in out for _, out in pairs)


def test_benchmark_solutions_are_complete_programs():
    rows = benchmark_solutions("data/benchmarks", ["humaneval", "humaneval_x"])
    he = [t for t, b, _ in rows if b == "humaneval"]
    assert len(he) == 164
    assert he[0].startswith("from typing import List") and "for idx, elem in enumerate(numbers)" in he[0]
    assert {b for _, b, _ in rows} == {"humaneval", "humaneval_x"}
    # The default alignment benchmarks' solutions as read before the benchmark catalogue (codemill/benchmarks.py):
    # count and sha256 prefix of (text, benchmark).
    rows = benchmark_solutions("data/benchmarks", DatasetConfig().alignment_benchmarks)
    digest = hashlib.sha256(json.dumps([[t, b] for t, b, _ in rows]).encode()).hexdigest()[:16]
    assert [len(rows), digest] == [14438, '481a1348176d2c52']


def test_marking_balance_and_split(spark):
    pos = spark.createDataFrame(
        [(f"def good_{i}(x):\n    return x * {i}  # documented", "instruct:a") for i in range(30)]
        + [("def good_0(x):\n    return x * 0  # documented", "code:b"),  # duplicate of a positive
           ("tiny", "instruct:a")],
        "text string, source string")
    neg = spark.createDataFrame(
        [(f"x{i}=1;y{i}=2;print(x{i}+y{i}) # random file padding", "negative:clean") for i in range(50)]
        + [("def good_1(x):\n    return  x * 1  # documented", "negative:clean")],  # also a positive
        "text string, source string")
    pos = pos.transform(with_text_hash).transform(length_filter, min_chars=8)
    neg = neg.transform(with_text_hash).transform(length_filter, min_chars=8)
    pos, neg = mark_duplicates(pos, neg)
    bad = spark.createDataFrame([(r["text_hash"],) for r in pos.where("text LIKE '%good_2(%'").collect()],
                                "doc_id string")
    pos, neg = mark_contaminated(pos, bad).cache(), neg.cache()
    reasons = {r["text"][:12]: r["drop_reason"] for r in pos.collect() if r["drop_reason"]}
    assert sorted(reasons.values()) == ["contaminated", "duplicate", "too_short"]
    assert [r["drop_reason"] for r in neg.collect() if r["drop_reason"]] == ["also_positive"]

    out = balance_and_split(pos, neg, val_fraction=0.2, seed=0).collect()
    labels = [r["label"] for r in out]
    assert labels.count(1) == labels.count(0) == 29
    texts = [r["text"] for r in out]
    assert len(set(texts)) == len(texts)
    assert {r["split"] for r in out} == {"train", "val"}
    again = {r["text"]: r["split"] for r in balance_and_split(pos, neg, val_fraction=0.2, seed=0).collect()}
    assert all(again[r["text"]] == r["split"] for r in out if r["label"] == 1)


def test_alignment_set_excludes_training_texts(spark):
    corpus = spark.createDataFrame([(f"file {i} content",) for i in range(40)], "text string")
    train = spark.createDataFrame([(f"file {i} content",) for i in range(20)], "text string")
    sols = spark.createDataFrame([(f"def s{i}(): pass", b) for b in ("he", "mbpp") for i in range(5)],
                                 "text string, benchmark string")
    out = alignment_set(sols, corpus, train, negatives=15, max_per_benchmark=3, seed=0).collect()
    negs = [r["text"] for r in out if r["label"] == 0]
    assert len(negs) == 15 and all(int(t.split()[1]) >= 20 for t in negs)
    assert {r["benchmark"] for r in out if r["label"] == 0} == {"corpus"}
    assert sum(r["label"] for r in out if r["benchmark"] == "he") == 3


def test_job_end_to_end(spark, lake, tmp_path):
    lake.overwrite("files", spark.createDataFrame(machine_code_files(60, min_chars=200)))
    instruct = tmp_path / "instruct.jsonl"
    instruct.write_text("\n".join(json.dumps({"instruction": f"Write function number {i}.",
                                              "output": f"def f{i}(x):\n    return x + {i}\n"})
                                  for i in range(25)))
    # A copy of a HumanEval solution among the positives: decontamination must drop it.
    he = benchmark_solutions("data/benchmarks", ["humaneval"])[0][0]
    with instruct.open("a") as fh:
        fh.write("\n" + json.dumps({"instruction": "Solve it.", "output": he}))
    main(["--lake", lake.root, "--stages", "annotator_dataset", "--dataset.negative_tables", '["clean", "files"]',
          "--dataset.positives", json.dumps([{"path": str(instruct), "kind": "instruct", "name": "tiny"},
                                             {"path": OSS, "kind": "ossinstruct", "name": "oss"}]),
          "--dataset.alignment_benchmarks", '["humaneval"]', "--dataset.alignment_max_per_benchmark", "20",
          "--dataset.alignment_negatives", "10", "--dataset.val_fraction", "0.2"])
    train = lake.read("annotator_train").collect()
    labels = [r["label"] for r in train]
    assert labels.count(1) == labels.count(0) > 20
    assert {r["source"] for r in train if r["label"] == 1} == {"instruct:tiny", "instruct:oss"}
    assert {r["source"] for r in train if r["label"] == 0} == {"negative:files"}
    assert not any("has_close_elements" in r["text"] for r in train)
    history = lake.history("annotator_train")[0]["lineage"]
    assert history["extra"]["drops"]["positives"]["contaminated"] >= 1
    align = lake.read("alignment_set").collect()
    assert sum(r["label"] for r in align) == 20
    assert not {r["text"] for r in align if r["label"] == 0} & {r["text"] for r in train}


# ---------------------------------------------------------------------- on object storage
def test_positive_sources_on_s3_read_like_local_ones(spark, s3, bucket, tmp_path):
    """Globs over s3a:// (instruct JSON.gz, the few-shot text, Parquet code files) give the rows the same files
    give on local disk; a glob matching nothing names its key."""
    for path in glob.glob("data/instruct/evol_instruct_code/*.json.gz"):
        with open(path, "rb") as fh:
            storage.write_bytes(f"{bucket}/instruct/{os.path.basename(path)}", fh.read())
    with open(OSS, "rb") as fh:
        storage.write_bytes(f"{bucket}/oss/fewshot.txt", fh.read())
    code = tmp_path / "code.parquet"
    spark.createDataFrame(machine_code_files(5)).toPandas().to_parquet(code)
    storage.write_bytes(f"{bucket}/code/part-0.parquet", code.read_bytes())

    def rows(sources):
        return sorted((r["text"], r["source"]) for r in read_positives(spark, sources).collect())

    remote = rows([PositiveSource(f"{bucket}/instruct/*.json.gz", "instruct", "evol"),
                   PositiveSource(f"{bucket}/oss/fewshot.txt", "ossinstruct", "oss"),
                   PositiveSource(f"{bucket}/code/*.parquet", "code", "hq")])
    local = rows([PositiveSource("data/instruct/evol_instruct_code/*.json.gz", "instruct", "evol"),
                  PositiveSource(OSS, "ossinstruct", "oss"), PositiveSource(str(code), "code", "hq")])
    assert remote == local and {s for _, s in remote} == {"instruct:evol", "instruct:oss", "code:hq"}
    with pytest.raises(FileNotFoundError, match=f"positives.1.path: no file matches '{bucket}/none/"):
        read_positives(spark, [PositiveSource(OSS, "ossinstruct"), PositiveSource(f"{bucket}/none/*.json")])
