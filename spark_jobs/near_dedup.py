"""Near-duplicate removal: MinHash LSH, exact Jaccard verification, connected components; the stage and its API.

    python -m spark_jobs.pipeline --stages near_dedup --lake lake        # the pipeline's `near_dedup` section

Reads `exact_deduped` (files' columns) and writes three tables (docs/near_dedup.md):
- `near_deduped`: the source rows minus every near-duplicate that is not its cluster's kept row;
- `near_dup_clusters`: doc_id, cluster_id (= the kept row's doc_id), representative (idem), similarity (MinHash
  estimate of the Jaccard similarity to the representative), one row per member of every cluster of 2+ files;
- `minhash_signatures`: doc_id, signature, n_shingles, kept, params, so that `incremental: true` deduplicates a
  new batch against everything already kept without recomputing old signatures. A new batch never removes a file
  kept earlier: old kept files always win their cluster.

The work is split by idea: `spark_jobs.near_dup_pairs` (DataFrame transforms: signatures, LSH candidates,
estimates, verification), `spark_jobs.near_dup_clusters` (the in-memory kernel that clusters a small candidate
graph in one task), `spark_jobs.components` (distributed connected components); this module wires them from one
config and runs the stage.

Public API, each taking a `NearDedupConfig` whole (synth post-processing calls the first three):
- `minhash_keys(df, cfg)`: a row's dedup keys (signature, n_shingles, LSH band keys; `key_columns(cfg)` names
  them), which depend on that row alone; `minhash_key_arrays(contents, cfg)` / `minhash_key_fields(cfg)`: the
  same for rows held in this process, as Arrow arrays / Spark fields;
- `cluster_documents(docs, signatures, cfg)`: near_dup_clusters rows of documents given their keys;
- `near_duplicates(df, cfg)`: (kept rows, clusters) of a DataFrame; `run_near_dedup(lake, cfg)`: the stage.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from codemill import faults
from codemill.config import ConfigError
from codemill.lake import Lake, Lineage
from spark_jobs.components import connected_components, first_in_component
from spark_jobs.keep_policy import KeepPolicy, merge_old_key
from spark_jobs.minhash import optimal_bands
from spark_jobs.near_dup_clusters import NODE_PREFIX, cluster_rows, one_task_problems, pair_estimates
from spark_jobs.near_dup_pairs import (
    band_column,
    estimate_candidates,
    lsh_candidates,
    minhash_signatures,
    signature_arrays,
    signature_fields,
    similarity_expr,
    verify_candidates,
    with_band_keys,
)

SIGNATURES_TABLE = "minhash_signatures"
CLUSTERS_TABLE = "near_dup_clusters"
KEPT_TABLE = "near_deduped"
SIGNATURE_SCHEMA_FIELDS = ("doc_id", "signature", "n_shingles", "kept", "params")
CLUSTER_COLUMNS = ("doc_id", "cluster_id", "representative", "similarity")
DEFAULT_KEEP = ("stars desc", "size_bytes desc", "doc_id asc")
log = logging.getLogger(__name__)


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
    # Which member of a cluster is kept (its representative): the first in this order ("column asc|desc", nulls
    # last; doc_id asc is always the final tie-break). `spark_jobs.keep_policy`, shared with exact dedup.
    keep: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_KEEP))
    # Deprecated: the old name of `keep`, still read (configs written before it set it).
    representative: list[str] | None = None
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
    # Bytes of uncertain pairs' contents that one-task clustering may gather. When they weigh more, those pairs
    # are verified by the distributed step instead, and the one task only gets the decided pairs: what it holds
    # is bounded by bytes, not only by pair count. At most 1 GiB, half of Arrow's 2 GiB string-offset limit.
    local_max_bytes: int = 256 << 20

    def band_params(self) -> tuple[int, int]:
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

    def keep_policy(self) -> KeepPolicy:
        """The parsed policy in force (`keep`, or `representative` when only the old key was set)."""
        return KeepPolicy.parse(self._keep()[0])

    def _keep(self) -> tuple[list[str], str, list[str]]:
        return merge_old_key(self.keep, self.representative, DEFAULT_KEEP, old_key="representative")

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
        keep, key, conflict = self._keep()
        problems += conflict + KeepPolicy.problems(keep, key=key)
        if self.checkpoint not in ("local", "reliable", "none"):
            problems.append(f"checkpoint: {self.checkpoint!r} must be one of local, reliable, none")
        if not 0.0 <= self.verify_margin <= 1.0:
            problems.append(f"verify_margin: {self.verify_margin} must be in [0, 1]")
        if self.max_iterations < 1:
            problems.append(f"max_iterations: {self.max_iterations} must be >= 1")
        if self.local_max_edges < 0:
            problems.append(f"local_max_edges: {self.local_max_edges} must be >= 0")
        problems += one_task_problems(local_max_edges=self.local_max_edges, local_max_bytes=self.local_max_bytes,
                                      num_perm=self.num_perm)
        return problems


# ---------------------------------------------------------------------------------------------- dedup keys
def key_columns(cfg: NearDedupConfig) -> list[str]:
    """The columns `minhash_keys` adds: signature, n_shingles and the LSH band keys of `cfg`'s banding."""
    return ["signature", "n_shingles", band_column(*cfg.band_params())]


def minhash_keys(df: DataFrame, cfg: NearDedupConfig, *, id_col: str = "doc_id", content_col: str = "content",
                 carry: Sequence[str] = ()) -> DataFrame:
    """(id_col, *carry, *key_columns(cfg)) per row of `df`: its MinHash signature, distinct shingle count and LSH
    band keys, computed per Arrow batch (`near_dup_pairs.minhash_signatures`). A row's keys depend on that row
    alone, so rows can be keyed batch by batch and clustered later (`cluster_documents`)."""
    bands, rows = cfg.band_params()
    return minhash_signatures(df, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed, id_col=id_col,
                              content_col=content_col, bands=bands, rows=rows, carry=carry)


def minhash_key_fields(cfg: NearDedupConfig, *, nullable: bool = False) -> list[T.StructField]:
    """The Spark fields of `key_columns(cfg)` (`nullable`: for rows that may have no keys)."""
    return signature_fields(*cfg.band_params(), nullable=nullable)


def minhash_key_arrays(contents: pa.Array, cfg: NearDedupConfig) -> list[pa.Array]:
    """`minhash_keys` of rows held in this process: the `key_columns(cfg)` of an Arrow string array of contents,
    as Arrow arrays (signature list<int32>, n_shingles int32, band keys list<int64>), the same values."""
    bands, rows = cfg.band_params()
    return signature_arrays(contents, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed, bands=bands,
                            rows=rows)


# ---------------------------------------------------------------------------------------------- clustering
def cluster_documents(docs: DataFrame, signatures: DataFrame, cfg: NearDedupConfig, *, id_col: str = "doc_id",
                      content_col: str = "content", new_col: str | None = None) -> DataFrame:
    """near_dup_clusters rows (doc_id, cluster_id, representative, similarity) for every cluster of 2+ documents.

    `docs` holds the id, content and the keep-policy columns; `signatures` their keys (`minhash_keys`: id,
    signature, n_shingles, band keys; and `new_col` for incremental runs: old documents then always rank first,
    so they stay kept), and may carry the policy columns too (`minhash_keys(carry=...)`), which saves a look-up in
    `docs`. Candidate graphs of at most `cfg.local_max_edges` pairs are clustered in one task
    (`spark_jobs.near_dup_clusters`), larger ones by distributed steps; both give the same rows.
    """
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
    keep = _keep_policy(cfg, docs.columns)
    order = keep.order(id_col)
    policy = [id_col, *keep.columns(id_col)]
    # Only the policy columns travel to the ranking window, not the file contents.
    members = bcast(labels).join(docs.select(*policy).withColumnRenamed(id_col, "node"), on="node")
    if new_col:
        members = members.join(signatures.select(F.col(id_col).alias("node"), new_col), on="node")
        order = [F.col(new_col).asc()] + order  # kept earlier (False) before new (True)
    # The first member in policy order is the representative (ranked in parts: a hot component spans many tasks).
    ranked = bcast(_materialise(first_in_component(members.withColumnRenamed("node", id_col), order, node=id_col,
                                                   first="representative"), cfg.checkpoint))
    sig = signatures.select(F.col(id_col).alias("_sid"), F.col("signature").alias("_sig"))
    clusters = bcast(ranked.join(sig.withColumnRenamed("_sid", id_col), on=id_col)).join(
        sig.withColumnRenamed("_sid", "representative").withColumnRenamed("_sig", "_rsig"), on="representative")
    return clusters.select(
        F.col(id_col).alias("doc_id"), F.col("representative").alias("cluster_id"), "representative",
        similarity_expr("_sig", "_rsig").alias("similarity"))


def cluster_schema(id_type: T.DataType) -> T.StructType:
    """Spark schema of near_dup_clusters rows for ids of `id_type`."""
    return T.StructType([T.StructField("doc_id", id_type), T.StructField("cluster_id", id_type),
                         T.StructField("representative", id_type), T.StructField("similarity", T.DoubleType())])


def _verified(estimated: DataFrame, docs: DataFrame, *, cfg: NearDedupConfig, id_col: str, content_col: str,
              broadcast: bool) -> DataFrame:
    """(src, dst) of the candidate pairs (src, dst, estimate) that are near-duplicates: decided by the estimate
    outside `verify_margin` of the threshold, by exact Jaccard similarity inside it."""
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
    (`near_dup_clusters.pair_estimates`), and a second gets the pairs, the nodes and the contents of the documents
    in uncertain pairs and does the rest: exact Jaccard of the uncertain pairs, components, representatives,
    similarities (`near_dup_clusters.cluster_rows`).
    """
    ends = _broadcast_if(edges.select(F.col("src").alias(id_col)).unionByName(
        edges.select(F.col("dst").alias(id_col))), broadcast)
    keep = _keep_policy(cfg, docs.columns)
    policy = keep.columns(id_col)
    extra = [new_col] if new_col else []
    if all(c in signatures.columns for c in policy):  # carried along by `minhash_keys`
        nodes = signatures.select(id_col, "signature", *policy, *extra).join(ends, on=id_col, how="left_semi")
    else:
        nodes = signatures.select(id_col, "signature", *extra).join(ends, on=id_col, how="left_semi").join(
            _broadcast_if(docs.select(id_col, *policy).join(ends, on=id_col, how="left_semi"), broadcast),
            on=id_col)
    one = F.lit(0).alias("_all")  # every row into one group, hence one task
    spill = False  # uncertain pairs verified distributed, their contents too heavy for the one task
    pairs = edges.select("src", "dst", F.lit(None).cast("double").alias("estimate"))
    if cfg.verify:
        # The estimates' task passes the nodes through (rows of their own, `NODE_PREFIX`ed columns), so that the
        # second query reads pairs and nodes from one checkpoint instead of gathering the nodes again.
        id_type = edges.schema["src"].dataType
        schema = T.StructType([T.StructField("src", id_type), T.StructField("dst", id_type),
                               T.StructField("estimate", T.DoubleType())]
                              + [T.StructField(NODE_PREFIX + f.name, f.dataType) for f in nodes.schema.fields])
        both = _materialise(edges.groupBy(one).cogroup(nodes.groupBy(one)).applyInArrow(
            functools.partial(pair_estimates, id_col=id_col), schema), cfg.checkpoint)
        pairs = both.where(F.col("src").isNotNull()).select("src", "dst", "estimate")
        nodes = both.where(F.col(NODE_PREFIX + id_col).isNotNull()).select(
            *(F.col(NODE_PREFIX + c).alias(c) for c in nodes.columns))
        lo, hi = cfg.uncertain()
        unsure = pairs.where((F.col("estimate") >= F.lit(lo)) & (F.col("estimate") < F.lit(hi)))
        unsure_ids = _broadcast_if(unsure.select(F.col("src").alias("_text_id")).unionByName(
            unsure.select(F.col("dst").alias("_text_id"))), broadcast)
        texts = docs.select(F.col(id_col).alias("_text_id"), F.col(content_col).alias("_text")).join(
            unsure_ids, on="_text_id", how="left_semi")
        texts, text_bytes = _counted_bytes(texts, "_text", cfg.checkpoint)
        spill = text_bytes > cfg.local_max_bytes
        if not spill:
            pairs = pairs.unionByName(texts, allowMissingColumns=True)  # rows of two kinds: pairs and texts
        else:
            log.info("near dedup: uncertain pairs' contents weigh %d bytes > local_max_bytes %d; verifying them "
                     "distributed", text_bytes, cfg.local_max_bytes)
            verified = verify_candidates(unsure.select("src", "dst"), texts, ngram=cfg.ngram,
                                         threshold=cfg.threshold, id_col="_text_id", content_col="_text",
                                         broadcast=broadcast)
            decided = pairs.where(F.col("estimate") >= F.lit(hi)).select("src", "dst").unionByName(
                verified.select("src", "dst"))
            pairs = decided.select("src", "dst", F.lit(1.0).alias("estimate"))
    # The distributed ranking window's order, for Arrow: kept earlier (False) before new (True), the policy, the id.
    order = ([(new_col, "ascending")] if new_col else []) + keep.arrow_order(id_col)
    lo, hi = cfg.uncertain() if cfg.verify else (None, None)
    if spill:
        lo = hi = None  # every pair left is a near-duplicate
    return pairs.groupBy(one).cogroup(nodes.groupBy(one)).applyInArrow(
        functools.partial(cluster_rows, id_col=id_col, order=order, ngram=cfg.ngram, threshold=cfg.threshold,
                          sure_from=hi, unsure_from=lo),
        cluster_schema(signatures.schema[id_col].dataType))


def _keep_policy(cfg: NearDedupConfig, columns: Sequence[str]) -> KeepPolicy:
    """`cfg`'s keep policy, checked against the columns it sorts."""
    keep = cfg.keep_policy()
    keep.require(columns, key="near_dedup.keep")
    return keep


# ---------------------------------------------------------------------------------------------- DataFrames
def near_duplicates(df: DataFrame, cfg: NearDedupConfig | None = None, *, id_col: str = "doc_id",
                    content_col: str = "content", **keys: Any) -> tuple[DataFrame, DataFrame]:
    """(kept, clusters): `df` without the near-duplicates that are not their cluster's kept row, and the
    near_dup_clusters rows (their `doc_id` / `cluster_id` / `representative` hold ids of `id_col`).

    `keys`: NearDedupConfig keys instead of `cfg` (`threshold=0.8, keep=[...]`); without `cfg`, `keep` defaults to
    the smallest id.
    """
    if cfg is None:
        if "keep" not in keys and "representative" not in keys:
            keys["keep"] = [f"{id_col} asc"]
        cfg = NearDedupConfig(**keys)
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems)
    carry = _keep_policy(cfg, df.columns).columns(id_col)
    sigs = _signatures_once(minhash_keys(df, cfg, id_col=id_col, content_col=content_col, carry=carry),
                            cfg.checkpoint)
    # Materialised once: `kept` and `clusters` both read it.
    clusters, n_clusters = _counted(cluster_documents(df, sigs, cfg, id_col=id_col, content_col=content_col),
                                    cfg.checkpoint)
    return _kept(df, clusters, id_col, n_clusters), clusters


def _kept(df: DataFrame, clusters: DataFrame, id_col: str, n_clusters: int) -> DataFrame:
    """`df` without the cluster members that are not their cluster's kept row (`n_clusters`: the number of cluster
    rows, which decides whether they are broadcast)."""
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


def _counted_bytes(df: DataFrame, column: str, checkpoint: str) -> tuple[DataFrame, int]:
    """`_materialise(df, checkpoint)` and the UTF-8 bytes of its string `column`, in one Spark job."""
    df = _materialise(df, checkpoint, eager=False)
    return df, int(df.agg(F.sum(F.octet_length(column))).first()[0] or 0)


def _signatures_once(df: DataFrame, checkpoint: str) -> DataFrame:
    """The signature table, computed once: its checkpoint is filled by the LSH candidates query, which reads every
    row of it (one Spark job fewer than filling it first)."""
    return _materialise(df, checkpoint, eager=False)


# ---------------------------------------------------------------------------------------------- the stage
OUTPUT_TABLES = (KEPT_TABLE, CLUSTERS_TABLE, SIGNATURES_TABLE)


def run_near_dedup(lake: Lake, cfg: NearDedupConfig, *, source: str = "exact_deduped",
                   lineage: Lineage | None = None) -> dict[str, Any]:
    """Deduplicates table `source` into near_deduped / near_dup_clusters / minhash_signatures.

    Returns {"rows_in", "rows_out", "removed", "clusters"} for the rows processed in this run (in an incremental
    run: the new rows), plus "incremental" and "previously_kept".

    The three tables change in one stage transaction (`Lake.stage`; inside the pipeline, its near_dedup stage's):
    readers see all three of one run, and a run killed between two commits is rolled back by the next one, so an
    incremental retry never finds the batch already in `near_deduped` without its signatures, or the reverse.
    """
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems)
    with lake.stage("near_dedup", OUTPUT_TABLES, write_id=(lineage.write_id or "") if lineage else ""):
        return _run_near_dedup(lake, cfg, source=source, lineage=lineage)


def _run_near_dedup(lake: Lake, cfg: NearDedupConfig, *, source: str, lineage: Lineage | None) -> dict[str, Any]:
    src = lake.read(source)
    prior = cfg.incremental and all(lake.exists(t) for t in (SIGNATURES_TABLE, KEPT_TABLE))
    if not cfg.enabled:
        n = src.count()
        lake.overwrite(KEPT_TABLE, src, lineage=lineage, allow_schema_change=True)
        return {"rows_in": n, "rows_out": n, "removed": 0, "clusters": 0, "incremental": False,
                "previously_kept": 0}
    policy_cols = _keep_policy(cfg, src.columns).columns("doc_id")
    if not prior:
        sigs = _signatures_once(minhash_keys(src, cfg, carry=policy_cols), cfg.checkpoint)
        clusters, n_clusters = _counted(cluster_documents(src, sigs, cfg), cfg.checkpoint)
        kept = _kept(src, clusters, "doc_id", n_clusters)
        removed = clusters.where(F.col("doc_id") != F.col("representative")).select("doc_id")
        sig_rows = (sigs.join(removed.withColumn("_removed", F.lit(True)), on="doc_id", how="left")
                    .select("doc_id", "signature", "n_shingles", F.col("_removed").isNull().alias("kept"),
                            F.lit(cfg.params()).alias("params")))
        # Signatures last, as on the incremental path: they mark rows as seen by near dedup.
        lake.overwrite(KEPT_TABLE, kept, lineage=lineage, allow_schema_change=True)
        faults.point(faults.NEAR_KEPT)
        lake.overwrite(CLUSTERS_TABLE, clusters, lineage=lineage, allow_schema_change=True)
        faults.point(faults.NEAR_CLUSTERS)
        lake.overwrite(SIGNATURES_TABLE, sig_rows, lineage=lineage, allow_schema_change=True)
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
    new_sigs = _materialise(minhash_keys(new_docs, cfg), cfg.checkpoint)
    old_sigs = with_band_keys(stored.where("kept").select("doc_id", "signature", "n_shingles"), bands=bands,
                              rows=rows)
    all_sigs = (old_sigs.withColumn("_new", F.lit(False))
                .unionByName(new_sigs.withColumn("_new", F.lit(True))))
    doc_cols = ["doc_id", "content", *policy_cols]
    # Rows of the batch already in near_deduped (a write outside a stage transaction, killed before the
    # signatures) are taken as new, never twice.
    all_docs = (old_kept.join(new_docs.select("doc_id"), on="doc_id", how="left_anti").select(*doc_cols)
                .unionByName(new_docs.select(*doc_cols)))
    clusters = _materialise(cluster_documents(all_docs, all_sigs, cfg, new_col="_new"), cfg.checkpoint)
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
    faults.point(faults.NEAR_INC_CLUSTERS)
    lake.merge(KEPT_TABLE, kept_new, keys=["doc_id"], lineage=lineage)
    faults.point(faults.NEAR_INC_KEPT)
    # Signatures last: a run killed before this point leaves the new rows "unseen" and a re-run redoes them.
    lake.merge(SIGNATURES_TABLE, sig_rows, keys=["doc_id"], lineage=lineage)
    return {"rows_in": rows_in, "rows_out": rows_in - n_removed, "removed": n_removed, "clusters": n_clusters,
            "incremental": True, "previously_kept": previously_kept}
