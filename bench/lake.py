"""Cost of the embedded Delta commit path against a plain Spark Parquet write of the same rows.

    .venv/bin/python bench/lake.py [--rows 1000000] [--repeats 5]

Both sides write the same generated DataFrame (id, lang, path, content, score) with the same session, in
alternating order; the Lake side adds what a commit costs (fresh folder, footer statistics, one delta-rs
transaction that adds the new files and removes the old ones). Prints medians and their ratio, and ends with
`RESULT {"commit_vs_parquet": <lake / parquet>, ...}`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time


def make_rows(spark, n: int):
    from pyspark.sql import functions as F

    langs = F.array(*[F.lit(x) for x in ("python", "java", "cpp", "go", "rust", "javascript")])
    return spark.range(n).select(
        "id",
        F.element_at(langs, (F.col("id") % 6 + 1).cast("int")).alias("lang"),
        F.concat(F.lit("repo"), (F.col("id") % 997).cast("string"), F.lit("/src/f"), F.col("id").cast("string"),
                 F.lit(".py")).alias("path"),
        F.concat(F.lit("def f_"), F.col("id").cast("string"), F.lit("(x):\n    return x * "),
                 (F.col("id") % 13).cast("string"), F.lit("\n")).alias("content"),
        (F.col("id") % 1000 / 1000.0).alias("score"),
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # `python bench/lake.py` puts bench/ first on sys.path, where bench/tokenize.py shadows the standard library's
    # tokenize module (linecache, inspect and Spark's Python workers import it): put the repository root there.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path[0] = os.path.dirname(here)
    os.environ.setdefault("CODEMILL_SPARK_DRIVER_MEMORY", "2g")
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")

    from codemill.lake import Lake, Lineage
    from codemill.session import get_spark

    spark = get_spark("bench-lake")
    work = tempfile.mkdtemp(prefix="codemill-bench-lake-")
    try:
        lake = Lake(spark, f"{work}/lake", backend="embedded")
        df = make_rows(spark, args.rows)

        runs = iter(range(10**6))

        def parquet_write():
            # A fresh folder each time, like the Lake's commit folders: neither side pays for deleting old files
            # inside the timing (the Lake's old files go at vacuum, outside it).
            path = f"{work}/plain-{next(runs)}"
            df.write.mode("errorifexists").parquet(path)
            return path

        spark_part: list[float] = []
        write_folder = lake._write_folder

        def timed_write_folder(*a, **kw):  # the Spark Parquet write inside the Lake's commit path
            t0 = time.perf_counter()
            out = write_folder(*a, **kw)
            spark_part.append(time.perf_counter() - t0)
            return out

        lake._write_folder = timed_write_folder

        def lake_write():
            lake.overwrite("bench", df, lineage=Lineage("bench", "0"))

        parquet_write()  # warm-up: JIT, codegen, file system caches; also creates the table for the Lake side
        lake_write()
        times: dict[str, list[float]] = {"parquet": [], "lake": []}
        for i in range(args.repeats):
            order = [("parquet", parquet_write), ("lake", lake_write)]
            for key, fn in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
            lake.vacuum("bench")  # outside the timings: old files of both sides go
            for old in glob.glob(f"{work}/plain-*"):
                shutil.rmtree(old)
        parquet_s, lake_s = statistics.median(times["parquet"]), statistics.median(times["lake"])
        # Everything in Lake.overwrite but Spark's write: log reads, schema check, footer statistics, the commit.
        overhead_s = statistics.median(t - s for t, s in zip(times["lake"], spark_part[1:]))
        info = lake.info("bench")
        assert info.rows == args.rows, info
        result = {
            "commit_vs_parquet": round(lake_s / parquet_s, 3),
            "rows": args.rows,
            "parquet_s": round(parquet_s, 3),
            "lake_s": round(lake_s, 3),
            "commit_overhead_s": round(overhead_s, 3),
            "files": info.files,
        }
        print(f"rows={args.rows:,} repeats={args.repeats} files={info.files}")
        print(f"plain Parquet write : {parquet_s:7.3f} s (median of {times['parquet']})")
        print(f"Lake.overwrite      : {lake_s:7.3f} s (median of {times['lake']})")
        print(f"  of which non-Spark: {overhead_s:7.3f} s (log reads, schema check, footer stats, commit)")
        print(f"ratio lake/parquet  : {lake_s / parquet_s:.3f}x (goal <= 1.1x)")
        print("RESULT " + json.dumps(result))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()


if __name__ == "__main__":
    main()
