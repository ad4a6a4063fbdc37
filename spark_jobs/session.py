"""Spark session factory shared by every job.

- Under `spark-submit` (Databricks, EMR, Dataproc, Kubernetes, standalone) it takes the session that spark-submit
  configured and adds nothing but codemill's required SQL settings.
- On the embedded default (`python -m spark_jobs.pipeline ...` on a laptop) it starts `local[*]` with settings that
  work offline: loopback address, this interpreter for Python workers, Arrow on, TIMESTAMP_MICROS Parquet.

`has_delta(spark)` tells whether the Delta Lake extension is on the classpath and enabled; the table layer
(`spark_jobs.lake`) picks its backend from it. `delta_conf()` gives the three settings that turn it on; print the
package coordinate matching the installed pyspark and delta-spark with

    python -m spark_jobs.session --delta-package
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

# Settings every codemill session needs, cluster or laptop.
REQUIRED_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # delta-rs and other Delta readers reject INT96 timestamps.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
}


# JVM options of the embedded session's one JVM (driver and executors in one process). In runs of seconds to
# minutes, the JIT's optimising compiler (C2) took half of the JVM's CPU, compiling Spark code that runs only a
# few thousand times (each distinct query plan brings new generated classes, and their callers' profiles change):
# 4.9-5.9 CPU-s of a 13-16 s near-dedup run after a warm-up. Raising its thresholds ~15x leaves truly hot code
# (Parquet encoding, tight loops) to C2 and the rest at C1; the parallel collector spends less CPU than G1's
# concurrent threads on a 2-3 GB heap. Measured side by side on this 2-core machine (docs/near_dedup.md):
# bench/curate.py --mb 80 --small-mb 20, whole process tree, two pairs in both orders: 152.9 -> 108.0 and
# 127.1 -> 96.5 CPU-s (wall 93.9 -> 75.0, 72.9 -> 67.4 s); bench/lake.py's plain Parquet write 0.69-0.78 s ->
# 0.61 s. C1 alone (-XX:TieredStopAtLevel=1) saves more in short jobs but made that Parquet write 3.2x slower.
# A cluster's JVMs keep their own options: spark-submit sessions never get these.
EMBEDDED_JAVA_OPTIONS = ("-XX:Tier4InvocationThreshold=200000 -XX:Tier4MinInvocationThreshold=100000 "
                         "-XX:Tier4CompileThreshold=300000 -XX:Tier4BackEdgeThreshold=1000000 -XX:+UseParallelGC")


def embedded_conf(*, cores: int | None = None, driver_memory: str | None = None) -> dict[str, str]:
    """Settings for the embedded `local[*]` session (offline, single machine)."""
    cores = cores or int(os.environ.get("CODEMILL_SPARK_CORES", "0")) or os.cpu_count() or 2
    return {
        "spark.master": os.environ.get("CODEMILL_SPARK_MASTER", f"local[{cores}]"),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": driver_memory or os.environ.get("CODEMILL_SPARK_DRIVER_MEMORY", "3g"),
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # A laptop has a handful of cores: 200 shuffle partitions is pure overhead there; AQE coalesces further.
        "spark.sql.shuffle.partitions": str(max(4, 2 * cores)),
        "spark.sql.adaptive.enabled": "true",
        "spark.default.parallelism": str(max(2, cores)),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
        # Code files vary from bytes to megabytes: a byte bound keeps a batch's Arrow buffers in cache and bounded
        # in memory. The near-dedup signature pass over bench/dedup.py's 169 MB corpus (~14 KB per file, 28 MB
        # per 2000-row batch), five alternating runs in one session: median 4.49 CPU-s with Spark's 64 MB bound,
        # 3.87 with 8 MB, 3.86 with 4 MB, 4.05 with 16 MB.
        "spark.sql.execution.arrow.maxBytesPerBatch": str(8 << 20),
        "spark.python.worker.reuse": "true",
        "spark.sql.sources.partitionOverwriteMode": "static",
        # Whole-stage code generation compiles each distinct plan's Java source into a new class, which the JVM
        # then JIT-compiles again. Iterative jobs (connected components rounds) and the pipeline's stages in one
        # process run more distinct plans than the default LRU of 100 holds, so they kept recompiling the same
        # classes. Measured on bench/dedup.py's 170 MB corpus (near dedup after a warm-up run in the same
        # process): 114 compilations per repeated run with 100 entries, none with a cache of 2000 (138 distinct
        # classes in the whole process, well under 1000); process-tree CPU over three
        # alternating pairs 23.9 / 26.5 / 21.5 s with 100, 23.9 / 21.9 / 20.0 s with 1000 (~9% less). Compiled
        # classes are small.
        "spark.sql.codegen.cache.maxEntries": "1000",
        "spark.driver.extraJavaOptions": EMBEDDED_JAVA_OPTIONS,
        **REQUIRED_CONF,
    }


def under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (or a notebook attached to a cluster)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_conf(conf: dict[str, str] | None = None) -> dict[str, str]:
    """The settings `get_spark` applies: under spark-submit only codemill's required ones (the cluster's master,
    memory and packages stay as spark-submit set them), else the embedded ones; `conf` wins over both."""
    settings = dict(REQUIRED_CONF) if under_spark_submit() else embedded_conf()
    settings.update(conf or {})
    return settings


def get_spark(app_name: str = "codemill", *, conf: dict[str, str] | None = None) -> SparkSession:
    """Returns the active session, the spark-submit session, or a new embedded `local[*]` session."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    settings = session_conf(conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CODEMILL_SPARK_LOG_LEVEL", "WARN"))
    return spark


def delta_package() -> str:
    """Maven coordinate of the delta-spark jar matching the installed pyspark and delta-spark Python packages,
    named as delta-spark's own `configure_spark_with_delta_pip` does (`io.delta:delta-spark_4.2_2.13:4.4.1`)."""
    from importlib.metadata import version

    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def delta_conf(package: str | None = None) -> dict[str, str]:
    """Settings for a session with native Delta: the jar (fetched from Maven Central by Spark) and the extension.
    Pass them to `get_spark(conf=...)` or put them in spark-submit's `--conf`/`--properties-file`."""
    return {
        "spark.jars.packages": package or delta_package(),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
    }


def has_delta(spark: SparkSession) -> bool:
    """True when the Delta extension is configured and its classes load (delta-spark jars present)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_EXTENSION not in extensions:
        return False
    try:
        jvm = spark.sparkContext._jvm
        jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass("io.delta.tables.DeltaTable")
    except Exception:  # py4j raises a generic Py4JJavaError when the class is missing
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spark_jobs.session", description="Spark session helpers")
    parser.add_argument("--delta-package", action="store_true", help="print the delta-spark Maven coordinate")
    parser.add_argument("--delta-conf", action="store_true", help="print spark-submit --conf flags for native Delta")
    args = parser.parse_args(argv)
    if args.delta_package:
        print(delta_package())
    if args.delta_conf:
        print(" ".join(f"--conf {k}={v}" for k, v in delta_conf().items()))
    if not (args.delta_package or args.delta_conf):
        parser.print_help()


if __name__ == "__main__":
    main()
