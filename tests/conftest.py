"""Shared fixtures: one embedded Spark session for the whole test run (starting one costs ~5 s)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CODEMILL_SPARK_DRIVER_MEMORY", "2g")
os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# litdata checks PyPI for a newer version on import; offline machines and CI have no network.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import get_spark

    session = get_spark("codemill-tests")
    yield session
    session.stop()


@pytest.fixture
def lake(spark, tmp_path):
    """An empty lake (embedded backend unless the session has the Delta jars)."""
    from spark_jobs.lake import Lake

    return Lake(spark, str(tmp_path / "lake"))
