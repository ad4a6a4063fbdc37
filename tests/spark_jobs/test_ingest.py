"""spark_jobs/ingest.py: every source kind, every quarantine reason, stable ids, skipped folders."""

from __future__ import annotations

import pytest

from codemill.languages import canonical_lang, lang_from_path
from spark_jobs.ingest import IngestConfig, classify, read_raw, resolve_input, to_files, to_quarantine
from tests.fixtures.curation.build import JSONL_EXPECTED, TREE_OUTCOMES, make_records, make_stack_parquet, make_tree


def _ingest(spark, path, **kw):
    cfg = IngestConfig(max_bytes=2000, **kw)
    spec = resolve_input(str(path), fmt=cfg.format)
    classified = classify(read_raw(spark, spec, cfg), root=spec.root, max_bytes=cfg.max_bytes,
                          required=tuple(cfg.required), ingest_run="t").cache()
    return spec, to_files(classified).collect(), to_quarantine(classified).collect()


def test_tree_skips_vendored_folders_and_quarantines_bad_files(spark, tmp_path):
    spec, files, quarantine = _ingest(spark, make_tree(tmp_path / "repos"))
    assert spec.kind == "tree"
    ids = {r.source_id for r in files} | {r.source_id for r in quarantine}
    assert not [i for i in ids if any(d in i for d in (".git/", "node_modules/", "__pycache__/"))]
    reasons = {r.source_id: r.reason for r in quarantine}
    assert reasons == {"alpha/src/latin1.py": "invalid_utf8", "alpha/src/empty.py": "empty",
                       "alpha/src/big.py": "too_large", "alpha/assets/logo.png": "binary"}
    by_id = {r.source_id: r for r in files}
    geo = by_id["alpha/src/geometry.py"]
    assert (geo.repo, geo.path, geo.lang, geo.size_bytes) == ("alpha", "src/geometry.py", "python",
                                                             len(geo.content.encode()))
    assert by_id["alpha/src/greet.go"].lang == "go" and by_id["alpha/notes.xyz"].lang == "unknown"
    assert len({r.doc_id for r in files} | {r.doc_id for r in quarantine}) == len(ids) == len(TREE_OUTCOMES)
    # stable: a second ingest of the same input gives the same ids
    _, again, _ = _ingest(spark, spec.root)
    assert {r.source_id: r.doc_id for r in again} == {r.source_id: r.doc_id for r in files}


def test_jsonl_every_bad_record_is_quarantined_with_file_and_line(spark, tmp_path):
    _, files, quarantine = _ingest(spark, make_records(tmp_path / "in") / "part-0.jsonl")
    got = {r.source_id: "files" for r in files} | {r.source_id: r.reason for r in quarantine}
    assert got == JSONL_EXPECTED
    malformed = next(r for r in quarantine if r.source_id == "part-0.jsonl:4")
    assert malformed.line == 4 and malformed.source_file.endswith("part-0.jsonl") and "unterminated" in \
        malformed.raw_snippet
    r1 = next(r for r in files if r.source_id == "r1")
    assert (r1.repo, r1.path, r1.stars, r1.license, r1.lang) == ("gamma", "a.py", 5, "mit", "python")


def test_stack_parquet_with_column_mapping(spark, tmp_path):
    spec, files, quarantine = _ingest(spark, make_stack_parquet(tmp_path / "stack"), id_column="hexsha")
    assert spec.kind == "parquet"
    by_id = {r.source_id: r for r in files}
    assert set(by_id) == {"aaa", "bbb"}
    assert (by_id["aaa"].repo, by_id["aaa"].path, by_id["aaa"].lang, by_id["aaa"].stars,
            by_id["aaa"].license) == ("org/one", "f.py", "python", 3, "MIT,Apache-2.0")
    assert [(r.source_id, r.reason, r.line) for r in quarantine] == [("ccc", "missing_field", 2)]


def test_resolve_input_rejects_missing_and_mixed(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_input(str(tmp_path / "nope"))
    (tmp_path / "a.jsonl").write_text("{}\n")
    assert resolve_input(str(tmp_path / "*.jsonl")).kind == "jsonl"
    (tmp_path / "b.py").write_text("x = 1\n")
    assert resolve_input(str(tmp_path)).kind == "tree"  # mixed folder = a tree of files


def test_languages():
    assert lang_from_path("x/Makefile") == "makefile" and lang_from_path("a/b.tsx") == "typescript"
    assert lang_from_path("a.hpp") == "cpp" and lang_from_path("noext") == "unknown"
    assert canonical_lang("C++") == "cpp" and canonical_lang("Jupyter Notebook") == "jupyter"
    assert IngestConfig(format="xml").validate() and not IngestConfig().validate()


# ---------------------------------------------------------------------- on object storage
def _upload(s3, bucket, local_dir, prefix):
    from codemill import storage

    storage.upload_dir(str(local_dir), f"{bucket}/{prefix}")
    return f"{bucket}/{prefix}"


def test_every_source_kind_from_s3_gives_what_local_disk_gives(spark, s3, bucket, tmp_path):
    """Globs, folders and trees on s3a:// resolve through the storage layer (not os.path) and ingest to the same
    files and quarantine rows, with the same relative ids, as the same input on local disk."""
    cases = [(make_records(tmp_path / "in"), "records", "*.jsonl", {}),
             (make_stack_parquet(tmp_path / "stack"), "stack", "*.parquet", {"id_column": "hexsha"}),
             (make_tree(tmp_path / "repos"), "repos", "", {})]
    for local, prefix, pattern, kw in cases:
        remote = _upload(s3, bucket, local, prefix)
        here = _ingest(spark, f"{local}/{pattern}" if pattern else local, **kw)
        there = _ingest(spark, f"{remote}/{pattern}" if pattern else remote, **kw)
        assert there[0].kind == here[0].kind and there[0].root == remote
        for a, b in zip(here[1:], there[1:]):
            assert sorted((r.source_id, r.doc_id, r.content if hasattr(r, "content") else r.reason) for r in a) == \
                sorted((r.source_id, r.doc_id, r.content if hasattr(r, "content") else r.reason) for r in b), prefix
        assert all(r.source_file.startswith(remote) for r in there[1] + there[2])


def test_input_fingerprint_on_s3_changes_when_an_object_changes(s3, bucket, tmp_path):
    from codemill import storage
    from spark_jobs.ingest import input_fingerprint

    remote = _upload(s3, bucket, make_records(tmp_path / "in"), "records")
    spec = resolve_input(f"{remote}/*.jsonl")
    first = input_fingerprint(spec, skip_dirs=[])
    assert input_fingerprint(resolve_input(f"{remote}/*.jsonl"), skip_dirs=[]) == first
    storage.write_bytes(f"{remote}/part-0.jsonl", storage.read_bytes(f"{remote}/part-0.jsonl") + b"{}\n")
    assert input_fingerprint(resolve_input(f"{remote}/*.jsonl"), skip_dirs=[]) != first
    with pytest.raises(FileNotFoundError, match="matches no file"):
        resolve_input(f"{remote}/*.parquet")


def test_an_input_with_jsonl_and_parquet_reads_each_with_its_reader(spark, tmp_path):
    make_records(tmp_path / "mixed")
    make_stack_parquet(tmp_path / "mixed")
    spec, files, quarantine = _ingest(spark, tmp_path / "mixed", id_column="")
    assert spec.kind == "records"
    got = {r.source_id for r in files} | {r.source_id for r in quarantine}
    jsonl_ids = set(JSONL_EXPECTED)
    assert jsonl_ids <= got and len(got - jsonl_ids) == 3  # the three Parquet rows, ids from file:row


# ---------------------------------------------------------------------- unsafe and inconsistent records
def _rec(i, repo="r", path=None, **kw):
    return {"repo": repo, "path": path or f"f{i}.py", "content": f"x = {i}\n", **kw}


def test_records_with_parent_segments_or_absolute_paths_are_quarantined_as_unsafe_path(spark, tmp_path):
    from tests.fixtures.curation.build import dump

    unsafe = {"u1": ("r", "../etc/passwd"), "u2": ("r", "src/../../x.py"), "u3": ("r", "/abs/x.py"),
              "u4": ("../evil", "x.py"), "u5": ("r", "C:\\win\\x.py"), "u6": ("r", "src\\..\\..\\x.py"),
              "u7": ("/srv/repo", "x.py"), "u8": ("r", "a/.."), "u9": ("r", "\\\\host\\share\\x.py")}
    safe = {"s1": ("r", "a..b/c.py"), "s2": ("r", "..hidden/x.py"), "s3": ("r", "src/./x.py"),
            "s4": ("org/repo", "x..py")}
    rows = [_rec(i, repo, path, id=sid) for i, (sid, (repo, path)) in enumerate({**unsafe, **safe}.items())]
    _, files, quarantine = _ingest(spark, dump(rows, tmp_path / "in.jsonl"))
    assert {r.source_id: r.reason for r in quarantine} == dict.fromkeys(unsafe, "unsafe_path")
    assert {r.source_id for r in files} == set(safe)
    details = {r.source_id: r.detail for r in quarantine}
    assert details["u1"] == "path ../etc/passwd" and details["u4"] == "repo ../evil"


def test_a_repeated_source_id_keeps_its_first_occurrence_in_file_and_line_order(spark, tmp_path):
    """The second and later records with an id are duplicate_source_id, and the kept one is the first in (file,
    line) order whatever the number of partitions or the order in which files are listed."""
    from tests.fixtures.curation.build import dump

    src = tmp_path / "in"
    src.mkdir()
    dump([_rec(1, id="a"), _rec(2, id="x"), _rec(3, id="b"), _rec(4, id="x")], src / "part-1.jsonl")
    dump([_rec(5, id="x"), _rec(6, id="c"), _rec(7, id="a")], src / "part-0.jsonl")
    dump([_rec(8, id="y"), _rec(9, id="y"), _rec(10, id="y")], src / "part-2.jsonl")
    seen = []
    for partitions, shuffle in ((1, 1), (3, 7), (8, 3)):
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle))
        try:
            _, files, quarantine = _ingest(spark, src, partitions=partitions)
        finally:
            spark.conf.unset("spark.sql.shuffle.partitions")
        kept = sorted((r.source_id, r.content) for r in files)
        dups = sorted((r.source_id, r.line, r.reason, r.detail) for r in quarantine)
        seen.append((kept, dups, sorted(r.doc_id for r in files + quarantine)))
    kept, dups, doc_ids = seen[0]
    assert kept == [("a", "x = 7\n"), ("b", "x = 3\n"), ("c", "x = 6\n"), ("x", "x = 5\n"), ("y", "x = 8\n")]
    assert dups == [("a", 1, "duplicate_source_id", "first occurrence at part-0.jsonl:3"),
                    ("x", 2, "duplicate_source_id", "first occurrence at part-0.jsonl:1"),
                    ("x", 4, "duplicate_source_id", "first occurrence at part-0.jsonl:1"),
                    ("y", 2, "duplicate_source_id", "first occurrence at part-2.jsonl:1"),
                    ("y", 3, "duplicate_source_id", "first occurrence at part-2.jsonl:1")]
    assert len(set(doc_ids)) == 10 and all(s == seen[0] for s in seen[1:])


def test_a_record_without_id_is_named_file_colon_line_stably(spark, tmp_path):
    """No id, a null id or a blank id: the record is `<file>:<line>` (Parquet: `<file>:<row>`), never a shared
    blank id (which would make every such record a duplicate of the first), with the same doc_id on every run and
    wherever the input folder lies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.fixtures.curation.build import dump

    def make(root):
        (root / "sub").mkdir(parents=True)
        dump([_rec(1), _rec(2, id=""), _rec(3, id="  "), _rec(4, id=None), _rec(5, id="k")],
             root / "sub" / "p.jsonl")
        pq.write_table(pa.Table.from_pylist([_rec(6, id=""), _rec(7, id="q"), _rec(8, id=None)]),
                       root / "sub" / "t.parquet")
        return root

    runs = []
    for where in ("one", "two words", "two words"):
        _, files, quarantine = _ingest(spark, make(tmp_path / where) if not (tmp_path / where).exists()
                                       else tmp_path / where)
        assert not quarantine
        runs.append(sorted((r.source_id, r.doc_id) for r in files))
    assert [s for s, _ in runs[0]] == ["k", "q", "sub/p.jsonl:1", "sub/p.jsonl:2", "sub/p.jsonl:3",
                                       "sub/p.jsonl:4", "sub/t.parquet:0", "sub/t.parquet:2"]
    assert runs[0] == runs[1] == runs[2]

def _big_jsonl(path, n=3000):
    """A ~2.3 MB JSON Lines file: records without ids (ids fall back on line numbers), blank and CRLF lines,
    malformed lines and one record long enough to straddle range boundaries."""
    import json
    import random

    rnd = random.Random(1)
    lines = []
    for i in range(n):
        if i % 97 == 5:
            lines.append("")
        elif i % 101 == 7:
            lines.append('{"broken": ')
        else:
            body = "x = 1\n" * rnd.randrange(5, 200) if i != 1500 else "y = 2\n" * 200_000
            lines.append(json.dumps({"repo": f"r{i % 7}", "path": f"f{i}.py", "content": body})
                         + ("\r" if i % 13 == 0 else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_large_plain_jsonl_is_split_across_tasks_with_the_same_records(spark, tmp_path):
    from spark_jobs.ingest import jsonl_ranges

    path = _big_jsonl(tmp_path / "big.jsonl")
    ranges = jsonl_ranges(spark, [str(path)], split_bytes=1 << 20)
    size = path.stat().st_size
    assert size > 3 << 20
    assert [r[1:3] for r in ranges] == [(lo, min(lo + (1 << 20), size)) for lo in range(0, size, 1 << 20)]
    assert ranges[0][3] == 1 and all(r[3] > 1 for r in ranges[1:])
    assert jsonl_ranges(spark, [str(path)], split_bytes=64 << 20) == [(str(path), None, None, None)]

    def rows(split):
        cfg = IngestConfig(max_bytes=10_000_000, split_bytes=split)
        spec = resolve_input(str(path))
        return sorted((r.source_id, r.line, r.error, r.content) for r in read_raw(spark, spec, cfg).collect())

    whole, split = rows(64 << 20), rows(1 << 20)
    assert split == whole
    assert len(whole) == 3000 - len([i for i in range(3000) if i % 97 == 5])
    assert ("big.jsonl:3001", 3001) not in {r[:2] for r in whole}  # the final newline is no record


def test_compressed_jsonl_is_one_task_per_file(spark, tmp_path):
    import gzip

    from spark_jobs.ingest import jsonl_ranges

    path = _big_jsonl(tmp_path / "big.jsonl")
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert jsonl_ranges(spark, [str(gz)], split_bytes=1 << 20) == [(str(gz), None, None, None)]
    assert IngestConfig(split_bytes=1000).validate() == ["split_bytes: 1000 must be at least 1 MiB (1048576)"]


def test_tree_fingerprint_is_walked_on_the_executors_and_sees_nested_changes(spark, tmp_path, monkeypatch):
    import os

    import spark_jobs.ingest as ingest

    root = make_tree(tmp_path / "repos")
    spec = resolve_input(str(root), fmt="tree")
    first = ingest.input_fingerprint(spec, skip_dirs=IngestConfig().skip_dirs, spark=spark)

    def no_walk(*a, **k):
        raise AssertionError("the driver walked the tree")

    # The driver process never walks: its os.walk is broken; the executors' Python workers (other processes) are
    # not affected.
    monkeypatch.setattr(os, "walk", no_walk)
    assert ingest.input_fingerprint(spec, skip_dirs=IngestConfig().skip_dirs, spark=spark) == first
    nested = root / "alpha" / "src" / "geometry.py"
    nested.write_text(nested.read_text() + "\n# changed\n")
    os.utime(nested, ns=(1, 1))
    assert ingest.input_fingerprint(spec, skip_dirs=IngestConfig().skip_dirs, spark=spark) != first
    with pytest.raises(AssertionError, match="the driver walked"):
        ingest.input_fingerprint(spec, skip_dirs=IngestConfig().skip_dirs)
