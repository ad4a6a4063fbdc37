"""The cluster path for real (`make test-cluster`): a standalone Spark master with two workers and an S3-compatible
server, all started here on 127.0.0.1; the jobs run through `spark-submit` with native Delta on `s3a://`.

1. uploads a small corpus (Parquet in The Stack v1 schema with real code, plus JSONL with bad records);
2. runs `spark_jobs/pipeline.py`, then annotator scoring with a small annotator kept on s3a, selection and the
   phase shards, everything read from and written to `s3a://`;
3. checks that every input record has exactly one outcome, that delta-spark wrote the tables, and that delta-rs,
   DuckDB and Polars read the same rows from the server;
4. checks that a second run of the pipeline skips every stage;
5. runs a stage again with one worker SIGKILLed mid-stage and checks that the job finishes with tables identical to
   those of the uninterrupted run.

Executors reach the jar cache (.cache/jars) through their class path: every worker of this cluster shares this
machine's disk. A real cluster takes the same pinned versions with `--packages` (README).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from codemill import storage
from codemill.session import DELTA_CATALOG, DELTA_EXTENSION, jar_dir
from tests.fixtures.curation.build import JSONL_EXPECTED, make_records, make_stack_parquet
from tests.fixtures.objectstore import S3Server, free_port, wait_port

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
BUCKET = "codemill-cluster"
TABLES = ("files", "quarantine", "licensed", "licence_rejected", "filtered", "rejected", "exact_deduped",
          "exact_duplicates", "near_deduped", "near_dup_clusters", "redacted", "redactions", "redaction_rejected",
          "contamination", "clean", "documents", "outcomes")


# ---------------------------------------------------------------------- the cluster
class Cluster:
    """One master and two workers (1 core, 1 GB each; executors capped at 768 MB)."""

    def __init__(self, work: Path, env: dict[str, str]):
        import pyspark

        self.home = os.path.dirname(pyspark.__file__)
        self.work = work
        self.env = {**env, "SPARK_HOME": self.home, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                    "SPARK_WORKER_DIR": str(work / "workers"), "SPARK_LOG_DIR": str(work / "logs")}
        self.env.pop("PYSPARK_GATEWAY_PORT", None)
        self.port = free_port()
        self.master = f"spark://127.0.0.1:{self.port}"
        self.workers: list[subprocess.Popen] = []
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        log = open(self.work / f"daemon-{len(self.procs)}.log", "w")  # noqa: SIM115 (held by the child)
        # Own process group: killing a worker's group takes its executor JVM with it, as losing a node would.
        proc = subprocess.Popen([os.path.join(self.home, "bin", "spark-class"), *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen:
        worker = self._start("org.apache.spark.deploy.worker.Worker", self.master, "--host", "127.0.0.1",
                             "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()))
        self.workers.append(worker)
        return worker

    def __enter__(self) -> Cluster:
        self.work.mkdir(parents=True, exist_ok=True)
        self._start("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                    "--webui-port", str(free_port()))
        wait_port(self.port)
        for _ in range(2):
            self.start_worker()
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def submit_cmd(self, script: str, args: list[str], s3: S3Server, ui_port: int | None = None) -> list[str]:
        jars = jar_dir()
        assert jars is not None, "no jar cache: run scripts/setup.sh"
        conf = {
            "spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
            "spark.executor.memory": "768m", "spark.executor.cores": "1", "spark.cores.max": "2",
            "spark.driver.host": "127.0.0.1", "spark.sql.shuffle.partitions": "4",
            "spark.executor.extraClassPath": f"{jars}/*",
            "spark.sql.extensions": DELTA_EXTENSION, "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
            # Where the store is; the credentials stay in the AWS_* environment of driver and workers.
            "spark.hadoop.fs.s3a.endpoint": s3.endpoint, "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false", "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
            "spark.ui.enabled": "true" if ui_port else "false",
            # Losing a worker must fail over quickly, not after the default two minutes.
            "spark.network.timeout": "30s", "spark.network.timeoutInterval": "10s",
            "spark.executor.heartbeatInterval": "5s",
        }
        if ui_port:
            conf["spark.ui.port"] = str(ui_port)
        cmd = [os.path.join(self.home, "bin", "spark-submit"), "--master", self.master, "--driver-memory", "1g",
               "--driver-class-path", f"{jars}/*"]
        for key, value in conf.items():
            cmd += ["--conf", f"{key}={value}"]
        return [*cmd, str(REPO / script), *args]

    def submit(self, script: str, args: list[str], s3: S3Server, timeout: int = 900) -> str:
        proc = subprocess.run(self.submit_cmd(script, args, s3), env=self.env, cwd=self.work, capture_output=True,
                              text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        assert s3.settings().secret_key not in output, f"{script} printed the secret key"
        return proc.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    with S3Server(work) as s3:
        s3.bucket(BUCKET)
        with Cluster(work, {**os.environ, **s3.env}) as cluster:
            yield s3, cluster, work


# ---------------------------------------------------------------------- the corpus
def upload_corpus(s3: S3Server, work: Path) -> tuple[str, set[str]]:
    """Stack v1 Parquet (real code from the standard library, plus the fixture rows) and JSONL with bad records;
    returns the input glob and the source ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    local = work / "corpus"
    make_records(local)
    make_stack_parquet(local)
    stdlib = sysconfig.get_paths()["stdlib"]
    rows = []
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")))[:160]:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        rows.append({"hexsha": f"std{len(rows):04d}", "content": text, "max_stars_repo_name": "python/cpython",
                     "max_stars_repo_path": f"Lib/{os.path.basename(path)}", "lang": "Python",
                     "max_stars_count": 100, "max_stars_repo_licenses": ["PSF-2.0"]})
    # Two near copies and one exact copy, so that both dedup stages have work on the cluster.
    for i, src in enumerate(rows[:3]):
        text = src["content"] if i == 0 else src["content"].replace("def ", "def  ", 1)
        rows.append({**src, "hexsha": f"copy{i}", "max_stars_repo_name": "fork/cpython", "max_stars_count": 1})
        rows[-1]["content"] = text
    pq.write_table(pa.Table.from_pylist(rows), local / "stack-001.parquet")
    storage.upload_dir(str(local), f"s3a://{BUCKET}/raw")
    ids = set(JSONL_EXPECTED) | {"aaa", "bbb", "ccc"} | {r["hexsha"] for r in rows}
    return f"s3a://{BUCKET}/raw/*", ids


def pipeline_args(input_glob: str, lake: str, *extra: str) -> list[str]:
    return ["--input", input_glob, "--lake", lake, "--ingest.max_bytes", "200000",
            "--near_dedup.num_perm", "64", *extra]


def table_digest(lake: str, name: str) -> list[tuple]:
    """A table's rows, sorted, as delta-rs reads them (None-safe)."""
    from deltalake import DeltaTable

    arrow = DeltaTable(storage.delta_uri(f"{lake}/{name}"), storage_options=storage.storage_options(lake))
    table = arrow.to_pyarrow_table()
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def active_tasks(ui_port: int) -> int:
    base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    try:
        apps = json.load(urllib.request.urlopen(base, timeout=2))
        stages = json.load(urllib.request.urlopen(f"{base}/{apps[0]['id']}/stages?status=active", timeout=2))
    except (OSError, ValueError, IndexError):
        return 0
    return sum(s.get("numActiveTasks", 0) for s in stages)


# ---------------------------------------------------------------------- the test
def test_cluster_pipeline_on_s3_with_native_delta(env, monkeypatch):
    s3, cluster, work = env
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    input_glob, ids = upload_corpus(s3, work)
    lake = f"s3a://{BUCKET}/lake"
    timings: dict[str, float] = {}
    clock = [time.time()]

    def lap(step: str) -> None:
        timings[step] = round(time.time() - clock[0], 1)
        clock[0] = time.time()

    # 1. phase-1 curation through spark-submit: native Delta on s3a
    out = cluster.submit("spark_jobs/pipeline.py", pipeline_args(input_glob, lake), s3)
    assert "[pipeline] outcomes: ran" in out
    assert "[pipeline] licences: ran" in out and "[pipeline] redact: ran" in out  # the issue-24 stages run too
    assert json.loads(storage.read_text(f"{lake}/_codemill_lake.json"))["backend"] == "native"
    for name in TABLES:
        first_commit = storage.read_text(f"{lake}/{name}/_delta_log/00000000000000000000.json")
        info = next(json.loads(line)["commitInfo"] for line in first_commit.splitlines() if "commitInfo" in line)
        assert "Delta-Lake/" in info["engineInfo"], (name, info)  # delta-spark wrote it, not delta-rs

    # every input record has exactly one outcome
    from tests.fixtures.readers import rows_by_reader

    outcomes = rows_by_reader(f"{lake}/outcomes", ["source_id", "outcome"], s3.env)
    assert outcomes["delta-rs"] == outcomes["polars"] == outcomes["duckdb"]
    got = [sid for sid, _ in outcomes["delta-rs"]]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    by_id = dict(outcomes["delta-rs"])
    assert by_id["copy0"] == "exact_duplicate" or by_id["std0000"] == "exact_duplicate"
    assert "near_duplicate" in by_id.values() and by_id["part-0.jsonl:4"] == "quarantined"
    clean = rows_by_reader(f"{lake}/clean", ["doc_id", "lang"], s3.env)
    assert clean["delta-rs"] == clean["polars"] == clean["duckdb"] and clean["delta-rs"]
    lap("pipeline, checks")

    # 2. annotator scoring (a small annotator kept on s3a), selection, the phase shards on s3a
    from tests.spark_jobs.test_annotate import tiny_parts
    from trainer.annotator_model import export_annotator

    annotator = export_annotator(f"s3a://{BUCKET}/annotator", **tiny_parts())
    cluster.submit("spark_jobs/pipeline.py", ["--lake", lake, "--stages", "score", "--score.annotator", annotator,
                                              "--score.window", "64"], s3)
    scores = rows_by_reader(f"{lake}/scores", ["doc_id", "score"], s3.env)
    assert scores["delta-rs"] == scores["polars"] == scores["duckdb"]
    assert {d for d, _ in scores["delta-rs"]} == {d for d, _ in clean["delta-rs"]}
    shards = f"s3a://{BUCKET}/shards"
    tokenize = ["--tokenize", str(REPO / "conf/spark/tokenize_local.yaml"), "--tokenize.shards_root", shards,
                "--tokenize.seq_len", "256"]
    # The LM tokenizer first: selection's budget is counted in its tokens.
    cluster.submit("spark_jobs/pipeline.py", ["--lake", lake, "--stages", "tokenizer,select",
                                              "--select.token_budget", "60000", *tokenize], s3)
    selected = rows_by_reader(f"{lake}/selected_hq", ["doc_id"], s3.env)["delta-rs"]
    assert 0 < len(selected) < len(clean["delta-rs"])
    cluster.submit("spark_jobs/pipeline.py", ["--lake", lake, "--stages", "tokenize", *tokenize,
                                              "--tokenize.build", '["phase1", "phase2"]'], s3)
    for phase in ("phase1", "phase2"):
        manifest = json.loads(storage.read_text(f"{shards}/{phase}/manifest.json"))
        assert manifest["tokens"] > 0 and manifest["splits"]["train"]["sequences"] > 0, phase
        assert storage.glob(f"{shards}/{phase}/train/*.bin"), phase
    assert storage.isfile(f"{shards}/tokenizer/tokenizer.json")
    lap("scoring, selection, shards")

    # 3. a second run skips every stage
    again = cluster.submit("spark_jobs/pipeline.py", pipeline_args(input_glob, lake), s3)
    stage_lines = [line for line in again.splitlines() if line.startswith("[pipeline] ") and ": " in line
                   and "outcomes: {" not in line]
    assert stage_lines and all("skipped" in line for line in stage_lines), stage_lines
    lap("second run")

    # 4. a stage again, one worker killed mid-stage: the job finishes with identical tables
    before = {t: table_digest(lake, t) for t in ("near_deduped", "near_dup_clusters")}
    ui_port = free_port()
    cmd = cluster.submit_cmd("spark_jobs/pipeline.py",
                             pipeline_args(input_glob, lake, "--stages", "near_dedup", "--force", "true"), s3, ui_port)
    log = open(work / "killed-run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=cluster.env, cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True)
    victim = cluster.workers[0]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and active_tasks(ui_port) == 0:
        time.sleep(0.2)
    assert proc.poll() is None, "the stage finished before a worker could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert proc.wait(timeout=900) == 0, (work / "killed-run.log").read_text()[-6000:]
    log.close()
    assert "[pipeline] near_dedup: ran" in (work / "killed-run.log").read_text()
    for name, rows in before.items():
        assert table_digest(lake, name) == rows, name
    cluster.start_worker()  # back to two workers for what follows
    lap("a worker killed mid-stage")
    print("[cluster] seconds per step:", json.dumps(timings), flush=True)
