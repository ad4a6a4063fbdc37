"""`python -m tests.faults.child ARGS`: `python -m spark_jobs.pipeline ARGS` as a driver process of its own that
runs its Spark work on the warm Spark JVM of the test process which started it.

Why: a pipeline child with a cold JVM spent 35 s to reach a kill point on the suite's tiny corpus, 25 s of it JVM
start-up, class loading and JIT warm-up; the same stage re-run on a warm JVM took 8 s. Attached, a child reaches the
point in a few seconds, which is what lets every stage × kill point case run in CI.

What a kill still kills: this process, which holds all of the job's own state (the stage's driver program, the
lake's transaction record, every commit's decision); SIGKILL gives it no `finally`, no `atexit`, no flush. Kill
points sit between two synchronous commits, so no Spark job of the child is running when it dies, and what it
leaves in storage is what a killed driver JVM leaves. The test process's JVM outlives it, as a cluster outlives a
killed driver; the child runs in a session of its own (`newSession`: its own SQL settings and views). The cases in
`tests.faults.cases.OWN_JVM` run the pipeline with a JVM of its own instead, which dies with it.

The test process passes its gateway's port and secret as `PYSPARK_GATEWAY_PORT` / `PYSPARK_GATEWAY_SECRET`.
"""

from __future__ import annotations

import sys

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from spark_jobs import pipeline


def attach() -> SparkSession:
    """A session of this process on the JVM whose gateway the environment names (its SparkContext, a new SQL
    session), made the active one, so `codemill.session.get_spark` returns it."""
    gateway = launch_gateway()  # connects to the running gateway named by PYSPARK_GATEWAY_PORT
    jvm = gateway.jvm
    jsc = jvm.org.apache.spark.api.java.JavaSparkContext(jvm.org.apache.spark.SparkContext.getOrCreate())
    sc = SparkContext(conf=SparkConf(_jconf=jsc.getConf()), gateway=gateway, jsc=jsc)
    sessions = SparkSession._get_j_spark_session_class(jvm)
    parent = sessions.getDefaultSession().get()
    spark = SparkSession(sc, jsparkSession=parent.newSession())
    sessions.setDefaultSession(parent)  # the test process keeps its default session
    return spark


if __name__ == "__main__":
    attach()
    pipeline.main(sys.argv[1:])
