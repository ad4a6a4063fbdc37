"""Spark session factory shared by every job.

- Under `spark-submit` (Databricks, EMR, Dataproc, Kubernetes, standalone) it takes the session that spark-submit
  configured and adds nothing but codemill's required SQL settings.
- On the embedded default (`python -m spark_jobs.pipeline ...` on a laptop) it starts `local[*]` with settings that
  work offline: loopback address, this interpreter for Python workers, Arrow on, TIMESTAMP_MICROS Parquet.

`has_delta(spark)` tells whether the Delta Lake extension is on the classpath and enabled; the table layer
(`spark_jobs.lake`) picks its backend from it.
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
        "spark.python.worker.reuse": "true",
        "spark.sql.sources.partitionOverwriteMode": "static",
        **REQUIRED_CONF,
    }


def under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (or a notebook attached to a cluster)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(app_name: str = "codemill", *, conf: dict[str, str] | None = None) -> SparkSession:
    """Returns the active session, the spark-submit session, or a new embedded `local[*]` session."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    settings = dict(REQUIRED_CONF) if under_spark_submit() else embedded_conf()
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CODEMILL_SPARK_LOG_LEVEL", "WARN"))
    return spark


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
