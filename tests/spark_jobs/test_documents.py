"""spark_jobs/documents.py: grouping, seeded order, headers, splitting at max_chars."""

from __future__ import annotations

from codemill import schemas
from spark_jobs.documents import build_documents


def _row(doc_id, repo, lang, content):
    return (doc_id, doc_id, "src", repo, f"{doc_id}.txt", lang, content, len(content), None, None, "t")


def test_documents(spark):
    rows = [_row(f"p{i}", "r1", "python", f"print({i})\n") for i in range(6)]
    rows += [_row("g1", "r1", "go", "package a\n"), _row("q1", "r2", "python", "x = 1\n")]
    df = spark.createDataFrame(rows, schemas.FILES)
    docs = {(r.lang, r.repo, r.part): r for r in build_documents(df, seed=1).collect()}
    assert set(docs) == {("python", "r1", 0), ("go", "r1", 0), ("python", "r2", 0)}
    d = docs[("python", "r1", 0)]
    assert d.n_files == 6 and sorted(d.doc_ids) == [f"p{i}" for i in range(6)]
    assert d.text.startswith("<|repo_name|>r1\n<|file_sep|>") and d.n_chars == len(d.text)
    assert d.est_tokens == -(-d.n_chars // 3.5)
    for doc_id in d.doc_ids:
        assert f"<|file_sep|>{doc_id}.txt\n" in d.text
    same = {(r.lang, r.repo): r.doc_ids for r in build_documents(df, seed=1).collect()}
    other = {(r.lang, r.repo): r.doc_ids for r in build_documents(df, seed=2).collect()}
    assert same[("python", "r1")] == d.doc_ids and other[("python", "r1")] != d.doc_ids
    # split: every part stays under max_chars + one file, files are never cut
    parts = build_documents(df.where("lang = 'python' AND repo = 'r1'"), max_chars=40, repo_header="",
                            file_header="").collect()
    assert len(parts) > 1 and sum(p.n_files for p in parts) == 6
    assert all(p.n_chars <= 40 + 10 for p in parts)
