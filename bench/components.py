"""Connected components benchmark: codemill's star rounds vs GraphX's `ConnectedComponents`, same graphs, one session.

    .venv/bin/python -m bench.components   # ~20k, ~200k edges, a 50,000-node tree and chain; make bench-components
    .venv/bin/python -m bench.components --repeats 1 --small 2000 --large 20000 --giant 5000   # faster

The defaults take 12-15 minutes on 2 shared cores (the 200k-edge graph ~4.5 of them). Figures and the decision
they led to: docs/near_dedup.md, "Connected components: codemill vs GraphX/GraphFrames".

The question (issue: "measure connected components against the maintained library, keep the better one"): does
GraphFrames' `connectedComponents` serve near dedup better than the hand-written `spark_jobs/components.py`?

GraphFrames itself cannot run on this machine: the Maven mirror it reaches does not serve its Spark 4 jars, and the
PyPI wheel (`graphframes-py`) holds only the Python wrapper. Checked on 2026-12-03:

    curl -s -o /dev/null -w '%{http_code}' https://repo.maven.apache.org/maven2/io/graphframes/<path>
      graphframes-spark4_2.13/maven-metadata.xml                      -> 404
      graphframes-spark4_2.13/0.9.2/graphframes-spark4_2.13-0.9.2.pom   -> 404
      graphframes-spark4_2.13/0.10.0/graphframes-spark4_2.13-0.10.0.pom -> 404
      graphframes-spark4_2.13/0.12.2/graphframes-spark4_2.13-0.12.2.pom -> 404
      graphframes-graphx-spark4_2.13/maven-metadata.xml                -> 404
      graphframes-connect-spark4_2.13/maven-metadata.xml               -> 404
      (same mirror: org/apache/spark/spark-graphx_2.13/maven-metadata.xml -> 200)
    mvn -B dependency:get -Dartifact=io.graphframes:graphframes-spark4_2.13:0.10.0 -Dtransitive=false
      -> BUILD FAILURE: "Couldn't download artifact ... was not found in https://repo.maven.apache.org/maven2"

The peer measured is therefore Spark's own GraphX (`spark-graphx_2.13-4.2.0.jar` ships in pyspark's `jars/`):
`org.apache.spark.graphx.lib.ConnectedComponents` (Pregel label propagation: every vertex repeatedly takes the
smallest label among its neighbours; one superstep per hop, so rounds grow with the component's diameter) is what
GraphFrames runs with `algorithm="graphx"`. GraphFrames' default algorithm is the large-star/small-star family
(Kiveris et al. 2014) that codemill implements, on DataFrames as codemill does. GraphX is called through py4j in
the same JVM, with the same cores and session settings, and through the route GraphFrames' graphx path takes
(no text files): the edge DataFrame as a `Dataset[(Long, Long)]` -> `.rdd()` -> `Graph.fromEdgeTuples` ->
`ConnectedComponents.run` -> `createDataset(vertices)` -> DataFrame (node, component). So there is no
`GraphLoader.edgeListFile` text round trip to subtract: both sides start from a DataFrame and end with one.

Graphs (node ids as in near dedup: 16 hex characters, random; for GraphX the same graph with each id replaced by
its rank in id order, so both label a component by its smallest id and the labels must be identical):
- candidate graphs at two sizes (`--small`, `--large` edges): many small components as LSH + verification give
  them, sizes 2 (55%) or heavy-tailed (2 + a Pareto(1.3) draw, 3 to 500 nodes); a component is a union of stars on
  bucket centres (the smallest id of the bucket: one star over all members plus up to two over subsets; half of
  them), a drift chain (each file a near-duplicate of the previous one; 30%, up to `MAX_CHAIN` files, a tree above)
  or a random tree (each copy made from an earlier one). Pairs are distinct, as LSH gives them (codemill is called
  with `distinct_pairs=True`, as near dedup does).
- skewed: the small graph plus one component of `--giant` nodes, a random recursive tree (each node links to a
  uniformly chosen earlier one; diameter ~2e ln n).
- skewed chain: the small graph plus one path of `--giant` nodes in random id order, the worst case for label
  propagation (GraphX needs about as many supersteps as the smallest id's distance to the path's far end). GraphX
  gets `--chain-supersteps` supersteps there (it would not finish in the bench's time) and its time to the full
  count is extrapolated from them, marked as an estimate; codemill runs to the end.

Methods, each timed from the edge DataFrame (materialised in memory, 2 x cores partitions) to the labels
materialised as a DataFrame (a `noop` write of (node, component), so nothing is collected inside the timer):
- `codemill`: `connected_components(..., local_max_edges=50_000)`, near dedup's default (star rounds until the
  edges fit, then the in-memory finish), on the string ids.
- `codemill_distributed`: the same with `local_max_edges=0` (star rounds only), what graphs above the in-memory
  limit run at scale.
- `graphx`: GraphX on the long ids, its input partitioned as a DataFrame pipeline hands it over: after a shuffle
  that AQE coalesced (GraphX's RDD stages keep their input's partitions; here 1 up to 70k edges, 2 at 200k).
  Leaves out turning doc_ids into longs and back, which near dedup would need.
- `graphx_fixed`: the same on 2 x cores partitions, the count codemill's shuffles start from. RESULT's `graphx_s`
  is the faster of the two (`graphx_aqe_s`, `graphx_fixed_s`).
- `graphx_strings`: GraphX with that mapping included (distinct ids numbered by `monotonically_increasing_id`,
  two joins in, one join back, and the smallest doc_id per component by a window, since the numbering does not
  follow id order): what replacing codemill's function in near dedup would cost.
- `codemill_long`: codemill's default on the long ids, the like-for-like algorithm comparison with `graphx`.
- `codemill_one_task`: `local_max_edges` = the graph's edge count, so the whole graph goes to the in-memory finish
  at once (one status job, then scipy in one task): what raising near dedup's `local_max_edges` would give.
One warm-up graph (the small size plus a tree of `--giant / 10` nodes) runs through every method first (JIT, code
generation, Python workers). Then each method runs `--repeats` times per graph, the order rotated from graph to
graph and reversed every other repeat; the fastest wall and CPU seconds count. Per run: wall seconds, CPU seconds
of the process tree (driver, JVM, Python workers), Spark jobs, and peaks over the start of the run (after a full
GC): block-manager storage memory (GraphX's cached graphs, codemill's round checkpoints), execution memory, and
the Python workers' RSS. Each result is collected after the timer and compared with codemill's: identical labels,
and at least the same partition into components (asserted, except for the capped GraphX run). Left out:
generating the graphs and building the edge DataFrames (the same for all methods).
"""

from __future__ import annotations

import os
import sys

# bench/ holds scripts named like stdlib modules (tokenize.py): never import from the script's own folder.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCAL_MAX_EDGES = 50_000  # near dedup's default (NearDedupConfig.local_max_edges)
MAX_CHAIN = 20  # drift chains longer than this are rare in near-dup graphs; larger clusters get a tree instead
METHODS = ("codemill", "codemill_distributed", "codemill_one_task", "graphx", "graphx_fixed", "graphx_strings",
           "codemill_long")
LONG_IDS = ("graphx", "graphx_fixed", "codemill_long")


# ------------------------------------------------------------------------------------------------ graphs
def new_ids(n: int, rng: random.Random, seen: set[str]) -> list[str]:
    """n fresh doc_ids shaped like ingest's (16 hex characters of a hash), in random order."""
    out = []
    while len(out) < n:
        s = f"{rng.getrandbits(64):016x}"
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def component_edges(members: list[str], rng: random.Random) -> set[tuple[str, str]]:
    """Edges of one near-duplicate cluster: LSH stars, a drift chain or a random tree (see the module docstring)."""
    k = len(members)
    shape = rng.random()
    if k == 2:
        return {(members[0], members[1])}
    if shape < 0.5:
        # Every band links each member to its bucket's smallest id; a band whose bucket misses the cluster's
        # smallest member gives a second centre.
        edges = set()
        for sub in [members] + [rng.sample(members, rng.randint(2, k)) for _ in range(rng.randint(0, 2))]:
            c = min(sub)
            edges |= {(m, c) for m in sub if m != c}
        return edges
    if shape < 0.8 and k <= MAX_CHAIN:
        pairs = zip(members, members[1:])
    else:
        pairs = ((members[i], members[rng.randrange(i)]) for i in range(1, k))
    return {(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs}


def candidate_graph(n_edges: int, rng: random.Random, seen: set[str]) -> list[tuple[str, str]]:
    edges: list[tuple[str, str]] = []
    while len(edges) < n_edges:
        k = 2 if rng.random() < 0.55 else min(500, 2 + int(rng.paretovariate(1.3)))
        edges.extend(component_edges(new_ids(k, rng, seen), rng))
    return edges


def giant_component(n_nodes: int, shape: str, rng: random.Random, seen: set[str]) -> list[tuple[str, str]]:
    ids = new_ids(n_nodes, rng, seen)
    if shape == "chain":
        return list(zip(ids, ids[1:]))
    return [(ids[i], ids[rng.randrange(i)]) for i in range(1, n_nodes)]


def chain_supersteps(edges: list[tuple[str, str]]) -> int:
    """Supersteps label propagation needs on a path: the smallest id's distance to the farther end."""
    order = [edges[0][0]] + [b for _, b in edges]
    p = order.index(min(order))
    return max(p, len(order) - 1 - p)


# ------------------------------------------------------------------------------------------------ methods
def codemill_components(edges, *, local_max_edges: int):
    from spark_jobs.components import connected_components

    return connected_components(edges, src="src", dst="dst", distinct_pairs=True, local_max_edges=local_max_edges)


class GraphX:
    """GraphX's ConnectedComponents through py4j, by the route GraphFrames' graphx path takes (no files)."""

    def __init__(self, spark):
        self.spark = spark
        jvm = spark.sparkContext._jvm
        self.jvm = jvm
        enc = jvm.org.apache.spark.sql.Encoders
        self.pair = enc.tuple(enc.scalaLong(), enc.scalaLong())
        self.graph = getattr(getattr(jvm.org.apache.spark.graphx, "Graph$"), "MODULE$")
        self.none = getattr(getattr(jvm.scala, "None$"), "MODULE$")
        self.int_tag = jvm.scala.reflect.ClassTag.Int()
        self.memory = jvm.org.apache.spark.storage.StorageLevel.MEMORY_ONLY()
        self.cached: list = []

    def components(self, edges, *, max_supersteps: int | None = None):
        """(node, component) of a (src, dst) DataFrame of long ids; component = smallest id."""
        from pyspark.sql import DataFrame

        pairs = edges.select("src", "dst")._jdf.__getattr__("as")(self.pair).rdd()
        # Edge attribute 1, vertex attribute 0 (ints), as GraphLoader.edgeListFile builds them.
        graph = self.graph.fromEdgeTuples(pairs, 0, self.none, self.memory, self.memory, self.int_tag)
        cc = self.jvm.org.apache.spark.graphx.lib.ConnectedComponents
        labelled = (cc.run(graph, self.int_tag, self.int_tag) if max_supersteps is None
                    else cc.run(graph, max_supersteps, self.int_tag, self.int_tag))
        self.cached += [graph, labelled]
        jdf = self.spark._jsparkSession.createDataset(labelled.vertices(), self.pair).toDF()
        return DataFrame(jdf, self.spark).withColumnsRenamed({"_1": "node", "_2": "component"})

    def on_strings(self, edges):
        """The same for string ids: number them, run, name the labels, take each component's smallest id."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        nodes = (edges.select(F.col("src").alias("name")).union(edges.select(F.col("dst").alias("name"))).distinct()
                 .withColumn("id", F.monotonically_increasing_id()).localCheckpoint(eager=True))
        long_edges = (edges.join(nodes.select(F.col("name").alias("src"), F.col("id").alias("s")), "src")
                      .join(nodes.select(F.col("name").alias("dst"), F.col("id").alias("d")), "dst")
                      .select(F.col("s").alias("src"), F.col("d").alias("dst")))
        labels = self.components(long_edges).join(nodes.withColumnRenamed("id", "node"), "node")
        return labels.select(F.col("name").alias("node"),
                             F.min("name").over(Window.partitionBy("component")).alias("component"))

    def release(self):
        for g in self.cached:
            g.unpersist(False)
        self.cached = []


# ------------------------------------------------------------------------------------------------ measuring
class Memory:
    """Peaks during a run, sampled every 50 ms: the block manager's storage memory (cached and checkpointed blocks:
    GraphX's graphs, codemill's round checkpoints) and execution memory (shuffle, sort and aggregation buffers) of
    the one local executor, and the summed RSS of the Spark Python workers; each as growth over its value at the
    start."""

    def __init__(self, spark):
        import psutil

        me = psutil.Process()
        self.manager = spark.sparkContext._jvm.org.apache.spark.SparkEnv.get().memoryManager()
        self.workers = lambda: [p for p in me.children(recursive=True) if "python" in p.name().lower()]
        self.base = self._sample()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[int, int, int]:
        import psutil

        rss = 0
        for p in self.workers():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        return self.manager.storageMemoryUsed(), self.manager.executionMemoryUsed(), rss

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = tuple(max(a, b) for a, b in zip(self.peak, self._sample()))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        grow = [max(p - b, 0) / 2**20 for p, b in zip(self.peak, self.base)]
        return {"storage_mb": grow[0], "execution_mb": grow[1], "workers_mb": grow[2]}


def timed(spark, name: str, make) -> dict:
    """Runs make() -> labels DataFrame, materialises it (noop write), and measures; returns figures and labels."""
    import gc

    from bench.dedup import tree_cpu_seconds

    sc, jvm = spark.sparkContext, spark.sparkContext._jvm
    group = f"components-{next(_RUNS)}"
    # Let the previous run's blocks go first: unreferenced DataFrames, then the JVM's ContextCleaner.
    gc.collect()
    jvm.java.lang.System.gc()
    time.sleep(0.5)
    mem = Memory(spark)
    sc.setJobGroup(group, name)
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    labels = make()
    labels.write.format("noop").mode("overwrite").save()
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - cpu0
    peaks = mem.stop()
    jobs = len(sc.statusTracker().getJobIdsForGroup(group))
    table = labels.toArrow()
    got = dict(zip(table.column("node").to_pylist(), table.column("component").to_pylist()))
    return {"wall_s": wall, "cpu_s": cpu, "spark_jobs": jobs, **peaks, "labels": got}


_RUNS = itertools.count()


def partition(labels: dict) -> set[frozenset]:
    groups: dict = {}
    for node, comp in labels.items():
        groups.setdefault(comp, []).append(node)
    return {frozenset(g) for g in groups.values()}


# ------------------------------------------------------------------------------------------------ main
def run_graph(spark, gx: GraphX, name: str, edges: list[tuple[str, str]], *, rotate: int = 0, repeats: int = 1,
              max_supersteps: int | None = None, quiet: bool = False) -> dict:
    """Every method on one graph, `repeats` times (the order rotated by `rotate`, reversed every other repeat);
    per method the fastest wall and CPU seconds, the largest memory figures, and whether every result matches
    codemill's labels."""
    import pyarrow as pa

    nodes = sorted({n for e in edges for n in e})
    rank = {n: i for i, n in enumerate(nodes)}
    parts = int(spark.conf.get("spark.sql.shuffle.partitions"))
    src, dst = zip(*edges)
    str_df = spark.createDataFrame(pa.table({"src": list(src), "dst": list(dst)}))
    long_df = spark.createDataFrame(pa.table({"src": pa.array([rank[n] for n in src], pa.int64()),
                                              "dst": pa.array([rank[n] for n in dst], pa.int64())}))
    str_df = str_df.repartition(parts).localCheckpoint(eager=True)
    long_df = long_df.repartition(parts).localCheckpoint(eager=True)
    # GraphX's RDD stages keep their input's partitions (no adaptive coalescing): hand it what a DataFrame
    # pipeline would, the edges after a shuffle that AQE coalesced (1 partition up to ~100k edges here, then 2).
    aqe_df = long_df.repartition("src").localCheckpoint(eager=True)
    makers = {
        "codemill": lambda: codemill_components(str_df, local_max_edges=LOCAL_MAX_EDGES),
        "codemill_distributed": lambda: codemill_components(str_df, local_max_edges=0),
        "codemill_one_task": lambda: codemill_components(str_df, local_max_edges=len(edges)),
        "graphx": lambda: gx.components(aqe_df, max_supersteps=max_supersteps),
        "graphx_fixed": lambda: gx.components(long_df),
        "graphx_strings": lambda: gx.on_strings(str_df),
        "codemill_long": lambda: codemill_components(long_df, local_max_edges=LOCAL_MAX_EDGES),
    }
    # The capped GraphX run is slow and tells its story once; the id mapping is measured on the other graphs.
    methods = [m for m in METHODS if not (max_supersteps and m in ("graphx_fixed", "graphx_strings"))]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for rep in range(repeats):
        k = rotate % len(methods)
        order = methods[k:] + methods[:k]
        for method in order[::-1] if rep % 2 else order:
            if not (max_supersteps and method == "graphx" and runs[method]):
                runs[method].append(timed(spark, f"{name}: {method}", makers[method]))
                gx.release()
    ref = runs["codemill"][0]["labels"]
    ref_long = {rank[n]: rank[c] for n, c in ref.items()}
    ref_partition = partition(ref)
    out = {"edges": len(edges), "nodes": len(nodes), "components": len(set(ref.values())),
           "graphx_partitions": aqe_df.rdd.getNumPartitions(), "fixed_partitions": parts}
    for method in methods:
        expect = ref_long if method in LONG_IDS else ref
        identical = equal = True
        for r in runs[method]:
            got = r.pop("labels")
            same = got == expect
            identical &= same
            equal &= same or partition({nodes[k]: v for k, v in got.items()} if expect is ref_long else got
                                       ) == ref_partition
        capped = method == "graphx" and max_supersteps is not None
        assert equal or capped, f"{name}: {method} found other components than codemill"
        rs = runs[method]
        r = {"wall_s": min(x["wall_s"] for x in rs), "cpu_s": min(x["cpu_s"] for x in rs),
             "walls": [round(x["wall_s"], 2) for x in rs], "spark_jobs": max(x["spark_jobs"] for x in rs),
             **{k: max(x[k] for x in rs) for k in ("storage_mb", "execution_mb", "workers_mb")},
             "labels_identical": identical, "partitions_equal": equal}
        out[method] = r
        if not quiet:
            print(f"  {method:21s} wall {r['wall_s']:7.2f} s (runs {r['walls']})  CPU {r['cpu_s']:6.2f} s  "
                  f"{r['spark_jobs']:4d} jobs  peak storage +{r['storage_mb']:.0f} MB, execution "
                  f"+{r['execution_mb']:.0f} MB, Python workers +{r['workers_mb']:.0f} MB  labels identical: "
                  f"{r['labels_identical']}", flush=True)
    return out


def summary(res: dict) -> dict:
    cm, dist = res["codemill"], res["codemill_distributed"]
    gx = min(res["graphx"], res["graphx_fixed"], key=lambda r: r["wall_s"])  # GraphX at its better partitioning
    out = {"edges": res["edges"], "nodes": res["nodes"], "components": res["components"],
           "graphx_aqe_s": round(res["graphx"]["wall_s"], 2), "graphx_partitions": res["graphx_partitions"],
           "graphx_fixed_s": round(res["graphx_fixed"]["wall_s"], 2),
           "codemill_s": round(cm["wall_s"], 2),
           "codemill_distributed_s": round(dist["wall_s"], 2), "graphx_s": round(gx["wall_s"], 2),
           "speedup_vs_graphx": round(gx["wall_s"] / cm["wall_s"], 2),
           "distributed_speedup_vs_graphx": round(gx["wall_s"] / dist["wall_s"], 2),
           "codemill_cpu_s": round(cm["cpu_s"], 2), "codemill_distributed_cpu_s": round(dist["cpu_s"], 2),
           "graphx_cpu_s": round(gx["cpu_s"], 2),
           "codemill_jobs": cm["spark_jobs"], "codemill_distributed_jobs": dist["spark_jobs"],
           "graphx_jobs": gx["spark_jobs"],
           "codemill_long_s": round(res["codemill_long"]["wall_s"], 2),
           "codemill_one_task_s": round(res["codemill_one_task"]["wall_s"], 2),
           "codemill_one_task_cpu_s": round(res["codemill_one_task"]["cpu_s"], 2),
           "codemill_one_task_workers_mb": round(res["codemill_one_task"]["workers_mb"]),
           "cpu_speedup_vs_graphx": round(gx["cpu_s"] / cm["cpu_s"], 2),
           "codemill_storage_mb": round(cm["storage_mb"]), "codemill_workers_mb": round(cm["workers_mb"]),
           "codemill_distributed_storage_mb": round(dist["storage_mb"]), "graphx_storage_mb": round(gx["storage_mb"]),
           "partitions_equal": all(r["partitions_equal"] for k, r in res.items() if k in METHODS),
           "labels_identical": all(r["labels_identical"] for k, r in res.items() if k in METHODS)}
    if "graphx_strings" in res:
        out["graphx_strings_s"] = round(res["graphx_strings"]["wall_s"], 2)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=20_000, help="edges of the small candidate graph")
    ap.add_argument("--large", type=int, default=200_000, help="edges of the large candidate graph")
    ap.add_argument("--giant", type=int, default=50_000, help="nodes of the skewed graphs' one large component")
    ap.add_argument("--chain-supersteps", type=int, default=100,
                    help="GraphX supersteps on the skewed chain (the full count would take far longer)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per method and graph; the fastest is reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
    from codemill.session import get_spark

    rng = random.Random(args.seed)
    seen: set[str] = set()
    t = time.perf_counter()
    small = candidate_graph(args.small, rng, seen)
    graphs = {
        "warm-up": candidate_graph(args.small, rng, seen) + giant_component(args.giant // 10, "tree", rng, seen),
        "small": small,
        "large": candidate_graph(args.large, rng, seen),
        "skewed": small + giant_component(args.giant, "tree", rng, seen),
    }
    chain = giant_component(args.giant, "chain", rng, seen)
    graphs["skewed_chain"] = small + chain
    print(f"graphs built in {time.perf_counter() - t:.0f} s", flush=True)

    spark = get_spark("bench-components")
    cores = spark.sparkContext.defaultParallelism
    print(f"Spark {spark.version}, {cores} cores; codemill local_max_edges={LOCAL_MAX_EDGES} (near dedup's default) "
          f"and 0; GraphX ConnectedComponents via py4j", flush=True)
    gx = GraphX(spark)
    results = {}
    for i, (name, edges) in enumerate(graphs.items()):
        capped = args.chain_supersteps if name == "skewed_chain" else None
        t = time.perf_counter()
        res = run_graph(spark, gx, name, edges, rotate=i, repeats=1 if name == "warm-up" else args.repeats,
                        max_supersteps=capped, quiet=name == "warm-up")
        print(f"{name}: {res['edges']} edges, {res['nodes']} nodes, {res['components']} components "
              f"({time.perf_counter() - t:.0f} s for all methods)", flush=True)
        results[name] = res

    result = {"cores": cores}
    for name in ("small", "large", "skewed"):
        result[name] = summary(results[name])
    chain_res = results["skewed_chain"]
    need = chain_supersteps(chain)
    per_step = chain_res["graphx"]["wall_s"] / args.chain_supersteps
    result["skewed_chain"] = {
        "edges": chain_res["edges"], "codemill_s": round(chain_res["codemill"]["wall_s"], 2),
        "codemill_distributed_s": round(chain_res["codemill_distributed"]["wall_s"], 2),
        "codemill_jobs": chain_res["codemill"]["spark_jobs"],
        "codemill_distributed_jobs": chain_res["codemill_distributed"]["spark_jobs"],
        "codemill_cpu_s": round(chain_res["codemill"]["cpu_s"], 2),
        "codemill_one_task_s": round(chain_res["codemill_one_task"]["wall_s"], 2),
        "codemill_distributed_storage_mb": round(chain_res["codemill_distributed"]["storage_mb"]),
        "graphx_supersteps_run": args.chain_supersteps, "graphx_s_for_those": round(chain_res["graphx"]["wall_s"], 2),
        "graphx_supersteps_needed": need, "graphx_s_estimate": round(per_step * need),
        "partitions_equal": chain_res["codemill_distributed"]["partitions_equal"]
        and chain_res["codemill_long"]["partitions_equal"]}
    for name in ("small", "large", "skewed"):
        s = result[name]
        print(f"{name} ({s['edges']} edges): codemill {s['codemill_s']:.2f} s, distributed "
              f"{s['codemill_distributed_s']:.2f} s, one task {s['codemill_one_task_s']:.2f} s, "
              f"GraphX {s['graphx_s']:.2f} s (with string ids "
              f"{s.get('graphx_strings_s', float('nan')):.2f} s): codemill {s['speedup_vs_graphx']:.2f}x, "
              f"distributed {s['distributed_speedup_vs_graphx']:.2f}x", flush=True)
    c = result["skewed_chain"]
    print(f"skewed chain ({c['edges']} edges): codemill {c['codemill_s']:.2f} s, distributed "
          f"{c['codemill_distributed_s']:.2f} s, one task {c['codemill_one_task_s']:.2f} s; "
          f"GraphX {c['graphx_supersteps_run']} supersteps in "
          f"{c['graphx_s_for_those']:.1f} s of the {need} needed (estimate for all: ~{c['graphx_s_estimate']} s)",
          flush=True)
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
