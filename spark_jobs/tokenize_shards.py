"""Tokenize the phase mixtures in Spark, pack fixed-length sequences and write them as litdata streaming shards.

    python -m spark_jobs.pipeline --stages tokenize --lake lake                  # the `tokenize` section
    python -m spark_jobs.pipeline --stages tokenize --lake lake --tokenize.build '[phase2]' --tokenize.seq_len 2048
    spark-submit spark_jobs/pipeline.py --stages tokenize --lake s3a://bucket/lake \
        --tokenize.shards_root s3a://bucket/shards

Phases come from `conf/spark/phases.yaml` (loaded first; see `spark_jobs.mixtures`). For each phase (the chunk files
come from one Spark job; phase 3 runs one more before it, to count tokens for the weight):

1. read its source tables at pinned versions and turn them into documents (doc_key, source, lang, text);
2. split train/val by a seeded hash of the document key (`val_fraction`);
3. phase 3: tokenize first (`mapInArrow`), count tokens per language and weight Python documents to the target
   share (`spark_jobs.mixtures`);
4. shuffle deterministically: every document gets a shard and a position from seeded hashes; one Spark task per
   shard encodes its documents (tokenizer loaded once per Python worker from a broadcast JSON, `<|endoftext|>`
   appended), packs them in position order into items of seq_len + 1 tokens (consecutive items overlap by one
   token so every token is a training target once) and writes them with litdata's `BinaryWriter` as
   `chunk-<shard>-<i>.bin` straight into `<shards_root>/<phase>/<split>/` (local or shared filesystem) or into a
   local folder uploaded with the pyarrow filesystem the driver built (object stores: `codemill.storage`, with
   the session's `fs.s3a.*` endpoint and credentials). Each task returns its shard's index; the driver
   merges them into one `index.json`, so a task retry or a speculative copy rewrites the same files. With fewer
   shards than cores (`encode`), documents are encoded before the shuffle instead, on every core; same bytes;
5. write `manifest.json` and the phase's rows of the `shards` table (docs/CONTRACTS.md, docs/tokenization.md).

The trainer reads the splits with `litdata.StreamingDataset` + `StreamingDataLoader` (mid-epoch resume through
`state_dict`, sharding over nodes and workers); no custom loader. For shards on an object store,
`codemill.storage.litdata_source` gives litdata the `s3://` form and the endpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from codemill import storage
from spark_jobs.mixtures import DOC_COLUMNS, HASH_BUCKETS, PhaseConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

JOB = "tokenize"
SPLITS = ("train", "val")
ENCODE_MODES = ("auto", "writers", "mappers")
# Expected val documents from which a phase is built without the val fallback first (`run_phase`): hashing then
# finds none with probability at most about exp(-3) = 5 %, and 5 % of a rebuild costs less than the fallback's
# aggregate always would (a small phase's build takes a few times as long as that aggregate).
VAL_DOCS_WITHOUT_FALLBACK = 3


@dataclasses.dataclass
class TokenizerConfig:
    # An existing tokenizer.json, sentencepiece .model or HF folder (local or a URI); None = reuse
    # <shards_root>/tokenizer if it exists, else train a byte-level BPE on a sample of phase 1.
    load: str | None = None
    vocab_size: int = 64000  # paper §3: 64k vocabulary
    min_frequency: int = 2
    sample_docs: int = 200_000
    sample_chars: int = 20_000

    def validate(self) -> list[str]:
        problems = []
        if self.load is None and self.vocab_size < 260:
            problems.append(f"vocab_size: {self.vocab_size} is below the 256 bytes + 4 special tokens")
        # A URI is checked when the job has its session (the store's settings may come from it): ensure_tokenizer.
        if self.load is not None and storage.is_local(self.load) and not os.path.exists(self.load):
            problems.append(f"load: {self.load!r} does not exist")
        if self.sample_docs < 1 or self.sample_chars < 1:
            problems.append("sample_docs, sample_chars: must be >= 1")
        return problems


@dataclasses.dataclass
class _Phases:
    phases: list[PhaseConfig] = dataclasses.field(default_factory=list)


def shipped_phases() -> list[PhaseConfig]:
    """The recipe's three phase mixtures, declared in conf/spark/phases.yaml."""
    from codemill.config import CONF_DIR, load_config

    return load_config(_Phases, CONF_DIR / "spark" / "phases.yaml").phases


@dataclasses.dataclass
class TokenizeConfig:
    """`tokenize.*`: the tokenizer and the phase shards (phases declared in conf/spark/pipeline.yaml)."""

    shards_root: str = "shards"
    # The phase mixtures; default: conf/spark/phases.yaml (paper §2).
    phases: list[PhaseConfig] = dataclasses.field(default_factory=shipped_phases)
    build: list[str] = dataclasses.field(default_factory=lambda: ["phase1", "phase2", "phase3"])
    seq_len: int = 8192  # paper §3: 8192-token context
    val_fraction: float = 0.005
    num_shards: int = 8  # train writers (and Spark tasks) per phase; more shards = more parallel readers
    val_shards: int = 1
    seed: int = 1234
    chunk_bytes: str = "64MB"
    # Where documents are encoded: "writers" = in the shard-writing tasks after the shuffle (one pass, the
    # shuffle moves text instead of token arrays; encoding runs on num_shards + val_shards tasks), "mappers" = in
    # the input tasks before the shuffle (encoding uses every core when the cluster has more cores than shards),
    # "auto" = writers when num_shards >= the session's default parallelism. Same shards either way.
    encode: str = "auto"
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)

    def validate(self) -> list[str]:
        problems = []
        names = [p.name for p in self.phases]
        if not self.phases:
            problems.append("phases: none declared (conf/spark/phases.yaml holds the recipe's three)")
        if len(set(names)) != len(names):
            problems.append(f"phases: duplicate phase names {names}")
        missing = sorted(set(self.build) - set(names))
        if missing:
            problems.append(f"build: {missing} are not declared in phases ({names})")
        if self.seq_len < 2:
            problems.append(f"seq_len: must be >= 2, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.num_shards < 1 or self.val_shards < 1:
            problems.append("num_shards, val_shards: must be >= 1")
        if self.encode not in ENCODE_MODES:
            problems.append(f"encode: must be one of {list(ENCODE_MODES)}, got {self.encode!r}")
        try:
            _chunk_bytes(self.chunk_bytes)
        except ValueError as exc:
            problems.append(f"chunk_bytes: {exc}")
        for i, phase in enumerate(self.phases):
            problems.extend(f"phases[{i}].{p}" for p in phase.validate())
        return problems


# ---------------------------------------------------------------------- transforms
def assign_split(df: DataFrame, *, val_fraction: float, seed: int, ensure_val: bool = True) -> DataFrame:
    """Adds `split` ('train' / 'val') from a seeded hash of (doc_key, source): stable across runs and engines.

    `ensure_val=False` leaves out the small-input fallback below and the aggregate it costs. Whenever hashing alone
    puts at least one document in val, both give the same split (the lowest-hash document is then already in val).
    """
    from pyspark.sql import functions as F

    u = F.pmod(F.xxhash64(F.lit(seed), F.lit("split"), F.col("doc_key"), F.col("source")), F.lit(HASH_BUCKETS))
    df = df.withColumn("_u", u)
    is_val = F.col("_u") < F.lit(int(round(val_fraction * HASH_BUCKETS)))
    if val_fraction > 0 and ensure_val:
        # On a small input the fraction can round to no document at all; the document with the lowest hash then
        # still goes to validation (when there are at least two), so every phase has a validation split. One tiny
        # aggregate, broadcast back: nothing is collected to the driver.
        first = df.agg(F.min("_u").alias("_min_u"), F.count(F.lit(1)).alias("_n"))
        df = df.crossJoin(F.broadcast(first))
        is_val = is_val | ((F.col("_u") == F.col("_min_u")) & (F.col("_n") > 1))
    split = F.when(is_val, F.lit("val")).otherwise(F.lit("train"))
    return df.withColumn("split", split).select(*DOC_COLUMNS, "split")


TOKENIZED_COLUMNS = ("doc_key", "source", "lang", "split", "tie", "n_tokens", "ids")


def tokenize_documents(df: DataFrame, *, tokenizer_json: Any, tokenizer_key: str, eos_id: int) -> DataFrame:
    """Encodes `text` per Arrow batch into `ids` (int32, `eos_id` appended) and `n_tokens`; drops `text`.

    `tokenizer_json` is the tokenizer's JSON string or a Spark broadcast of it; `tokenizer_key` (its hash) lets
    each Python worker build the tokenizer once and reuse it for every batch and task.
    `tie` (a hash of the text) breaks ordering ties between rows with the same key, for a total, repeatable order.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, IntegerType, LongType, StringType, StructField, StructType

    out_schema = StructType([
        StructField("doc_key", StringType()), StructField("source", StringType()),
        StructField("lang", StringType()), StructField("split", StringType()),
        StructField("tie", LongType()), StructField("n_tokens", LongType()),
        StructField("ids", ArrayType(IntegerType())),
    ])

    def encode(batches):
        tok = _worker_tokenizer(tokenizer_key, tokenizer_json)
        for batch in batches:
            yield _encode_batch(tok, batch, eos_id)

    return (df.withColumn("tie", F.xxhash64(F.col("text")))
            .select("doc_key", "source", "lang", "split", "tie", "text")
            .mapInArrow(encode, out_schema)
            .select(*TOKENIZED_COLUMNS))


def assign_shards(df: DataFrame, *, num_shards: int, val_shards: int, seed: int) -> DataFrame:
    """Deterministic shuffle: a seeded hash picks each document's shard, another its position in the shard.

    Returns one Spark partition per written shard, rows sorted by position (`part` = shard for train,
    num_shards + shard for val). `copy` (from mixture weights; 0 when absent) keeps copies of a document apart.
    Takes tokenized rows (`tokenize_documents`: payload `n_tokens`, `ids`) or untokenized ones (payload `text`,
    encoded by `write_shards` after the shuffle); both give the same order, so the same shards.
    """
    from pyspark.sql import functions as F

    if "copy" not in df.columns:
        df = df.withColumn("copy", F.lit(0))
    if "tie" not in df.columns:
        df = df.withColumn("tie", F.xxhash64(F.col("text")))  # the same tie `tokenize_documents` computes
    payload = ["n_tokens", "ids"] if "ids" in df.columns else ["text"]
    key = (F.lit(seed), F.col("doc_key"), F.col("source"), F.col("copy"))
    n = F.when(F.col("split") == "val", F.lit(val_shards)).otherwise(F.lit(num_shards))
    shard = F.pmod(F.xxhash64(F.lit("shard"), *key), n).cast("int")
    part = F.when(F.col("split") == "val", F.lit(num_shards) + F.col("shard")).otherwise(F.col("shard"))
    return (df.withColumn("shard", shard).withColumn("part", part)
            .withColumn("order", F.xxhash64(F.lit("order"), *key))
            .repartition(num_shards + val_shards, "part")
            .sortWithinPartitions("part", "order", "tie", "doc_key", "copy")
            .select("part", "split", "shard", "doc_key", "source", "lang", *payload))


SHARD_STATS_COLUMNS = ("split", "shard", "sequences", "tokens", "padding_tokens", "documents",
                       "tokens_per_language", "tokens_per_source", "index_json")


def write_shards(df: DataFrame, *, out_dir: str, seq_len: int, pad_id: int, chunk_bytes: str,
                 tokenizer_json: Any = None, tokenizer_key: str | None = None, eos_id: int | None = None
                 ) -> DataFrame:
    """Sink: packs each shard's documents into items of seq_len + 1 tokens and writes them with litdata.

    Lazy like any transform: the files are written when the returned per-shard stats are collected (one row per
    non-empty shard, with its litdata index as JSON for the driver-side merge, `merge_index`).
    Rows from `assign_shards` carry `ids` (already tokenized) or `text`; `text` is encoded here, batch by batch,
    with the tokenizer given as for `tokenize_documents`, so tokenizing, packing and writing are one pass.
    """
    from pyspark.sql.types import IntegerType, LongType, MapType, StringType, StructField, StructType

    stats_schema = StructType([
        StructField("split", StringType()), StructField("shard", IntegerType()),
        StructField("sequences", LongType()), StructField("tokens", LongType()),
        StructField("padding_tokens", LongType()), StructField("documents", LongType()),
        StructField("tokens_per_language", MapType(StringType(), LongType())),
        StructField("tokens_per_source", MapType(StringType(), LongType())),
        StructField("index_json", StringType()),
    ])
    limit = _chunk_bytes(chunk_bytes)
    # Built here, on the driver (the session's s3a settings), and shipped to the writers with the function.
    fs = None if storage.is_local(out_dir) else storage.filesystem(out_dir)[0]
    tokenized = "ids" in df.columns
    if not tokenized and (tokenizer_json is None or tokenizer_key is None or eos_id is None):
        raise ValueError("write_shards: rows carry `text`, so tokenizer_json, tokenizer_key and eos_id are needed")

    def pack(batches):
        encode = None
        if not tokenized:
            tok = _worker_tokenizer(tokenizer_key, tokenizer_json)

            def encode(batch):
                return _encode_flat(tok, batch.column("text"), eos_id)
        yield from _pack_partition(batches, out_dir=out_dir, seq_len=seq_len, pad_id=pad_id, chunk_bytes=limit,
                                   encode=encode, fs=fs)

    return df.mapInArrow(pack, stats_schema).select(*SHARD_STATS_COLUMNS)


# ---------------------------------------------------------------------- worker side
_TOKENIZERS: dict[str, Any] = {}


def _worker_tokenizer(key: str, tokenizer_json: Any):
    """The tokenizer for `key`, built once per Python worker (Spark reuses workers across tasks)."""
    tok = _TOKENIZERS.get(key)
    if tok is None:
        from tokenizers import Tokenizer

        # One Spark task per core: the task must not fan out over every core itself (tokenizers' rayon pool).
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        text = tokenizer_json.value if hasattr(tokenizer_json, "value") else tokenizer_json
        tok = Tokenizer.from_str(text)
        # A document that contains "<|endoftext|>" as text must not inject a real end-of-document token.
        tok.encode_special_tokens = True
        _TOKENIZERS[key] = tok
    return tok


def _encode_lists(tok, texts, eos_id: int) -> list[list[int]]:
    """Token ids of each document of an Arrow string column, `eos_id` ending every document."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips offsets (tokenizers >= 0.21)
    ids = [e.ids for e in encode(texts.to_pylist(), add_special_tokens=False)]
    for row in ids:
        row.append(eos_id)
    return ids


def _encode_flat(tok, texts, eos_id: int):
    """(offsets, values, n_tokens) of an Arrow string column: what the writer packs from, without the detour
    through an Arrow list array (a few percent of the encoding time)."""
    import itertools

    import numpy as np

    ids = _encode_lists(tok, texts, eos_id)
    n_tokens = [len(r) for r in ids]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(n_tokens, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    return offsets, values, n_tokens


def _encode_batch(tok, batch, eos_id: int):
    import pyarrow as pa

    ids = _encode_lists(tok, batch.column("text"), eos_id)
    return pa.RecordBatch.from_arrays(
        [batch.column("doc_key"), batch.column("source"), batch.column("lang"), batch.column("split"),
         batch.column("tie"), pa.array([len(r) for r in ids], type=pa.int64()),
         pa.array(ids, type=pa.list_(pa.int32()))],
        names=list(TOKENIZED_COLUMNS))


class _ShardWriter:
    """Packs one shard's token stream into overlapping items and writes them with litdata's BinaryWriter."""

    def __init__(self, *, out_dir: str, split: str, shard: int, seq_len: int, pad_id: int, chunk_bytes: int,
                 fs: Any = None):
        import numpy as np
        from litdata.streaming.writer import BinaryWriter

        self.split, self.shard, self.seq_len, self.pad_id = split, shard, seq_len, pad_id
        self.remote_dir = storage.join(out_dir, split)
        self.local = storage.is_local(out_dir)
        self.fs = fs  # the object store's filesystem, built by the driver (None: local)
        self.tmp = None if self.local else tempfile.mkdtemp(prefix=f"codemill-{split}-{shard}-")
        self.cache_dir = self.remote_dir if self.local else self.tmp
        os.makedirs(self.cache_dir, exist_ok=True)
        # litdata names chunks chunk-<rank>-<i>.bin; the shard number as rank keeps every task's files distinct.
        self._old_rank = os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK")
        os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = str(shard)
        self.writer = BinaryWriter(self.cache_dir, chunk_bytes=chunk_bytes)
        self.buffer = np.zeros(0, dtype=np.int32)
        self.sequences = self.tokens = self.padding = self.documents = 0
        self.per_lang: dict[str, int] = {}
        self.per_source: dict[str, int] = {}

    def add(self, ids, langs: list[str], sources: list[str], n_tokens: list[int]) -> None:
        """Adds a contiguous run of documents: `ids` is their concatenated tokens."""
        import numpy as np

        for lang, source, n in zip(langs, sources, n_tokens):
            self.per_lang[lang] = self.per_lang.get(lang, 0) + n
            self.per_source[source] = self.per_source.get(source, 0) + n
        self.documents += len(n_tokens)
        self.tokens += int(sum(n_tokens))
        buf = np.concatenate([self.buffer, ids]) if len(self.buffer) else np.asarray(ids, dtype=np.int32)
        n_items = (len(buf) - 1) // self.seq_len if len(buf) > self.seq_len else 0
        for k in range(n_items):
            # (seq_len + 1,): x = item[:-1], y = item[1:]; the next item starts at this item's last token.
            self._emit(buf[k * self.seq_len: k * self.seq_len + self.seq_len + 1])
        self.buffer = buf[n_items * self.seq_len:].copy()

    def _emit(self, item) -> None:
        self.writer.add_item(self.sequences, {"input_ids": item})
        self.sequences += 1

    def finish(self) -> dict[str, Any]:
        import numpy as np

        # The last token of the previous item is already a target: a 1-token tail carries nothing new.
        if len(self.buffer) > 1 or (len(self.buffer) == 1 and self.sequences == 0):
            self.padding = self.seq_len + 1 - len(self.buffer)
            self._emit(np.concatenate([self.buffer, np.full(self.padding, self.pad_id, dtype=np.int32)]))
        try:
            self.writer.done()
        finally:
            if self._old_rank is None:
                os.environ.pop("DATA_OPTIMIZER_GLOBAL_RANK", None)
            else:
                os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = self._old_rank
        index_path = os.path.join(self.cache_dir, f"{self.shard}.index.json")
        with open(index_path) as fh:
            index = json.load(fh)
        os.remove(index_path)
        if not self.local:
            _upload(self.cache_dir, self.remote_dir, [c["filename"] for c in index["chunks"]], fs=self.fs)
            shutil.rmtree(self.tmp, ignore_errors=True)
        return {"split": self.split, "shard": self.shard, "sequences": self.sequences, "tokens": self.tokens,
                "padding_tokens": self.padding, "documents": self.documents,
                "tokens_per_language": sorted(self.per_lang.items()),
                "tokens_per_source": sorted(self.per_source.items()),
                "index_json": json.dumps(index, sort_keys=True)}


def _pack_partition(batches, *, out_dir: str, seq_len: int, pad_id: int, chunk_bytes: int,
                    encode=None, fs: Any = None) -> Iterator:
    """Writes the shards of one Spark partition; `encode(batch) -> (offsets, values, n_tokens)` when rows carry
    `text`; `fs`: the pyarrow filesystem of an object-store `out_dir`."""
    import numpy as np
    import pyarrow as pa

    writer: _ShardWriter | None = None
    current = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if encode is not None:
            offsets, values, n_tokens = encode(batch)
        else:
            ids_col = batch.column("ids")
            offsets = ids_col.offsets.to_numpy()
            values = ids_col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
            n_tokens = batch.column("n_tokens").to_pylist()
        parts = batch.column("part").to_numpy(zero_copy_only=False)
        langs = batch.column("lang").to_pylist()
        sources = batch.column("source").to_pylist()
        splits = batch.column("split").to_pylist()
        shards = batch.column("shard").to_pylist()
        # Rows arrive sorted by part: cut the batch into runs of equal part (their tokens are contiguous).
        bounds = np.flatnonzero(np.diff(parts)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [batch.num_rows]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            if current != int(parts[s]):
                if writer is not None:
                    yield _stats_batch(writer.finish(), pa)
                current = int(parts[s])
                writer = _ShardWriter(out_dir=out_dir, split=splits[s], shard=int(shards[s]), seq_len=seq_len,
                                      pad_id=pad_id, chunk_bytes=chunk_bytes, fs=fs)
            writer.add(values[offsets[s]:offsets[e]], langs[s:e], sources[s:e], n_tokens[s:e])
    if writer is not None:
        yield _stats_batch(writer.finish(), pa)


def _stats_batch(stats: dict[str, Any], pa):
    types = {"split": pa.string(), "shard": pa.int32(), "sequences": pa.int64(), "tokens": pa.int64(),
             "padding_tokens": pa.int64(), "documents": pa.int64(),
             "tokens_per_language": pa.map_(pa.string(), pa.int64()),
             "tokens_per_source": pa.map_(pa.string(), pa.int64()), "index_json": pa.string()}
    return pa.RecordBatch.from_arrays([pa.array([stats[k]], type=t) for k, t in types.items()], names=list(types))


# ---------------------------------------------------------------------- storage helpers (local or object store)
def _upload(local_dir: str, remote_dir: str, names: list[str], *, fs: Any = None) -> None:
    """Copies `names` from `local_dir` to an object-store folder; `fs` is the driver's filesystem on a worker."""
    if fs is None:
        fs = storage.filesystem(remote_dir)[0]
    base = storage.fs_path(remote_dir)
    for name in names:
        with open(os.path.join(local_dir, name), "rb") as src, fs.open_output_stream(f"{base}/{name}") as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)


def _chunk_bytes(value: str | int) -> int:
    if isinstance(value, int):
        return value
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    text = str(value).strip().upper()
    for unit, mult in units.items():
        if text.endswith(unit) and text[: -len(unit)].strip().isdigit():
            return int(text[: -len(unit)]) * mult
    if text.isdigit():
        return int(text)
    raise ValueError(f"{value!r} is not a size such as '64MB'")


# ---------------------------------------------------------------------- driver side
def merge_index(shard_indexes: list[dict[str, Any]]) -> dict[str, Any]:
    """One litdata `index.json` from the shards' indexes (given in shard order).

    `updated_at` is a digest of the chunk list instead of a clock: identical shards give an identical index, and
    readers' caches (keyed by it) still notice a rebuilt dataset.
    """
    chunks: list[dict[str, Any]] = []
    config = None
    for index in shard_indexes:
        if config is None:
            config = index["config"]
        elif {k: v for k, v in config.items() if k != "types"} != {
                k: v for k, v in index["config"].items() if k != "types"}:
            raise ValueError(f"shards were written with different litdata configs: {config} vs {index['config']}")
        chunks.extend(index["chunks"])
    digest = hashlib.sha256(json.dumps(chunks, sort_keys=True).encode()).hexdigest()[:16]
    return {"chunks": chunks, "config": config, "updated_at": digest}


def build_phase_documents(lake, phase: PhaseConfig, versions: dict[str, int]) -> DataFrame:
    """The union of the phase's sources as unified documents, read at the pinned `versions`."""
    from spark_jobs.mixtures import source_documents

    frames = [source_documents(lake.read(s.table, version=versions[s.table]), table=s.table,
                               text_column=s.text_column, key_column=s.key_column, where=s.where)
              for s in phase.sources]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def ensure_tokenizer(cfg: TokenizeConfig, lake):
    """Loads `tokenizer.load`, or reuses `<shards_root>/tokenizer`, or trains one on a phase-1 sample; saves it
    to `<shards_root>/tokenizer` so every phase, the trainer and the synthetic job share it."""
    from codemill.config import ConfigError
    from spark_jobs import tokenizer as T

    target = storage.absolute(storage.join(cfg.shards_root, "tokenizer"))
    load = cfg.tokenizer.load
    if load is None and storage.isfile(storage.join(target, "tokenizer.json")):
        return T.load(target), target
    if load is not None and not storage.is_local(load) and not storage.exists(load):
        raise ConfigError([f"tokenizer.load: {load!r} does not exist"])
    texts = None
    if cfg.tokenizer.load is None:
        phase1 = next((p for p in cfg.phases if p.name == "phase1"), cfg.phases[0])
        docs = build_phase_documents(lake, phase1, lake.versions([s.table for s in phase1.sources]))
        texts = T.sample_texts(docs, column="text", max_docs=cfg.tokenizer.sample_docs,
                               max_chars=cfg.tokenizer.sample_chars, seed=cfg.seed)
    tok = T.prepare(out_dir=target, load_from=load, texts=texts, vocab_size=cfg.tokenizer.vocab_size,
                    min_frequency=cfg.tokenizer.min_frequency, model_max_length=cfg.seq_len)
    return tok, target


def run_phase(spark, lake, cfg: TokenizeConfig, phase: PhaseConfig, *, tok, tokenizer_path: str,
              tokenizer_json: Any, lineage) -> dict[str, Any]:
    """Builds one phase end to end and returns its manifest."""
    from codemill.lake import TableNotFound
    from spark_jobs import tokenizer as T

    tables = sorted({s.table for s in phase.sources})
    versions = lake.versions(tables)
    missing = [t for t in tables if t not in versions]
    if missing:
        raise TableNotFound(f"{phase.name}: input tables {missing} do not exist under {lake.root}; run the stages "
                            f"that produce them first (docs/CONTRACTS.md)")
    ids = T.special_ids(tok)
    key = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]
    encoder = {"tokenizer_json": tokenizer_json, "tokenizer_key": key, "eos_id": ids["eos"]}
    out_dir = storage.join(cfg.shards_root, phase.name)
    build = functools.partial(_build_shards, spark, lake, cfg, phase, versions=versions, out_dir=out_dir,
                              pad_id=ids["pad"], encoder=encoder)
    # assign_split's small-input fallback costs an extra Spark job. It is only needed when hashing puts no document
    # in val, which is likely only when few are expected there (the row counts of the Delta log, an upper bound
    # under `where` filters), so larger phases build without it and rebuild with it in the rare case it was needed.
    # Either way the shards equal those built with the fallback from the start.
    rows = sum(lake.info(t).rows for t in tables)
    expect_val = rows * cfg.val_fraction >= VAL_DOCS_WITHOUT_FALLBACK
    stats, mixture = build(ensure_val=not expect_val)
    documents = {split: sum(r["documents"] for r in stats if r["split"] == split) for split in SPLITS}
    if expect_val and cfg.val_fraction > 0 and documents["val"] == 0 and documents["train"] > 1:
        stats, mixture = build(ensure_val=True)
    manifest = _manifest(cfg, phase, stats, tokenizer_path=tokenizer_path, vocab_size=tok.get_vocab_size(),
                         versions=versions, mixture=mixture, special=ids)
    for split in SPLITS:
        indexes = [json.loads(r["index_json"]) for r in stats if r["split"] == split]
        if indexes:
            storage.write_text(storage.join(out_dir, split, "index.json"),
                               json.dumps(merge_index(indexes), sort_keys=True))
    # The manifest is written last: its presence marks a complete phase.
    storage.write_text(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
    table = _shards_rows(spark, phase.name, stats, versions=versions, out_dir=out_dir)
    lineage = dataclasses.replace(lineage, extra={**lineage.extra, "phase": phase.name})
    if lake.exists("shards"):
        lake.replace("shards", table, where={"phase": phase.name}, lineage=lineage)
    else:
        lake.overwrite("shards", table, lineage=lineage, partition_by=("phase",))
    return manifest


def _build_shards(spark, lake, cfg: TokenizeConfig, phase: PhaseConfig, *, versions: dict[str, int], out_dir: str,
                  pad_id: int, encoder: dict[str, Any], ensure_val: bool) -> tuple[list[dict[str, Any]], dict]:
    """Writes the phase's chunk files (one Spark job; one more before it for a phase-3 weight); returns the
    per-shard stats and the mixture facts for the manifest."""
    from pyspark.sql import functions as F

    from spark_jobs.mixtures import boost_weight, weight_documents

    docs = (build_phase_documents(lake, phase, versions)
            .transform(assign_split, val_fraction=cfg.val_fraction, seed=cfg.seed, ensure_val=ensure_val))
    mixture: dict[str, Any] = {}
    tokenized = None
    if phase.boost_share is not None:
        # The weight needs the token counts first: keep the tokenized rows instead of encoding twice.
        tokenized = docs.transform(tokenize_documents, **encoder).persist()
        before = {(r["source"], r["lang"]): (int(r["tokens"]), int(r["docs"])) for r in
                  tokenized.groupBy("source", "lang").agg(F.sum("n_tokens").alias("tokens"),
                                                          F.count("*").alias("docs")).collect()}
        weight = boost_weight({k: v[0] for k, v in before.items()}, lang=phase.boost_lang, share=phase.boost_share,
                              boost_sources=list(phase.boost_sources))
        docs = weight_documents(tokenized, weight=weight, lang=phase.boost_lang, sources=list(phase.boost_sources),
                                seed=cfg.seed)
        mixture = {"boost_lang": phase.boost_lang, "boost_share_target": phase.boost_share, "boost_weight": weight,
                   "boost_sources": list(phase.boost_sources),
                   "tokens_before_weighting": {f"{s}/{lg}": v[0] for (s, lg), v in sorted(before.items())},
                   "documents_before_weighting": {f"{s}/{lg}": v[1] for (s, lg), v in sorted(before.items())}}
    elif not _encode_in_writers(cfg, spark):
        docs = docs.transform(tokenize_documents, **encoder)
    storage.delete_dir(out_dir)
    try:
        stats = (docs.transform(assign_shards, num_shards=cfg.num_shards, val_shards=cfg.val_shards, seed=cfg.seed)
                 .transform(write_shards, out_dir=out_dir, seq_len=cfg.seq_len, pad_id=pad_id,
                            chunk_bytes=cfg.chunk_bytes, **encoder)
                 .collect())
    finally:
        if tokenized is not None:
            tokenized.unpersist()
    return sorted((r.asDict() for r in stats), key=lambda r: (r["split"], r["shard"])), mixture


def _encode_in_writers(cfg: TokenizeConfig, spark) -> bool:
    if cfg.encode != "auto":
        return cfg.encode == "writers"
    # Writers encode when there is one per core anyway; with fewer shards than cores, encoding before the shuffle
    # keeps every core busy (it costs a second Python pass and a shuffle of token arrays instead of text).
    return cfg.num_shards >= spark.sparkContext.defaultParallelism


def _shards_rows(spark, phase: str, stats: list[dict[str, Any]], *, versions: dict[str, int], out_dir: str):
    """The phase's rows of the `shards` table as a DataFrame."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    rows = [{"phase": phase, "split": r["split"], "shard": r["shard"], "sequences": r["sequences"],
             "tokens": r["tokens"], "padding_tokens": r["padding_tokens"], "documents": r["documents"],
             "tokens_per_language": sorted(dict(r["tokens_per_language"]).items()),
             "input_versions": sorted(versions.items()), "path": storage.join(out_dir, r["split"])} for r in stats]
    # From Arrow rather than Python rows: creating and checking the DataFrame took ~0.1 s instead of ~0.3 s per
    # phase on the 2-core bench machine, a visible share of a small phase's fixed cost.
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=to_arrow_schema(shards_schema())))


def shards_schema():
    """Schema of the `shards` table (one row per phase, split and shard)."""
    from pyspark.sql.types import IntegerType, LongType, MapType, StringType, StructField, StructType

    return StructType([
        StructField("phase", StringType()), StructField("split", StringType()), StructField("shard", IntegerType()),
        StructField("sequences", LongType()), StructField("tokens", LongType()),
        StructField("padding_tokens", LongType()), StructField("documents", LongType()),
        StructField("tokens_per_language", MapType(StringType(), LongType())),
        StructField("input_versions", MapType(StringType(), LongType())),
        StructField("path", StringType()),
    ])


def _sum_maps(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in dict(r[key]).items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def _manifest(cfg: TokenizeConfig, phase: PhaseConfig, stats: list[dict[str, Any]], *, tokenizer_path: str,
              vocab_size: int, versions: dict[str, int], mixture: dict[str, Any],
              special: dict[str, int]) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        rows = [r for r in stats if r["split"] == split]
        splits[split] = {"dir": split, "sequences": sum(r["sequences"] for r in rows),
                         "tokens": sum(r["tokens"] for r in rows),
                         "padding_tokens": sum(r["padding_tokens"] for r in rows),
                         "documents": sum(r["documents"] for r in rows), "shards": len(rows),
                         "tokens_per_language": _sum_maps(rows, "tokens_per_language")}
    per_lang = _sum_maps(stats, "tokens_per_language")
    total = sum(per_lang.values())
    if phase.boost_share is not None:
        mixture["boost_share_achieved"] = per_lang.get(phase.boost_lang, 0) / total if total else 0.0
    return {
        "phase": phase.name, "seq_len": cfg.seq_len, "vocab_size": vocab_size, "tokenizer": tokenizer_path,
        "repeat": phase.repeat, "splits": splits, "tokens": total, "tokens_per_language": per_lang,
        "tokens_per_source": _sum_maps(stats, "tokens_per_source"), "table_versions": dict(versions),
        "special_token_ids": special, "seed": cfg.seed, "packing": "overlap-1",
        "mixture": mixture,
    }


# ---------------------------------------------------------------------- reading back (tests, inspection)
def read_items(split_dir: str, *, cache_dir: str | None = None) -> list:
    """Every item of a written split (local or on an object store; `cache_dir`: where litdata keeps downloaded
    chunks), in index order, through litdata's `StreamingDataset`."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    from litdata import StreamingDataset

    input_dir, options = storage.litdata_source(split_dir)
    ds = StreamingDataset(input_dir, shuffle=False, cache_dir=cache_dir, storage_options=options or None)
    return [ds[i]["input_ids"] for i in range(len(ds))]


def shard_streams(split_dir: str, *, pad_id: int, cache_dir: str | None = None) -> dict[int, list[int]]:
    """Each shard's token stream rebuilt from its items (undoing the one-token overlap and the final padding)."""
    index = json.loads(storage.read_text(storage.join(split_dir, "index.json")))
    items = read_items(split_dir, cache_dir=cache_dir)
    streams: dict[int, list[int]] = {}
    pos = 0
    for chunk in index["chunks"]:
        shard = int(chunk["filename"].split("-")[1])
        for item in items[pos: pos + chunk["chunk_size"]]:
            ids = item.tolist()
            stream = streams.setdefault(shard, [])
            stream.extend(ids if not stream else ids[1:])
        pos += chunk["chunk_size"]
    for stream in streams.values():
        while stream and stream[-1] == pad_id:
            stream.pop()
    return streams


def decode_documents(split_dir: str, tok, *, cache_dir: str | None = None) -> list[str]:
    """The documents stored in a split (each ends at `<|endoftext|>`), decoded with `tok`."""
    from spark_jobs import tokenizer as T

    ids = T.special_ids(tok)
    docs: list[str] = []
    for stream in shard_streams(split_dir, pad_id=ids["pad"], cache_dir=cache_dir).values():
        start = 0
        for i, t in enumerate(stream):
            if t == ids["eos"]:
                docs.append(tok.decode(stream[start:i], skip_special_tokens=False))
                start = i + 1
    return docs


# ---------------------------------------------------------------------- job
def run_tokenize(spark, lake, cfg: TokenizeConfig, lineage) -> dict[str, Any]:
    """The stage: the tokenizer, then each phase of `cfg.build`; returns the manifests by phase."""
    tok, tokenizer_path = ensure_tokenizer(cfg, lake)
    tokenizer_json = spark.sparkContext.broadcast(tok.to_str())
    manifests = {}
    for phase in (p for p in cfg.phases if p.name in cfg.build):
        manifest = run_phase(spark, lake, cfg, phase, tok=tok, tokenizer_path=tokenizer_path,
                             tokenizer_json=tokenizer_json, lineage=lineage)
        manifests[phase.name] = manifest
        print(json.dumps({"phase": phase.name, "tokens": manifest["tokens"], "repeat": manifest["repeat"],
                          "splits": {s: {k: v[k] for k in ("sequences", "tokens")}
                                     for s, v in manifest["splits"].items()},
                          "tokens_per_language": manifest["tokens_per_language"]}, sort_keys=True))
    return manifests
