"""spark_jobs/ingest.py: every source kind, every quarantine reason, stable ids, skipped folders."""

from __future__ import annotations

import pytest

from spark_jobs.ingest import IngestConfig, classify, read_raw, resolve_input, to_files, to_quarantine
from spark_jobs.languages import canonical_lang, lang_from_path
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
