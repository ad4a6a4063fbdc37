"""Large-star / small-star connected components against a union-find reference."""

from __future__ import annotations

import random

import pytest

from spark_jobs.components import NotConverged, connected_components


def _union_find(edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def _graph():
    rng = random.Random(7)
    edges = [(f"n{i:03d}", f"n{i + 1:03d}") for i in range(0, 24)]  # a long path: the slow case for label passing
    edges += [("n100", f"n{i:03d}") for i in range(101, 110)]  # a star whose centre is not the smallest id
    edges += [("n099", "n105")]
    edges += [(f"n{rng.randint(200, 260):03d}", f"n{rng.randint(200, 260):03d}") for _ in range(40)]  # random
    edges += [("n300", "n300")]  # a self-loop alone is no component
    return edges


def test_matches_union_find_for_any_partitioning(spark):
    edges = _graph()
    expected = {k: v for k, v in _union_find([e for e in edges if e[0] != e[1]]).items()}
    df = spark.createDataFrame(edges, "src string, dst string")
    results = []
    for parts in (1, 8):
        got = connected_components(df.repartition(parts), src="src", dst="dst")
        results.append({r["node"]: r["component"] for r in got.collect()})
    assert results[0] == expected
    assert results[1] == expected


def test_integer_ids_and_max_iterations(spark):
    df = spark.createDataFrame([(i, i + 1) for i in range(16)], "a long, b long")
    with pytest.raises(NotConverged, match="max_iterations"):
        connected_components(df, src="a", dst="b", max_iterations=1, checkpoint="none")
    got = {r["node"]: r["component"] for r in connected_components(df, src="a", dst="b").collect()}
    assert got == {i: 0 for i in range(17)}


def test_distinct_pairs_input_gives_the_same_components(spark):
    # LSH candidate pairs are already distinct; skipping the de-duplication must not change any label.
    edges = sorted({tuple(sorted(e, reverse=True)) for e in _graph() if e[0] != e[1]})
    expected = _union_find(edges)
    df = spark.createDataFrame(edges, "src string, dst string").repartition(3)
    got = connected_components(df, src="src", dst="dst", distinct_pairs=True)
    assert {r["node"]: r["component"] for r in got.collect()} == expected
