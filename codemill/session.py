"""Spark session factory shared by every job.

- Under `spark-submit` (Databricks, EMR, Dataproc, Kubernetes, standalone) it takes the session that spark-submit
  configured and adds nothing but codemill's required SQL settings.
- On the embedded default (`python -m spark_jobs.pipeline ...` on a laptop) it starts `local[*]` with settings that
  work offline: loopback address, this interpreter for Python workers, Arrow on, TIMESTAMP_MICROS Parquet, and the
  project's jar cache (`.cache/jars`, filled by `scripts/setup.sh` from `conf/jars/pom.xml`: delta-spark and
  hadoop-aws with the AWS SDK bundle) on the classpath with the Delta extension on, so native Delta and `s3a://`
  work out of the box. Without the cache the session has no Delta jars and the table layer says so once.

`has_delta(spark)` tells whether the Delta Lake extension is on the classpath and enabled; the table layer
(`codemill.lake`) picks its backend from it. Print the spark-submit flags for a cluster (the same pinned
versions as the jar cache) with

    python -m codemill.session --packages true      # --packages io.delta:delta-spark_4.2_2.13:4.4.0,...
    python -m codemill.session --delta_conf true    # --packages ... --conf spark.sql.extensions=... --conf ...
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from codemill.config import parse_config
from codemill.storage import s3_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The pinned JVM dependencies (single source of the versions) and the folder scripts/setup.sh copies them into.
JARS_POM = REPO_ROOT / "conf" / "jars" / "pom.xml"
DEFAULT_JAR_DIR = REPO_ROOT / ".cache" / "jars"

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


def jar_dir() -> Path | None:
    """The jar cache (`CODEMILL_JARS`, default `.cache/jars`) when it holds delta-spark; None otherwise."""
    d = Path(os.environ.get("CODEMILL_JARS") or DEFAULT_JAR_DIR)
    return d if glob.glob(str(d / "delta-spark_*.jar")) else None


def jar_conf(jars: Path | None = None) -> dict[str, str]:
    """Settings that put the jar cache on the classpath and turn the Delta extension on (empty without jars).

    The folder goes on the driver's (and, for a cluster on this machine, the executors') class path instead of
    `spark.jars`: the AWS SDK bundle alone is ~690 MB, which `spark.jars` would serve and copy to every executor.
    Delta reads a table's state with `snapshotPartitions` tasks (default 50): a handful suits a laptop's tables.
    """
    jars = jars or jar_dir()
    if jars is None:
        return {}
    return {
        "spark.driver.extraClassPath": f"{jars}/*",
        "spark.executor.extraClassPath": f"{jars}/*",
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.databricks.delta.snapshotPartitions": "2",
        # Delta's VACUUM lists a table's folders with this many tasks (Spark's default 10000): on a laptop that was
        # 40,000 tasks and 131 s for a 6-row table on a local S3 server, 0.6 s with 8.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
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
        **jar_conf(),
        **_s3_endpoint_conf(),
        **REQUIRED_CONF,
    }


def _s3_endpoint_conf() -> dict[str, str]:
    """s3a settings for an S3-compatible store named in the environment (`AWS_ENDPOINT_URL`): where it is, not who
    you are; s3a takes the credentials from the AWS_* environment itself, so they never enter Spark's settings."""

    settings = s3_settings({})
    if not settings.endpoint:
        return {}
    conf = {"spark.hadoop.fs.s3a.endpoint": settings.endpoint_url,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.ssl).lower()}
    if settings.region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = settings.region
    return conf


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


def pinned_packages(pom: Path = JARS_POM) -> list[str]:
    """Maven coordinates (`group:artifact:version`) of the jars pinned in `conf/jars/pom.xml`, the `--packages`
    list for spark-submit on a cluster (Spark resolves their dependencies itself)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(pom).getroot()
    props = {el.tag.split("}")[1]: (el.text or "").strip() for el in root.find("m:properties", ns)}

    def expand(text: str) -> str:
        for key, value in props.items():
            text = text.replace("${" + key + "}", value)
        return text

    return [":".join(expand(dep.find(f"m:{tag}", ns).text.strip()) for tag in ("groupId", "artifactId", "version"))
            for dep in root.find("m:dependencies", ns)]


def delta_conf(packages: list[str] | None = None) -> dict[str, str]:
    """Settings for a cluster session with native Delta and s3a: the pinned jars (fetched from Maven Central by
    Spark) and the extension. Pass them to spark-submit's `--conf`/`--properties-file`."""
    return {
        "spark.jars.packages": ",".join(packages or pinned_packages()),
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


@dataclasses.dataclass
class SessionCommand:
    """`python -m codemill.session`: `--packages true` prints spark-submit's --packages for native Delta and s3a
    (the versions pinned in conf/jars/pom.xml), `--delta_conf true` all spark-submit flags for native Delta,
    `--jars true` the jar cache folder (empty: none)."""

    packages: bool = False
    delta_conf: bool = False
    jars: bool = False


def main(argv: list[str] | None = None) -> None:
    cmd = parse_config(SessionCommand, argv, prog="python -m codemill.session", description=SessionCommand.__doc__)
    if cmd.packages:
        print("--packages " + ",".join(pinned_packages()))
    if cmd.delta_conf:
        conf = delta_conf()
        print(f"--packages {conf.pop('spark.jars.packages')} " + " ".join(f"--conf {k}={v}" for k, v in conf.items()))
    if cmd.jars:
        print(jar_dir() or "")
    if not (cmd.packages or cmd.delta_conf or cmd.jars):
        print(SessionCommand.__doc__)


if __name__ == "__main__":
    main()
