"""The tokenize stage's transforms: where each document goes (split, shard, position) and its token ids.

Pure `DataFrame -> DataFrame` functions, composed by `spark_jobs.tokenize_shards` (the stage; not runnable on its
own), in this order:

    docs.transform(assign_split, val_fraction=0.005, seed=1234)         # + split ('train' / 'val')
        .transform(tokenize_documents, tokenizer_json=..., ...)          # optional: text -> ids, n_tokens
        .transform(assign_shards, num_shards=8, val_shards=1, seed=1234)  # one partition per shard, in order
        .transform(spark_jobs.shard_writer.write_shards, ...)            # the sink (chunk files)

Every decision is a seeded hash of the document key, so the same input and seed give the same shards on any
cluster. The worker-side encoding helpers (`worker_tokenizer`, `encode_flat`) are shared with the shard writer,
which encodes untokenized rows itself after the shuffle.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any

from spark_jobs.mixtures import DOC_COLUMNS, HASH_BUCKETS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SPLITS = ("train", "val")
TOKENIZED_COLUMNS = ("doc_key", "source", "lang", "split", "tie", "n_tokens", "ids")


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
        tok = worker_tokenizer(tokenizer_key, tokenizer_json)
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
    encoded by `shard_writer.write_shards` after the shuffle); both give the same order, so the same shards.
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


# ---------------------------------------------------------------------- worker side
_TOKENIZERS: dict[str, Any] = {}


def worker_tokenizer(key: str, tokenizer_json: Any):
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


def encode_flat(tok, texts, eos_id: int):
    """(offsets, values, n_tokens) of an Arrow string column: what the writer packs from, without the detour
    through an Arrow list array (a few percent of the encoding time)."""
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
