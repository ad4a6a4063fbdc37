"""Filter and decontamination stages before vs after the one-pass measures and the cached benchmark index.

    .venv/bin/python bench/filter_decontam.py [--mb 30] [--files-table bench/out/curate/lake_small/files]

Input: the first `--mb` MB of a `files` Delta table (default: the one `bench/curate.py` leaves behind; run it first),
cached in Spark memory so that only the stage itself is timed. Figures, all in the same run:
- filter: MB/s per core of `judge` with the Spark SQL measures (`add_measures_sql`, the previous implementation)
  and with the Arrow UDF (`add_measures`), and whether both give the same verdict for every file;
- decontaminate: seconds of `find_contamination` on one file (the fixed cost) with the previous flow (benchmark
  texts into a DataFrame, collected back to the driver and indexed on every call), the first cached call with an empty
  disk cache, a call in a new process (disk cache; simulated by clearing the in-process memo) and a repeated call;
  MB/s per core of the previous flow and of a cached call on the corpus.
Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=30)
    ap.add_argument("--files-table", default=str(REPO / "bench/out/curate/lake_small/files"))
    args = ap.parse_args()
    # Own cache folder: the "empty disk cache" figure must not find a user's cache.
    os.environ["CODEMILL_CACHE_DIR"] = tempfile.mkdtemp(prefix="codemill-bench-cache-")

    import deltalake
    import pyarrow.compute as pc

    from codemill import schemas
    from codemill.session import get_spark
    from spark_jobs import decontaminate as dc
    from spark_jobs.filter import FilterConfig, judge

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

    dcfg = dc.DecontaminateConfig()
    kw = dict(ngram=dcfg.ngram, min_overlap=dcfg.min_overlap, min_matched_ngrams=dcfg.min_matched_ngrams,
              min_short_chars=dcfg.min_short_chars)

    tiny = spark.createDataFrame([("t", "def add(a, b):\n    return a + b\n")], "doc_id string, content string")

    def uncached(df):  # the previous flow: rows built in Python, collected back, indexed, broadcast
        bench = spark.createDataFrame(dc.benchmark_texts(dcfg), schemas.BENCHMARKS)
        rows = [(r.benchmark, r.task_id, r.field, r.text) for r in bench.collect()]
        index = dc.build_index(rows, ngram=dcfg.ngram, min_short_chars=dcfg.min_short_chars)
        return dc.find_contamination(df, bench, index=index, **kw).count()

    def cached(df):
        return dc.find_contamination(df, dc.load_benchmarks(spark, dcfg), **kw).count()

    def forget():
        for memo in (dc._TEXTS, dc._INDEXES, dc._BENCH_DFS, dc._BROADCASTS):
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
        "find_contamination_one_file_s": {"previous_flow": round(t_unc, 1), "first_cached_call": round(t_cold, 1),
                                          "new_process_disk_cache": round(t_disk, 1),
                                          "repeated_call": round(t_warm, 1)},
        "decontaminate_mb_per_s_per_core": {"previous_flow": round(d_old, 3), "cached": round(d_new, 3)},
    }
    print("RESULT " + json.dumps(result))
    files.unpersist()


if __name__ == "__main__":
    main()
