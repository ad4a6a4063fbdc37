"""Near-duplicate pairs, as DataFrame transforms: MinHash signatures -> LSH candidate pairs -> estimates -> exact
verification. The first half of near dedup (`spark_jobs.near_dedup` runs the stage, `spark_jobs.near_dup_clusters`
turns pairs into clusters in one task).

    sigs = minhash_signatures(df, bands=28, rows=9)            # id, signature, n_shingles, lsh_28x9
    pairs = lsh_candidates(sigs, bands=28, rows=9)             # src, dst: documents sharing an LSH bucket
    est = estimate_candidates(pairs, sigs)                     # src, dst, estimate (MinHash Jaccard estimate)
    sure = verify_candidates(pairs, df, threshold=0.7)         # src, dst, jaccard >= threshold (exact)

Every transform works on any DataFrame with an id and a text column; signatures are computed per Arrow batch by
`spark_jobs.minhash` (compiled kernels), never per row. Parameters are explicit (no config object): the stage
module derives them from `NearDedupConfig`.

Public API: `minhash_signatures`, `signature_fields`, `signature_arrays`, `band_column`, `with_band_keys`,
`lsh_candidates`, `estimate_candidates`, `verify_candidates`, `verification_groups`, `similarity_expr`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from spark_jobs import minhash


def band_column(bands: int, rows: int) -> str:
    """Name of the LSH bucket-key column for a banding: keys made with another banding never get mixed up."""
    return f"lsh_{bands}x{rows}"


def minhash_signatures(df: DataFrame, *, num_perm: int = 256, ngram: int = 5, seed: int = 42,
                       id_col: str = "doc_id", content_col: str = "content", bands: int | None = None,
                       rows: int | None = None, carry: Sequence[str] = ()) -> DataFrame:
    """(id_col, *carry, signature array<int>, n_shingles int) per row, computed per Arrow batch with numpy.

    With `bands` and `rows`, also the LSH bucket keys (`band_column(bands, rows)`, array<bigint>), hashed in the
    same pass so that banding costs no Spark expression per band. `carry`: columns of `df` passed through
    unchanged (the representative policy's, so that clustering needs no second look at `df` for them).
    """
    carry = [c for c in carry if c not in (id_col, content_col)]
    fields = [T.StructField(id_col, df.schema[id_col].dataType, True), *(df.schema[c] for c in carry),
              *signature_fields(bands, rows)]
    names = [f.name for f in fields]
    kept = len(carry) + 1  # the id and the carried columns, as they come

    def compute(batches):
        for batch in batches:
            columns = signature_arrays(batch.column(kept), num_perm=num_perm, ngram=ngram, seed=seed, bands=bands,
                                       rows=rows)
            yield pa.RecordBatch.from_arrays([*batch.columns[:kept], *columns], names=names)

    return df.select(id_col, *carry, content_col).mapInArrow(compute, T.StructType(fields))


def signature_fields(bands: int | None = None, rows: int | None = None, *, nullable: bool = False) -> list:
    """The Spark fields of the columns `signature_arrays` computes (`nullable`: for rows that may have none)."""
    fields = [T.StructField("signature", T.ArrayType(T.IntegerType(), False), nullable),
              T.StructField("n_shingles", T.IntegerType(), nullable)]
    if bands and rows:
        fields.append(T.StructField(band_column(bands, rows), T.ArrayType(T.LongType(), False), nullable))
    return fields


def signature_arrays(contents, *, num_perm: int = 256, ngram: int = 5, seed: int = 42, bands: int | None = None,
                     rows: int | None = None) -> list:
    """The columns `minhash_signatures` adds, as Arrow arrays, for an Arrow string array of contents: signature
    (list<int32>), n_shingles (int32) and, with `bands` and `rows`, the LSH bucket keys (list<int64>). For callers
    that already hold the rows in this process (`near_dedup.minhash_key_arrays`)."""
    sig, n_shingles = minhash.signatures(contents, num_perm=num_perm, ngram=ngram, seed=seed)
    columns = [_list_array(minhash.as_int32(sig), pa.int32()), pa.array(n_shingles.astype("int32"), type=pa.int32())]
    if bands and rows:
        columns.append(_list_array(minhash.band_keys(sig, bands=bands, rows=rows), pa.int64()))
    return columns


def _list_array(matrix, value_type):
    """A (n, k) numpy matrix as an Arrow list array of n rows of k values, without a copy per row."""
    n, k = matrix.shape
    offsets = pa.array(range(0, (n + 1) * k, k), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=value_type))


def with_band_keys(signatures: DataFrame, *, bands: int, rows: int) -> DataFrame:
    """`signatures` plus its LSH bucket keys (for signatures stored without them, e.g. in incremental runs)."""
    column = band_column(bands, rows)
    if column in signatures.columns:
        return signatures
    schema = T.StructType(list(signatures.schema.fields)
                          + [T.StructField(column, T.ArrayType(T.LongType(), False), False)])
    position = signatures.columns.index("signature")

    def compute(batches):
        for batch in batches:
            lists = batch.column(position)
            values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
            sig = values.view(np.uint32).reshape(len(batch), -1)
            keys = minhash.band_keys(sig, bands=bands, rows=rows)
            yield pa.RecordBatch.from_arrays(list(batch.columns) + [_list_array(keys, pa.int64())],
                                             names=list(batch.schema.names) + [column])

    return signatures.mapInArrow(compute, schema)


def lsh_candidates(signatures: DataFrame, *, bands: int, rows: int, id_col: str = "doc_id",
                   new_col: str | None = None) -> DataFrame:
    """Candidate pairs (src, dst): every document that shares a band bucket is linked to the bucket's centre.

    The centre is the bucket's smallest id, or with `new_col` (incremental runs) its smallest already-kept id when
    it has one; only new documents are linked, and only in buckets they share with someone. Linking to a centre
    instead of emitting all pairs keeps a bucket of k near-copies at k - 1 edges. Documents without shingles
    take no part. Bucket keys come from `minhash_signatures(..., bands=, rows=)` or are hashed here.

    Hot buckets (a file copied 50,000 times puts 50,000 rows in each of its bands' buckets) never gather in one
    task: each bucket's centre and size come from a hash aggregation, which Spark combines map-side (a hot bucket
    leaves each map task as one row), and the buckets of 2+ documents are joined back to their rows. That join is
    a broadcast when the shared buckets are few (AQE switches to one at run time from their measured size), else
    a sort-merge join whose skewed partitions AQE splits (`spark.sql.adaptive.skewJoin.enabled`, on by default).
    A window partitioned by bucket, the previous form, sorted every hot bucket in a single task.
    """
    signatures = with_band_keys(signatures, bands=bands, rows=rows)
    is_new = F.col(new_col) if new_col else F.lit(True)
    keyed = (signatures.where(F.col("n_shingles") > 0)
             .select(F.col(id_col).alias("id"), is_new.alias("is_new"),
                     F.explode(band_column(bands, rows)).alias("bucket")))
    # min over (is_new, id): false < true, so an already-kept document is the centre whenever the bucket has one.
    centres = (keyed.groupBy("bucket").agg(F.min(F.struct("is_new", "id"))["id"].alias("centre"),
                                           F.count(F.lit(1)).alias("_n"))
               .where(F.col("_n") > 1).select("bucket", "centre"))
    return (keyed.where(F.col("is_new")).join(centres, on="bucket")
            .where(F.col("id") != F.col("centre"))
            .select(F.col("id").alias("src"), F.col("centre").alias("dst")).distinct())


def estimate_candidates(edges: DataFrame, signatures: DataFrame, *, id_col: str = "doc_id",
                        broadcast: bool = False) -> DataFrame:
    """(src, dst, estimate): candidate pairs with the MinHash estimate of their Jaccard similarity.

    Materialise `edges` first: Spark then knows it is small and broadcasts it, so the signatures are scanned
    in place instead of being shuffled. With `broadcast` (the caller knows the pairs with their `src` signature
    fit in a broadcast), the second join broadcasts that side too, and no signature is shuffled at all.
    """
    sig = signatures.select(F.col(id_col).alias("src"), F.col("signature").alias("_a"))
    with_src = edges.join(sig, on="src")
    if broadcast:
        with_src = with_src.hint("broadcast")
    return (with_src.join(sig.withColumnRenamed("src", "dst").withColumnRenamed("_a", "_b"), on="dst")
            .select("src", "dst", similarity_expr("_a", "_b").alias("estimate")))


def verify_candidates(edges: DataFrame, docs: DataFrame, *, ngram: int = 5, threshold: float = 0.7,
                      id_col: str = "doc_id", content_col: str = "content", broadcast: bool = False,
                      max_group: int = 2000) -> DataFrame:
    """(src, dst, jaccard) for the candidate pairs whose exact shingle-set Jaccard similarity reaches threshold.

    Pairs are verified in groups that share their `dst` (LSH links every document to its bucket's centre, so
    groups are clusters): each document's text is shuffled once per group it belongs to, not once per pair, and
    the group's `dst` is shingled once. A group streams through Python in Arrow batches; only the shingle sets
    of members seen before the group's `dst` are held. The texts of documents outside every pair are filtered
    out before the shuffle: by a broadcast join with `broadcast` (the caller knows the pairs are few), else by a
    shuffle join on the ids.

    A hot centre (a bucket of 50,000 near-copies links them all to one `dst`) is split: a group of k > `max_group`
    members becomes ceil(k / max_group) groups by a hash of the member's id, each with its own copy of the
    centre's text, so no verification task holds more than ~`max_group` texts and the group count is the same for
    any partitioning. The sizes come from a hash aggregation (combined map-side), not from a window.
    """
    members = verification_groups(edges, max_group=max_group)
    if broadcast:
        members = members.hint("broadcast")
    text = (docs.select(F.col(id_col).alias("_id"), F.col(content_col).alias("_text"))
            .join(members, on="_id").select("_group", "_part", "_id", "_text"))
    id_type = edges.schema["src"].dataType
    schema = T.StructType([T.StructField("src", id_type), T.StructField("dst", id_type),
                           T.StructField("jaccard", T.DoubleType())])

    def verify(key, batches):
        centre = key[0].as_py()
        centre_set, waiting = None, []
        for batch in batches:
            ids = batch.column(2).to_pylist()
            sets = minhash.shingle_sets(batch.column(3), ngram)
            for doc, shingles in zip(ids, sets):
                if doc == centre:
                    centre_set = shingles
                else:
                    waiting.append((doc, shingles))
            if centre_set is not None and waiting:
                yield _jaccard_batch(waiting, centre, centre_set)
                waiting = []
        if waiting:  # the centre never arrived: its text is missing, so none of these pairs can be confirmed
            yield _jaccard_batch(waiting, centre, None)

    def _jaccard_batch(items, centre, centre_set):
        sims = [minhash.jaccard(shingles, centre_set) if centre_set is not None else 0.0 for _, shingles in items]
        return pa.RecordBatch.from_arrays(
            [pa.array([d for d, _ in items], type=text_arrow_type), pa.array([centre] * len(items),
                                                                             type=text_arrow_type),
             pa.array(sims, type=pa.float64())], names=["src", "dst", "jaccard"])

    text_arrow_type = to_arrow_type(id_type)
    # The iterator form of applyInArrow is chosen from these hints (typing objects, not strings).
    verify.__annotations__ = {"key": tuple, "batches": Iterator[pa.RecordBatch], "return": Iterator[pa.RecordBatch]}
    return text.groupBy("_group", "_part").applyInArrow(verify, schema).where(F.col("jaccard") >= F.lit(threshold))


def verification_groups(edges: DataFrame, *, max_group: int = 2000) -> DataFrame:
    """(_id, _group, _part): the verification group of every document of the pairs (src, dst). A group is a centre
    (`dst`, its `_group`) with at most ~`max_group` of its members (`_part`: which share of them, by a hash of
    the member's id); the centre belongs to each of its parts."""
    sized = edges.join(edges.groupBy("dst").agg(F.count(F.lit(1)).alias("_k")), on="dst")
    parts = F.ceil(F.col("_k") / F.lit(max_group))
    split = sized.select("src", "dst", F.pmod(F.xxhash64("src"), parts).cast("int").alias("_part"))
    return (split.select(F.col("src").alias("_id"), F.col("dst").alias("_group"), "_part")
            .unionByName(split.select(F.col("dst").alias("_id"), F.col("dst").alias("_group"), "_part"))
            .distinct())


def similarity_expr(a: str, b: str):
    """MinHash estimate of two signature-array columns: the fraction of equal positions (null if either is null).

    An Arrow UDF comparing whole batches with numpy. Spark SQL's own form, `aggregate(zip_with(a, b, ...))`,
    evaluates its lambdas interpreted, per element: on 3,600 pairs of 256 values it took 0.8-2.1 CPU-s of the JVM
    against 0.4-0.7 for numpy over Arrow, Python worker included (a throw-away side-by-side script, warm session).
    """
    return F.arrow_udf(_estimates, "double")(F.col(a), F.col(b))


def _estimates(a, b):
    """`minhash.estimated_similarity` per row of two Arrow list<int> arrays; null where either is null."""
    valid = pc.and_(pc.is_valid(a), pc.is_valid(b)).to_numpy(zero_copy_only=False)
    out = np.zeros(len(a), dtype=np.float64)
    if valid.any():
        rows = [x if valid.all() else x.filter(pa.array(valid)) for x in (a, b)]
        sig_a, sig_b = minhash.signature_matrix(rows[0]), minhash.signature_matrix(rows[1])
        if sig_a.shape != sig_b.shape:
            raise ValueError("MinHash signatures of different lengths cannot be compared (different num_perm?)")
        out[valid] = minhash.estimated_similarity(sig_a, sig_b)
    return pa.array(out, mask=~valid)
