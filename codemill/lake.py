"""The table layer: every codemill job reads and writes its tables through `Lake`.

Tables live under a lake root (`/data/lake`, `s3://bucket/lake`, ...) at `<root>/<name>` and are standard Delta
tables that Spark with delta-spark, `deltalake`, DuckDB and Polars read.

Two backends, one behaviour (tests/spark_jobs/test_lake.py runs the same tests on both):

- **native** (the default wherever the Delta jars are present: `make demo`, a cluster with `--packages`): the
  session has the Delta extension, and writes are plain `format("delta")` with delta-spark's `DeltaTable` for
  merge. `scripts/setup.sh` fetches the jars into `.cache/jars`; `python -m codemill.session --packages true` prints
  the matching spark-submit line.
- **embedded**: no Delta jars (a machine without Maven). Spark writes Parquet into a fresh folder inside the table
  (`<table>/part-<uuid>/...`); then `deltalake` (delta-rs) commits one transaction that adds those files, with
  per-file statistics read from the Parquet footers, and for an overwrite removes the old ones. Until that commit
  nothing new is visible; a job that raises or is killed leaves only unreferenced files, which `vacuum` deletes.
  Reads go through the snapshot's file list, with partition columns restored from the log's partition values.
  `merge` and a predicate `replace` rewrite only the files holding affected rows (copy-on-write): one commit adds
  the rewritten rows and removes exactly those files.

**One writer backend per lake.** The lake root holds `_codemill_lake.json`, which records the backend that writes
it. `backend="auto"` (or `CODEMILL_LAKE_BACKEND`) follows that record; a lake without one gets native when the
session has the jars, else embedded, and the choice is printed once. A job whose backend differs from the record
refuses, naming the lake and the recorded backend. Switching is one explicit act,
`python -m codemill.lake --lake LAKE --switch_backend embedded` (both write the same protocol version: a table written
by one is read, appended to and merged by the other, tested both ways).

Paths: the root may be local or an object-store URI (`s3a://bucket/lake`); Spark reaches it through Hadoop, and the
driver-side metadata calls (delta-rs) take their storage options from the session's Hadoop settings or the
environment (`codemill.storage`), never from anything recorded in the lake.

Every commit carries lineage in its commit metadata (`userMetadata`, JSON): the job name, its config hash, the
versions of the tables it read, and an optional write id: a write whose id is the table's latest commit's is a
no-op (checked with one read of that commit, whatever the table's history).

Stages: Delta commits one table at a time, so a job that writes several tables opens a stage transaction,
`with lake.stage("filter", outputs, write_id=...)`. Its record `_codemill_stages/<stage>.json` is written before
the first output (pending, with the outputs' versions at that moment) and marked committed after the last; while it
is pending, every other reader (`read`, `exists`, `versions`, `snapshot`) sees the outputs at those versions, and
the next run of the stage first restores them to it (`recover`). docs/lake.md#stages.

    lake = Lake.open(spark, "lake")
    df = lake.read("files")
    lake.overwrite("filtered", out, lineage=Lineage("filter", cfg_hash, lake.versions(["files"])))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from codemill import storage
from codemill.config import parse_config
from codemill.session import get_spark, has_delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Backend = Literal["auto", "native", "embedded"]
BACKENDS = ("native", "embedded")
# At the lake root: which backend writes this lake.
LAKE_RECORD = "_codemill_lake.json"
DATA_DIR_PREFIX = "part-"
# At the lake root: one record per stage (pending or committed), see `Lake.stage`.
STAGES_DIR = "_codemill_stages"
# Commits per delta-rs checkpoint, as delta-spark's default `checkpointInterval`: loading a table replays at most
# this many commit files after the checkpoint, whatever the length of its history.
CHECKPOINT_INTERVAL = 10
# Column that tells which file a row came from while a merge or replace decides which files to rewrite.
FILE_COL = "__codemill_file"


class LakeError(RuntimeError):
    """A table operation that cannot be done; the message names the table."""


class TableNotFound(LakeError):
    pass


class SchemaMismatch(LakeError):
    pass


@dataclasses.dataclass(frozen=True)
class Lineage:
    """What produced a commit: recorded in the commit's metadata and readable through `Lake.history`."""

    job: str
    config_hash: str = ""
    inputs: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Same write_id twice on a table = the second write is skipped (idempotent appends and re-runs).
    write_id: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        payload = {"job": self.job, "config_hash": self.config_hash, "inputs": dict(self.inputs)}
        if self.write_id:
            payload["write_id"] = self.write_id
        if self.extra:
            payload["extra"] = dict(self.extra)
        return json.dumps(payload, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    rows: int
    files: int
    bytes: int
    partition_by: tuple[str, ...]


_is_local = storage.is_local
_local_path = storage.local_path
# (root, backend) pairs whose automatic choice was printed already: once per lake and process.
_ANNOUNCED: set[tuple[str, str]] = set()


class Lake:
    """Tables under one root; see the module docstring."""

    def __init__(self, spark: SparkSession, root: str, *, backend: Backend = "auto", switch: bool = False):
        """`backend`: auto (the lake's record, else native when the session has the Delta jars), native or
        embedded. `switch`: record `backend` as the lake's writer even if another one is recorded (explicit)."""

        self.spark = spark
        self.root = storage.absolute(str(root))
        # The stage transaction this object is inside (`stage`): its outputs are read at their latest versions.
        self._active: dict[str, Any] | None = None
        storage.makedirs(self.root)
        self.native_available = has_delta(spark)
        wanted = backend if backend != "auto" else os.environ.get("CODEMILL_LAKE_BACKEND") or "auto"
        if switch:
            if wanted not in BACKENDS:
                raise LakeError("switching a lake's backend needs an explicit backend: native or embedded")
            self.backend = wanted
            self.switch_backend(wanted)
        else:
            self.backend = self._choose_backend(wanted)

    @classmethod
    def open(cls, spark: SparkSession, root: str, *, backend: Backend = "auto") -> Lake:
        return cls(spark, root, backend=backend)

    # ------------------------------------------------------------------ which backend writes this lake
    def recorded_backend(self) -> str | None:
        """The backend recorded at the lake root (None: a new lake, or one from before the record existed, whose
        tables tell: delta-spark or delta-rs as the writer of their latest commit)."""
        record = storage.join(self.root, LAKE_RECORD)
        if storage.exists(record):
            return json.loads(storage.read_text(record))["backend"]
        return self._backend_from_commits()

    def _backend_from_commits(self) -> str | None:
        """delta-spark when any table's latest commit names it (jobs without Spark, such as the evaluation, write
        their own tables with delta-rs in either kind of lake); delta-rs when only it appears; None: no tables."""
        from deltalake import DeltaTable

        writers = set()
        for name in self._table_names():
            entry = DeltaTable(self._delta_uri(name), storage_options=self._options).history(1)[0]
            writer = f"{entry.get('engineInfo', '')} {entry.get('clientVersion', '')}"
            writers.add("native" if "Delta-Lake" in writer else "embedded" if "delta-rs" in writer else None)
        return "native" if "native" in writers else "embedded" if "embedded" in writers else None

    def _choose_backend(self, wanted: str) -> str:
        if wanted not in ("auto", *BACKENDS):
            raise LakeError(f"lake.backend={wanted!r}: use auto, native or embedded")
        recorded = self.recorded_backend()
        if wanted == "auto":
            chosen = recorded or ("native" if self.native_available else "embedded")
            if recorded is None and (self.root, chosen) not in _ANNOUNCED:
                _ANNOUNCED.add((self.root, chosen))
                why = ("the Spark session has the Delta jars" if chosen == "native" else
                       "the Spark session has no Delta jars (scripts/setup.sh fetches them into .cache/jars)")
                print(f"[lake] {self.root}: new lake, written by the {chosen} Delta backend ({why})", flush=True)
        else:
            chosen = wanted
        if recorded is not None and recorded != chosen:
            raise LakeError(
                f"lake {self.root} is written by the {recorded} Delta backend ({LAKE_RECORD}); this job would write "
                f"it with the {chosen} backend. Run it with the {recorded} backend, or switch the lake explicitly: "
                f"python -m codemill.lake --lake {self.root} --switch_backend {chosen}")
        if chosen == "native" and not self.native_available:
            raise LakeError(
                f"lake {self.root} is written by the native Delta backend, but this Spark session has no Delta "
                "extension: run scripts/setup.sh (jars into .cache/jars) or start spark-submit with the line that "
                "`python -m codemill.session --delta_conf true` prints; or switch the lake explicitly with "
                f"python -m codemill.lake --lake {self.root} --switch_backend embedded")
        if recorded is None:
            self._record_backend(chosen)
        return chosen

    def _record_backend(self, backend: str) -> None:
        payload = {"backend": backend, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_text(storage.join(self.root, LAKE_RECORD), json.dumps(payload, sort_keys=True) + "\n")

    def switch_backend(self, backend: str) -> None:
        """Records `backend` as the lake's writer from now on: the explicit switch (both backends read and write
        the same tables, see the module docstring)."""
        if backend not in BACKENDS:
            raise LakeError(f"switch_backend: {backend!r} is not one of {BACKENDS}")
        if backend == "native" and not self.native_available:
            raise LakeError(f"cannot switch lake {self.root} to the native backend: this Spark session has no "
                            "Delta extension")
        self._record_backend(backend)
        self.backend = backend

    # ------------------------------------------------------------------ paths and metadata
    def path(self, name: str) -> str:
        if not name or "/" in name or name.startswith(".") or name.startswith("_"):
            raise LakeError(f"invalid table name {name!r}: use a plain name such as 'files'")
        return f"{self.root}/{name}"

    @property
    def _options(self) -> dict[str, str]:
        """delta-rs storage options for the root (credentials: passed to the client only, never recorded)."""
        return storage.storage_options(self.root)

    def _delta_uri(self, name: str) -> str:
        return storage.delta_uri(self.path(name))

    def _delta(self, name: str, version: int | None = None):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self._delta_uri(name), version=version, storage_options=self._options)
        except TableNotFoundError:
            raise TableNotFound(f"table {name!r} does not exist under {self.root}") from None
        except Exception as exc:  # delta-rs raises DeltaError for a missing version
            if version is not None and "version" in str(exc).lower():
                raise LakeError(f"table {name!r} has no version {version}: {exc}") from None
            raise

    def exists(self, name: str) -> bool:
        """Whether the table exists for readers: a table that only an interrupted stage created does not."""
        return self._exists(name) and self._pins().get(name, -1) is not None

    def _exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self._delta_uri(name), storage_options=self._options)

    def version(self, name: str) -> int:
        """The table's latest version (the one the last write made)."""
        return self._delta(name).version()

    def versions(self, names: Sequence[str]) -> dict[str, int]:
        """The versions readers see of the named tables (missing tables left out), for a commit's lineage: the
        latest, or the version pinned by a stage in flight or interrupted (`stage`)."""
        return {n: v for n, v in self.snapshot(names).items() if v is not None}

    def snapshot(self, names: Sequence[str], *, attempts: int = 20) -> dict[str, int | None]:
        """A consistent set of versions of the named tables (None: missing): no stage's outputs are half old and
        half new. The stage records are read before and after the versions; when a stage began or committed in
        between, the versions are read again (a sequence lock)."""
        for _ in range(attempts):
            before = (self.stage_records(), self.pending_stages())
            latest = {n: self.version(n) if self._exists(n) else None for n in names}
            after = (self.stage_records(), self.pending_stages())
            if before == after:
                pins = self._pins(after[1])
                return {n: pins[n] if n in pins else v for n, v in latest.items()}
        raise LakeError(f"lake {self.root}: stages kept committing while reading the versions of {list(names)}")

    def schema(self, name: str):
        """The table's Spark schema (partition columns included)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        arrow_schema = self._delta(name).schema().to_arrow()
        return from_arrow_schema(_arrow_schema(arrow_schema))

    def partition_columns(self, name: str) -> list[str]:
        return list(self._delta(name).metadata().partition_columns)

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits newest first: version, timestamp, operation and the lineage recorded by codemill."""
        rows = []
        for entry in self._delta(name).history(limit):
            meta = entry.get("userMetadata")
            lineage = json.loads(meta) if isinstance(meta, str) and meta.startswith("{") else {}
            rows.append({
                "version": entry.get("version"),
                "timestamp": entry.get("timestamp"),
                "operation": entry.get("operation"),
                "lineage": lineage,
            })
        return rows

    def tables(self) -> list[TableInfo]:
        """Every Delta table directly under the root, with version, rows and size."""
        return [self.info(n) for n in self._table_names()]

    def _table_names(self) -> list[str]:
        return [n for n in storage.listdir(self.root)
                if not n.startswith(("_", ".")) and storage.isdir(storage.join(self.root, n, "_delta_log"))]

    def info(self, name: str) -> TableInfo:
        dt = self._delta(name)
        import pyarrow as pa

        tbl = pa.table(dt.get_add_actions(flatten=True))
        rows = int(sum(v or 0 for v in tbl.column("num_records").to_pylist())) if tbl.num_rows else 0
        size = int(sum(tbl.column("size_bytes").to_pylist())) if tbl.num_rows else 0
        return TableInfo(name, dt.version(), rows, tbl.num_rows, size, tuple(dt.metadata().partition_columns))

    def _already_written(self, name: str, lineage: Lineage | None) -> bool:
        """True when the table's latest commit carries `lineage.write_id`: one read of one commit file.

        Only the latest commit counts: a write id names what makes the output (config, input versions, code), so
        an older commit with the same id has been replaced since by other content, which the write must restore.
        (Reading the whole history, as before, cost a GET per commit on object storage, and synth's per-chunk
        appends made it grow with chunks squared.)"""
        if lineage is None or not lineage.write_id or not self._exists(name):
            return False
        return self.last_commit(name).get("write_id") == lineage.write_id

    def last_commit(self, name: str) -> dict[str, Any]:
        """The lineage of the table's latest commit, read from that one commit file of the Delta log."""
        version = self.version(name)
        text = storage.read_text(storage.join(self.path(name), "_delta_log", f"{version:020d}.json"))
        for line in text.splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is not None:
                meta = info.get("userMetadata")
                return json.loads(meta) if isinstance(meta, str) and meta.startswith("{") else {}
        return {}

    # ------------------------------------------------------------------ stage transactions
    def _stage_path(self, stage: str, *, pending: bool = False) -> str:
        return storage.join(self.root, STAGES_DIR, *(["pending"] if pending else []), f"{stage}.json")

    def _records(self, folder: str) -> dict[str, dict[str, Any]]:
        return {n[:-len(".json")]: json.loads(storage.read_text(storage.join(folder, n)))
                for n in storage.listdir(folder) if n.endswith(".json")}

    def stage_records(self) -> dict[str, dict[str, Any]]:
        """Every stage's last record (`stage`): {"state": "pending" | "committed", "seq", "write_id", "base",
        "tables", ...}, by stage name."""
        return self._records(storage.join(self.root, STAGES_DIR))

    def pending_stages(self) -> dict[str, dict[str, Any]]:
        """The stages running or interrupted, with their pending records: one listing of
        `_codemill_stages/pending/` (empty, hence no further read, unless a stage is in flight)."""
        return self._records(storage.join(self.root, STAGES_DIR, "pending"))

    def _pins(self, pending: Mapping[str, dict[str, Any]] | None = None) -> dict[str, int | None]:
        """Table -> the version readers see while a stage that writes it is pending (None: the table did not
        exist before it), except the outputs of the stage this object is running."""
        pending = self.pending_stages() if pending is None else pending
        active = self._active["stage"] if self._active else None
        return {t: v for s, r in pending.items() if s != active for t, v in r["base"].items()}

    def _write_record(self, record: dict[str, Any], *, pending: bool = False) -> None:
        storage.write_text(self._stage_path(record["stage"], pending=pending),
                           json.dumps(record, sort_keys=True) + "\n")

    def _drop_pending(self, stage: str) -> None:
        fs, path = storage.filesystem(self._stage_path(stage, pending=True))
        fs.delete_file(path)

    @contextlib.contextmanager
    def stage(self, stage: str, outputs: Sequence[str], *, write_id: str = "", run_id: str = "",
              progress: Sequence[str] = ()):
        """A stage transaction over the tables `outputs`: all of them change for readers at once, or none.

        Before the first write the record `_codemill_stages/<stage>.json` is written as pending, with the outputs'
        versions (`base`), and a copy of it under `_codemill_stages/pending/`; readers other than this object see
        those versions while that copy exists. After the block the copy is deleted (the commit: one atomic delete)
        and the record rewritten as committed. A block that raises, or a process killed inside it, leaves the
        record pending: readers keep seeing `base`, and the next `stage(...)` of that stage first restores the
        outputs to it (`recover`).
        `progress` tables (synth's per-chunk appends) are pinned for readers but never restored: their commits are
        resumable progress. Nested calls (a stage function that opens its own transaction inside the pipeline's)
        join the outer one."""
        if self._active is not None:
            yield self._active
            return
        previous = self.recover(stage)
        record = {"stage": stage, "state": "pending", "seq": (previous or {}).get("seq", 0) + 1,
                  "write_id": write_id, "run_id": run_id, "progress": sorted(progress),
                  "base": {t: self.version(t) if self._exists(t) else None for t in outputs},
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write_record(record)  # the sequence number first: `snapshot` sees a stage begin even if it commits
        self._write_record(record, pending=True)
        self._active = record
        try:
            yield record
        finally:
            self._active = None
        self._drop_pending(stage)
        self._write_record({**record, "state": "committed",
                            "tables": {t: self.version(t) for t in outputs if self._exists(t)},
                            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def recover(self, stage: str) -> dict[str, Any] | None:
        """Rolls back an interrupted run of `stage`: every output it changed goes back to its version before that
        run (a Delta restore: one commit; a table that run created is deleted), and the record is marked
        committed. Returns the stage's record (None: the stage never ran)."""
        record = self.pending_stages().get(stage)
        if record is None:
            path = self._stage_path(stage)
            return json.loads(storage.read_text(path)) if storage.exists(path) else None
        restored = {}
        for table, base in record["base"].items():
            if table in record.get("progress", ()) or not self._exists(table):
                continue
            if base is None:
                storage.delete_dir(self.path(table))
                if self.backend == "native":  # delta-spark caches table logs by path: forget the deleted one
                    self.spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
                restored[table] = None
            elif self.version(table) != base:
                self._restore(table, base, Lineage("recover", extra={"stage": stage, "run_id": record["run_id"]}))
                restored[table] = base
        print(f"[lake] {self.root}: stage {stage} was interrupted (run {record['run_id'] or '?'}); "
              f"outputs restored: {restored or 'none had changed'}", flush=True)
        record = {**record, "state": "committed", "recovered": restored,
                  "tables": {t: self.version(t) for t in record["base"] if self._exists(t)}}
        self._drop_pending(stage)
        self._write_record(record)
        return record

    def recover_all(self) -> list[str]:
        """`recover` of every pending stage; returns their names."""
        pending = sorted(self.pending_stages())
        for stage in pending:
            self.recover(stage)
        return pending

    def _restore(self, name: str, version: int, lineage: Lineage) -> None:
        """The table's rows and schema as of `version`, as a new commit."""
        if self.backend == "native":
            from delta.tables import DeltaTable

            with _user_metadata(self.spark, lineage):
                DeltaTable.forPath(self.spark, self.path(name)).restoreToVersion(version)
            return
        from deltalake import CommitProperties

        self._delta(name).restore(version, commit_properties=CommitProperties(
            custom_metadata={"userMetadata": lineage.to_json()}))

    # ------------------------------------------------------------------ reads
    def read(self, name: str, version: int | None = None) -> DataFrame:
        """The table at its latest (or the given) version, as a Spark DataFrame; while a stage that writes it is
        pending, at the version before that stage (`stage`)."""
        if version is None:
            pins = self._pins()
            if name in pins:
                version = pins[name]
                if version is None:
                    raise TableNotFound(f"table {name!r} under {self.root} was created by a stage that has not "
                                        "committed (re-run it)")
        if self.backend == "native":
            if not self._exists(name):
                raise TableNotFound(f"table {name!r} does not exist under {self.root}")
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            try:
                return reader.load(self.path(name))
            except Exception as exc:  # pyspark's AnalysisException: DELTA_VERSION_NOT_FOUND
                if version is not None and "VERSION_NOT_FOUND" in str(exc):
                    raise LakeError(f"table {name!r} has no version {version}: {str(exc).splitlines()[0]}") from None
                raise
        return self._scan(name, self._delta(name, version))

    def _scan(self, name: str, dt, adds: list[dict] | None = None, *, with_file: bool = False) -> DataFrame:
        """Reads the snapshot's files (or the given subset of its add actions) with partition columns restored.

        `with_file` adds a `FILE_COL` column holding each row's file as the add action names it, so that a
        rewrite can tell which files hold the rows it touches.
        """
        import pyarrow as pa
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType, StructField, StructType

        schema = self.schema_of(dt)
        parts = list(dt.metadata().partition_columns)
        if adds is None:
            adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        out_schema = StructType(schema.fields + ([StructField(FILE_COL, StringType())] if with_file else []))
        if not adds:
            return self.spark.createDataFrame([], out_schema)
        data_schema = StructType([f for f in schema.fields if f.name not in parts])
        table_path = self.path(name)
        # Partition values live in the Delta log, not in the files: read each partition's files and restore its
        # values as literals, so a filter on a partition column prunes whole branches at planning time. (Spark's
        # own partition discovery refuses files spread over several commit folders.)
        groups: dict[tuple, list[dict]] = {}
        for add in adds:
            groups.setdefault(tuple(add.get(f"partition.{p}") for p in parts), []).append(add)
        frames = []
        for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
            files = [_spark_path(f"{table_path}/{unquote(a['path'])}") for a in group]
            frame = self.spark.read.schema(data_schema).parquet(*files)
            for col, value in zip(parts, key):
                frame = frame.withColumn(col, F.lit(value).cast(schema[col].dataType))
            if with_file:
                # Within one partition, file names are unique (Spark names files by job id and task number).
                by_base = {_basename(a["path"]): a["path"] for a in group}
                if len(by_base) != len(group):
                    raise LakeError(f"table {name!r} holds two files of the same name in one partition; "
                                    "cannot rewrite it file by file")
                file_map = F.create_map(*[F.lit(x) for kv in by_base.items() for x in kv])
                base = F.url_decode(F.element_at(F.split(F.input_file_name(), "/"), -1))
                frame = frame.withColumn(FILE_COL, file_map[base])
            frames.append(frame.select(*out_schema.fieldNames()))
        out = frames[0]
        for frame in frames[1:]:
            out = out.unionByName(frame)
        return out

    @staticmethod
    def schema_of(dt) -> Any:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(_arrow_schema(dt.schema().to_arrow()))

    # ------------------------------------------------------------------ writes
    def overwrite(self, name: str, df: DataFrame, *, lineage: Lineage | None = None,
                  partition_by: Sequence[str] = (), allow_schema_change: bool = False) -> int:
        """Atomically replaces the table's contents (creating it if needed); returns the new version."""
        if self._already_written(name, lineage):
            return self.version(name)
        if self._exists(name) and not allow_schema_change:
            self._check_schema(name, df)
        if self.backend == "native":
            writer = df.write.format("delta").mode("overwrite")
            if allow_schema_change:
                writer = writer.option("overwriteSchema", "true")
            return self._native_save(name, writer, lineage, partition_by)
        return self._embedded_write(name, df, mode="overwrite", lineage=lineage, partition_by=partition_by,
                                    new_schema=allow_schema_change)

    def append(self, name: str, df: DataFrame, *, lineage: Lineage | None = None,
               partition_by: Sequence[str] = ()) -> int:
        """Adds rows; with `lineage.write_id` set, a second append with the same id is skipped."""
        if self._already_written(name, lineage):
            return self.version(name)
        if self._exists(name):
            self._check_schema(name, df)
            current = self.partition_columns(name)
            if partition_by and list(partition_by) != current:
                raise LakeError(f"table {name!r} is partitioned by {current}, not {list(partition_by)}")
        if self.backend == "native":
            return self._native_save(name, df.write.format("delta").mode("append"), lineage, partition_by)
        return self._embedded_write(name, df, mode="append", lineage=lineage, partition_by=partition_by)

    def replace(self, name: str, df: DataFrame, *, where: str | Mapping[str, Any],
                lineage: Lineage | None = None) -> int:
        """Replaces the rows matching `where` with `df` in one commit.

        `where` is a SQL predicate (`"lang = 'python'"`) or a mapping of column to value. Every row of `df` must
        match it (checked). On the embedded backend a mapping over partition columns drops those partitions'
        files; otherwise only the files holding matching rows are rewritten (their other rows kept).
        """
        from pyspark.sql import functions as F

        if not self._exists(name):
            raise TableNotFound(f"table {name!r} does not exist under {self.root}; create it with overwrite first")
        if self._already_written(name, lineage):
            return self.version(name)
        self._check_schema(name, df)
        predicate = _predicate_sql(where)
        matches = F.coalesce(F.expr(predicate), F.lit(False))
        if df.where(~matches).limit(1).count():
            raise LakeError(f"replace into {name!r}: some new rows do not match the predicate {predicate!r}")
        if self.backend == "native":
            writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
            return self._native_save(name, writer, lineage, ())
        dt = self._delta(name)
        parts = list(dt.metadata().partition_columns)
        if isinstance(where, Mapping) and where and set(where) <= set(parts):
            filters = [(k, "=", _partition_str(v)) for k, v in where.items()]
            return self._embedded_write(name, df, mode="overwrite", lineage=lineage, partition_by=parts,
                                        partition_filters=filters, snapshot=dt)
        return self._rewrite(name, dt, df, lineage=lineage, touched=lambda scan: scan.where(matches),
                             kept=lambda scan: scan.where(~matches))

    def merge(self, name: str, df: DataFrame, *, keys: Sequence[str], lineage: Lineage | None = None,
              partition_by: Sequence[str] = ()) -> int:
        """Upsert by key: rows of `df` update the table's rows with the same key and insert the others.

        Keys compare null-safely (a null key matches a null key), as the native `<=>` condition does. `df` must
        hold at most one row per key (checked). Creates the table when missing. On the embedded backend only the
        files holding a matched key are rewritten.
        """
        from pyspark.sql import functions as F

        if not keys:
            raise LakeError(f"merge into {name!r}: keys must name at least one column")
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise LakeError(f"merge into {name!r}: key columns {missing} are not in the data")
        dup = df.groupBy(*keys).count().where(F.col("count") > 1).limit(1).collect()
        if dup:
            raise LakeError(f"merge into {name!r}: source has several rows for key {dup[0].asDict()}")
        if not self._exists(name):
            return self.overwrite(name, df, lineage=lineage, partition_by=partition_by)
        if self._already_written(name, lineage):
            return self.version(name)
        self._check_schema(name, df)
        if self.backend == "native":
            from delta.tables import DeltaTable

            cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
            with _user_metadata(self.spark, lineage):
                (DeltaTable.forPath(self.spark, self.path(name)).alias("t").merge(df.alias("s"), cond)
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
            return self.version(name)
        src = df.select(*[F.col(k).alias(f"__key{i}") for i, k in enumerate(keys)])

        def on(scan):
            cond = scan[keys[0]].eqNullSafe(src["__key0"])
            for i, k in enumerate(keys[1:], start=1):
                cond = cond & scan[k].eqNullSafe(src[f"__key{i}"])
            return cond

        return self._rewrite(name, self._delta(name), df, lineage=lineage,
                             touched=lambda scan: scan.join(src, on(scan), "left_semi"),
                             kept=lambda scan: scan.join(src, on(scan), "left_anti"))

    def vacuum(self, name: str, *, retention_hours: int = 0) -> list[str]:
        """Deletes files that no commit of the current snapshot references: orphans of failed or killed writes and
        the files of older versions, which stop being readable afterwards. Returns the deleted paths.

        A write still in progress in another process has not committed its files yet, so they count as orphans:
        vacuum when no job writes to the table, or keep `retention_hours` above the longest write.
        """
        if name in self._pins():
            raise LakeError(f"vacuum {name!r}: a stage that writes it was interrupted and not recovered yet (its "
                            "restore needs the files of the older version): re-run the stage, or run "
                            f"python -m codemill.lake --lake {self.root} --recover true")
        if self.backend == "native":
            from delta.tables import DeltaTable

            self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
            # delta-spark's vacuum returns only the table path: the deleted files are what the listing lost (one
            # listing each side is cheaper than a second, dry-run vacuum).
            before = {u for u, _, _ in storage.walk_files(self.path(name))}
            DeltaTable.forPath(self.spark, self.path(name)).vacuum(float(retention_hours))
            return sorted(before - {u for u, _, _ in storage.walk_files(self.path(name))})
        dt = self._delta(name)
        deleted = list(dt.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False,
                                 full=True))
        return deleted + self._remove_orphan_folders(name, dt, retention_hours)

    def _remove_orphan_folders(self, name: str, dt, retention_hours: int) -> list[str]:
        """Removes commit folders that no live file is in: what delta-rs's vacuum leaves of a failed or replaced
        write (Spark's `_temporary` staging files, `_SUCCESS`, empty partition folders)."""
        import pyarrow as pa
        import pyarrow.fs as pafs

        live = {unquote(p).split("/", 1)[0] for p in pa.table(dt.get_add_actions(flatten=True)).column("path")
                .to_pylist()}
        table_path = self.path(name)
        fs, base = storage.filesystem(table_path)
        cutoff_ns = (time.time() - retention_hours * 3600) * 1e9
        removed = []
        for info in fs.get_file_info(pafs.FileSelector(base)):
            if (info.type == pafs.FileType.Directory and info.base_name.startswith(DATA_DIR_PREFIX)
                    and info.base_name not in live and (info.mtime_ns or 0) <= cutoff_ns):
                fs.delete_dir(info.path)
                removed.append(info.base_name + "/")
        return removed

    # ------------------------------------------------------------------ internals
    def _check_schema(self, name: str, df: DataFrame) -> None:
        current = {f.name: f.dataType for f in self.schema(name).fields}
        incoming = {f.name: f.dataType for f in df.schema.fields}
        problems = []
        for col in sorted(set(current) | set(incoming)):
            if col not in incoming:
                problems.append(f"missing column {col!r} ({current[col].simpleString()})")
            elif col not in current:
                problems.append(f"unexpected column {col!r} ({incoming[col].simpleString()})")
            elif _strip_nullability(current[col]) != _strip_nullability(incoming[col]):
                problems.append(f"column {col!r} is {incoming[col].simpleString()}, "
                                f"table has {current[col].simpleString()}")
        if problems:
            raise SchemaMismatch(f"schema of the data written to table {name!r} ({self.path(name)}) does not "
                                 f"match the table: " + "; ".join(problems))

    def _native_save(self, name: str, writer, lineage: Lineage | None, partition_by: Sequence[str]) -> int:
        if lineage is not None:
            writer = writer.option("userMetadata", lineage.to_json())
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(self.path(name))
        return self.version(name)

    def _write_folder(self, name: str, df: DataFrame, partition_by: Sequence[str]) -> list:
        """Spark writes `df` as Parquet into a fresh commit folder of the table; returns its AddActions."""
        table_path = self.path(name)
        folder = f"{DATA_DIR_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        writer = df.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(f"{table_path}/{folder}")
        return _add_actions(table_path, folder, list(partition_by))

    def _embedded_write(self, name: str, df: DataFrame, *, mode: str, lineage: Lineage | None,
                        partition_by: Sequence[str], partition_filters: list | None = None, snapshot=None,
                        new_schema: bool = False) -> int:
        from deltalake import CommitProperties
        from deltalake.transaction import create_table_with_add_actions

        # The snapshot the caller based its decision on: delta-rs checks conflicts against commits made since.
        dt = snapshot if snapshot is not None else (self._delta(name) if self._exists(name) else None)
        if dt is not None:
            existing_parts = list(dt.metadata().partition_columns)
            if new_schema and mode == "overwrite":
                existing_parts = list(partition_by) or existing_parts
            elif partition_by and list(partition_by) != existing_parts:
                raise LakeError(f"table {name!r} is partitioned by {existing_parts}, not {list(partition_by)}")
            partition_by = existing_parts
            if not new_schema:
                df = df.select(*self.schema_of(dt).fieldNames())  # the table's column order, checked equal
        adds = self._write_folder(name, df, partition_by)
        schema = _delta_schema(df.schema)
        props = CommitProperties(custom_metadata={"userMetadata": lineage.to_json()} if lineage else None)
        if dt is None or (new_schema and mode == "overwrite"):
            # A new table, or an overwrite that may change the schema: one commit replaces metadata and files.
            create_table_with_add_actions(self._delta_uri(name), schema, adds, mode="overwrite",
                                          partition_by=list(partition_by) or None, name=name,
                                          commit_properties=props, storage_options=self._options)
        else:
            dt.create_write_transaction(adds, mode=mode, schema=schema, partition_by=list(partition_by) or None,
                                        partition_filters=partition_filters, commit_properties=props)
        return self._checkpointed(name)

    def _checkpointed(self, name: str) -> int:
        """The new version, with a checkpoint every `CHECKPOINT_INTERVAL` commits (delta-rs writes none on its
        own; delta-spark does every 10), so that loading the table stays O(1) commit files."""
        dt = self._delta(name)
        if dt.version() % CHECKPOINT_INTERVAL == 0 and dt.version() > 0:
            dt.create_checkpoint()
        return dt.version()

    def _rewrite(self, name: str, dt, df: DataFrame, *, lineage: Lineage | None,
                 touched: Callable[[DataFrame], DataFrame], kept: Callable[[DataFrame], DataFrame]) -> int:
        """Copy-on-write of the files that `touched` finds rows in: their rows that `kept` keeps plus `df` go to a
        new folder, and one commit adds it and removes those files. Untouched files stay as they are."""
        import pyarrow as pa
        from deltalake import CommitProperties
        from deltalake.transaction import RemoveAction

        adds_all = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        parts = list(dt.metadata().partition_columns)
        hit = {r[0] for r in touched(self._scan(name, dt, adds_all, with_file=True)).select(FILE_COL)
               .distinct().collect()}
        old = [a for a in adds_all if a["path"] in hit]
        new = df.select(*self.schema_of(dt).fieldNames())
        if old:
            new = kept(self._scan(name, dt, old)).unionByName(new)
        adds = self._write_folder(name, new, parts)
        now_ms = int(time.time() * 1000)
        removes = [RemoveAction(a["path"], True, now_ms, a["size_bytes"],
                                {p: a.get(f"partition.{p}") for p in parts} or None) for a in old]
        props = CommitProperties(custom_metadata={"userMetadata": lineage.to_json()} if lineage else None)
        # mode="append" with explicit removes: delta-rs derives no removes of its own for it.
        dt.create_write_transaction(adds + removes, mode="append", schema=_delta_schema(new.schema),
                                    partition_by=parts or None, commit_properties=props)
        return self._checkpointed(name)


# ---------------------------------------------------------------------- helpers
class _user_metadata:
    """Sets delta-spark's commit user metadata for operations without a writer option (merge)."""

    KEY = "spark.databricks.delta.commitInfo.userMetadata"

    def __init__(self, spark, lineage: Lineage | None):
        self.spark, self.lineage = spark, lineage

    def __enter__(self):
        if self.lineage is not None:
            self.spark.conf.set(self.KEY, self.lineage.to_json())

    def __exit__(self, *exc):
        if self.lineage is not None:
            self.spark.conf.unset(self.KEY)


def _predicate_sql(where: str | Mapping[str, Any]) -> str:
    if isinstance(where, str):
        return where
    if not where:
        raise LakeError("replace needs a non-empty predicate")
    parts = []
    for k, v in where.items():
        if v is None:
            parts.append(f"`{k}` IS NULL")
        elif isinstance(v, str):
            parts.append(f"`{k}` = '{v.replace(chr(39), chr(39) * 2)}'")
        else:
            parts.append(f"`{k}` = {v!r}")
    return " AND ".join(parts)


def _partition_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _basename(path: str) -> str:
    return unquote(path).rsplit("/", 1)[-1]


def _delta_schema(spark_schema):
    import deltalake

    return deltalake.Schema.from_arrow(_spark_to_arrow_schema(spark_schema))


def _spark_path(uri: str) -> str:
    return _local_path(uri) if uri.startswith("file://") else uri


def _strip_nullability(dt):
    """Spark data type with nullability flags dropped (Parquet round trips make every column nullable)."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(dt, StructType):
        return StructType([StructField(f.name, _strip_nullability(f.dataType), True) for f in dt.fields])
    if isinstance(dt, ArrayType):
        return ArrayType(_strip_nullability(dt.elementType), True)
    if isinstance(dt, MapType):
        return MapType(_strip_nullability(dt.keyType), _strip_nullability(dt.valueType), True)
    return dt


def _arrow_schema(schema):
    """delta-rs returns large/view Arrow types; Spark's converter wants the plain ones."""
    import pyarrow as pa

    schema = pa.schema(schema)  # delta-rs hands out arro3 objects; pyarrow takes them via the C data interface

    def fix(t):
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
            return pa.list_(fix(t.value_type))
        if pa.types.is_list(t):
            return pa.list_(fix(t.value_type))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, fix(f.type), True) for f in t])
        if pa.types.is_map(t):
            return pa.map_(fix(t.key_type), fix(t.item_type))
        if pa.types.is_timestamp(t) and t.tz is not None:
            return pa.timestamp("us", tz="UTC")
        return t

    return pa.schema([pa.field(f.name, fix(f.type), True) for f in schema])


def _spark_to_arrow_schema(schema):
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    # Spark timestamps are instants; Delta's `timestamp` is microseconds adjusted to UTC.
    arrow = to_arrow_schema(schema, timezone="UTC")
    # Delta has no unsigned or nanosecond types; Spark produces neither, but nullability must be lenient.
    return pa.schema([pa.field(f.name, f.type, True) for f in arrow])


def _add_actions(table_path: str, folder: str, partition_by: list[str]) -> list:
    """AddActions for every Parquet file Spark wrote under `<table>/<folder>`, with footer statistics."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    fs, base = storage.filesystem(table_path)
    infos = [i for i in fs.get_file_info(pafs.FileSelector(f"{base}/{folder}", recursive=True))
             if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")]
    now_ms = int(time.time() * 1000)

    def add_action(info) -> AddAction:
        rel = info.path[len(base):].lstrip("/")
        values: dict[str, str | None] = {}
        for seg in rel.split("/")[1:-1]:
            if "=" in seg:
                k, v = seg.split("=", 1)
                v = unquote(v)
                values[k] = None if v == "__HIVE_DEFAULT_PARTITION__" else v
        missing = [p for p in partition_by if p not in values]
        assert not missing, f"partition folders missing for {missing} in {rel}"
        with fs.open_input_file(info.path) as fh:
            meta = pq.read_metadata(fh)
        return AddAction(rel, info.size, values, int(info.mtime_ns // 1_000_000) if info.mtime_ns else now_ms,
                         True, json.dumps(_stats(meta)))

    # Footer reads are small and latency-bound on object stores: read them concurrently.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(infos)))) as pool:
        return list(pool.map(add_action, infos))


def _stats(meta) -> dict[str, Any]:
    """Delta file statistics (numRecords, min/max, nullCount) from a Parquet footer's row-group statistics."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    schema = meta.schema
    for col in range(meta.num_columns):
        path = schema.column(col).path
        if "." in path:  # nested columns: Delta stats use nested objects; skip rather than mis-state
            continue
        lo = hi = None
        n_null = 0
        complete = True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics
            if st is None:
                complete = False
                break
            n_null += st.null_count or 0
            if st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        if not complete:
            continue
        nulls[path] = n_null
        if lo is not None and isinstance(lo, int | float | str) and not isinstance(lo, bool):
            if isinstance(lo, str) and (len(lo) > 32 or len(hi) > 32):
                continue  # truncated string stats are not exact bounds
            mins[path], maxs[path] = lo, hi
    return {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def table_digests(root: str, *, ignore: Sequence[str] = ()) -> list[tuple[str, int, str]]:
    """(table, rows, sha256) for every table under `root`, read with delta-rs (no Spark): the hash of the sorted
    rows as canonical JSON, without timestamp columns and the `ignore` columns (run ids)."""
    import hashlib

    import pyarrow as pa
    from deltalake import DeltaTable

    root = storage.absolute(root)
    out = []
    for name in sorted(n for n in storage.listdir(root) if not n.startswith(("_", "."))
                       and storage.isdir(storage.join(root, n, "_delta_log"))):
        table = DeltaTable(storage.delta_uri(storage.join(root, name)),
                           storage_options=storage.storage_options(root)).to_pyarrow_table()
        keep = [f.name for f in table.schema if f.name not in ignore and not pa.types.is_timestamp(f.type)]
        rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in table.select(keep).to_pylist())
        out.append((name, len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]))
    return out


@dataclasses.dataclass
class LakeCommand:
    """`python -m codemill.lake --lake LAKE`: lists the tables with version and rows; `--table T` shows a table's
    history with lineage; `--digest true` prints a content hash per table (row order, timestamp columns and the
    `ignore` columns left out: equal digests = equal tables); `--switch_backend native|embedded` records that Delta
    backend as the lake's writer from now on (the explicit switch); `--recover true` restores the outputs of every
    interrupted stage; `--snapshot true` prints the table versions a consistent reader pins."""

    lake: str = "lake"
    table: str = ""
    digest: bool = False
    ignore: list[str] = dataclasses.field(default_factory=lambda: ["run_id", "ingest_run"])
    switch_backend: str = ""
    # Restore the outputs of every interrupted stage (`Lake.recover`); the next run of a stage does it too.
    recover: bool = False
    # Print the versions a consistent reader pins (`Lake.snapshot`): pass them to deltalake / Polars / DuckDB.
    snapshot: bool = False

    def validate(self) -> list[str]:
        if self.switch_backend and self.switch_backend not in BACKENDS:
            return [f"switch_backend: one of {list(BACKENDS)}, got {self.switch_backend!r}"]
        return []


def main(argv: Sequence[str] | None = None) -> None:
    cmd = parse_config(LakeCommand, argv, prog="python -m codemill.lake", description=LakeCommand.__doc__)
    if cmd.digest:
        for name, rows, digest in table_digests(cmd.lake, ignore=cmd.ignore):
            print(f"{name:<22} {rows:>10,}  {digest}")
        return
    spark = get_spark("codemill-lake")
    if cmd.switch_backend:
        lake = Lake(spark, cmd.lake, backend=cmd.switch_backend, switch=True)  # type: ignore[arg-type]
        print(f"[lake] {lake.root}: now written by the {lake.backend} Delta backend")
        return
    lake = Lake(spark, cmd.lake)
    if cmd.recover:
        print(f"[lake] recovered: {lake.recover_all() or 'no stage was interrupted'}")
        return
    if cmd.snapshot:
        print(json.dumps(lake.snapshot(lake._table_names()), sort_keys=True))
        return
    if cmd.table:
        for h in lake.history(cmd.table):
            print(f"v{h['version']:<4} {h['operation']:<8} {json.dumps(h['lineage'], sort_keys=True)}")
        return
    print(f"{'table':<22} {'version':>7} {'rows':>12} {'files':>6} {'MB':>9}  partitioned by")
    for t in lake.tables():
        parts = ", ".join(t.partition_by)
        print(f"{t.name:<22} {t.version:>7} {t.rows:>12,} {t.files:>6} {t.bytes / 1e6:>9.2f}  {parts}")


if __name__ == "__main__":
    main()
