"""The in-memory clustering kernel of near dedup: a small candidate graph clustered in one task.

`spark_jobs.near_dedup.cluster_documents` sends a candidate graph of at most `local_max_edges` pairs to one executor
task (two cogroups of everything on one key) instead of running a dozen distributed Spark jobs, and these
functions do the work there, on Arrow tables with numpy: no Spark in this module, so tests call them directly.

- `pair_estimates(edges, nodes, id_col=)`: every pair's MinHash estimate from the nodes' signatures, followed by
  the nodes themselves (columns prefixed `NODE_PREFIX`), so the next query reads both from one checkpoint;
- `cluster_rows(pairs, nodes, id_col=, order=, ngram=, threshold=, sure_from=, unsure_from=)`: the near-duplicate
  pairs (estimate, exact Jaccard of uncertain pairs), their connected components
  (`spark_jobs.components.component_labels`), each component's first member in the keep policy's order, every
  member's similarity to it: the near_dup_clusters rows the distributed steps make (tested against them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs import minhash
from spark_jobs.components import component_labels

# Prefix of the node columns `pair_estimates` passes through behind the pairs.
NODE_PREFIX = "_node_"
# Arrow's string, binary and list arrays address their values with int32 offsets: one array holds < 2 GiB (2**31
# values for a list). The one task never builds such an array from data whose size grows with the corpus: texts
# are shingled chunk by chunk (Spark's Arrow batches are bounded by spark.sql.execution.arrow.maxBytesPerBatch),
# and ids are concatenated as large (int64-offset) arrays. What it holds at once is capped by `one_task_problems`.
ARROW_OFFSET_LIMIT = (1 << 31) - 1
MAX_ONE_TASK_BYTES = 1 << 30
# Bytes one node takes in the one task besides its signature: an id of up to ~64 bytes, the policy columns, Arrow
# offsets and validity bitmaps.
NODE_OVERHEAD_BYTES = 256


def one_task_problems(*, local_max_edges: int, local_max_bytes: int, num_perm: int) -> list[str]:
    """Configuration problems of the one-task path: its signatures (up to two nodes per pair) and its texts must
    fit `MAX_ONE_TASK_BYTES` (1 GiB), well below Arrow's 2 GiB offset limit, whatever the corpus holds."""
    problems = []
    if not 0 <= local_max_bytes <= MAX_ONE_TASK_BYTES:
        problems.append(f"local_max_bytes: {local_max_bytes} must be in 0..{MAX_ONE_TASK_BYTES} (1 GiB: one task "
                        "holds these contents in memory, and Arrow arrays stop at 2 GiB)")
    node_bytes = 2 * local_max_edges * (4 * num_perm + NODE_OVERHEAD_BYTES)
    if node_bytes > MAX_ONE_TASK_BYTES or 2 * local_max_edges * num_perm > ARROW_OFFSET_LIMIT:
        problems.append(f"local_max_edges: {local_max_edges} pairs need up to {node_bytes >> 20} MiB of signatures "
                        f"in one task with num_perm={num_perm}; at most {MAX_ONE_TASK_BYTES >> 20} MiB allowed, "
                        "lower local_max_edges")
    return problems


def pair_estimates(edges, nodes, *, id_col: str):
    """(src, dst, estimate) for every pair of `edges` (Arrow table src, dst), from the signatures in `nodes`,
    followed by the rows of `nodes` themselves (columns prefixed `NODE_PREFIX`, the pair columns null)."""
    ids = nodes.column(id_col).combine_chunks()
    sig = minhash.signature_matrix(nodes.column("signature").combine_chunks())
    src, dst = (edges.column(c).combine_chunks() for c in ("src", "dst"))
    at = [pc.index_in(x, value_set=ids) for x in (src, dst)]
    if any(a.null_count for a in at):
        raise ValueError("near dedup: a candidate pair names a document without a signature")
    a, b = (x.to_numpy(zero_copy_only=False) for x in at)
    estimate = np.empty(len(a), dtype=np.float64)
    for lo in range(0, len(a), 8192):  # bounded temporaries: 8192 pairs x num_perm values at a time
        estimate[lo:lo + 8192] = minhash.estimated_similarity(sig[a[lo:lo + 8192]], sig[b[lo:lo + 8192]])
    pairs = pa.table({"src": src, "dst": dst, "estimate": estimate})
    passed = nodes.rename_columns([NODE_PREFIX + c for c in nodes.column_names])
    return pa.concat_tables([pairs, passed], promote_options="default")


def cluster_rows(pairs, nodes, *, id_col: str, order: list[tuple[str, str]], ngram: int, threshold: float,
                 sure_from: float | None, unsure_from: float | None):
    """near_dup_clusters rows, in memory, as the distributed steps make them (tested against them).

    `pairs` (Arrow table) holds candidate pairs (src, dst, estimate) and, in rows of their own (_text_id, _text),
    the contents of the documents of uncertain pairs; `nodes` the pairs' documents (id, signature, the policy
    columns). With `sure_from` set, a pair is a near-duplicate when its estimate reaches it, or when it reaches
    `unsure_from` and the exact Jaccard similarity of the two contents' shingle sets reaches `threshold` (a pair
    whose content is missing is not); without, every pair is. Then: components, each one's first member in
    `order` (the keep policy's `KeepPolicy.arrow_order`: ties broken by id, nulls last, the order of the
    distributed ranking window) and every member's MinHash similarity to it.
    """
    id_type = nodes.schema.field(id_col).type
    edges = pairs.filter(pc.is_valid(pairs.column("src")))
    if sure_from is not None and edges.num_rows:
        estimate = edges.column("estimate").to_numpy()
        keep = estimate >= sure_from
        unsure = np.flatnonzero((estimate >= unsure_from) & ~keep)
        if len(unsure):
            texts = pairs.filter(pc.is_valid(pairs.column("_text_id")))
            sets = {}
            # Chunk by chunk, as Spark sent them: concatenating all texts could pass Arrow's 2 GiB offset limit.
            for ids, chunk in zip(texts.column("_text_id").chunks, texts.column("_text").chunks):
                sets.update(zip(ids.to_pylist(), minhash.shingle_sets(chunk, ngram)))
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
    sig = minhash.signature_matrix(table.column("signature").combine_chunks())
    similarity = np.empty(len(ids), dtype=np.float64)
    for lo in range(0, len(ids), 8192):
        similarity[lo:lo + 8192] = minhash.estimated_similarity(sig[lo:lo + 8192], sig[first[lo:lo + 8192]])
    representative = ids.take(first)
    return pa.table({"doc_id": ids, "cluster_id": representative, "representative": representative,
                     "similarity": similarity})
