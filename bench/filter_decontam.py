"""Filter and decontamination stages before vs after: the one-pass measures, the rules engine, the cached index.

    .venv/bin/python bench/filter_decontam.py [--mb 30] [--files-table bench/out/curate/lake_small/files]
    .venv/bin/python bench/filter_decontam.py --files-table demo_out/lake/files   # the lake `make demo` leaves

Input: the first `--mb` MB of a `files` Delta table (default: the one `bench/curate.py` leaves behind, so run that
first; any lake's `files` table will do, e.g. `demo_out/lake/files`), cached in Spark memory so that only the stage
itself is timed. Figures, all in the same run:
- filter: MB/s per core of `judge` with the Spark SQL measures (`add_measures_sql`, the reference) and with the
  Arrow UDF (`add_measures`), and whether both give the same verdict for every file;
- filter rules engine vs the previous implementation (`filter_rules_vs_previous`: previous seconds / rules seconds,
  medians; above 1 = the rules engine is faster): `spark_jobs/filter.py` as it was before the rules engine (`--previous
  auto`: the newest commit whose version has no `class Rule`; or any git revision) is taken from `git show` into a
  temporary module that the workers import too (`addPyFile`). Both judge the same cached input with their Arrow
  measures after one untimed warm-up run each (which also checks that every row gets the same reasons and the same
  measures), then take turns (ABBA, `--rounds` pairs) collecting `doc_id`, `first_reason`, `reasons`. Left out:
  writing the tables, `filter_stats`, the SQL reference path. `--previous none` skips it (no git checkout);
- decontaminate: seconds of `find_contamination` on one file (the fixed cost) with the previous flow (benchmark
  texts into a DataFrame, collected back to the driver and indexed on every call), the first cached call with an empty
  disk cache, a call in a new process (disk cache; simulated by clearing the in-process memo) and a repeated call;
  MB/s per core of the previous flow and of a cached call on the corpus.
Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))

from codemill import schemas  # noqa: E402
from codemill.session import get_spark  # noqa: E402
from spark_jobs import benchmark_index as bi  # noqa: E402
from spark_jobs import decontaminate as dc  # noqa: E402
from spark_jobs import filter as rules_filter  # noqa: E402
from spark_jobs.filter import FilterConfig, judge  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def previous_filter(spark, rev: str):
    """`spark_jobs/filter.py` at `rev` ("auto": the newest version without the rules engine) as a module that the
    driver and Spark's Python workers import (a temporary file shipped with `addPyFile`)."""
    if rev == "auto":
        revs = _git("log", "--format=%H", "--", "spark_jobs/filter.py").split()
        rev = next((r for r in revs if "class Rule" not in _git("show", f"{r}:spark_jobs/filter.py")), None)
        if rev is None:
            raise SystemExit("no commit has spark_jobs/filter.py without the rules engine; pass --previous REV")
    name = "codemill_bench_filter_previous"
    path = Path(tempfile.mkdtemp(prefix="codemill-bench-filter-")) / f"{name}.py"
    path.write_text(_git("show", f"{rev}:spark_jobs/filter.py"))
    sys.path.insert(0, str(path.parent))
    spark.sparkContext.addPyFile(str(path))
    return importlib.import_module(name), rev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=30)
    ap.add_argument("--files-table", default=str(REPO / "bench/out/curate/lake_small/files"))
    ap.add_argument("--previous", default="auto", help="git revision of the filter to compare with; auto; none")
    ap.add_argument("--rounds", type=int, default=5, help="ABBA pairs of previous vs rules runs")
    args = ap.parse_args()
    # Own cache folder: the "empty disk cache" figure must not find a user's cache.
    os.environ["CODEMILL_CACHE_DIR"] = tempfile.mkdtemp(prefix="codemill-bench-cache-")

    import deltalake
    import pyarrow.compute as pc

    table = deltalake.DeltaTable(args.files_table).to_pyarrow_table().select(schemas.FILES.fieldNames())
    sizes = pc.cumulative_sum(pc.binary_length(pc.cast(table["content"], "binary"))).to_numpy()
    table = table.slice(0, int((sizes < args.mb * 1e6).sum()) + 1)
    mb = pc.sum(pc.binary_length(pc.cast(table["content"], "binary"))).as_py() / 1e6
    spark = get_spark("codemill-bench-filter-decontam")
    cores = spark.sparkContext.defaultParallelism
    files = spark.createDataFrame(table.to_pandas(), schemas.FILES).repartition(cores * 2).cache()
    n = files.count()
    print(f"input: {n} files, {mb:.1f} MB, {cores} cores")

    cfg = FilterConfig()

    def verdicts(sql: bool):
        return {r.doc_id: (r.first_reason, tuple(r.reasons))
                for r in judge(files, cfg, sql_measures=sql).select("doc_id", "first_reason", "reasons").collect()}

    t_sql, old = _timed(lambda: verdicts(True))
    t_arrow, new = _timed(lambda: verdicts(False))
    same = old == new
    rejected = sum(1 for v in new.values() if v[0])
    f_old, f_new = mb / t_sql / cores, mb / t_arrow / cores
    print(f"filter: SQL measures {t_sql:.1f} s ({f_old:.3f} MB/s/core); Arrow UDF {t_arrow:.1f} s "
          f"({f_new:.3f} MB/s/core), x{f_new / f_old:.2f}; same verdicts: {same} ({rejected} rejected)")

    # The rules engine vs the implementation before it: same input, same warm-up, turns taken.
    vs_previous = same_as_previous = None
    seconds: dict[str, list[float]] = {"previous": [], "rules": []}
    if args.previous != "none":
        prev, rev = previous_filter(spark, args.previous)
        engines = {"previous": (prev, prev.FilterConfig()), "rules": (rules_filter, cfg)}

        def run(name: str, cols: tuple[str, ...] = ("doc_id", "first_reason", "reasons")):
            module, config = engines[name]
            return {r.doc_id: tuple(r) for r in module.judge(files, config).select(*cols).collect()}

        full = ("doc_id", "first_reason", "reasons", "measures")
        warm = {name: run(name, full) for name in engines}  # warm-up, and the row-for-row check
        same_as_previous = warm["previous"] == warm["rules"]
        for i in range(args.rounds * 2):
            for name in (("previous", "rules") if i % 2 == 0 else ("rules", "previous")):
                seconds[name].append(_timed(lambda name=name: run(name))[0])
        vs_previous = statistics.median(seconds["previous"]) / statistics.median(seconds["rules"])
        print(f"filter: previous ({rev[:12]}) {' '.join(f'{t:.1f}' for t in seconds['previous'])} s; rules "
              f"{' '.join(f'{t:.1f}' for t in seconds['rules'])} s; previous/rules x{vs_previous:.2f} (medians); "
              f"same reasons and measures for every row: {same_as_previous}")

    dcfg = dc.DecontaminateConfig()
    kw = dict(ngram=dcfg.ngram, min_overlap=dcfg.min_overlap, min_matched_ngrams=dcfg.min_matched_ngrams,
              min_short_chars=dcfg.min_short_chars)

    tiny = spark.createDataFrame([("t", "def add(a, b):\n    return a + b\n")], "doc_id string, content string")

    def uncached(df):  # the previous flow: rows built in Python, collected back, indexed, broadcast
        bench = spark.createDataFrame(bi.benchmark_texts(dcfg.benchmarks()), schemas.BENCHMARKS)
        rows = [(r.benchmark, r.task_id, r.field, r.text) for r in bench.collect()]
        index = bi.build_index(rows, ngram=dcfg.ngram, min_short_chars=dcfg.min_short_chars)
        return dc.find_contamination(df, bench, index=index, **kw).count()

    def cached(df):
        return dc.find_contamination(df, dc.load_benchmarks(spark, dcfg), **kw).count()

    def forget():
        for memo in (bi._TEXTS, bi._INDEXES, dc._BENCH_DFS, dc._BROADCASTS):
            memo.clear()

    # One-file calls (what synth post-processing and the annotator's set pay per call): the fixed cost.
    t_unc, _ = _timed(lambda: uncached(tiny))
    forget()
    t_cold, _ = _timed(lambda: cached(tiny))
    forget()
    t_disk, _ = _timed(lambda: cached(tiny))
    t_warm, _ = _timed(lambda: cached(tiny))
    # The stage on the corpus.
    t_unc_files, hits_unc = _timed(lambda: uncached(files))
    t_files, hits = _timed(lambda: cached(files))
    d_old, d_new = mb / t_unc_files / cores, mb / t_files / cores
    print(f"decontaminate, one file: previous flow {t_unc:.1f} s; cached: first call {t_cold:.1f} s (builds and "
          f"saves the index), new process {t_disk:.1f} s (disk cache), repeated call {t_warm:.1f} s")
    print(f"decontaminate, {mb:.0f} MB: previous flow {t_unc_files:.1f} s ({d_old:.3f} MB/s/core), cached "
          f"{t_files:.1f} s ({d_new:.3f} MB/s/core); files flagged {hits_unc} / {hits}")
    result = {
        "mb": round(mb, 1), "files": n, "cores": cores,
        "filter_mb_per_s_per_core": {"sql_before": round(f_old, 3), "arrow_after": round(f_new, 3)},
        "filter_speedup": round(f_new / f_old, 2), "filter_same_verdicts": same,
        "filter_rules_vs_previous": None if vs_previous is None else round(vs_previous, 3),
        "filter_rules_vs_previous_s": {k: [round(t, 2) for t in v] for k, v in seconds.items()},
        "filter_rules_same_as_previous": same_as_previous,
        "find_contamination_one_file_s": {"previous_flow": round(t_unc, 1), "first_cached_call": round(t_cold, 1),
                                          "new_process_disk_cache": round(t_disk, 1),
                                          "repeated_call": round(t_warm, 1)},
        "decontaminate_mb_per_s_per_core": {"previous_flow": round(d_old, 3), "cached": round(d_new, 3)},
    }
    print("RESULT " + json.dumps(result))
    files.unpersist()


if __name__ == "__main__":
    main()
