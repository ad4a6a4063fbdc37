"""Large-star / small-star connected components against a union-find reference."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from spark_jobs.components import NotConverged, component_labels, connected_components


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


def test_in_memory_finish_gives_the_labels_of_the_star_rounds(spark):
    # The first status check counts the edges; they fit, so one task labels the graph.
    edges = _graph() + [("é", "z"), ("z", "Z"), ("ä", "é")]  # UTF-8 order: "Z" < "z" < "ä" < "é"
    expected = _union_find([e for e in edges if e[0] != e[1]])
    df = spark.createDataFrame(edges, "src string, dst string").repartition(4)
    distributed = connected_components(df, src="src", dst="dst")
    in_memory = connected_components(df, src="src", dst="dst", local_max_edges=1000)
    got = {r["node"]: r["component"] for r in in_memory.collect()}
    assert got == expected == {r["node"]: r["component"] for r in distributed.collect()}
    assert got["é"] == "Z"


def test_rounds_run_until_the_graph_fits_in_memory(spark, monkeypatch):
    from spark_jobs import components

    # A path (slow to converge) and a 12-clique: 95 edges, too many for one task at first. A round turns the clique
    # into a star of 11 edges; the path is not done yet, but the graph now fits and is finished in one task.
    edges = [(i, i + 1) for i in range(29)] + [(100 + i, 100 + j) for i in range(12) for j in range(i + 1, 12)]
    calls = []
    original = components._in_memory

    def spy(e):
        calls.append(1)
        return original(e)

    monkeypatch.setattr(components, "_in_memory", spy)
    df = spark.createDataFrame(edges, "a long, b long")
    got = connected_components(df, src="a", dst="b", local_max_edges=60)
    assert calls == [1]
    assert {r["node"]: r["component"] for r in got.collect()} == _union_find(edges)


def test_component_labels_in_memory():
    import pyarrow as pa

    u = pa.array([5, 3, 9, 9, 7], type=pa.int64())
    v = pa.array([3, 1, 8, 9, 7], type=pa.int64())  # a repeated node, a self-loop (9, 9) and a lone self-loop (7)
    nodes, components = component_labels(u, v)
    assert dict(zip(nodes.to_pylist(), components.to_pylist())) == {1: 1, 3: 1, 5: 1, 7: 7, 8: 8, 9: 8}
    with pytest.raises(ValueError, match="null"):
        component_labels(pa.array(["a", None]), pa.array(["b", "c"]))


def test_component_labels_take_large_strings_and_give_back_the_callers_type():
    # Ids are joined as int64-offset strings (Arrow's 2 GiB limit of one string array is never reachable there);
    # the result comes back in the caller's type.
    u = pa.chunked_array([["b", "c"], ["x"]])
    nodes, components = component_labels(u, pa.array(["a", "b", "y"]))
    assert nodes.type == pa.string() and components.type == pa.string()
    assert dict(zip(nodes.to_pylist(), components.to_pylist())) == {"a": "a", "b": "a", "c": "a", "x": "x", "y": "x"}


def test_first_in_component_equals_one_window_and_splits_hot_components(spark):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from spark_jobs.components import first_in_component

    rnd = random.Random(5)
    rows = [(f"n{i:04d}", f"k{rnd.randrange(3) if i < 900 else i}", rnd.choice([None, 1, 2, 3])) for i in range(1000)]
    df = spark.createDataFrame(rows, "node string, component string, stars int").repartition(3)
    order = [F.col("stars").desc_nulls_last(), F.col("node").asc()]
    want = df.select("node", F.first("node").over(Window.partitionBy("component").orderBy(*order)).alias("first"))
    got = first_in_component(df, order, splits=8)
    assert sorted(tuple(r) for r in got.collect()) == sorted(tuple(r) for r in want.collect())
    # No window ranks a whole component: each is partitioned by component and a hash part, then by the winners.
    plan = got._jdf.queryExecution().executedPlan().toString()
    assert "xxhash64" in plan
