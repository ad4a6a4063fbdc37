"""The tokenize stage's sink: packs each shard's documents into fixed-length items and writes litdata chunk files.

Used by `spark_jobs.tokenize_shards` (the stage; not runnable on its own) after `shard_transforms.assign_shards`:

    stats = shuffled.transform(write_shards, out_dir="shards/phase1", seq_len=8192, pad_id=3,
                               chunk_bytes="64MB", tokenizer_json=..., tokenizer_key=..., eos_id=0).collect()
    write_indexes(stats, out_dir="shards/phase1")   # driver: one litdata index.json per split

One Spark task per shard (worker side: `_ShardWriter`, `_pack_partition`) encodes its rows when they carry `text`,
packs them in position order into items of seq_len + 1 tokens (consecutive items overlap by one token, so every
token is a training target once) and writes them with litdata's `BinaryWriter` as `chunk-<shard>-<i>.bin`: straight
into `<out_dir>/<split>/` on a local or shared filesystem, or into a local folder then uploaded with the pyarrow
filesystem the driver built (object stores, `codemill.storage`). Each task returns its shard's stats and litdata
index; the driver merges the indexes (`merge_index`), so a retried or speculative task rewrites the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from codemill import storage
from spark_jobs.shard_transforms import SPLITS, encode_flat, worker_tokenizer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

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
    limit = parse_chunk_bytes(chunk_bytes)
    # Built here, on the driver (the session's s3a settings), and shipped to the writers with the function.
    fs = None if storage.is_local(out_dir) else storage.filesystem(out_dir)[0]
    tokenized = "ids" in df.columns
    if not tokenized and (tokenizer_json is None or tokenizer_key is None or eos_id is None):
        raise ValueError("write_shards: rows carry `text`, so tokenizer_json, tokenizer_key and eos_id are needed")

    def pack(batches):
        encode = None
        if not tokenized:
            tok = worker_tokenizer(tokenizer_key, tokenizer_json)

            def encode(batch):
                return encode_flat(tok, batch, eos_id)
        yield from _pack_partition(batches, out_dir=out_dir, seq_len=seq_len, pad_id=pad_id, chunk_bytes=limit,
                                   encode=encode, fs=fs)

    return df.mapInArrow(pack, stats_schema).select(*SHARD_STATS_COLUMNS)


def parse_chunk_bytes(value: str | int) -> int:
    """litdata's chunk size in bytes from a size such as '64MB' (decimal units) or a number of bytes."""
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


# ---------------------------------------------------------------------- worker side
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


def _upload(local_dir: str, remote_dir: str, names: list[str], *, fs: Any = None) -> None:
    """Copies `names` from `local_dir` to an object-store folder; `fs` is the driver's filesystem on a worker."""
    if fs is None:
        fs = storage.filesystem(remote_dir)[0]
    base = storage.fs_path(remote_dir)
    for name in names:
        with open(os.path.join(local_dir, name), "rb") as src, fs.open_output_stream(f"{base}/{name}") as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)


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


def write_indexes(stats: list[dict[str, Any]], *, out_dir: str) -> None:
    """Writes `<out_dir>/<split>/index.json` for each split with shards, merged from the collected `write_shards`
    stats (sorted by split and shard)."""
    for split in SPLITS:
        indexes = [json.loads(r["index_json"]) for r in stats if r["split"] == split]
        if indexes:
            storage.write_text(storage.join(out_dir, split, "index.json"),
                               json.dumps(merge_index(indexes), sort_keys=True))
