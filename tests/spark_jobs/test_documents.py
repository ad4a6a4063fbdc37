"""spark_jobs/documents.py: grouping, seeded order, headers, splitting at max_chars."""

from __future__ import annotations

from codemill import schemas
from spark_jobs.documents import build_documents
from spark_jobs.tokenizer import SPECIAL_TOKENS


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


def test_special_offsets_mark_the_headers_only(spark):
    """Issue 20.1: the offsets list where documents.py wrote a separator, in every part of a split repository;
    a special-token string in a file's content, a repository name or a path is not listed."""
    rows = [_row(f"p{i}", "org/r<|file_sep|>", "python", f"s = '<|file_sep|>{i}'\n<|repo_name|>\n" * (i + 1))
            for i in range(6)]
    rows += [_row("u1", "r2", "python", "naïve = '🙂'\n"), _row("u2", "r2", "python", "<|endoftext|>\n")]
    df = spark.createDataFrame(rows, schemas.FILES)
    for max_chars in (1_000_000, 60):
        for d in build_documents(df, seed=1, max_chars=max_chars, file_separator="\n\n").collect():
            marks = [i for t in SPECIAL_TOKENS for i in range(len(d.text))
                     if d.text.startswith(t, i)]
            # Headers only: the repository header at 0, then one file header per file, each right before its path.
            assert d.special_offsets[0] == 0 and len(d.special_offsets) == 1 + d.n_files
            assert set(d.special_offsets) < set(marks)
            for at, doc_id in zip(d.special_offsets[1:], d.doc_ids):
                assert d.text.startswith(f"<|file_sep|>{doc_id}.txt\n", at)
    # Templates with a separator after a placeholder, and none at all.
    d = build_documents(df.where("repo = 'r2'"), repo_header="# {repo} <|repo_name|>\n", file_header="").first()
    assert d.text.startswith("# r2 <|repo_name|>\n") and d.special_offsets == [5]
    d = build_documents(df.where("repo = 'r2'"), repo_header="", file_header="").first()
    assert d.special_offsets == []
