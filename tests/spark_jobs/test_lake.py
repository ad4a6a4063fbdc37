"""Tests for spark_jobs/lake.py on real Spark and real Delta tables (embedded backend unless the session has the
Delta jars), plus the native backend's calls checked against recording fakes of delta-spark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spark_jobs.lake import DATA_DIR_PREFIX, Lake, LakeError, Lineage, SchemaMismatch, TableNotFound

SCHEMA = "id long, lang string, text string"
REPO = Path(__file__).resolve().parents[2]


def rows(spark, ids, lang=None, text="v1"):
    return spark.createDataFrame([(i, lang or ("python", "java", "go")[i % 3], f"{text}-{i}") for i in ids], SCHEMA)


def table_rows(lake, name, version=None):
    return sorted(tuple(r) for r in lake.read(name, version).collect())


def live_files(lake, name):
    import pyarrow as pa

    return set(pa.table(lake._delta(name).get_add_actions(flatten=True)).column("path").to_pylist())


def part_folders(lake, name):
    return {p.name for p in Path(lake.path(name)).iterdir() if p.name.startswith(DATA_DIR_PREFIX)}


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
    assert len(part_folders(lake, "t")) == 2  # the committed folder and the failed write's leftovers
    lake.vacuum("t")
    assert len(part_folders(lake, "t")) == 1
    assert table_rows(lake, "t") == before


KILLED_WRITER = """
import os, sys, time
from pyspark.sql import functions as F
from spark_jobs.lake import Lake
from spark_jobs.session import get_spark

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
    env = {**os.environ, "PYTHONPATH": str(REPO), "CODEMILL_SPARK_DRIVER_MEMORY": "1g"}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    # Own process group: SIGKILL reaches the driver, its JVM and the Python workers at once, as an OOM kill would.
    proc = subprocess.Popen([sys.executable, str(script), lake.root], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = Path(lake.path("t"))
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            new = [p for p in table.glob(f"{DATA_DIR_PREFIX}*") if p.name not in live_folders(lake, "t")]
            if new and any(new[0].rglob("*.parquet")):
                break  # some tasks have written their Parquet files; the commit has not happened
            time.sleep(0.2)
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(part_folders(lake, "t")) == 2
    assert lake.version("t") == 0
    assert table_rows(lake, "t") == before
    from deltalake import DeltaTable

    assert DeltaTable(lake.path("t")).to_pyarrow_table().num_rows == 10
    lake.vacuum("t")
    assert part_folders(lake, "t") == live_folders(lake, "t")
    assert table_rows(lake, "t") == before


def live_folders(lake, name):
    return {p.split("/", 1)[0] for p in live_files(lake, name)}


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
    assert len(part_folders(lake, "t")) == 2
    deleted = lake.vacuum("t")
    assert any(d.endswith(".parquet") for d in deleted)
    assert part_folders(lake, "t") == live_folders(lake, "t")
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


# ---------------------------------------------------------------------- native backend, recorded
class RecordingWriter:
    """Stands in for DataFrameWriter on a delta-spark session: records the calls, then commits with deltalake
    what delta-spark would, so the Lake's follow-up reads of version and history work."""

    calls: list = []

    def __init__(self, df):
        self.df, self.fmt, self.mode_, self.options, self.parts = df, None, None, {}, []

    def format(self, fmt):
        self.fmt = fmt
        return self

    def mode(self, mode):
        self.mode_ = mode
        return self

    def option(self, key, value):
        self.options[key] = value
        return self

    def partitionBy(self, *cols):  # noqa: N802 (Spark's name)
        self.parts = list(cols)
        return self

    def save(self, path):
        from deltalake import CommitProperties, write_deltalake

        RecordingWriter.calls.append(("save", self.fmt, self.mode_, dict(self.options), self.parts, path))
        meta = {"userMetadata": self.options["userMetadata"]} if "userMetadata" in self.options else None
        predicate = self.options.get("replaceWhere", "").replace("`", '"') or None
        write_deltalake(path, self.df.toArrow(), mode=self.mode_, partition_by=self.parts or None,
                        predicate=predicate, schema_mode="overwrite" if "overwriteSchema" in self.options else None,
                        commit_properties=CommitProperties(custom_metadata=meta))


class RecordingDeltaTable:
    calls: list = []

    def __init__(self, spark, path):
        self.spark, self.path = spark, path

    @classmethod
    def forPath(cls, spark, path):  # noqa: N802 (delta-spark's name)
        cls.calls.append(("forPath", path))
        return cls(spark, path)

    def alias(self, name):
        self.calls.append(("alias", name))
        return self

    def merge(self, source, condition):
        self.calls.append(("merge", condition))
        self.source = source
        return self

    def whenMatchedUpdateAll(self):  # noqa: N802
        self.calls.append(("whenMatchedUpdateAll",))
        return self

    def whenNotMatchedInsertAll(self):  # noqa: N802
        self.calls.append(("whenNotMatchedInsertAll",))
        return self

    def execute(self):
        self.calls.append(("execute", self.spark.conf.get("spark.databricks.delta.commitInfo.userMetadata", None)))

    def vacuum(self, hours):
        self.calls.append(("vacuum", hours))


@pytest.fixture
def native(spark, tmp_path, monkeypatch):
    import delta.tables

    import spark_jobs.session

    RecordingWriter.calls, RecordingDeltaTable.calls = [], []
    monkeypatch.setattr(spark_jobs.session, "has_delta", lambda s: True)
    # Spark 4 serves its classic DataFrame class; patch the one this session hands out.
    monkeypatch.setattr(type(spark.range(1)), "write", property(RecordingWriter))
    monkeypatch.setattr(delta.tables, "DeltaTable", RecordingDeltaTable)
    lake = Lake(spark, str(tmp_path / "native"), backend="native")
    assert lake.backend == "native"
    return lake


def test_native_writes_use_delta_format_and_options(spark, native):
    lin = Lineage("filter", "h1", {"files": 3})
    assert native.overwrite("t", rows(spark, range(3)), lineage=lin, partition_by=["lang"]) == 0
    native.append("t", rows(spark, [3]))
    native.replace("t", rows(spark, [4], lang="go"), where={"lang": "go"})
    native.overwrite("t", rows(spark, [5]).selectExpr("*", "1 AS extra"), allow_schema_change=True)
    path = native.path("t")
    assert RecordingWriter.calls == [
        ("save", "delta", "overwrite", {"userMetadata": lin.to_json()}, ["lang"], path),
        ("save", "delta", "append", {}, [], path),
        ("save", "delta", "overwrite", {"replaceWhere": "`lang` = 'go'"}, [], path),
        ("save", "delta", "overwrite", {"overwriteSchema": "true"}, [], path),
    ]
    assert native.history("t")[-1]["lineage"]["inputs"] == {"files": 3}


def test_native_merge_vacuum_and_read(spark, native, monkeypatch):
    native.overwrite("t", rows(spark, range(3)))
    lin = Lineage("annotate", "h2")
    native.merge("t", rows(spark, [1]), keys=["id", "lang"], lineage=lin)
    native.vacuum("t")
    assert RecordingDeltaTable.calls == [
        ("forPath", native.path("t")), ("alias", "t"), ("merge", "t.`id` <=> s.`id` AND t.`lang` <=> s.`lang`"),
        ("whenMatchedUpdateAll",), ("whenNotMatchedInsertAll",), ("execute", lin.to_json()),
        ("forPath", native.path("t")), ("vacuum", 0.0),
    ]
    assert spark.conf.get("spark.databricks.delta.commitInfo.userMetadata", None) is None  # unset afterwards

    loads = []

    class Reader:
        def format(self, fmt):
            loads.append(("format", fmt))
            return self

        def option(self, key, value):
            loads.append(("option", key, value))
            return self

        def load(self, path):
            loads.append(("load", path))
            return "frame"

    monkeypatch.setattr(type(spark), "read", property(lambda s: Reader()))
    assert native.read("t", version=0) == "frame"
    assert loads == [("format", "delta"), ("option", "versionAsOf", 0), ("load", native.path("t"))]


def test_native_backend_requires_the_extension(spark, tmp_path):
    with pytest.raises(LakeError, match="io.delta:delta-spark"):
        Lake(spark, str(tmp_path / "x"), backend="native")
