"""Tests for codemill/lake.py on real Spark and real Delta tables, every behaviour on both backends (native:
delta-spark from the jar cache; embedded: delta-rs commits), on local disk and on a real S3-compatible server;
plus the one-writer-per-lake record and interop between the two backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codemill import storage
from codemill.lake import LAKE_RECORD, Lake, LakeError, Lineage, SchemaMismatch, TableNotFound
from codemill.session import has_delta

SCHEMA = "id long, lang string, text string"
REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("native", "embedded")


def _needs_jars(spark):
    if not has_delta(spark):
        pytest.fail("the native Delta backend needs the jar cache (.cache/jars): run scripts/setup.sh")


@pytest.fixture(params=BACKENDS)
def lake(request, spark, tmp_path):
    """An empty local lake written by each backend in turn."""
    if request.param == "native":
        _needs_jars(spark)
    return Lake(spark, str(tmp_path / "lake"), backend=request.param)


def rows(spark, ids, lang=None, text="v1"):
    return spark.createDataFrame([(i, lang or ("python", "java", "go")[i % 3], f"{text}-{i}") for i in ids], SCHEMA)


def table_rows(lake, name, version=None):
    return sorted(tuple(r) for r in lake.read(name, version).collect())


def live_files(lake, name):
    import pyarrow as pa

    return set(pa.table(lake._delta(name).get_add_actions(flatten=True)).column("path").to_pylist())


def data_files(lake, name):
    """Every Parquet file in the table's folder (live, of older versions, or left by failed writes)."""
    table = lake.path(name)
    base = storage.fs_path(table)
    return {u[len(base) + 1:] if storage.is_local(u) else storage.fs_path(u)[len(base) + 1:]
            for u, _, _ in storage.walk_files(table) if u.endswith(".parquet") and "/_delta_log/" not in u}


# ---------------------------------------------------------------------- reads, writes, lineage
def test_overwrite_read_history_and_tables(spark, lake):
    lineage = Lineage("filter", "abc123", {"files": 4})
    assert lake.overwrite("t", rows(spark, range(6)), lineage=lineage, partition_by=["lang"]) == 0
    assert table_rows(lake, "t") == sorted((i, ("python", "java", "go")[i % 3], f"v1-{i}") for i in range(6))
    assert lake.overwrite("t", rows(spark, range(3), text="v2")) == 1
    assert table_rows(lake, "t") == [(0, "python", "v2-0"), (1, "java", "v2-1"), (2, "go", "v2-2")]
    hist = lake.history("t")
    assert [h["version"] for h in hist] == [1, 0]
    assert hist[1]["lineage"] == {"job": "filter", "config_hash": "abc123", "inputs": {"files": 4}}
    assert hist[0]["lineage"] == {}
    (info,) = lake.tables()
    assert (info.name, info.version, info.rows, info.partition_by) == ("t", 1, 3, ("lang",))
    assert lake.versions(["t", "missing"]) == {"t": 1}
    assert lake.partition_columns("t") == ["lang"]


def test_read_older_version_and_missing(spark, lake):
    lake.overwrite("t", rows(spark, range(4)))
    lake.append("t", rows(spark, range(4, 6)))
    lake.overwrite("t", rows(spark, [9]))
    assert [r[0] for r in table_rows(lake, "t", version=0)] == [0, 1, 2, 3]
    assert [r[0] for r in table_rows(lake, "t", version=1)] == [0, 1, 2, 3, 4, 5]
    assert [r[0] for r in table_rows(lake, "t")] == [9]
    with pytest.raises(LakeError, match="no version 7"):
        lake.read("t", version=7)
    with pytest.raises(TableNotFound, match="'nope'"):
        lake.read("nope")
    with pytest.raises(LakeError, match="invalid table name"):
        lake.path("../etc")


def test_rerunning_a_write_does_not_duplicate_rows(spark, lake):
    df = rows(spark, range(5))
    lake.overwrite("t", df)
    lake.overwrite("t", df)
    assert len(table_rows(lake, "t")) == 5
    lineage = Lineage("ingest", "h", write_id="batch-7")
    v = lake.append("t", rows(spark, range(5, 8)), lineage=lineage)
    assert lake.append("t", rows(spark, range(5, 8)), lineage=lineage) == v  # same write id: skipped
    assert [r[0] for r in table_rows(lake, "t")] == list(range(8))
    assert lake.version("t") == v == 2


def test_write_id_check_reads_one_commit_whatever_the_history(spark, lake, monkeypatch):
    """The write id is checked against the table's latest commit only: one read of one log file, the same after
    3 commits as after 14 (a checkpoint in between), and never the table's history (a GET per commit on object
    storage)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the write id check read the table's history")

    reads: list[str] = []
    real = storage.read_bytes

    def counting(uri):
        if "/_delta_log/" in uri:
            reads.append(uri)
        return real(uri)

    counts = []
    lake.overwrite("t", rows(spark, [0]), lineage=Lineage("j", write_id="w0"))
    for n in (2, 11):
        for i in range(lake.version("t") + 1, lake.version("t") + 1 + n):
            lake.append("t", rows(spark, [i]), lineage=Lineage("j", write_id=f"w{i}"))
        last = f"w{lake.version('t')}"
        with monkeypatch.context() as m:
            m.setattr(Lake, "history", forbidden)
            m.setattr(storage, "read_bytes", counting)
            reads.clear()
            v = lake.version("t")
            assert lake.append("t", rows(spark, [999]), lineage=Lineage("j", write_id=last)) == v  # skipped
            counts.append(len(reads))
    assert counts == [1, 1]
    # Only the latest commit counts: an id written before other content was committed writes again.
    v = lake.append("t", rows(spark, [1000]), lineage=Lineage("j", write_id="w1"))
    assert v == lake.version("t") and lake.last_commit("t")["write_id"] == "w1"
    assert lake.version("t") == 14 and len(table_rows(lake, "t")) == 15


def test_stage_transaction_pins_readers_and_recovers(spark, lake):
    """A stage killed between its commits: other readers see every output as before the stage (a table it
    created does not exist for them), vacuum refuses, and the next run of the stage restores the outputs first."""
    root = lake.root
    lake.overwrite("a", rows(spark, range(3)))
    lake.overwrite("b", rows(spark, range(3)))
    reader = Lake(spark, root)
    with pytest.raises(RuntimeError, match="killed"):
        with lake.stage("s", ["a", "b", "c"], write_id="w1", run_id="r1"):
            lake.overwrite("a", rows(spark, range(5), text="new"))
            assert len(table_rows(lake, "a")) == 5  # the stage itself reads what it wrote
            lake.append("c", rows(spark, [9]))
            assert reader.read("a").count() == 3 and not reader.exists("c")
            raise RuntimeError("killed")
    assert lake.stage_records()["s"]["state"] == "pending" and set(reader.pending_stages()) == {"s"}
    assert table_rows(reader, "a") == table_rows(reader, "a", 0) and reader.versions(["a", "b", "c"]) == {
        "a": 0, "b": 0}
    assert reader.snapshot(["a", "c"]) == {"a": 0, "c": None}
    with pytest.raises(TableNotFound, match="not committed"):
        reader.read("c")
    with pytest.raises(LakeError, match="interrupted"):
        reader.vacuum("a")
    with lake.stage("s", ["a", "b", "c"], write_id="w2", run_id="r2") as record:
        # recovered before the block: "a" back at its old rows (a restore commit), "c" gone
        assert table_rows(lake, "a") == table_rows(lake, "a", 0) and lake.version("a") == 2
        assert not lake._exists("c") and record["seq"] == 2
        lake.overwrite("b", rows(spark, range(4), text="run2"))
        assert reader.read("b").count() == 3
    assert reader.read("b").count() == 4 and reader.versions(["a", "b"]) == {"a": 2, "b": 1}
    assert lake.stage_records()["s"]["state"] == "committed" and reader.pending_stages() == {}
    lake.vacuum("a")
    assert data_files(lake, "a") == live_files(lake, "a")


def test_append_creates_then_adds(spark, lake):
    lake.append("t", rows(spark, range(2)), partition_by=["lang"])
    lake.append("t", rows(spark, range(2, 5)))
    assert [r[0] for r in table_rows(lake, "t")] == [0, 1, 2, 3, 4]
    with pytest.raises(LakeError, match="partitioned by"):
        lake.append("t", rows(spark, [7]), partition_by=["id"])


def test_schema_mismatch_is_rejected_with_the_column(spark, lake):
    lake.overwrite("t", rows(spark, range(3)))
    wrong = spark.createDataFrame([(1, "python", 3)], "id long, lang string, text int")
    with pytest.raises(SchemaMismatch, match=r"column 'text' is int, table has string"):
        lake.append("t", wrong)
    extra = rows(spark, [5]).selectExpr("*", "1 AS extra")
    with pytest.raises(SchemaMismatch, match=r"unexpected column 'extra'"):
        lake.overwrite("t", extra)
    with pytest.raises(SchemaMismatch, match=r"missing column 'text'"):
        lake.merge("t", rows(spark, [1]).drop("text"), keys=["id"])
    assert lake.version("t") == 0
    lake.overwrite("t", extra, allow_schema_change=True)
    assert lake.read("t").columns == ["id", "lang", "text", "extra"]
    assert table_rows(lake, "t") == [(5, "go", "v1-5", 1)]


def test_overwrite_that_raises_midway_leaves_previous_version(spark, lake):
    from pyspark.sql import functions as F

    lake.overwrite("t", rows(spark, range(10)))
    before = table_rows(lake, "t")

    @F.udf("string")
    def explode_at_150(i):
        if i == 150:
            raise ValueError("boom in the middle of the write")
        return f"x-{i}"

    bad = spark.range(0, 200, numPartitions=4).select(
        "id", F.lit("python").alias("lang"), explode_at_150("id").alias("text"))
    with pytest.raises(Exception, match="boom"):
        lake.overwrite("t", bad)
    assert lake.version("t") == 0
    assert table_rows(lake, "t") == before
    lake.vacuum("t")  # whatever the failed write left (files, or an empty commit folder) goes
    assert data_files(lake, "t") == live_files(lake, "t")
    entries = [n for n in storage.listdir(lake.path("t")) if not n.startswith(".")]  # Hadoop's .crc checksums
    assert entries == sorted({"_delta_log"} | {f.split("/", 1)[0] for f in live_files(lake, "t")})
    assert table_rows(lake, "t") == before


KILLED_WRITER = """
import os, sys, time
from pyspark.sql import functions as F
from codemill.lake import Lake
from codemill.session import get_spark

spark = get_spark("killed-writer", conf={"spark.master": "local[1]"})
lake = Lake(spark, sys.argv[1])

@F.udf("string")
def slow(i):
    time.sleep(0.02)
    return f"new-{i}"

df = spark.range(0, 4000, numPartitions=16).select("id", F.lit("python").alias("lang"), slow("id").alias("text"))
lake.overwrite("t", df)
"""


@pytest.mark.slow
def test_sigkill_while_writing_leaves_no_partial_rows(spark, lake, tmp_path):
    lake.overwrite("t", rows(spark, range(10)))
    before = table_rows(lake, "t")
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(KILLED_WRITER))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CODEMILL_SPARK_DRIVER_MEMORY": "1g",
           "CODEMILL_LAKE_BACKEND": lake.backend}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    # Own process group: SIGKILL reaches the driver, its JVM and the Python workers at once, as an OOM kill would.
    proc = subprocess.Popen([sys.executable, str(script), lake.root], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if data_files(lake, "t") - live_files(lake, "t"):
                break  # some tasks have written their Parquet files; the commit has not happened
            time.sleep(0.2)
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert data_files(lake, "t") > live_files(lake, "t")
    assert lake.version("t") == 0
    assert table_rows(lake, "t") == before
    from deltalake import DeltaTable

    assert DeltaTable(lake.path("t")).to_pyarrow_table().num_rows == 10
    lake.vacuum("t")
    assert data_files(lake, "t") == live_files(lake, "t")
    assert table_rows(lake, "t") == before


# ---------------------------------------------------------------------- replace and merge
def test_replace_partitions_and_predicate(spark, lake):
    lake.overwrite("t", rows(spark, range(9)), partition_by=["lang"])
    lake.replace("t", rows(spark, [30, 33], lang="python", text="new"), where={"lang": "python"})
    got = table_rows(lake, "t")
    assert [r for r in got if r[1] == "python"] == [(30, "python", "new-30"), (33, "python", "new-33")]
    assert len([r for r in got if r[1] != "python"]) == 6
    go_files = {f for f in live_files(lake, "t") if "lang=go" in f}
    # A predicate on a non-partition column: only the files holding matching rows are rewritten.
    lake.replace("t", rows(spark, [1], lang="java", text="fixed"), where="id IN (1, 4)")
    got = table_rows(lake, "t")
    assert [r for r in got if r[1] == "java"] == [(1, "java", "fixed-1"), (7, "java", "v1-7")]
    assert go_files <= live_files(lake, "t")
    with pytest.raises(LakeError, match="do not match the predicate"):
        lake.replace("t", rows(spark, [2], lang="go"), where="id = 99")
    with pytest.raises(TableNotFound):
        lake.replace("missing", rows(spark, [1]), where="id = 1")
    assert lake.version("t") == 2


def test_merge_updates_and_inserts_by_key(spark, lake):
    lake.overwrite("t", rows(spark, range(6)), partition_by=["lang"])
    untouched = {f for f in live_files(lake, "t") if "lang=go" in f}
    upd = spark.createDataFrame([(1, "java", "upd"), (4, "java", "upd"), (10, "python", "ins")], SCHEMA)
    lake.merge("t", upd, keys=["id"], lineage=Lineage("annotate", "h", {"t": 0}))
    got = dict((r[0], r[2]) for r in table_rows(lake, "t"))
    assert got == {0: "v1-0", 1: "upd", 2: "v1-2", 3: "v1-3", 4: "upd", 5: "v1-5", 10: "ins"}
    assert untouched <= live_files(lake, "t")
    assert lake.history("t", 1)[0]["lineage"]["job"] == "annotate"
    with pytest.raises(LakeError, match="several rows for key"):
        lake.merge("t", upd.unionByName(upd), keys=["id"])
    with pytest.raises(LakeError, match="not in the data"):
        lake.merge("t", upd, keys=["nope"])


def test_merge_composite_and_null_keys_and_creates(spark, lake):
    schema = "repo string, path string, score double"
    lake.merge("s", spark.createDataFrame([("a", "x.py", 0.1), ("a", None, 0.2), ("b", "x.py", 0.3)], schema),
               keys=["repo", "path"])
    lake.merge("s", spark.createDataFrame([("a", None, 0.9), ("b", "y.py", 0.4)], schema), keys=["repo", "path"])
    got = sorted(tuple(r) for r in lake.read("s").fillna("<null>").collect())
    assert got == [("a", "<null>", 0.9), ("a", "x.py", 0.1), ("b", "x.py", 0.3), ("b", "y.py", 0.4)]


def test_vacuum_drops_old_versions_files(spark, lake):
    lake.overwrite("t", rows(spark, range(3)))
    lake.overwrite("t", rows(spark, range(3, 5)))
    old = data_files(lake, "t") - live_files(lake, "t")
    assert old
    deleted = lake.vacuum("t")
    assert {d.rsplit("/", 1)[-1] for d in deleted if d.endswith(".parquet")} == {o.rsplit("/", 1)[-1] for o in old}
    assert data_files(lake, "t") == live_files(lake, "t")
    assert [r[0] for r in table_rows(lake, "t")] == [3, 4]


# ---------------------------------------------------------------------- independent readers
def test_independent_readers_see_the_same_rows(spark, lake):
    import datetime as dt

    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    df = spark.createDataFrame(
        [(i, ("python", "go")[i % 2], f"t{i}", [f"a{i}"], dt.datetime(2024, 1, 1 + i)) for i in range(6)],
        "id long, lang string, text string, tags array<string>, ts timestamp")
    lake.overwrite("p", df, partition_by=["lang"])
    lake.merge("p", df.where("id = 2").withColumn("text", df.text.substr(1, 1)), keys=["id"])
    expected = sorted((r.id, r.lang, r.text) for r in lake.read("p").collect())
    assert (2, "python", "t") in expected

    delta = DeltaTable(lake.path("p")).to_pyarrow_table()
    assert sorted(zip(delta["id"].to_pylist(), delta["lang"].to_pylist(), delta["text"].to_pylist())) == expected
    frame = pl.read_delta(lake.path("p"))
    assert sorted(frame.select("id", "lang", "text").iter_rows()) == expected
    assert frame["tags"].to_list()[0][0].startswith("a") and frame["ts"].dtype.time_zone in (None, "UTC")

    lake.overwrite("u", df.drop("lang"))
    files = [f.removeprefix("file://") for f in DeltaTable(lake.path("u")).file_uris()]
    got = duckdb.sql(f"SELECT id, text FROM read_parquet({files!r}) ORDER BY id").fetchall()
    assert got == [(i, f"t{i}") for i in range(6)]


# ---------------------------------------------------------------------- one writer backend per lake
def test_a_new_lake_records_its_backend_and_refuses_the_other(spark, tmp_path, capsys):
    _needs_jars(spark)
    root = str(tmp_path / "lake")
    lake = Lake(spark, root)  # auto, with the jars: native, and the choice is printed
    assert lake.backend == "native"
    assert "written by the native Delta backend" in capsys.readouterr().out
    assert '"backend": "native"' in (tmp_path / "lake" / LAKE_RECORD).read_text()
    lake.overwrite("t", rows(spark, range(3)))
    with pytest.raises(LakeError, match=rf"lake {root} is written by the native Delta backend.*--switch_backend"):
        Lake(spark, root, backend="embedded")
    assert Lake(spark, root).backend == "native"  # auto follows the record
    switched = Lake(spark, root, backend="embedded", switch=True)
    assert switched.backend == "embedded" and Lake(spark, root).backend == "embedded"
    with pytest.raises(LakeError, match="written by the embedded Delta backend"):
        Lake(spark, root, backend="native")


def test_a_lake_from_before_the_record_is_recognised_by_its_commits(spark, tmp_path):
    _needs_jars(spark)
    for backend in BACKENDS:
        root = tmp_path / backend
        Lake(spark, str(root), backend=backend).overwrite("t", rows(spark, range(2)))
        (root / LAKE_RECORD).unlink()
        assert Lake(spark, str(root)).backend == backend
        other = next(b for b in BACKENDS if b != backend)
        with pytest.raises(LakeError, match=f"written by the {backend} Delta backend"):
            Lake(spark, str(root), backend=other)


def test_native_needs_the_delta_extension(spark, tmp_path, monkeypatch):
    import codemill.lake

    monkeypatch.setattr(codemill.lake, "has_delta", lambda s: False)
    with pytest.raises(LakeError, match="no Delta extension.*scripts/setup.sh"):
        Lake(spark, str(tmp_path / "x"), backend="native")
    root = str(tmp_path / "y")
    assert Lake(spark, root).backend == "embedded"  # auto without jars: embedded, recorded


def test_switching_from_the_command_line(spark, tmp_path, capsys):
    _needs_jars(spark)
    from codemill import lake as lake_module

    root = str(tmp_path / "lake")
    Lake(spark, root, backend="embedded").overwrite("t", rows(spark, range(2)))
    lake_module.main(["--lake", root, "--switch_backend", "native"])
    assert "now written by the native Delta backend" in capsys.readouterr().out
    assert Lake(spark, root).backend == "native"


# ---------------------------------------------------------------------- interop between the backends
@pytest.mark.parametrize("first", BACKENDS)
def test_each_backend_reads_appends_and_merges_the_others_tables(spark, tmp_path, first):
    """A table written by one backend is read, appended to, replaced into and merged by the other at the same
    protocol version, and time travel reads the same rows of every version through both."""
    _needs_jars(spark)
    from deltalake import DeltaTable

    second = next(b for b in BACKENDS if b != first)
    root = str(tmp_path / "lake")
    a = Lake(spark, root, backend=first)
    a.overwrite("t", rows(spark, range(6)), partition_by=["lang"])
    a.append("t", rows(spark, [6, 7]))
    protocol = DeltaTable(a.path("t")).protocol()
    b = Lake(spark, root, backend=second, switch=True)
    assert table_rows(b, "t") == table_rows(a, "t")
    b.append("t", rows(spark, [8]))
    b.merge("t", spark.createDataFrame([(1, "java", "merged"), (20, "go", "new")], SCHEMA), keys=["id"])
    b.replace("t", rows(spark, [30], lang="python", text="r"), where={"lang": "python"})
    a = Lake(spark, root, backend=first, switch=True)
    a.merge("t", spark.createDataFrame([(20, "go", "again")], SCHEMA), keys=["id"])
    got = dict((r[0], r[2]) for r in table_rows(a, "t"))
    assert got == {1: "merged", 2: "v1-2", 4: "v1-4", 5: "v1-5", 7: "v1-7", 8: "v1-8", 20: "again", 30: "r-30"}
    dt = DeltaTable(a.path("t"))
    assert (dt.protocol().min_reader_version, dt.protocol().min_writer_version) == (
        protocol.min_reader_version, protocol.min_writer_version)
    for version in range(dt.version() + 1):
        assert table_rows(a, "t", version) == table_rows(b, "t", version), version


# ---------------------------------------------------------------------- on object storage
@pytest.mark.parametrize("backend", BACKENDS)
def test_lake_on_s3_writes_reads_merges_and_vacuums(spark, s3, bucket, backend):
    if backend == "native":
        _needs_jars(spark)
    from tests.fixtures.readers import rows_by_reader

    lake = Lake(spark, f"{bucket}/lake", backend=backend)
    assert storage.exists(f"{bucket}/lake/{LAKE_RECORD}")
    lin = Lineage("filter", "h", {"files": 1})
    lake.overwrite("t", rows(spark, range(6)), partition_by=["lang"], lineage=lin)
    lake.append("t", rows(spark, [6]))
    lake.merge("t", spark.createDataFrame([(1, "java", "m"), (9, "go", "n")], SCHEMA), keys=["id"])
    lake.replace("t", rows(spark, [3], lang="python", text="r"), where="id IN (0, 3)")
    expected = [(1, "java", "m"), (2, "go", "v1-2"), (3, "python", "r-3"), (4, "java", "v1-4"), (5, "go", "v1-5"),
                (6, "python", "v1-6"), (9, "go", "n")]
    assert table_rows(lake, "t") == expected
    assert [t.name for t in lake.tables()] == ["t"] and lake.version("t") == 3
    assert lake.history("t")[-1]["lineage"]["inputs"] == {"files": 1}
    assert table_rows(lake, "t", 1) == sorted((i, ("python", "java", "go")[i % 3], f"v1-{i}") for i in range(7))
    lake.vacuum("t")
    assert data_files(lake, "t") == live_files(lake, "t")
    readers = rows_by_reader(lake.path("t"), ["id", "lang", "text"], s3.env)
    assert readers == {"delta-rs": expected, "polars": expected, "duckdb": expected}
    # Credentials reach the clients only: nothing in the lake holds them.
    for key in s3.objects(bucket.split("://")[1]):
        body = s3.client().get_object(Bucket=bucket.split("://")[1], Key=key)["Body"].read()
        assert s3.settings().secret_key.encode() not in body, key
