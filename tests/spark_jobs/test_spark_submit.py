"""The whole pipeline through `spark-submit` on a standalone cluster (1 master + 2 workers on 127.0.0.1, started
from the pyspark install): every stage runs on executors in other processes than the driver."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from spark_jobs.config import REPO_ROOT
from tests.fixtures.curation.build import JSONL_EXPECTED, make_records

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def cluster(tmp_path):
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "SPARK_LOG_DIR": str(tmp_path / "logs")}
    port, ui = _free_port(), _free_port()
    spark_class = os.path.join(home, "bin", "spark-class")
    procs = []
    log = open(tmp_path / "cluster.log", "w")  # noqa: SIM115 (closed in teardown)
    try:
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(port), "--webui-port", str(ui)], env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        _wait_port(port)
        for _ in range(2):
            procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker",
                                           f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", "1",
                                           "--memory", "1g", "--webui-port", str(_free_port())], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
        yield f"spark://127.0.0.1:{port}", env
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_spark_submit_standalone(cluster, tmp_path, spark):
    master, env = cluster
    records = make_records(tmp_path / "in")
    lake_dir = tmp_path / "lake"
    cmd = [os.path.join(env["SPARK_HOME"], "bin", "spark-submit"), "--master", master,
           "--driver-memory", "1g", "--executor-memory", "512m", "--total-executor-cores", "2",
           "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.sql.shuffle.partitions=4",
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
           str(REPO_ROOT / "spark_jobs" / "pipeline.py"), "--input", str(records), "--lake", str(lake_dir),
           "--ingest.max_bytes", "2000", "--near_dedup.num_perm", "32"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "[pipeline] outcomes: ran" in proc.stdout and "funnel" not in proc.stderr.lower()
    from spark_jobs.lake import Lake

    lake = Lake(spark, str(lake_dir))
    outcomes = {r.source_id: r.outcome for r in lake.read("outcomes").collect()}
    assert set(outcomes) == set(JSONL_EXPECTED)
    assert outcomes["r3"] == "kept" and outcomes["r1"] == "exact_duplicate"  # r3 has more stars
    assert sum(v == "quarantined" for v in outcomes.values()) == sum(v != "files" for v in JSONL_EXPECTED.values())
    history = lake.history("files", 1)[0]["lineage"]
    assert history["job"] == "ingest"
