"""Near-duplicate removal: MinHash LSH, exact Jaccard verification, distributed connected components.

    python -m spark_jobs.pipeline --stages near_dedup --lake lake        # the pipeline's `near_dedup` section

Reads `exact_deduped` (files' columns) and writes three tables (docs/near_dedup.md):
- `near_deduped`: the source rows minus every near-duplicate that is not its cluster's representative;
- `near_dup_clusters`: doc_id, cluster_id (= the representative's doc_id), representative, similarity (MinHash
  estimate of the Jaccard similarity to the representative), one row per member of every cluster of 2+ files;
- `minhash_signatures`: doc_id, signature, n_shingles, kept, params, so that `incremental: true` deduplicates a
  new batch against everything already kept without recomputing old signatures. A new batch never removes a file
  kept earlier: old kept files always win their cluster.

The transforms (`minhash_signatures`, `lsh_candidates`, `verify_candidates`, `near_duplicates`, and
`spark_jobs.components.connected_components`) work on any DataFrame with an id and a text column.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spark_jobs.components import component_labels, connected_components

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from codemill.lake import Lake, Lineage

SIGNATURES_TABLE = "minhash_signatures"
CLUSTERS_TABLE = "near_dup_clusters"
KEPT_TABLE = "near_deduped"
SIGNATURE_SCHEMA_FIELDS = ("doc_id", "signature", "n_shingles", "kept", "params")
CLUSTER_COLUMNS = ("doc_id", "cluster_id", "representative", "similarity")
_ORDERS = ("asc", "desc")


@dataclasses.dataclass
class NearDedupConfig:
    """Near-deduplication settings (conf/spark/near_dedup.yaml documents each key)."""

    enabled: bool = True
    # 256 permutations over 5-grams of code tokens with a 0.7 Jaccard threshold: StarCoder's near-dedup settings
    # (Li et al. 2023, arXiv 2305.06161), which Arctic-SnowCoder's raw-data stage follows (arXiv 2409.02326 §2.1).
    num_perm: int = 256
    ngram: int = 5
    threshold: float = 0.7
    # LSH banding; both unset = derived from threshold and num_perm (`minhash.optimal_bands`), weighting missed
    # duplicates 4:1 over spurious candidates when `verify` removes the spurious ones anyway.
    bands: int | None = None
    rows: int | None = None
    seed: int = 42
    # Exact Jaccard of the shingle sets for candidate pairs: drops files that only share a licence header.
    verify: bool = True
    # Only candidates whose MinHash estimate is within this margin of the threshold are verified exactly; the
    # others are decided by the estimate. Its standard error with 256 permutations is sqrt(J(1-J)/256) <= 0.031,
    # so 0.15 is ~5 standard errors (a wrong decision has probability < 1e-6) and most candidates (copies,
    # boilerplate-sharing pairs) skip re-reading both files. 1.0 verifies every candidate.
    verify_margin: float = 0.15
    # Representative policy: "column asc|desc" keys in order; doc_id asc is always the final tie-break.
    representative: list[str] = dataclasses.field(
        default_factory=lambda: ["stars desc", "size_bytes desc", "doc_id asc"])
    # Deduplicate only the source rows without a persisted signature against the files already kept.
    incremental: bool = False
    # "local" (localCheckpoint), "reliable" (needs spark.sparkContext.setCheckpointDir) or "none" (cache).
    checkpoint: str = "local"
    max_iterations: int = 64
    # Candidate graphs of at most this many LSH pairs are clustered in one executor task (estimates, exact checks,
    # components, representatives, similarities) instead of a dozen distributed Spark jobs; larger graphs run the
    # distributed steps and finish their connected components in one task once the edges fit. That task holds a
    # signature per document (~1 KB with 256 permutations, at most two documents per pair) and the contents of
    # the documents in uncertain pairs: ~100 MB plus those contents at the default. 0 = always distributed.
    local_max_edges: int = 50_000

    def band_params(self) -> tuple[int, int]:
        from spark_jobs.minhash import optimal_bands

        if self.bands and self.rows:
            return self.bands, self.rows
        weights = {"fp_weight": 0.2, "fn_weight": 0.8} if self.verify else {}
        bands, rows = optimal_bands(self.threshold, self.num_perm, **weights)
        if self.bands:
            return self.bands, max(1, self.num_perm // self.bands)
        if self.rows:
            return max(1, self.num_perm // self.rows), self.rows
        return bands, rows

    def uncertain(self) -> tuple[float, float]:
        """[lo, hi): estimates in this range get the exact Jaccard check; at least hi is a near-duplicate."""
        return self.threshold - self.verify_margin, self.threshold + self.verify_margin

    def params(self) -> str:
        """What the persisted signatures depend on; an incremental run refuses signatures made differently."""
        return f"minhash-v2 num_perm={self.num_perm} ngram={self.ngram} seed={self.seed}"

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.num_perm <= 4096:
            problems.append(f"num_perm: {self.num_perm} must be in 1..4096")
        if not 1 <= self.ngram <= 64:
            problems.append(f"ngram: {self.ngram} must be in 1..64")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold: {self.threshold} must be strictly between 0 and 1")
        for key in ("bands", "rows"):
            value = getattr(self, key)
            if value is not None and value < 1:
                problems.append(f"{key}: {value} must be a positive integer or unset")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            problems.append(f"bands: bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        for i, key in enumerate(self.representative):
            parts = key.split()
            if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1].lower() not in _ORDERS):
                problems.append(f"representative[{i}]: {key!r} must be 'column' or 'column asc|desc'")
        if self.checkpoint not in ("local", "reliable", "none"):
            problems.append(f"checkpoint: {self.checkpoint!r} must be one of local, reliable, none")
        if not 0.0 <= self.verify_margin <= 1.0:
            problems.append(f"verify_margin: {self.verify_margin} must be in [0, 1]")
        if self.max_iterations < 1:
            problems.append(f"max_iterations: {self.max_iterations} must be >= 1")
        if self.local_max_edges < 0:
            problems.append(f"local_max_edges: {self.local_max_edges} must be >= 0")
        return problems


# ---------------------------------------------------------------------------------------------- transforms
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
    import pyarrow as pa
    from pyspark.sql import types as T

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
    from pyspark.sql import types as T

    fields = [T.StructField("signature", T.ArrayType(T.IntegerType(), False), nullable),
              T.StructField("n_shingles", T.IntegerType(), nullable)]
    if bands and rows:
        fields.append(T.StructField(band_column(bands, rows), T.ArrayType(T.LongType(), False), nullable))
    return fields


def signature_arrays(contents, *, num_perm: int = 256, ngram: int = 5, seed: int = 42, bands: int | None = None,
                     rows: int | None = None) -> list:
    """The columns `minhash_signatures` adds, as Arrow arrays, for an Arrow string array of contents: signature
    (list<int32>), n_shingles (int32) and, with `bands` and `rows`, the LSH bucket keys (list<int64>). For callers
    that already hold the rows in this process (`synth.postprocess.check_rows_local`)."""
    import pyarrow as pa

    from spark_jobs import minhash

    sig, n_shingles = minhash.signatures(contents, num_perm=num_perm, ngram=ngram, seed=seed)
    columns = [_list_array(minhash.as_int32(sig), pa.int32()), pa.array(n_shingles.astype("int32"), type=pa.int32())]
    if bands and rows:
        columns.append(_list_array(minhash.band_keys(sig, bands=bands, rows=rows), pa.int64()))
    return columns


def _list_array(matrix, value_type):
    """A (n, k) numpy matrix as an Arrow list array of n rows of k values, without a copy per row."""
    import pyarrow as pa

    n, k = matrix.shape
    offsets = pa.array(range(0, (n + 1) * k, k), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=value_type))


def with_band_keys(signatures: DataFrame, *, bands: int, rows: int) -> DataFrame:
    """`signatures` plus its LSH bucket keys (for signatures stored without them, e.g. in incremental runs)."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import types as T

    from spark_jobs import minhash

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
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    signatures = with_band_keys(signatures, bands=bands, rows=rows)
    is_new = F.col(new_col) if new_col else F.lit(True)
    keyed = (signatures.where(F.col("n_shingles") > 0)
             .select(F.col(id_col).alias("id"), is_new.alias("is_new"),
                     F.explode(band_column(bands, rows)).alias("bucket")))
    # min over (is_new, id): false < true, so an already-kept document is the centre whenever the bucket has one.
    centre = F.min(F.struct("is_new", "id")).over(Window.partitionBy("bucket"))
    return (keyed.select("id", "is_new", centre["id"].alias("centre"))
            .where(F.col("is_new") & (F.col("id") != F.col("centre")))
            .select(F.col("id").alias("src"), F.col("centre").alias("dst")).distinct())


def estimate_candidates(edges: DataFrame, signatures: DataFrame, *, id_col: str = "doc_id",
                        broadcast: bool = False) -> DataFrame:
    """(src, dst, estimate): candidate pairs with the MinHash estimate of their Jaccard similarity.

    Materialise `edges` first: Spark then knows it is small and broadcasts it, so the signatures are scanned
    in place instead of being shuffled. With `broadcast` (the caller knows the pairs with their `src` signature
    fit in a broadcast), the second join broadcasts that side too, and no signature is shuffled at all.
    """
    from pyspark.sql import functions as F

    sig = signatures.select(F.col(id_col).alias("src"), F.col("signature").alias("_a"))
    with_src = edges.join(sig, on="src")
    if broadcast:
        with_src = with_src.hint("broadcast")
    return (with_src.join(sig.withColumnRenamed("src", "dst").withColumnRenamed("_a", "_b"), on="dst")
            .select("src", "dst", similarity_expr("_a", "_b").alias("estimate")))


def verify_candidates(edges: DataFrame, docs: DataFrame, *, ngram: int = 5, threshold: float = 0.7,
                      id_col: str = "doc_id", content_col: str = "content", broadcast: bool = False) -> DataFrame:
    """(src, dst, jaccard) for the candidate pairs whose exact shingle-set Jaccard similarity reaches threshold.

    Pairs are verified in groups that share their `dst` (LSH links every document to its bucket's centre, so
    groups are clusters): each document's text is shuffled once per group it belongs to, not once per pair, and
    the group's `dst` is shingled once. A group streams through Python in Arrow batches; only the shingle sets
    of members seen before the group's `dst` are held. The texts of documents outside every pair are filtered
    out before the shuffle: by a broadcast join with `broadcast` (the caller knows the pairs are few), else by a
    shuffle join on the ids.
    """
    from collections.abc import Iterator

    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from spark_jobs import minhash

    members = (edges.select(F.col("src").alias("_id"), F.col("dst").alias("_group"))
               .unionByName(edges.select(F.col("dst").alias("_id"), F.col("dst").alias("_group"))).distinct())
    if broadcast:
        members = members.hint("broadcast")
    text = (docs.select(F.col(id_col).alias("_id"), F.col(content_col).alias("_text"))
            .join(members, on="_id").select("_group", "_id", "_text"))
    id_type = edges.schema["src"].dataType
    schema = T.StructType([T.StructField("src", id_type), T.StructField("dst", id_type),
                           T.StructField("jaccard", T.DoubleType())])

    def verify(key, batches):
        centre = key[0].as_py()
        centre_set, waiting = None, []
        for batch in batches:
            ids = batch.column(1).to_pylist()
            sets = minhash.shingle_sets(batch.column(2), ngram)
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

    from pyspark.sql.pandas.types import to_arrow_type

    text_arrow_type = to_arrow_type(id_type)
    # The iterator form of applyInArrow is chosen from these hints (typing objects, not strings).
    verify.__annotations__ = {"key": tuple, "batches": Iterator[pa.RecordBatch], "return": Iterator[pa.RecordBatch]}
    return text.groupBy("_group").applyInArrow(verify, schema).where(F.col("jaccard") >= F.lit(threshold))


def _policy_keys(representative: Sequence[str], columns: Sequence[str]) -> list[tuple[str, bool]]:
    """(column, descending) of each key of the representative policy, in policy order, each column once (a
    later key on the same column could never decide); raises naming the columns missing from `columns`."""
    keys: dict[str, bool] = {}
    for key in representative:
        parts = key.split()
        keys.setdefault(parts[0], len(parts) == 2 and parts[1].lower() == "desc")
    missing = [c for c in keys if c not in columns]
    if missing:
        raise ValueError(f"near_dedup.representative: columns {missing} are not in the input ({list(columns)})")
    return list(keys.items())


def _policy_columns(representative: Sequence[str], id_col: str, columns: Sequence[str]) -> list[str]:
    """The columns of the representative policy other than the id, in policy order, each once."""
    return [c for c, _ in _policy_keys(representative, columns) if c != id_col]


def _order_columns(df: DataFrame, representative: Sequence[str], id_col: str) -> list:
    """Spark sort expressions of the representative policy, nulls last, the id ascending as the last tie-break."""
    from pyspark.sql import functions as F

    return [F.col(c).desc_nulls_last() if desc else F.col(c).asc_nulls_last()
            for c, desc in _policy_keys(representative, df.columns)] + [F.col(id_col).asc()]


def similarity_expr(a: str, b: str):
    """MinHash estimate of two signature-array columns: the fraction of equal positions (null if either is null).

    An Arrow UDF comparing whole batches with numpy. Spark SQL's own form, `aggregate(zip_with(a, b, ...))`,
    evaluates its lambdas interpreted, per element: on 3,600 pairs of 256 values it took 0.8-2.1 CPU-s of the JVM
    against 0.4-0.7 for numpy over Arrow, Python worker included (a throw-away side-by-side script, warm session).
    """
    from pyspark.sql import functions as F

    return F.arrow_udf(_estimates, "double")(F.col(a), F.col(b))


def _estimates(a, b):
    """`minhash.estimated_similarity` per row of two Arrow list<int> arrays; null where either is null."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from spark_jobs.minhash import estimated_similarity

    valid = pc.and_(pc.is_valid(a), pc.is_valid(b)).to_numpy(zero_copy_only=False)
    out = np.zeros(len(a), dtype=np.float64)
    if valid.any():
        rows = [x if valid.all() else x.filter(pa.array(valid)) for x in (a, b)]
        sig_a, sig_b = _signature_matrix(rows[0]), _signature_matrix(rows[1])
        if sig_a.shape != sig_b.shape:
            raise ValueError("MinHash signatures of different lengths cannot be compared (different num_perm?)")
        out[valid] = estimated_similarity(sig_a, sig_b)
    return pa.array(out, mask=~valid)


def cluster_documents(docs: DataFrame, signatures: DataFrame, *, cfg: NearDedupConfig, id_col: str = "doc_id",
                      content_col: str = "content", new_col: str | None = None) -> DataFrame:
    """near_dup_clusters rows (doc_id, cluster_id, representative, similarity) for every cluster of 2+ documents.

    `docs` holds the id, content and the representative-policy columns; `signatures` the id, signature,
    n_shingles (and `new_col` for incremental runs: old documents then always rank first, so they stay kept), and
    may carry the policy columns too (`minhash_signatures(carry=...)`), which saves a look-up in `docs`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bands, rows = cfg.band_params()
    edges, n_edges = _counted(lsh_candidates(signatures, bands=bands, rows=rows, id_col=id_col, new_col=new_col),
                              cfg.checkpoint)
    # Every later table (pairs, cluster members, ranked members, cluster rows) has at most two rows per candidate
    # pair: when the pairs are few they all go to the joins as broadcasts, and the signatures, texts and policy
    # columns they are joined with are scanned in place instead of shuffled. Spark's own size estimates of
    # checkpointed data are not reliable enough for that choice (they once made it broadcast the signatures).
    if n_edges == 0:  # no two documents share a bucket: no cluster, and none of the steps below has work to do
        return signatures.sparkSession.createDataFrame([], cluster_schema(signatures.schema[id_col].dataType))
    small = _broadcastable(edges, rows=2 * n_edges)

    def bcast(df: DataFrame) -> DataFrame:
        return _broadcast_if(df, small)

    if n_edges <= cfg.local_max_edges:
        return _clusters_in_one_task(docs, signatures, edges, cfg=cfg, id_col=id_col, content_col=content_col,
                                     new_col=new_col, broadcast=small)
    if cfg.verify:
        # A pair with one signature: ~4 bytes per permutation on top of the ids.
        with_sig_small = _broadcastable(edges, rows=n_edges, row_bytes=_ROW_BYTES + 4 * cfg.num_perm)
        edges = _materialise(estimate_candidates(bcast(edges), signatures, id_col=id_col,
                                                 broadcast=with_sig_small), cfg.checkpoint)
        edges = _verified(edges, docs, cfg=cfg, id_col=id_col, content_col=content_col, broadcast=small)
    # LSH pairs are distinct and never occur in both directions (a pair's centre is the smaller of the two in
    # (is_new, id) order, in every bucket), and `sure` and `verified` are disjoint.
    labels = connected_components(edges, src="src", dst="dst", checkpoint=cfg.checkpoint,  # type: ignore[arg-type]
                                  max_iterations=cfg.max_iterations, distinct_pairs=True,
                                  local_max_edges=cfg.local_max_edges)
    order = _order_columns(docs, cfg.representative, id_col)
    policy = [id_col, *_policy_columns(cfg.representative, id_col, docs.columns)]
    # Only the policy columns travel to the ranking window, not the file contents.
    members = bcast(labels).join(docs.select(*policy).withColumnRenamed(id_col, "node"), on="node")
    if new_col:
        members = members.join(signatures.select(F.col(id_col).alias("node"), new_col), on="node")
        order = [F.col(new_col).asc()] + order  # kept earlier (False) before new (True)
    # The first member in policy order is the representative: one window, no self-join.
    ranked = bcast(_materialise(members.withColumnRenamed("node", id_col).select(
        id_col, F.first(id_col).over(Window.partitionBy("component").orderBy(*order)).alias("representative")),
        cfg.checkpoint))
    sig = signatures.select(F.col(id_col).alias("_sid"), F.col("signature").alias("_sig"))
    clusters = bcast(ranked.join(sig.withColumnRenamed("_sid", id_col), on=id_col)).join(
        sig.withColumnRenamed("_sid", "representative").withColumnRenamed("_sig", "_rsig"), on="representative")
    return clusters.select(
        F.col(id_col).alias("doc_id"), F.col("representative").alias("cluster_id"), "representative",
        similarity_expr("_sig", "_rsig").alias("similarity"))


def cluster_schema(id_type):
    """Spark schema of near_dup_clusters rows for ids of `id_type`."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField("doc_id", id_type), T.StructField("cluster_id", id_type),
                         T.StructField("representative", id_type), T.StructField("similarity", T.DoubleType())])


def _verified(estimated: DataFrame, docs: DataFrame, *, cfg: NearDedupConfig, id_col: str, content_col: str,
              broadcast: bool) -> DataFrame:
    """(src, dst) of the candidate pairs (src, dst, estimate) that are near-duplicates: decided by the estimate
    outside `verify_margin` of the threshold, by exact Jaccard similarity inside it."""
    from pyspark.sql import functions as F

    lo, hi = cfg.uncertain()
    sure = estimated.where(F.col("estimate") >= F.lit(hi)).select("src", "dst")
    unsure = estimated.where((F.col("estimate") >= F.lit(lo)) & (F.col("estimate") < F.lit(hi)))
    verified = verify_candidates(unsure.select("src", "dst"), docs, ngram=cfg.ngram, threshold=cfg.threshold,
                                 id_col=id_col, content_col=content_col, broadcast=broadcast)
    return sure.unionByName(verified.select("src", "dst"))


def _clusters_in_one_task(docs: DataFrame, signatures: DataFrame, edges: DataFrame, *, cfg: NearDedupConfig,
                          id_col: str, content_col: str, new_col: str | None, broadcast: bool) -> DataFrame:
    """`cluster_documents` for a candidate graph of at most `local_max_edges` pairs: the same rows (tested), in
    two Spark queries instead of about eight.

    The distributed steps pay a few Spark jobs each (estimates, verification, every connected-components round,
    the ranking window, the similarity joins), and on a small graph each job's fixed cost (query planning,
    scheduling, generated code, Python round trips) is most of its cost. Here the pairs' documents are gathered
    once with their signatures and policy columns (`nodes`); one task computes every pair's estimate from them
    (`_pair_estimates`), and a second gets the pairs, the nodes and the contents of the documents in uncertain
    pairs and does the rest: exact Jaccard of the uncertain pairs, components, representatives, similarities
    (`_cluster_rows`).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    ends = _broadcast_if(edges.select(F.col("src").alias(id_col)).unionByName(
        edges.select(F.col("dst").alias(id_col))), broadcast)
    policy = _policy_columns(cfg.representative, id_col, docs.columns)
    extra = [new_col] if new_col else []
    if all(c in signatures.columns for c in policy):  # carried along by `minhash_signatures`
        nodes = signatures.select(id_col, "signature", *policy, *extra).join(ends, on=id_col, how="left_semi")
    else:
        nodes = signatures.select(id_col, "signature", *extra).join(ends, on=id_col, how="left_semi").join(
            _broadcast_if(docs.select(id_col, *policy).join(ends, on=id_col, how="left_semi"), broadcast),
            on=id_col)
    one = F.lit(0).alias("_all")  # every row into one group, hence one task
    pairs = edges.select("src", "dst", F.lit(None).cast("double").alias("estimate"))
    if cfg.verify:
        # The estimates' task passes the nodes through (rows of their own, `_NODE_PREFIX`ed columns), so that the
        # second query reads pairs and nodes from one checkpoint instead of gathering the nodes again.
        id_type = edges.schema["src"].dataType
        schema = T.StructType([T.StructField("src", id_type), T.StructField("dst", id_type),
                               T.StructField("estimate", T.DoubleType())]
                              + [T.StructField(_NODE_PREFIX + f.name, f.dataType) for f in nodes.schema.fields])
        both = _materialise(edges.groupBy(one).cogroup(nodes.groupBy(one)).applyInArrow(
            functools.partial(_pair_estimates, id_col=id_col), schema), cfg.checkpoint)
        pairs = both.where(F.col("src").isNotNull()).select("src", "dst", "estimate")
        nodes = both.where(F.col(_NODE_PREFIX + id_col).isNotNull()).select(
            *(F.col(_NODE_PREFIX + c).alias(c) for c in nodes.columns))
        lo, hi = cfg.uncertain()
        unsure = pairs.where((F.col("estimate") >= F.lit(lo)) & (F.col("estimate") < F.lit(hi)))
        unsure_ids = _broadcast_if(unsure.select(F.col("src").alias("_text_id")).unionByName(
            unsure.select(F.col("dst").alias("_text_id"))), broadcast)
        texts = docs.select(F.col(id_col).alias("_text_id"), F.col(content_col).alias("_text")).join(
            unsure_ids, on="_text_id", how="left_semi")
        pairs = pairs.unionByName(texts, allowMissingColumns=True)  # rows of two kinds: pairs and texts
    # The order of `_order_columns`, for Arrow: kept earlier (False) before new (True), the policy, the id.
    order = [(new_col, "ascending")] if new_col else []
    order += [(c, "descending" if desc else "ascending")
              for c, desc in _policy_keys(cfg.representative, [id_col, *policy])]
    order.append((id_col, "ascending"))
    lo, hi = cfg.uncertain() if cfg.verify else (None, None)
    return pairs.groupBy(one).cogroup(nodes.groupBy(one)).applyInArrow(
        functools.partial(_cluster_rows, id_col=id_col, order=order, ngram=cfg.ngram, threshold=cfg.threshold,
                          sure_from=hi, unsure_from=lo),
        cluster_schema(signatures.schema[id_col].dataType))


_NODE_PREFIX = "_node_"


def _signature_matrix(lists):
    """An Arrow list<int> array of signatures as an (n, num_perm) numpy matrix (no copy without nulls)."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(lists) and ((lengths != lengths[0]).any() or lists.null_count):
        raise ValueError("MinHash signatures of different lengths cannot be compared (different num_perm?)")
    width = int(lengths[0]) if len(lists) else 0
    return lists.flatten().to_numpy(zero_copy_only=False).reshape(len(lists), width) if width else np.zeros((0, 0))


def _pair_estimates(edges, nodes, *, id_col: str):
    """(src, dst, estimate) for every pair of `edges` (Arrow table src, dst), from the signatures in `nodes`,
    followed by the rows of `nodes` themselves (columns prefixed `_NODE_PREFIX`, the pair columns null)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from spark_jobs.minhash import estimated_similarity

    ids = nodes.column(id_col).combine_chunks()
    sig = _signature_matrix(nodes.column("signature").combine_chunks())
    src, dst = (edges.column(c).combine_chunks() for c in ("src", "dst"))
    at = [pc.index_in(x, value_set=ids) for x in (src, dst)]
    if any(a.null_count for a in at):
        raise ValueError("near dedup: a candidate pair names a document without a signature")
    a, b = (x.to_numpy(zero_copy_only=False) for x in at)
    estimate = np.empty(len(a), dtype=np.float64)
    for lo in range(0, len(a), 8192):  # bounded temporaries: 8192 pairs x num_perm values at a time
        estimate[lo:lo + 8192] = estimated_similarity(sig[a[lo:lo + 8192]], sig[b[lo:lo + 8192]])
    pairs = pa.table({"src": src, "dst": dst, "estimate": estimate})
    passed = nodes.rename_columns([_NODE_PREFIX + c for c in nodes.column_names])
    return pa.concat_tables([pairs, passed], promote_options="default")


def _cluster_rows(pairs, nodes, *, id_col: str, order: list[tuple[str, str]], ngram: int, threshold: float,
                  sure_from: float | None, unsure_from: float | None):
    """near_dup_clusters rows, in memory, as the distributed steps make them (tested against them).

    `pairs` (Arrow table) holds candidate pairs (src, dst, estimate) and, in rows of their own (_text_id, _text),
    the contents of the documents of uncertain pairs; `nodes` the pairs' documents (id, signature, the policy
    columns). With `sure_from` set, a pair is a near-duplicate when its estimate reaches it, or when it reaches
    `unsure_from` and the exact Jaccard similarity of the two contents' shingle sets reaches `threshold` (a pair
    whose content is missing is not); without, every pair is. Then: components, each one's first member in
    `order` (the representative policy, ties broken by id, nulls last: the order of the distributed ranking
    window) and every member's MinHash similarity to it.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from spark_jobs import minhash

    id_type = nodes.schema.field(id_col).type
    edges = pairs.filter(pc.is_valid(pairs.column("src")))
    if sure_from is not None and edges.num_rows:
        estimate = edges.column("estimate").to_numpy()
        keep = estimate >= sure_from
        unsure = np.flatnonzero((estimate >= unsure_from) & ~keep)
        if len(unsure):
            texts = pairs.filter(pc.is_valid(pairs.column("_text_id")))
            text_ids = texts.column("_text_id").to_pylist()
            sets = dict(zip(text_ids, minhash.shingle_sets(texts.column("_text").combine_chunks(), ngram)))
            src, dst = (edges.column(c).take(pa.array(unsure)).to_pylist() for c in ("src", "dst"))
            for i, a, b in zip(unsure, src, dst):
                keep[i] = a in sets and b in sets and minhash.jaccard(sets[a], sets[b]) >= threshold
        edges = edges.filter(pa.array(keep))
    if edges.num_rows == 0:
        empty = pa.array([], type=id_type)
        return pa.table({"doc_id": empty, "cluster_id": empty, "representative": empty,
                         "similarity": pa.array([], type=pa.float64())})
    members, components = component_labels(edges.column("src"), edges.column("dst"))
    at = pc.index_in(members, value_set=nodes.column(id_col).combine_chunks())
    if at.null_count:
        raise ValueError("near dedup: a near-duplicate pair names a document missing from the input")
    table = nodes.take(at).append_column("_component", components)
    # Nulls sort last by default in every pyarrow release (per key since pyarrow 25), as in the ranking window.
    table = table.take(pc.sort_indices(table, sort_keys=[("_component", "ascending"), *order]))
    component = table.column("_component").combine_chunks()
    starts = np.ones(len(component), dtype=bool)
    starts[1:] = pc.not_equal(component[1:], component[:-1]).to_numpy(zero_copy_only=False)
    first = np.flatnonzero(starts)[np.cumsum(starts) - 1]  # each member's representative: its run's first row
    ids = table.column(id_col).combine_chunks()
    sig = _signature_matrix(table.column("signature").combine_chunks())
    similarity = np.empty(len(ids), dtype=np.float64)
    for lo in range(0, len(ids), 8192):
        similarity[lo:lo + 8192] = minhash.estimated_similarity(sig[lo:lo + 8192], sig[first[lo:lo + 8192]])
    representative = ids.take(first)
    return pa.table({"doc_id": ids, "cluster_id": representative, "representative": representative,
                     "similarity": similarity})


def near_duplicates(df: DataFrame, *, num_perm: int = 256, ngram: int = 5, threshold: float = 0.7,
                    bands: int | None = None, rows: int | None = None, seed: int = 42, verify: bool = True,
                    verify_margin: float = 0.15,
                    representative: Sequence[str] | None = None, checkpoint: str = "local",
                    max_iterations: int = 64, local_max_edges: int = 50_000, id_col: str = "doc_id",
                    content_col: str = "content") -> tuple[DataFrame, DataFrame]:
    """(kept, clusters): `df` without the non-representative near-duplicates, and the near_dup_clusters rows.

    `representative` defaults to the smallest id; clusters' `doc_id` / `cluster_id` / `representative` hold ids.
    """
    representative = list(representative) if representative else [f"{id_col} asc"]
    cfg = NearDedupConfig(num_perm=num_perm, ngram=ngram, threshold=threshold, bands=bands, rows=rows, seed=seed,
                          verify=verify, verify_margin=verify_margin, representative=representative,
                          checkpoint=checkpoint, max_iterations=max_iterations, local_max_edges=local_max_edges)
    problems = cfg.validate()
    if problems:
        from codemill.config import ConfigError

        raise ConfigError(problems)
    bands, rows = cfg.band_params()
    sigs = _signatures_once(minhash_signatures(df, num_perm=num_perm, ngram=ngram, seed=seed, id_col=id_col,
                                               content_col=content_col, bands=bands, rows=rows,
                                               carry=_policy_columns(representative, id_col, df.columns)),
                            checkpoint)
    # Materialised once: `kept` and `clusters` both read it.
    clusters, n_clusters = _counted(cluster_documents(df, sigs, cfg=cfg, id_col=id_col, content_col=content_col),
                                    checkpoint)
    return _kept(df, clusters, id_col, n_clusters), clusters


def _kept(df: DataFrame, clusters: DataFrame, id_col: str, n_clusters: int) -> DataFrame:
    """`df` without the cluster members that are not their cluster's representative (`n_clusters`: the number of
    cluster rows, which decides whether they are broadcast)."""
    from pyspark.sql import functions as F

    removed = clusters.where(F.col("doc_id") != F.col("representative")).select(F.col("doc_id").alias(id_col))
    if _broadcastable(clusters, rows=n_clusters):
        removed = removed.hint("broadcast")  # the corpus is then scanned in place, not shuffled
    return df.join(removed, on=id_col, how="left_anti").select(*df.columns)


# Bytes per row assumed for the id-pair tables when deciding to broadcast them: three ids of up to ~64 bytes, a
# double, and Spark's row overhead.
_ROW_BYTES = 256


def _broadcast_if(df: DataFrame, broadcast: bool) -> DataFrame:
    """`df` with a broadcast hint when `broadcast` (the caller counted its rows: `_broadcastable`)."""
    return df.hint("broadcast") if broadcast else df


def _broadcastable(df: DataFrame, *, rows: int, row_bytes: int = _ROW_BYTES) -> bool:
    """True when `rows` rows of `row_bytes` (default: an id-pair table's) fit under the session's broadcast-join
    threshold."""
    limit = df.sparkSession._jsparkSession.sessionState().conf().autoBroadcastJoinThreshold()
    return 0 <= rows * row_bytes <= limit


def _materialise(df: DataFrame, checkpoint: str, *, eager: bool = True) -> DataFrame:
    """`df` computed once: checkpointed (`local`, `reliable`) or cached (`none`). `eager=False` leaves the filling
    to the first query that reads it, which saves a Spark job when that query reads all of it anyway."""
    if checkpoint == "reliable":
        return df.checkpoint(eager=eager)
    if checkpoint == "none":
        return df.cache()
    return df.localCheckpoint(eager=eager)


def _counted(df: DataFrame, checkpoint: str) -> tuple[DataFrame, int]:
    """`_materialise(df, checkpoint)` and its number of rows, in one Spark job instead of two: the checkpoint is
    marked lazily and filled by the job that counts."""
    df = _materialise(df, checkpoint, eager=False)
    return df, df.count()


def _signatures_once(df: DataFrame, checkpoint: str) -> DataFrame:
    """The signature table, computed once: its checkpoint is filled by the LSH candidates query, which reads every
    row of it (one Spark job fewer than filling it first)."""
    return _materialise(df, checkpoint, eager=False)


# ---------------------------------------------------------------------------------------------- the stage
def run_near_dedup(lake: Lake, cfg: NearDedupConfig, *, source: str = "exact_deduped",
                   lineage: Lineage | None = None) -> dict[str, Any]:
    """Deduplicates table `source` into near_deduped / near_dup_clusters / minhash_signatures.

    Returns {"rows_in", "rows_out", "removed", "clusters"} for the rows processed in this run (in an incremental
    run: the new rows), plus "incremental" and "previously_kept".
    """
    from pyspark.sql import functions as F

    from codemill.config import ConfigError

    problems = cfg.validate()
    if problems:
        raise ConfigError(problems)
    src = lake.read(source)
    prior = cfg.incremental and all(lake.exists(t) for t in (SIGNATURES_TABLE, KEPT_TABLE))
    if not cfg.enabled:
        n = src.count()
        lake.overwrite(KEPT_TABLE, src, lineage=lineage, allow_schema_change=True)
        return {"rows_in": n, "rows_out": n, "removed": 0, "clusters": 0, "incremental": False,
                "previously_kept": 0}
    policy_cols = _policy_columns(cfg.representative, "doc_id", src.columns)
    if not prior:
        bands, rows = cfg.band_params()
        sigs = _signatures_once(minhash_signatures(src, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed,
                                                   bands=bands, rows=rows,
                                                   carry=policy_cols),
                                cfg.checkpoint)
        clusters, n_clusters = _counted(cluster_documents(src, sigs, cfg=cfg), cfg.checkpoint)
        kept = _kept(src, clusters, "doc_id", n_clusters)
        removed = clusters.where(F.col("doc_id") != F.col("representative")).select("doc_id")
        sig_rows = (sigs.join(removed.withColumn("_removed", F.lit(True)), on="doc_id", how="left")
                    .select("doc_id", "signature", "n_shingles", F.col("_removed").isNull().alias("kept"),
                            F.lit(cfg.params()).alias("params")))
        lake.overwrite(SIGNATURES_TABLE, sig_rows, lineage=lineage, allow_schema_change=True)
        lake.overwrite(CLUSTERS_TABLE, clusters, lineage=lineage, allow_schema_change=True)
        lake.overwrite(KEPT_TABLE, kept, lineage=lineage, allow_schema_change=True)
        rows_in = sigs.count()
        n_removed = removed.count()
        return {"rows_in": rows_in, "rows_out": rows_in - n_removed, "removed": n_removed,
                "clusters": clusters.select("cluster_id").distinct().count(), "incremental": False,
                "previously_kept": 0}

    stored = lake.read(SIGNATURES_TABLE)
    bad = stored.where(F.col("params") != F.lit(cfg.params())).select("params").limit(1).collect()
    if bad:
        raise ConfigError([f"incremental: {SIGNATURES_TABLE} was built with '{bad[0]['params']}' but this config "
                           f"needs '{cfg.params()}'; run with incremental: false to rebuild"])
    new_docs = src.join(stored.select("doc_id"), on="doc_id", how="left_anti")
    old_kept = lake.read(KEPT_TABLE)
    bands, rows = cfg.band_params()
    new_sigs = _materialise(minhash_signatures(new_docs, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed,
                                               bands=bands, rows=rows), cfg.checkpoint)
    old_sigs = with_band_keys(stored.where("kept").select("doc_id", "signature", "n_shingles"), bands=bands,
                              rows=rows)
    all_sigs = (old_sigs.withColumn("_new", F.lit(False))
                .unionByName(new_sigs.withColumn("_new", F.lit(True))))
    doc_cols = ["doc_id", "content", *policy_cols]
    all_docs = old_kept.select(*doc_cols).unionByName(new_docs.select(*doc_cols))
    clusters = _materialise(cluster_documents(all_docs, all_sigs, cfg=cfg, new_col="_new"), cfg.checkpoint)
    # Rows to record: the new members of every cluster, and each cluster's representative.
    new_ids = new_sigs.select("doc_id")
    touched = clusters.join(new_ids, on="doc_id", how="left_semi").select("cluster_id").distinct()
    cluster_rows = (clusters.join(touched, on="cluster_id", how="left_semi")
                    .join(new_ids.withColumn("_is_new", F.lit(True)), on="doc_id", how="left")
                    .where(F.col("_is_new").isNotNull() | (F.col("doc_id") == F.col("representative")))
                    .select(*CLUSTER_COLUMNS))
    removed = clusters.where(F.col("doc_id") != F.col("representative")).join(new_ids, on="doc_id",
                                                                                how="left_semi")
    kept_new = new_docs.join(removed.select("doc_id"), on="doc_id", how="left_anti").select(*old_kept.columns)
    sig_rows = (new_sigs.join(removed.select("doc_id").withColumn("_removed", F.lit(True)), on="doc_id", how="left")
                .select("doc_id", "signature", "n_shingles", F.col("_removed").isNull().alias("kept"),
                        F.lit(cfg.params()).alias("params")))
    rows_in = new_sigs.count()
    n_removed = removed.count()
    n_clusters = touched.count()
    previously_kept = old_sigs.count()
    if lake.exists(CLUSTERS_TABLE):
        lake.merge(CLUSTERS_TABLE, cluster_rows, keys=["doc_id"], lineage=lineage)
    else:
        lake.overwrite(CLUSTERS_TABLE, cluster_rows, lineage=lineage)
    lake.merge(KEPT_TABLE, kept_new, keys=["doc_id"], lineage=lineage)
    # Signatures last: a run killed before this point leaves the new rows "unseen" and a re-run redoes them.
    lake.merge(SIGNATURES_TABLE, sig_rows, keys=["doc_id"], lineage=lineage)
    return {"rows_in": rows_in, "rows_out": rows_in - n_removed, "removed": n_removed, "clusters": n_clusters,
            "incremental": True, "previously_kept": previously_kept}
