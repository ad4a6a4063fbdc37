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
from spark_jobs.tokenizer import SPECIAL_TOKENS

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
            .select("doc_key", "source", "lang", "split", "tie", "text", "special_offsets")
            .mapInArrow(encode, out_schema)
            .select(*TOKENIZED_COLUMNS))


def count_tokens(df: DataFrame, *, text_column: str, tokenizer_json: Any, tokenizer_key: str, eos_id: int,
                 output: str = "n_tokens") -> DataFrame:
    """Adds `output` (long): the tokens each row's text takes in the shards as a document of its own (its ids +
    `eos_id`, no separators), exactly what the manifest will count for it. Rows with a null text are left out.

    Vectorised like `tokenize_documents` (one `mapInArrow`, the tokenizer built once per Python worker); only the
    counts leave the worker.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    out_schema = StructType([*df.schema.fields, StructField(output, LongType())])

    def count(batches):
        import pyarrow as pa

        tok = worker_tokenizer(tokenizer_key, tokenizer_json)
        for batch in batches:
            ids = encode_documents(tok, batch.column(text_column).to_pylist(), [None] * batch.num_rows, eos_id)
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array([len(r) for r in ids], type=pa.int64())],
                                             names=[*batch.schema.names, output])

    return df.where(F.col(text_column).isNotNull()).mapInArrow(count, out_schema)


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
    payload = ["n_tokens", "ids"] if "ids" in df.columns else ["text", "special_offsets"]
    key = (F.lit(seed), F.col("doc_key"), F.col("source"), F.col("copy"))
    n = F.when(F.col("split") == "val", F.lit(val_shards)).otherwise(F.lit(num_shards))
    shard = F.pmod(F.xxhash64(F.lit("shard"), *key), n).cast("int")
    part = F.when(F.col("split") == "val", F.lit(num_shards) + F.col("shard")).otherwise(F.col("shard"))
    n_parts = num_shards + val_shards
    # repartition(n, "part") would hash the shard numbers, and hashing n numbers into n partitions leaves about
    # a third of them empty (1 - 1/e) while others write two or three shards. Partitioning on a key whose hash
    # lands exactly on partition `part` gives every shard its own task (`exact_partition_keys`).
    exact = F.element_at(F.array(*[F.lit(k) for k in exact_partition_keys(n_parts)]), F.col("part") + 1)
    return (df.withColumn("shard", shard).withColumn("part", part)
            .withColumn("order", F.xxhash64(F.lit("order"), *key))
            .repartition(n_parts, exact.cast("int"))
            .sortWithinPartitions("part", "order", "tie", "doc_key", "copy")
            .select("part", "split", "shard", "doc_key", "source", "lang", *payload))


def exact_partition_keys(n: int) -> list[int]:
    """For each partition p < n, the smallest int k >= 0 that Spark's hash partitioning puts in partition p.

    Spark places a row of `repartition(n, key)` in pmod(Murmur3_x86_32(key, seed 42), n); for an int key the
    hash reads its 4 little-endian bytes (Murmur3Hash.hashInt), which is what `mmh3.hash` computes here. Found by
    trying 0, 1, 2, ... (about n ln n hashes: ~7,500 for 1,000 shards, a few milliseconds).
    """
    import mmh3

    keys: list[int | None] = [None] * n
    missing, k = n, 0
    while missing:
        p = mmh3.hash(k.to_bytes(4, "little", signed=True), 42, signed=True) % n  # Python % is pmod for n > 0
        if keys[p] is None:
            keys[p] = k
            missing -= 1
        k += 1
    return keys  # type: ignore[return-value]


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
        # Text never injects a special token (a file that spells "<|endoftext|>" or "<|file_sep|>" is not cut
        # there): separators are placed by `encode_documents` from `special_offsets` only.
        tok.encode_special_tokens = True
        _TOKENIZERS[key] = tok
    return tok


# Stands in for each separator while a document is encoded: a non-special added token (of a worker-local copy of
# the tokenizer, `_with_placeholder`), so tokenizers splits the text at it exactly as it splits at a recognised
# special token (also for pre-tokenizers that treat the start of a text apart, e.g. sentencepiece's Metaspace,
# where encoding the pieces one by one would prepend a space to each), while `encode_special_tokens` keeps every
# special-token string of the text itself ordinary. Plane-15 private-use characters around a name: no real file
# holds it; one that does is encoded piece by piece instead (exact for byte-level BPE).
PLACEHOLDER = "\U000f0000codemill-separator\U000f0000"
_PLACEHOLDER_TOKENIZERS: dict[int, tuple[Any, Any, int]] = {}  # id(tok) -> (tok, its copy, placeholder id)


def encode_documents(tok, texts: list[str], offsets: list[list[int] | None], eos_id: int,
                     keys: list[str] | None = None) -> list[list[int]]:
    """Token ids of each document, `eos_id` ending every document.

    The separators of a document (its `special_offsets`: where in the text a special-token string starts) become
    their special ids; every other character is encoded as ordinary text (`tok` has `encode_special_tokens` set),
    so a special-token string inside a file's content costs a few ordinary tokens and decodes back to itself,
    never to a boundary. The ids equal those of encoding the text with exactly those separators recognised as
    special tokens (`PLACEHOLDER` says how).
    """
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips offsets (tokenizers >= 0.21)
    if not any(offsets):
        ids = [e.ids for e in encode(texts, add_special_tokens=False)]
    else:
        stand_in, stand_in_id = _with_placeholder(tok)
        specials = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        marked, separators, pieces = [], [], []
        for n, (text, marks) in enumerate(zip(texts, offsets)):
            parts, seps, pos = [], [], 0
            for at in marks or ():
                name = next((t for t in SPECIAL_TOKENS if text.startswith(t, at)), None) if at >= pos else None
                if name is None:
                    key = keys[n] if keys is not None else n
                    raise ValueError(f"document {key!r}: special_offsets has {at}, where no special token "
                                     f"{list(SPECIAL_TOKENS)} starts (offsets must be ascending character offsets "
                                     f"into the text, as spark_jobs.documents writes them)")
                parts.append(text[pos:at])
                seps.append(specials[name])
                pos = at + len(name)
            parts.append(text[pos:])
            separators.append(seps)
            pieces.append(parts)
            marked.append(PLACEHOLDER.join(parts) if PLACEHOLDER not in text else "")
        encoded = getattr(stand_in, "encode_batch_fast", stand_in.encode_batch)(marked, add_special_tokens=False)
        ids = []
        for e, text, parts, seps in zip(encoded, texts, pieces, separators):
            if PLACEHOLDER in text:
                row = tok.encode(parts[0], add_special_tokens=False).ids
                for part, sep in zip(parts[1:], seps):
                    row += [sep, *tok.encode(part, add_special_tokens=False).ids]
            else:
                it = iter(seps)
                row = [next(it) if t == stand_in_id else t for t in e.ids]
            ids.append(row)
    for row in ids:
        row.append(eos_id)
    return ids


def _with_placeholder(tok) -> tuple[Any, int]:
    """A copy of `tok` that knows `PLACEHOLDER` as a non-special added token, and its id (once per tokenizer)."""
    cached = _PLACEHOLDER_TOKENIZERS.get(id(tok))
    if cached is None:
        from tokenizers import AddedToken, Tokenizer

        copy = Tokenizer.from_str(tok.to_str())
        copy.add_tokens([AddedToken(PLACEHOLDER, special=False, normalized=False)])
        copy.encode_special_tokens = True
        # `tok` is kept in the entry, so its id cannot be reused by another tokenizer while the entry lives.
        cached = _PLACEHOLDER_TOKENIZERS[id(tok)] = (tok, copy, copy.token_to_id(PLACEHOLDER))
    return cached[1], cached[2]


def _encode_lists(tok, batch, eos_id: int) -> list[list[int]]:
    """`encode_documents` of an Arrow batch with `text`, `special_offsets` and `doc_key`."""
    return encode_documents(tok, batch.column("text").to_pylist(), batch.column("special_offsets").to_pylist(),
                            eos_id, keys=batch.column("doc_key").to_pylist())


def encode_flat(tok, batch, eos_id: int):
    """(offsets, values, n_tokens) of an Arrow batch's documents: what the writer packs from, without the detour
    through an Arrow list array (a few percent of the encoding time)."""
    import numpy as np

    ids = _encode_lists(tok, batch, eos_id)
    n_tokens = [len(r) for r in ids]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(n_tokens, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    return offsets, values, n_tokens


def _encode_batch(tok, batch, eos_id: int):
    import pyarrow as pa

    ids = _encode_lists(tok, batch, eos_id)
    return pa.RecordBatch.from_arrays(
        [batch.column("doc_key"), batch.column("source"), batch.column("lang"), batch.column("split"),
         batch.column("tie"), pa.array([len(r) for r in ids], type=pa.int64()),
         pa.array(ids, type=pa.list_(pa.int32()))],
        names=list(TOKENIZED_COLUMNS))
