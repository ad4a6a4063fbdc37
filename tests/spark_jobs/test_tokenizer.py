from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from codemill import storage
from codemill.config import ConfigError
from spark_jobs import tokenizer as T


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:30]
    return [f.read_text(encoding="utf-8", errors="replace")[:4000] for f in files]


@pytest.fixture(scope="module")
def trained(corpus):
    return T.train_bpe(corpus, vocab_size=800)


def test_trained_bpe_has_fixed_special_ids_and_round_trips(trained, corpus):
    assert trained.get_vocab_size() == 800
    assert T.special_ids(trained) == {"eos": 0, "file_sep": 1, "repo_name": 2, "pad": 3}
    for text in corpus[:5] + ["naïve = 'üñí 🙂'\n\t\r\n  x", "<|file_sep|>a.py\n"]:
        ids = trained.encode(text, add_special_tokens=False).ids
        assert trained.decode(ids, skip_special_tokens=False) == text
    # Learned merges compress code well below one token per byte.
    text = corpus[0]
    assert len(trained.encode(text).ids) < 0.6 * len(text.encode())


def test_saved_folder_loads_with_transformers_and_tokenizers(trained, tmp_path):
    from transformers import AutoTokenizer

    out = T.save(trained, str(tmp_path / "tok"), model_max_length=1024)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "tok" / name).exists()
    hf = AutoTokenizer.from_pretrained(out)
    assert (hf.eos_token, hf.eos_token_id, hf.pad_token, hf.pad_token_id) == ("<|endoftext|>", 0, "<|pad|>", 3)
    assert hf.model_max_length == 1024
    reloaded = T.load(out)
    assert reloaded.encode("def f(): pass").ids == trained.encode("def f(): pass").ids
    assert T.load(str(tmp_path / "tok" / "tokenizer.json")).get_vocab_size() == 800


def test_loading_a_foreign_tokenizer_adds_the_missing_special_tokens(tmp_path, corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    foreign = Tokenizer(models.BPE())
    foreign.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    foreign.train_from_iterator(corpus[:5], trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>"],
                                                                 show_progress=False))
    foreign.save(str(tmp_path / "foreign.json"))
    tok = T.load(str(tmp_path / "foreign.json"))
    ids = T.special_ids(tok)
    assert sorted(ids.values()) == list(range(tok.get_vocab_size() - 4, tok.get_vocab_size()))


def test_sentencepiece_model_with_byte_fallback_loads_and_round_trips(tmp_path, corpus):
    import sentencepiece as spm

    (tmp_path / "corpus.txt").write_text("\n".join(corpus[:10]))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=500, model_type="bpe", byte_fallback=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    tok = T.load(str(tmp_path / "sp.model"))
    assert set(T.special_ids(tok)) == {"eos", "file_sep", "repo_name", "pad"}
    text = "def f(x):\n    return x  # ü\n"
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_sample_texts_is_deterministic_and_bounded(spark):
    df = spark.createDataFrame([(f"doc {i} " * 50,) for i in range(200)] + [(None,)], "text string")
    a = list(T.sample_texts(df, column="text", max_docs=20, max_chars=30, seed=1))
    b = list(T.sample_texts(df, column="text", max_docs=20, max_chars=30, seed=1))
    assert a == b and len(a) == 20 and all(len(t) <= 30 for t in a)
    assert a != list(T.sample_texts(df, column="text", max_docs=20, max_chars=30, seed=2))


def test_load_rejects_unknown_formats(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(ValueError, match="tokenizer.json"):
        T.load(str(tmp_path / "vocab.txt"))


def test_main_adopts_or_trains_and_names_missing_keys(trained, corpus, lake, tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        T.main([])
    assert [p.split(":")[0] for p in err.value.problems] == ["out", "lake"]
    trained.save(str(tmp_path / "adopt.json"))
    adopted = T.main(["--load", str(tmp_path / "adopt.json"), "--out", str(tmp_path / "adopted")])
    assert adopted == {"out": str(tmp_path / "adopted"), "vocab_size": 800, "eos": 0, "file_sep": 1,
                       "repo_name": 2, "pad": 3}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == adopted
    assert T.load(str(tmp_path / "adopted")).encode("def f(): pass").ids == trained.encode("def f(): pass").ids
    lake.overwrite("documents", lake.spark.createDataFrame([(f"d{i}", t) for i, t in enumerate(corpus)],
                                                           "document_id string, text string"))
    out = T.main(["--lake", lake.root, "--out", str(tmp_path / "trained"), "--vocab_size", "300",
                  "--sample_docs", "10", "--max_chars", "500"])
    assert out["vocab_size"] == 300 and (tmp_path / "trained" / "tokenizer.json").exists()


# ---------------------------------------------------------------------- on object storage
def test_tokenizer_folder_and_file_on_s3_save_load_and_prepare(trained, s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))  # local copies of remote folders
    name = bucket[len("s3a://"):]
    assert T.save(trained, f"{bucket}/tok", model_max_length=1024) == f"{bucket}/tok"
    files = sorted(k for k in s3.objects(name, "tok/") if not k.endswith("/"))  # not pyarrow's folder markers
    assert files == ["tok/special_tokens_map.json", "tok/tokenizer.json", "tok/tokenizer_config.json"]
    text = "def f(x):\n    return x  # ü\n"
    want = trained.encode(text).ids
    assert T.load(f"{bucket}/tok").encode(text).ids == want
    assert T.load(f"{bucket}/tok/tokenizer.json").encode(text).ids == want
    # Adopting a remote tokenizer into another remote folder returns the saved one.
    prepared = T.prepare(out_dir=f"{bucket}/shards/tokenizer", load_from=f"{bucket}/tok", texts=None,
                         vocab_size=0)
    assert prepared.encode(text).ids == want and "shards/tokenizer/tokenizer.json" in s3.objects(name)
    with pytest.raises(ValueError, match="tokenizer.json"):
        T.load(_put(f"{bucket}/vocab.txt", "a\n"))
    with pytest.raises(FileNotFoundError, match=f"{bucket}/missing"):
        T.load(f"{bucket}/missing")


def _put(uri: str, text: str) -> str:
    storage.write_text(uri, text)
    return uri
