"""Tests for codemill/session.py: settings chosen for laptop vs spark-submit, and Delta detection."""

from __future__ import annotations

import pytest

from codemill import session
from codemill.session import DELTA_EXTENSION, REQUIRED_CONF, embedded_conf, get_spark, has_delta, session_conf


def test_embedded_conf_is_offline_and_sized(monkeypatch):
    monkeypatch.delenv("CODEMILL_SPARK_MASTER", raising=False)
    monkeypatch.setenv("CODEMILL_SPARK_DRIVER_MEMORY", "1g")
    conf = embedded_conf(cores=3)
    assert conf["spark.master"] == "local[3]"
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.driver.memory"] == "1g"
    assert conf["spark.sql.shuffle.partitions"] == "6"
    assert conf["spark.ui.enabled"] == "false"
    assert REQUIRED_CONF.items() <= conf.items()
    assert embedded_conf(cores=1, driver_memory="5g")["spark.driver.memory"] == "5g"
    monkeypatch.setenv("CODEMILL_SPARK_MASTER", "local[1]")
    assert embedded_conf()["spark.master"] == "local[1]"


def test_spark_submit_keeps_the_cluster_settings(monkeypatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")
    assert session.under_spark_submit()
    conf = session_conf({"spark.sql.shuffle.partitions": "800"})
    assert conf == {**REQUIRED_CONF, "spark.sql.shuffle.partitions": "800"}
    assert "spark.master" not in conf and "spark.driver.memory" not in conf
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT")
    assert not session.under_spark_submit()
    assert session_conf()["spark.master"].startswith("local[")


def test_get_spark_returns_the_active_session_with_required_settings(spark):
    assert get_spark("another-name") is spark
    for key, value in REQUIRED_CONF.items():
        assert spark.conf.get(key) == value
    assert spark.range(3).count() == 3


class _FakeSpark:
    """Just enough of a session for has_delta: a conf and a JVM class loader."""

    def __init__(self, extensions, loadable):
        self.conf = {"spark.sql.extensions": extensions}
        self.loadable = loadable
        outer = self

        class Loader:
            def loadClass(self, name):  # noqa: N802 (Java's name)
                if not outer.loadable:
                    raise RuntimeError(f"ClassNotFoundException: {name}")
                return name

        class Thread:
            @staticmethod
            def currentThread():  # noqa: N802
                return type("T", (), {"getContextClassLoader": staticmethod(lambda: Loader())})()

        jvm = type("JVM", (), {"java": type("J", (), {"lang": type("L", (), {"Thread": Thread})})})
        self.sparkContext = type("SC", (), {"_jvm": jvm})


@pytest.mark.parametrize(("extensions", "loadable", "expected"), [
    ("", True, False),  # jars on the classpath but the extension not enabled
    (DELTA_EXTENSION, False, False),  # enabled but the jars are missing
    (f"com.other.Ext,{DELTA_EXTENSION}", True, True),
])
def test_has_delta_needs_extension_and_classes(extensions, loadable, expected):
    assert has_delta(_FakeSpark(extensions, loadable)) is expected


def test_the_embedded_session_has_the_jar_cache_and_native_delta(spark):
    jars = session.jar_dir()
    assert jars is not None, "no jar cache: run scripts/setup.sh (it fetches conf/jars/pom.xml into .cache/jars)"
    assert has_delta(spark) is True
    assert spark.conf.get("spark.driver.extraClassPath") == f"{jars}/*"
    # s3a comes from the same cache: the class loads in the running JVM.
    loader = spark.sparkContext._jvm.java.lang.Thread.currentThread().getContextClassLoader()
    assert loader.loadClass("org.apache.hadoop.fs.s3a.S3AFileSystem") is not None


def test_no_jar_cache_means_no_delta_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("CODEMILL_JARS", str(tmp_path / "empty"))
    assert session.jar_dir() is None
    conf = embedded_conf(cores=2)
    assert "spark.sql.extensions" not in conf and "spark.driver.extraClassPath" not in conf


def test_packages_line_comes_from_the_pinned_pom(capsys):
    from importlib.metadata import version

    packages = session.pinned_packages()
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    assert packages[0] == f"io.delta:delta-spark_{spark_minor}_2.13:4.4.0"
    # hadoop-aws must be exactly the Hadoop version of pyspark's own hadoop-client jars.
    import glob
    import os

    import pyspark

    client = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))[0]
    hadoop = client.rsplit("-", 1)[1].removesuffix(".jar")
    assert f"org.apache.hadoop:hadoop-aws:{hadoop}" in packages
    jars = session.jar_dir()
    for coordinate in packages:  # the cache holds what the cluster line names
        artifact, ver = coordinate.split(":")[1:]
        assert (jars / f"{artifact}-{ver}.jar").exists(), coordinate
    session.main(["--packages", "true"])
    assert capsys.readouterr().out.strip() == "--packages " + ",".join(packages)
    conf = session.delta_conf()
    assert conf == {"spark.jars.packages": ",".join(packages), "spark.sql.extensions": DELTA_EXTENSION,
                    "spark.sql.catalog.spark_catalog": session.DELTA_CATALOG}


def test_an_s3_endpoint_in_the_environment_reaches_s3a_without_the_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-copy-me")
    conf = embedded_conf(cores=2)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-1"
    assert "do-not-copy-me" not in str(conf)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert not any(k.startswith("spark.hadoop.fs.s3a") for k in embedded_conf(cores=2))
