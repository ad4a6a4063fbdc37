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

# The longest test files, started first: `make test` hands whole files to two workers in collection order, so a long
# file collected last (the demo end to end, ~8 min on 2 cores) ran alone at the end while the other worker idled.
LONGEST_FIRST = ("tests/test_demo.py", "tests/faults/test_faults.py")


def pytest_collection_modifyitems(config, items):
    """Moves the tests of `LONGEST_FIRST` to the front (a stable sort: every other order is kept; every worker
    computes the same order, as xdist requires)."""
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def spark():
    from codemill.session import get_spark

    session = get_spark("codemill-tests")
    yield session
    session.stop()


@pytest.fixture
def lake(spark, tmp_path):
    """An empty lake (embedded backend unless the session has the Delta jars)."""
    from codemill.lake import Lake

    return Lake(spark, str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def s3(spark, tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 (tests/fixtures/objectstore.py), with the test session's s3a
    connector and codemill's storage layer pointed at it."""
    from tests.fixtures.objectstore import S3Server

    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        server.apply_to(spark)
        yield server


@pytest.fixture
def bucket(s3, request):
    """A fresh bucket for one test: s3a://<bucket>."""
    import hashlib
    import re

    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{digest}"
    s3.bucket(name)
    return f"s3a://{name}"


@pytest.fixture(scope="session")
def engine():
    """The embedded SmolLM2-135M-Instruct with transformers (converted from the GGUF on first use)."""
    from codemill.engines import make_engine

    eng = make_engine("transformers", "embedded", batch_size=4)
    yield eng
    eng.close()
