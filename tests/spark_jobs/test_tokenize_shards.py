"""Acceptance tests of the tokenization job on tiny tables built from real Python stdlib source.

One module-scoped build (tokenizer + three phases, seq_len 128) is shared by most tests to keep Spark time low.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # litdata otherwise asks PyPI on import

import spark_jobs.tokenize_shards as ts  # noqa: E402
from codemill import storage  # noqa: E402
from codemill.config import ConfigError  # noqa: E402
from codemill.lake import Lake  # noqa: E402
from spark_jobs import pipeline  # noqa: E402
from spark_jobs import tokenizer as T  # noqa: E402
from spark_jobs.mixtures import DOC_COLUMNS  # noqa: E402
from spark_jobs.shard_transforms import assign_shards, assign_split  # noqa: E402
from spark_jobs.shard_writer import _ShardWriter, merge_index, write_shards  # noqa: E402
from spark_jobs.tokenize_shards import _build_shards  # noqa: E402
from tests.fixtures.shards import decode_documents, document_ids, read_items, shard_streams  # noqa: E402


def main(argv: list[str]) -> dict:
    """The pipeline's tokenize stage with these `tokenize.*` settings (`--lake` and `--config FILE` as the
    pipeline takes them); returns the manifests it wrote, by phase."""
    args, i = ["--stages", "tokenize", "--force", "true"], 0
    while i < len(argv):
        key, value = argv[i], argv[i + 1]
        args += ["--tokenize", value] if key == "--config" else [key, value] if key == "--lake" else \
            [f"--tokenize.{key[2:]}", value]
        i += 2
    cfg = pipeline.parse_config(pipeline.PipelineConfig, args)
    pipeline.main(args)
    root = cfg.tokenize.shards_root
    return {p: json.loads(storage.read_text(storage.join(root, p, "manifest.json"))) for p in cfg.tokenize.build}

SEQ_LEN = 128
LANGS = ("python", "java", "go")  # labels for the mixture arithmetic; the text is real stdlib code


def _stdlib_texts(n: int, offset: int = 0, max_chars: int = 1500) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[offset: offset + n]
    return [f.read_text(encoding="utf-8", errors="replace")[:max_chars] for f in files]


# Files whose own text spells the special tokens: they must stay text in the shards (issue 20.1).
TRAPS = ["x = '<|endoftext|>'  # not a real boundary\n",
         "SEP = '<|file_sep|>'\nREPO = '<|repo_name|>'  # tokenizer code quotes its own separators\n<|pad|>\n"]


def _make_lake(spark, root: str):
    from codemill import schemas
    from spark_jobs.documents import build_documents

    lake = Lake(spark, root)
    texts = _stdlib_texts(40)
    # Edge cases: files that spell special tokens, an empty one and non-ASCII text.
    texts += [*TRAPS, "", "naïve = 'üñí©ødé 🙂'\n\tpass\n"]
    # Real multi-file documents: 44 files in 12 repositories (3 languages); one path spells a separator too.
    files = [(f"f{i:03d}", f"f{i:03d}", "src", f"org/r{i % 12}", "a<|file_sep|>b.py" if i == 7 else f"m{i}.py",
              LANGS[i % 12 % 3], t, len(t), None, None, "t") for i, t in enumerate(texts)]
    lake.overwrite("documents", build_documents(spark.createDataFrame(files, schemas.FILES), seed=3))
    docs = [r.asDict() for r in lake.read("documents").collect()]
    hq = [(f"h{i:03d}", LANGS[i % 3], f"org/r{i}", f"m{i}.x", t, 0.9, len(t) // 3, 4)
          for i, t in enumerate(_stdlib_texts(45, offset=40, max_chars=800))]
    lake.overwrite("selected_hq", spark.createDataFrame(
        hq, "doc_id string, lang string, repo string, path string, content string, score double, n_tokens long, "
            "repeat long"))
    syn = [(f"s{i:03d}", f"h{i:03d}", LANGS[i % 3], t, "accepted" if i < 8 else "rejected",
            None if i < 8 else "syntax")
           for i, t in enumerate(_stdlib_texts(10, offset=90, max_chars=600))]
    lake.overwrite("synthetic", spark.createDataFrame(
        syn, "synth_id string, seed_doc_id string, lang string, content string, status string, "
             "reject_reason string"))
    return lake, {"documents": docs, "selected_hq": hq, "synthetic": syn}


def _argv(lake_root: str, shards_root: str, *extra: str) -> list[str]:
    return ["--config", "conf/spark/tokenize.yaml", "--lake", lake_root, "--shards_root", shards_root,
            "--seq_len", str(SEQ_LEN), "--num_shards", "2", "--val_fraction", "0.15", "--chunk_bytes", "8KB",
            "--tokenizer.vocab_size", "600", "--tokenizer.sample_docs", "100", *extra]


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenize")
    lake, rows = _make_lake(spark, str(root / "lake"))
    # Phases 1 and 2 encode in the shard writers here; test_same_input_gives_identical_shards builds with "mappers".
    manifests = main(_argv(str(root / "lake"), str(root / "shards"), "--encode", "writers"))
    tok = T.load(str(root / "shards" / "tokenizer"))
    return {"root": root, "lake": lake, "rows": rows, "manifests": manifests, "tok": tok,
            "shards": root / "shards"}


def _encode_len(tok, text: str) -> int:
    tok.encode_special_tokens = True
    return len(tok.encode(text, add_special_tokens=False).ids) + 1  # + <|endoftext|>


def _document_len(tok, doc: dict) -> int:
    """Tokens of a phase-1 document: one id per listed separator, the text between them as plain text, + eos."""
    text, cuts, n = doc["text"], [*doc["special_offsets"], len(doc["text"])], 0
    pos = 0
    for at in cuts:
        n += _encode_len(tok, text[pos:at]) - 1
        sep = next((t for t in T.SPECIAL_TOKENS if text.startswith(t, at)), "")
        n += 1 if sep else 0
        pos = at + len(sep)
    return n + 1


def test_layout_and_manifest_follow_the_contract(built):
    shards = built["shards"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (shards / "tokenizer" / name).exists()
    for phase in ("phase1", "phase2", "phase3"):
        manifest = json.loads((shards / phase / "manifest.json").read_text())
        assert manifest["phase"] == phase and manifest["seq_len"] == SEQ_LEN
        assert manifest["vocab_size"] == 600
        assert manifest["tokenizer"] == str(shards / "tokenizer")
        for split in ("train", "val"):
            assert manifest["splits"][split]["dir"] == split
            assert manifest["splits"][split]["sequences"] > 0
            assert (shards / phase / split / "index.json").exists()
            assert not list((shards / phase / split).glob("*.index.json"))  # per-shard indexes merged away
        assert manifest["table_versions"]
    assert json.loads((shards / "phase2" / "manifest.json").read_text())["repeat"] == 4


def test_items_have_contract_shape_and_dtype(built):
    import numpy as np

    items = read_items(str(built["shards"] / "phase1" / "train"))
    assert items and all(isinstance(i, np.ndarray) and i.dtype == np.int32 and i.shape == (SEQ_LEN + 1,)
                         for i in items)


def test_decoding_the_shards_gives_back_the_documents(built):
    tok = built["tok"]
    docs = []
    for split in ("train", "val"):
        docs += decode_documents(str(built["shards"] / "phase1" / split), tok)
    expected = [r["text"] for r in built["rows"]["documents"]]
    assert sorted(docs) == sorted(expected)
    assert any(TRAPS[0] in d for d in docs) and any(TRAPS[1] in d for d in docs)


def test_separators_are_special_ids_and_content_never_is(built):
    """Issue 20.1, per document of the real shards: one <|repo_name|> id first, one <|file_sep|> id per file, and
    no special id anywhere else, although files and a path spell every special token as text."""
    tok = built["tok"]
    ids = T.special_ids(tok)
    by_text = {r["text"]: r for r in built["rows"]["documents"]}
    assert any(trap in t for t in by_text for trap in TRAPS) and any("a<|file_sep|>b.py" in t for t in by_text)
    seen = 0
    for split in ("train", "val"):
        for doc_ids in document_ids(str(built["shards"] / "phase1" / split), tok):
            doc = by_text[tok.decode(doc_ids, skip_special_tokens=False)]
            assert doc_ids[0] == ids["repo_name"] and doc_ids.count(ids["repo_name"]) == 1, doc["repo"]
            assert doc_ids.count(ids["file_sep"]) == doc["n_files"], doc["repo"]
            assert ids["eos"] not in doc_ids and ids["pad"] not in doc_ids
            # Each file_sep id sits where documents.py wrote a file header: decoding up to it gives the text
            # before that offset.
            at = [i for i, t in enumerate(doc_ids) if t in (ids["repo_name"], ids["file_sep"])]
            assert [len(tok.decode(doc_ids[:i], skip_special_tokens=False)) for i in at] == doc["special_offsets"]
            seen += 1
    assert seen == len(by_text)
    # The separators cost one token each, not a dozen (the cost issue 20.1 measured).
    assert len(tok.encode("<|file_sep|>", add_special_tokens=False).ids) == 1


def test_token_counts_are_exact(built):
    tok = built["tok"]
    manifest = built["manifests"]["phase1"]
    per_lang: dict[str, int] = {}
    for r in built["rows"]["documents"]:
        per_lang[r["lang"]] = per_lang.get(r["lang"], 0) + _document_len(tok, r)
    assert manifest["tokens_per_language"] == dict(sorted(per_lang.items()))
    assert manifest["tokens"] == sum(per_lang.values())
    assert manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"] == manifest["tokens"]
    # Every phase built in one pipeline run has its own rows (one commit per phase, each with its own write id).
    assert {r["phase"] for r in built["lake"].read("shards").collect()} == set(built["manifests"])
    table = built["lake"].read("shards").where("phase = 'phase1'").collect()
    assert sum(r["tokens"] for r in table) == manifest["tokens"]
    for r in table:
        # Items overlap by one token: n items cover n * seq_len + 1 positions = tokens + padding.
        assert r["sequences"] * SEQ_LEN + 1 == r["tokens"] + r["padding_tokens"]
        assert sum(r["tokens_per_language"].values()) == r["tokens"]
        assert dict(r["input_versions"]) == manifest["table_versions"]
    streams = shard_streams(str(built["shards"] / "phase1" / "train"), pad_id=T.special_ids(tok)["pad"])
    assert sum(len(s) for s in streams.values()) == manifest["splits"]["train"]["tokens"]


def test_phase2_repeat_is_a_stream_repeat_not_copies(built):
    tok = built["tok"]
    manifest = built["manifests"]["phase2"]
    assert manifest["repeat"] == 4
    assert manifest["tokens"] == sum(_encode_len(tok, r[4]) for r in built["rows"]["selected_hq"])
    docs = []
    for split in ("train", "val"):
        docs += decode_documents(str(built["shards"] / "phase2" / split), tok)
    assert sorted(docs) == sorted(r[4] for r in built["rows"]["selected_hq"])


def test_phase3_raises_python_share_and_keeps_other_proportions(built):
    tok = built["tok"]
    manifest = built["manifests"]["phase3"]
    mixture = manifest["mixture"]
    # Stated tolerance: per-document sampling of the fractional weight moves the share by at most a few
    # documents' tokens; 0.05 absolute on this tiny input (exact in expectation).
    assert abs(mixture["boost_share_achieved"] - 0.5) < 0.05
    assert manifest["tokens_per_language"]["python"] / manifest["tokens"] == pytest.approx(
        mixture["boost_share_achieved"])
    accepted = [r for r in built["rows"]["synthetic"] if r[4] == "accepted"]
    expected_other: dict[str, int] = {}
    for lang, text in [(r[2], r[3]) for r in accepted] + [(r[1], r[4]) for r in built["rows"]["selected_hq"]]:
        if lang != "python":
            expected_other[lang] = expected_other.get(lang, 0) + _encode_len(tok, text)
    # Other languages keep weight 1: exactly their tokens, hence exactly their relative proportions.
    assert {k: v for k, v in manifest["tokens_per_language"].items() if k != "python"} == expected_other
    assert manifest["tokens_per_source"]["synthetic"] == sum(_encode_len(tok, r[3]) for r in accepted)


def _copy_tokenizer(built, root: Path) -> None:
    (root / "tokenizer").mkdir(parents=True)
    for f in (built["shards"] / "tokenizer").iterdir():
        (root / "tokenizer" / f.name).write_bytes(f.read_bytes())


def test_same_input_gives_identical_shards(built, spark):
    other = built["root"] / "shards_again"
    _copy_tokenizer(built, other)
    # Encoding before the shuffle instead of in the writers (the fixture's build) must not change a byte.
    main(_argv(str(built["root"] / "lake"), str(other), "--build", "[phase1, phase3]", "--encode", "mappers"))
    for phase in ("phase1", "phase3"):
        a, b = built["shards"] / phase, other / phase
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "manifest.json")
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json")
        assert files_a == files_b and any(str(f).endswith(".bin") for f in files_a)
        for f in files_a:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
        manifest_a = json.loads((a / "manifest.json").read_text())
        manifest_b = json.loads((b / "manifest.json").read_text())
        assert {k: v for k, v in manifest_a.items() if k != "tokenizer"} == {
            k: v for k, v in manifest_b.items() if k != "tokenizer"}


@pytest.mark.parametrize("optimistic", [False, True], ids=["fallback_first", "rebuild_on_empty_val"])
def test_job_gives_a_small_phase_its_validation_document(built, spark, tmp_path, monkeypatch, optimistic):
    from pyspark.sql import functions as F

    if optimistic:
        # As if many val documents were expected: build without the fallback, then rebuild when val is empty.
        monkeypatch.setattr(ts, "VAL_DOCS_WITHOUT_FALLBACK", 0)
    builds = []
    monkeypatch.setattr(ts, "_build_shards", lambda *a, **k: builds.append(k["ensure_val"]) or _build_shards(*a, **k))

    lake = Lake(spark, str(tmp_path / "lake"))
    texts = [f"def f{i}():\n    return {i}\n" for i in range(24)]
    lake.overwrite("documents", spark.createDataFrame(
        [(f"d{i:03d}", "python", f"org/r{i}", t, 1, len(t), len(t) // 3, [f"f{i}"], []) for i, t in enumerate(texts)],
        "document_id string, lang string, repo string, text string, n_files long, n_chars long, est_tokens long, "
        "doc_ids array<string>, special_offsets array<int>"))
    docs = lake.read("documents").select(F.col("document_id").alias("doc_key"), F.lit("documents").alias("source"),
                                         "lang", "text", "special_offsets")
    # By hash alone 0.5 % of 24 documents is none: the job must fall back to the lowest-hash document.
    assert assign_split(docs, val_fraction=0.005, seed=1234, ensure_val=False).where("split = 'val'").count() == 0
    expected = [r["text"] for r in assign_split(docs, val_fraction=0.005, seed=1234).where("split = 'val'").collect()]
    assert len(expected) == 1
    _copy_tokenizer(built, tmp_path / "shards")
    manifest = main(_argv(str(tmp_path / "lake"), str(tmp_path / "shards"), "--build", "[phase1]",
                          "--val_fraction", "0.005", "--seed", "1234"))["phase1"]
    assert manifest["splits"]["val"]["documents"] == 1 and manifest["splits"]["train"]["documents"] == 23
    assert decode_documents(str(tmp_path / "shards" / "phase1" / "val"), built["tok"]) == expected
    assert builds == ([False, True] if optimistic else [True])


def test_reader_resumes_mid_epoch_exactly(built):
    from litdata import StreamingDataLoader, StreamingDataset

    path = str(built["shards"] / "phase1" / "train")

    def loader():
        return StreamingDataLoader(StreamingDataset(path, shuffle=True, seed=7), batch_size=2, num_workers=0)

    full = [b["input_ids"] for b in loader()]
    assert len(full) >= 4
    first = loader()
    seen = []
    for i, batch in enumerate(first):
        seen.append(batch["input_ids"])
        if i == 1:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [b["input_ids"] for b in resumed]
    got = seen + rest
    assert len(got) == len(full)
    assert all((x == y).all() for x, y in zip(got, full))


def test_shard_writer_packs_with_one_token_overlap_and_pads_the_tail(tmp_path):
    import numpy as np

    w = _ShardWriter(out_dir=str(tmp_path), split="train", shard=3, seq_len=4, pad_id=99, chunk_bytes=1 << 20)
    w.add(np.arange(1, 8, dtype=np.int32), ["python"], ["documents"], [7])
    w.add(np.arange(8, 11, dtype=np.int32), ["go"], ["documents"], [3])
    stats = w.finish()
    assert stats["tokens"] == 10 and stats["sequences"] == 3 and stats["padding_tokens"] == 3
    assert dict(stats["tokens_per_language"]) == {"go": 3, "python": 7}
    index = json.loads(stats["index_json"])
    assert [c["filename"] for c in index["chunks"]] == ["chunk-3-0.bin"]
    (tmp_path / "train" / "index.json").write_text(json.dumps(merge_index([index])))
    items = [i.tolist() for i in read_items(str(tmp_path / "train"))]
    assert items == [[1, 2, 3, 4, 5], [5, 6, 7, 8, 9], [9, 10, 99, 99, 99]]
    assert shard_streams(str(tmp_path / "train"), pad_id=99) == {3: list(range(1, 11))}


def test_config_errors_name_their_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        main(["--config", "conf/spark/tokenize.yaml", "--seq_len", "1", "--val_fraction", "1.5",
              "--build", "[phase9]", "--chunk_bytes", "lots", "--encode", "sometimes"])
    text = str(err.value)
    for key in ("seq_len:", "val_fraction:", "build:", "chunk_bytes:", "encode:"):
        assert key in text


def test_shard_writer_uploads_chunks_to_s3_with_the_given_filesystem(s3, bucket, tmp_path):
    import numpy as np

    out = f"{bucket}/out"
    fs = storage.filesystem(out)[0]  # what the driver ships to the writers
    w = _ShardWriter(out_dir=out, split="val", shard=0, seq_len=8, pad_id=3, chunk_bytes=1 << 20, fs=fs)
    staging = w.tmp
    w.add(np.arange(10, 30, dtype=np.int32), ["go"], ["documents"], [20])
    stats = w.finish()
    assert stats["sequences"] == 3 and not os.path.exists(staging)
    assert s3.objects(bucket[len("s3a://"):]) == ["out/val/chunk-0-0.bin"]
    storage.write_text(f"{out}/val/index.json", json.dumps(merge_index([json.loads(stats["index_json"])])))
    assert shard_streams(f"{out}/val", pad_id=3, cache_dir=str(tmp_path / "litdata")) == {0: list(range(10, 30))}
    storage.delete_dir(out)
    assert s3.objects(bucket[len("s3a://"):]) == []


@pytest.mark.slow  # ~20-40 s: trains a tokenizer and builds a phase with Spark
def test_job_writes_tokenizer_shards_and_manifest_to_s3(spark, s3, bucket, tmp_path, monkeypatch):
    """A local lake, everything the job writes on s3a://: the tokenizer it trains, chunks, indexes, manifest;
    read back through storage and litdata; no credential in any object or in the `shards` table."""
    monkeypatch.setenv("CODEMILL_CACHE_DIR", str(tmp_path / "cache"))
    texts = _stdlib_texts(12, max_chars=600) + ["naïve = 'üñí'\n"]
    lake = Lake(spark, str(tmp_path / "lake"))
    lake.overwrite("documents", spark.createDataFrame(
        [(f"d{i}", LANGS[i % 3], t, []) for i, t in enumerate(texts)],
        "document_id string, lang string, text string, special_offsets array<int>"))
    shards = f"{bucket}/shards"
    manifests = main(_argv(str(tmp_path / "lake"), shards, "--build", "[phase1]", "--val_fraction", "0.2",
                           "--num_shards", "1"))

    name = bucket[len("s3a://"):]
    objects = s3.objects(name)
    assert {"shards/tokenizer/tokenizer.json", "shards/tokenizer/tokenizer_config.json",
            "shards/phase1/manifest.json", "shards/phase1/train/index.json", "shards/phase1/val/index.json"} <= set(
        objects)
    assert any(k.startswith("shards/phase1/train/chunk-") and k.endswith(".bin") for k in objects)
    manifest = json.loads(storage.read_text(f"{shards}/phase1/manifest.json"))
    assert manifest == manifests["phase1"] and manifest["tokenizer"] == f"{shards}/tokenizer"
    tok = T.load(manifest["tokenizer"])
    docs = []
    for split in ("train", "val"):
        docs += decode_documents(f"{shards}/phase1/{split}", tok, cache_dir=str(tmp_path / "litdata"))
    assert sorted(docs) == sorted(texts)
    paths = {r["path"] for r in lake.read("shards").collect()}
    assert paths <= {f"{shards}/phase1/train", f"{shards}/phase1/val"}
    secret = s3.settings().secret_key.encode()
    for key in objects:
        assert secret not in s3.client().get_object(Bucket=name, Key=key)["Body"].read(), key
    assert secret.decode() not in json.dumps(lake.history("shards"), default=str)


def test_small_inputs_still_get_a_validation_document(spark):
    def docs(n):
        rows = [{c: None for c in DOC_COLUMNS} | {"doc_key": f"d{i}", "source": "documents", "lang": "python",
                                                  "text": f"x = {i}", "special_offsets": []} for i in range(n)]
        return spark.createDataFrame(rows, schema=", ".join(
            f"{c} {'array<int>' if c == 'special_offsets' else 'string'}" for c in DOC_COLUMNS))

    def counts(df):
        return {r["split"]: r["count"] for r in df.groupBy("split").count().collect()}

    # 24 documents x 0.5 % rounds to no validation document by hash alone: the lowest-hash one is taken.
    assert counts(assign_split(docs(24), val_fraction=0.005, seed=1)) == {"val": 1, "train": 23}
    assert counts(assign_split(docs(1), val_fraction=0.005, seed=1)) == {"train": 1}
    assert counts(assign_split(docs(24), val_fraction=0.0, seed=1)) == {"train": 24}


def test_writing_untokenized_rows_needs_the_tokenizer(spark, tmp_path):
    docs = spark.createDataFrame([("d0", "documents", "python", "x = 1\n", "train", [])],
                                 "doc_key string, source string, lang string, text string, split string, "
                                 "special_offsets array<int>")
    shuffled = assign_shards(docs, num_shards=2, val_shards=1, seed=1)
    assert "text" in shuffled.columns and "ids" not in shuffled.columns
    with pytest.raises(ValueError, match="tokenizer_json"):
        write_shards(shuffled, out_dir=str(tmp_path), seq_len=8, pad_id=3, chunk_bytes="1MB")


@pytest.mark.parametrize("num_shards", [8, 64])
def test_every_shard_gets_its_own_task(spark, num_shards):
    """Issue 20.3: with hash partitioning of the shard numbers, 8 + 1 shards landed in 5 tasks (one holding ~62 % of
    the phase) and 64 + 1 in about 41; now each non-empty task holds exactly one shard."""
    from pyspark.sql import functions as F

    docs = spark.createDataFrame(
        [(f"d{i}", "documents", "python", f"x = {i}\n", "val" if i % 10 == 0 else "train", []) for i in range(3000)],
        "doc_key string, source string, lang string, text string, split string, special_offsets array<int>")
    shuffled = assign_shards(docs, num_shards=num_shards, val_shards=1, seed=1)
    per_task = (shuffled.withColumn("task", F.spark_partition_id()).groupBy("task")
                .agg(F.collect_set("part").alias("parts")).collect())
    assert shuffled.rdd.getNumPartitions() == num_shards + 1
    assert len(per_task) == num_shards + 1  # non-empty tasks
    assert all(r["parts"] == [r["task"]] for r in per_task)


def test_exact_partition_keys_land_on_their_partition(spark):
    from pyspark.sql import functions as F

    from spark_jobs.shard_transforms import exact_partition_keys

    n = 1000
    keys = exact_partition_keys(n)
    df = spark.createDataFrame([(p, k) for p, k in enumerate(keys)], "part int, key int").repartition(n, "key")
    placed = df.select("part", F.spark_partition_id().alias("task")).collect()
    assert len(placed) == n and all(r["part"] == r["task"] for r in placed)


def test_separator_encoding_equals_recognising_exactly_those_separators(tmp_path):
    """`encode_documents` gives the ids of encoding with the listed separators recognised and nothing else, for
    a byte-level BPE and for a sentencepiece model (whose Metaspace pre-tokenizer treats a text's start apart);
    offsets that miss a special token fail naming the document."""
    import sentencepiece as spm

    from spark_jobs.shard_transforms import PLACEHOLDER, encode_documents

    texts = _stdlib_texts(10, max_chars=3000)
    (tmp_path / "corpus.txt").write_text("\n".join(texts))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=500, model_type="bpe", byte_fallback=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    doc = "<|repo_name|>org/r\n<|file_sep|>a.py\nimport os\n\n<|file_sep|>b.py\n  x = 1\n"
    marks = [i for i in range(len(doc)) if doc.startswith("<|", i)]
    trap = "<|file_sep|>t.py\ns = '<|endoftext|><|file_sep|><|pad|>'\n"
    for tok in (T.train_bpe(texts, vocab_size=600), T.load(str(tmp_path / "sp.model"))):
        tok.encode_special_tokens = False
        expected = tok.encode(doc, add_special_tokens=False).ids + [0]
        tok.encode_special_tokens = True
        got = encode_documents(tok, [doc, trap, trap + PLACEHOLDER, "plain"], [marks, [0], [0], []], eos_id=0)
        assert got[0] == expected
        ids = T.special_ids(tok)
        for row in got[1:3]:  # the trap, and the trap holding the stand-in (encoded piece by piece)
            assert row[0] == ids["file_sep"] and row.count(ids["file_sep"]) == 1
            assert not {ids["eos"], ids["pad"], ids["repo_name"]} & set(row[:-1])
        assert tok.decode(got[1][:-1], skip_special_tokens=False) == trap
        with pytest.raises(ValueError, match="document 'k1': special_offsets has 3"):
            encode_documents(tok, ["x", "abcdef"], [[], [3]], eos_id=0, keys=["k0", "k1"])
