"""Near-duplicate removal: MinHash LSH, exact Jaccard verification, distributed connected components.

    python -m spark_jobs.near_dedup --config conf/spark/near_dedup.yaml --lake lake
    spark-submit spark_jobs/near_dedup.py --config conf/spark/near_dedup.yaml --lake s3://bucket/lake

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
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spark_jobs.components import connected_components

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from spark_jobs.lake import Lake, Lineage

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
        return problems


@dataclasses.dataclass
class NearDedupJob:
    """The standalone job: `lake` root, `source` table, and the `near_dedup` section."""

    lake: str = "lake"
    source: str = "exact_deduped"
    near_dedup: NearDedupConfig = dataclasses.field(default_factory=NearDedupConfig)

    def validate(self) -> list[str]:
        return [] if self.source else ["source: must name the table to deduplicate (e.g. exact_deduped)"]


# ---------------------------------------------------------------------------------------------- transforms
def minhash_signatures(df: DataFrame, *, num_perm: int = 256, ngram: int = 5, seed: int = 42,
                       id_col: str = "doc_id", content_col: str = "content") -> DataFrame:
    """(id_col, signature array<int>, n_shingles int) per row, computed per Arrow batch with numpy."""
    import pyarrow as pa
    from pyspark.sql import types as T

    from spark_jobs import minhash

    schema = T.StructType([
        T.StructField(id_col, df.schema[id_col].dataType, True),
        T.StructField("signature", T.ArrayType(T.IntegerType(), False), False),
        T.StructField("n_shingles", T.IntegerType(), False),
    ])

    def compute(batches):
        for batch in batches:
            sig, n_shingles = minhash.signatures(batch.column(1), num_perm=num_perm, ngram=ngram, seed=seed)
            flat = pa.array(minhash.as_int32(sig).reshape(-1), type=pa.int32())
            offsets = pa.array(range(0, (len(sig) + 1) * num_perm, num_perm), type=pa.int32())
            yield pa.RecordBatch.from_arrays(
                [batch.column(0), pa.ListArray.from_arrays(offsets, flat),
                 pa.array(n_shingles.astype("int32"), type=pa.int32())],
                names=[id_col, "signature", "n_shingles"])

    return df.select(id_col, content_col).mapInArrow(compute, schema)


def lsh_candidates(signatures: DataFrame, *, bands: int, rows: int, id_col: str = "doc_id",
                   new_col: str | None = None) -> DataFrame:
    """Candidate pairs (src, dst): every document that shares a band bucket is linked to the bucket's centre.

    The centre is the bucket's smallest id, or with `new_col` (incremental runs) its smallest already-kept id when
    it has one; only new documents are linked, and only in buckets they share with someone. Linking to a centre
    instead of emitting all pairs keeps a bucket of k near-copies at k - 1 edges. Documents without shingles
    take no part.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    is_new = F.col(new_col) if new_col else F.lit(True)
    keyed = (signatures.where(F.col("n_shingles") > 0)
             .select(F.col(id_col).alias("id"), is_new.alias("is_new"), F.posexplode(F.expr(
                 f"transform(sequence(0, {bands - 1}), i -> xxhash64(slice(signature, i * {rows} + 1, {rows})))"))
                     .alias("band", "bucket")))
    bucket = Window.partitionBy("band", "bucket")
    # min over (is_new, id): false < true, so an already-kept document is the centre whenever the bucket has one.
    centre = F.min(F.struct("is_new", "id")).over(bucket)
    return (keyed.select("id", "is_new", centre["id"].alias("centre"))
            .where(F.col("is_new") & (F.col("id") != F.col("centre")))
            .select(F.col("id").alias("src"), F.col("centre").alias("dst")).distinct())


def estimate_candidates(edges: DataFrame, signatures: DataFrame, *, id_col: str = "doc_id") -> DataFrame:
    """(src, dst, estimate): candidate pairs with the MinHash estimate of their Jaccard similarity."""
    from pyspark.sql import functions as F

    sig = signatures.select(F.col(id_col).alias("src"), F.col("signature").alias("_a"))
    return (edges.join(sig, on="src").join(sig.withColumnRenamed("src", "dst").withColumnRenamed("_a", "_b"),
                                           on="dst")
            .select("src", "dst", similarity_expr("_a", "_b").alias("estimate")))


def verify_candidates(edges: DataFrame, docs: DataFrame, *, ngram: int = 5, threshold: float = 0.7,
                      id_col: str = "doc_id", content_col: str = "content") -> DataFrame:
    """(src, dst, jaccard) for the candidate pairs whose exact shingle-set Jaccard similarity reaches threshold."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from spark_jobs import minhash

    text = docs.select(F.col(id_col).alias("_id"), F.col(content_col).alias("_text"))
    # Candidates are a small fraction of the corpus: keep only their texts before the pair joins, so the contents
    # of all other files are scanned once and never shuffled. The semi-join broadcasts the candidate ids when
    # `edges` is materialised and small (Spark then knows its size), else it shuffles ids, not contents.
    nodes = edges.select(F.col("src").alias("_id")).union(edges.select(F.col("dst").alias("_id"))).distinct()
    text = text.join(nodes, on="_id", how="left_semi")
    pairs = (edges.join(text.withColumnRenamed("_id", "src").withColumnRenamed("_text", "a"), on="src")
             .join(text.withColumnRenamed("_id", "dst").withColumnRenamed("_text", "b"), on="dst")
             .select("src", "dst", "a", "b"))
    schema = T.StructType([edges.schema["src"], edges.schema["dst"], T.StructField("jaccard", T.DoubleType())])

    def compute(batches):
        for batch in batches:
            sim = minhash.pair_jaccard(batch.column(2), batch.column(3), ngram)
            yield pa.RecordBatch.from_arrays([batch.column(0), batch.column(1), pa.array(sim, type=pa.float64())],
                                             names=["src", "dst", "jaccard"])

    return pairs.mapInArrow(compute, schema).where(F.col("jaccard") >= F.lit(threshold))


def _order_columns(df: DataFrame, representative: Sequence[str], id_col: str) -> list:
    from pyspark.sql import functions as F

    missing = [k.split()[0] for k in representative if k.split()[0] not in df.columns]
    if missing:
        raise ValueError(f"near_dedup.representative: columns {missing} are not in the input ({df.columns})")
    order = []
    for key in representative:
        parts = key.split()
        col = F.col(parts[0])
        order.append(col.desc_nulls_last() if len(parts) == 2 and parts[1].lower() == "desc"
                     else col.asc_nulls_last())
    order.append(F.col(id_col).asc())
    return order


def similarity_expr(a: str, b: str):
    """Spark SQL MinHash estimate: the fraction of equal positions of two signature arrays."""
    from pyspark.sql import functions as F

    return F.expr(f"aggregate(zip_with({a}, {b}, (x, y) -> if(x = y, 1, 0)), 0, (acc, x) -> acc + x)"
                  f" / size({a})").cast("double")


def cluster_documents(docs: DataFrame, signatures: DataFrame, *, cfg: NearDedupConfig, id_col: str = "doc_id",
                      content_col: str = "content", new_col: str | None = None) -> DataFrame:
    """near_dup_clusters rows (doc_id, cluster_id, representative, similarity) for every cluster of 2+ documents.

    `docs` holds the id, content and the representative-policy columns; `signatures` the id, signature,
    n_shingles (and `new_col` for incremental runs: old documents then always rank first, so they stay kept).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    bands, rows = cfg.band_params()
    edges = lsh_candidates(signatures, bands=bands, rows=rows, id_col=id_col, new_col=new_col)
    if cfg.verify:
        # Materialised: read twice below, and its known (small) size lets the verification joins broadcast it.
        edges = _materialise(estimate_candidates(edges, signatures, id_col=id_col), cfg.checkpoint)
        lo, hi = cfg.threshold - cfg.verify_margin, cfg.threshold + cfg.verify_margin
        sure = edges.where(F.col("estimate") >= F.lit(hi)).select("src", "dst")
        unsure = edges.where((F.col("estimate") >= F.lit(lo)) & (F.col("estimate") < F.lit(hi)))
        verified = verify_candidates(unsure.select("src", "dst"), docs, ngram=cfg.ngram, threshold=cfg.threshold,
                                     id_col=id_col, content_col=content_col)
        edges = sure.unionByName(verified.select("src", "dst"))
    labels = connected_components(edges, src="src", dst="dst", checkpoint=cfg.checkpoint,  # type: ignore[arg-type]
                                  max_iterations=cfg.max_iterations)
    order = _order_columns(docs, cfg.representative, id_col)
    policy = list(dict.fromkeys([id_col] + [k.split()[0] for k in cfg.representative]))
    # Only the policy columns travel to the ranking window, not the file contents.
    members = labels.join(docs.select(*policy).withColumnRenamed(id_col, "node"), on="node")
    if new_col:
        members = members.join(signatures.select(F.col(id_col).alias("node"), new_col), on="node")
        order = [F.col(new_col).asc()] + order  # kept earlier (False) before new (True)
    ranked = members.withColumnRenamed("node", id_col).withColumn(
        "_rank", F.row_number().over(Window.partitionBy("component").orderBy(*order)))
    reps = ranked.where(F.col("_rank") == 1).select("component", F.col(id_col).alias("representative"))
    sig = signatures.select(F.col(id_col).alias("_sid"), F.col("signature").alias("_sig"))
    clusters = (ranked.select(id_col, "component").join(reps, on="component")
                .join(sig.withColumnRenamed("_sid", id_col), on=id_col)
                .join(sig.withColumnRenamed("_sid", "representative").withColumnRenamed("_sig", "_rsig"),
                      on="representative"))
    return clusters.select(
        F.col(id_col).alias("doc_id"), F.col("representative").alias("cluster_id"), "representative",
        similarity_expr("_sig", "_rsig").alias("similarity"))


def near_duplicates(df: DataFrame, *, num_perm: int = 256, ngram: int = 5, threshold: float = 0.7,
                    bands: int | None = None, rows: int | None = None, seed: int = 42, verify: bool = True,
                    verify_margin: float = 0.15,
                    representative: Sequence[str] | None = None, checkpoint: str = "local",
                    max_iterations: int = 64, id_col: str = "doc_id", content_col: str = "content"
                    ) -> tuple[DataFrame, DataFrame]:
    """(kept, clusters): `df` without the non-representative near-duplicates, and the near_dup_clusters rows.

    `representative` defaults to the smallest id; clusters' `doc_id` / `cluster_id` / `representative` hold ids.
    """
    representative = list(representative) if representative else [f"{id_col} asc"]
    cfg = NearDedupConfig(num_perm=num_perm, ngram=ngram, threshold=threshold, bands=bands, rows=rows, seed=seed,
                          verify=verify, verify_margin=verify_margin, representative=representative,
                          checkpoint=checkpoint, max_iterations=max_iterations)
    problems = cfg.validate()
    if problems:
        from spark_jobs.config import ConfigError

        raise ConfigError(problems)
    sigs = _materialise(minhash_signatures(df, num_perm=num_perm, ngram=ngram, seed=seed, id_col=id_col,
                                           content_col=content_col), checkpoint)
    # Materialised once: `kept` and `clusters` both read it.
    clusters = _materialise(cluster_documents(df, sigs, cfg=cfg, id_col=id_col, content_col=content_col),
                            checkpoint)
    return _kept(df, clusters, id_col), clusters


def _kept(df: DataFrame, clusters: DataFrame, id_col: str) -> DataFrame:
    from pyspark.sql import functions as F

    removed = clusters.where(F.col("doc_id") != F.col("representative")).select(F.col("doc_id").alias(id_col))
    return df.join(removed, on=id_col, how="left_anti").select(*df.columns)


def _materialise(df: DataFrame, checkpoint: str) -> DataFrame:
    if checkpoint == "reliable":
        return df.checkpoint(eager=True)
    if checkpoint == "none":
        return df.cache()
    return df.localCheckpoint(eager=True)


# ---------------------------------------------------------------------------------------------- the stage
def run_near_dedup(lake: Lake, cfg: NearDedupConfig, *, source: str = "exact_deduped",
                   lineage: Lineage | None = None) -> dict[str, Any]:
    """Deduplicates table `source` into near_deduped / near_dup_clusters / minhash_signatures.

    Returns {"rows_in", "rows_out", "removed", "clusters"} for the rows processed in this run (in an incremental
    run: the new rows), plus "incremental" and "previously_kept".
    """
    from pyspark.sql import functions as F

    from spark_jobs.config import ConfigError

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
    policy_cols = [k.split()[0] for k in cfg.representative if k.split()[0] != "doc_id"]
    if not prior:
        sigs = _materialise(minhash_signatures(src, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed),
                            cfg.checkpoint)
        clusters = _materialise(cluster_documents(src, sigs, cfg=cfg), cfg.checkpoint)
        kept = _kept(src, clusters, "doc_id")
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
    new_sigs = _materialise(minhash_signatures(new_docs, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed),
                            cfg.checkpoint)
    old_sigs = stored.where("kept").select("doc_id", "signature", "n_shingles")
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import json

    from spark_jobs.config import config_hash, parse_config
    from spark_jobs.lake import Lake, Lineage
    from spark_jobs.session import get_spark

    job = parse_config(NearDedupJob, argv, prog="near_dedup", description=__doc__)
    spark = get_spark("codemill-near-dedup")
    lake = Lake.open(spark, job.lake)
    tables = [job.source, SIGNATURES_TABLE, KEPT_TABLE]
    lineage = Lineage("near_dedup", config_hash(job), lake.versions(tables))
    stats = run_near_dedup(lake, job.near_dedup, source=job.source, lineage=lineage)
    print(json.dumps(stats, sort_keys=True))
    return stats


if __name__ == "__main__":
    main(sys.argv[1:])
