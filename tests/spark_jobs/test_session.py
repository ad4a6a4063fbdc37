"""Tests for spark_jobs/session.py: settings chosen for laptop vs spark-submit, and Delta detection."""

from __future__ import annotations

import pytest

from spark_jobs import session
from spark_jobs.session import DELTA_EXTENSION, REQUIRED_CONF, embedded_conf, get_spark, has_delta, session_conf


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


def test_test_session_is_embedded(spark):
    assert has_delta(spark) is False


def test_delta_package_and_conf_match_the_installed_packages(capsys):
    from importlib.metadata import version

    pkg = session.delta_package()
    assert pkg.startswith("io.delta:delta-spark_4.") and pkg.endswith(f"_2.13:{version('delta-spark')}")
    conf = session.delta_conf()
    assert conf == {"spark.jars.packages": pkg, "spark.sql.extensions": DELTA_EXTENSION,
                    "spark.sql.catalog.spark_catalog": session.DELTA_CATALOG}
    session.main(["--delta-package"])
    assert capsys.readouterr().out.strip() == pkg
