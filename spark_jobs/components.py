"""Connected components of a large undirected graph with Spark DataFrames: alternating large-star / small-star.

Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014):
both operations preserve connectivity and only ever re-attach a node to a smaller one, and alternating them
converges in O(log^2 n) rounds to one star per component whose centre is the component's smallest node id. The
answer is therefore a function of the edge set alone: identical for any number of partitions or executors.

Edges never reach the driver; each round's result is checkpointed (`localCheckpoint`, or a reliable checkpoint when
the session has a checkpoint directory) so the query plan stays one round long.

    from spark_jobs.components import connected_components
    labels = connected_components(edges, src="a", dst="b")   # columns: node, component (= smallest node id)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Checkpoint = Literal["local", "reliable", "none"]


class NotConverged(RuntimeError):
    """Raised when the star operations have not converged after `max_iterations` rounds."""


def _checkpoint(df: DataFrame, mode: Checkpoint) -> DataFrame:
    if mode == "none":
        return df.cache()
    if mode == "reliable":
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def _large_star(edges: DataFrame) -> DataFrame:
    """Every node u links each strictly larger neighbour to the smallest node of N(u) + {u}."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    both = edges.select("u", "v").unionByName(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    # A window instead of groupBy + join: one shuffle on u per round instead of two.
    m = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    # No distinct here: small-star's minima ignore repeated edges and it removes them itself (one shuffle fewer).
    return (both.select("u", "v", m.alias("m")).where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")))


def _small_star(edges: DataFrame) -> DataFrame:
    """Every node u links itself and its smaller neighbours to the smallest of them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Edges are stored from the larger to the smaller end, so N(u) restricted to smaller nodes is u's edges.
    m = F.min("v").over(Window.partitionBy("u"))
    linked = edges.select("u", "v", m.alias("m"))
    out = linked.select(F.col("v").alias("u"), F.col("m").alias("v")).unionByName(
        linked.select("u", F.col("m").alias("v")))
    return out.where(F.col("u") != F.col("v")).distinct()


def _converged(edges: DataFrame) -> bool:
    """A set of stars: no node is both a leaf and a centre, and every leaf has exactly one centre (one job)."""
    from pyspark.sql import functions as F

    roles = edges.select(F.col("u").alias("node"), F.lit(1).alias("leaf"), F.lit(0).alias("centre")).unionByName(
        edges.select(F.col("v").alias("node"), F.lit(0).alias("leaf"), F.lit(1).alias("centre")))
    per_node = roles.groupBy("node").agg(F.sum("leaf").alias("leaf"), F.max("centre").alias("centre"))
    return per_node.where((F.col("leaf") > 1) | ((F.col("leaf") > 0) & (F.col("centre") > 0))).isEmpty()


def connected_components(edges: DataFrame, *, src: str = "src", dst: str = "dst", checkpoint: Checkpoint = "local",
                         max_iterations: int = 64, distinct_pairs: bool = False) -> DataFrame:
    """(node, component) for every node that has at least one edge; component = smallest node id of its component.

    Self-loops are ignored; nodes without edges are not listed (they are their own component). `distinct_pairs`:
    the caller guarantees no unordered pair occurs twice (in either direction), which saves a shuffle.
    """
    from pyspark.sql import functions as F

    current = (edges.select(F.col(src).alias("u"), F.col(dst).alias("v"))
               .where(F.col("u").isNotNull() & F.col("v").isNotNull() & (F.col("u") != F.col("v")))
               .select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")))
    if not distinct_pairs:
        current = current.distinct()
    current = _checkpoint(current, checkpoint)
    # LSH links each document to its bucket's smallest id, so candidate graphs are often stars already: checking
    # first saves a whole round (two shuffles and a checkpoint) for them.
    converged = _converged(current)
    for _ in range(max_iterations):
        if converged:
            break
        current = _checkpoint(_small_star(_large_star(current)), checkpoint)
        converged = _converged(current)
    if not converged:
        raise NotConverged(f"connected components did not converge in {max_iterations} rounds; raise max_iterations")
    nodes = current.select(F.col("u").alias("node"), F.col("v").alias("component"))
    centres = current.select(F.col("v").alias("node"), F.col("v").alias("component")).distinct()
    return nodes.unionByName(centres)
