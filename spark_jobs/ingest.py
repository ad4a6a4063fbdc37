"""Ingest: raw code (JSONL / Parquet records or a directory of repositories) -> `files` + `quarantine`.

Run it as the pipeline's first stage:

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages ingest

Sources (`ingest.format: auto` picks one from `--input`, a file, a glob or a directory, on local disk or an object
store such as `s3a://bucket/the-stack/**/*.parquet`; an input holding both JSONL and Parquet files reads each with
its own reader):
- `jsonl`: JSON Lines (`.jsonl`, `.ndjson`, `.json`, optionally `.gz`), one record per line; each line is parsed on
  its own in a vectorised `mapInArrow`, so a malformed line becomes a `malformed_record` row naming the file and the
  line number instead of failing the job;
- `parquet`: The Stack v1 (`content`, `max_stars_repo_name`, `max_stars_repo_path`, `lang`, `max_stars_count`,
  `licenses`, ...) or the simple schema (`repo`, `path`, `content`, optional `lang`, `license`, `stars`);
- `tree`: a directory whose top-level folders are repositories. The driver lists only the top level; the workers
  walk each repository (pruning VCS and vendored folders), then read and decode the files. Spark's `binaryFile`
  source is not used for listing because Hadoop's listing silently drops names starting with `_` or `.`
  (`__init__.py`, `_internal/`), which would break the accounting.

Every record becomes exactly one row of `files` or `quarantine` (reasons in `schemas.QUARANTINE_REASONS`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from codemill import schemas, storage
from codemill.languages import ALIASES, AMBIGUOUS, EXTENSIONS, FILENAMES, canonical_lang, detect_language

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RECORD_SUFFIXES = {
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz"),
    "parquet": (".parquet",),
}
# Source columns tried in order for each canonical field (The Stack v1 names, then the simple schema's).
DEFAULT_COLUMNS: dict[str, list[str]] = {
    "content": ["content", "text", "code"],
    "repo": ["max_stars_repo_name", "repo", "repo_name", "repository"],
    "path": ["max_stars_repo_path", "path", "file_path", "filename"],
    "lang": ["lang", "language"],
    # The Stack v1: licenses / max_stars_repo_licenses (lists); v2: detected_licenses (list), and license_type
    # (permissive | no_license) when nothing was detected (spark_jobs/licences.py reads the result).
    "license": ["licenses", "max_stars_repo_licenses", "detected_licenses", "license"],
    "license_type": ["license_type"],
    "stars": ["max_stars_count", "stars", "star_count"],
}
# Record ids tried in order: codemill's own, a generic one, The Stack v1's blob hash, The Stack v2's blob id.
DEFAULT_ID_COLUMNS = ["doc_id", "id", "hexsha", "blob_id"]


@dataclasses.dataclass
class IngestConfig:
    """`ingest.*` keys."""

    # auto | jsonl | parquet | tree
    format: str = "auto"
    # Files above this many bytes go to quarantine as too_large (StarCoder drops files over 1 MB).
    max_bytes: int = 1_000_000
    # Canonical field -> source column (content, repo, path, lang, license, stars); unset fields try DEFAULT_COLUMNS.
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    # The input's own record id (becomes outcomes.source_id); empty = the first of DEFAULT_ID_COLUMNS present.
    id_column: str = ""
    # Fields a record must have (non-null) to be usable; otherwise missing_field.
    required: list[str] = dataclasses.field(default_factory=lambda: ["content", "path", "repo"])
    # Folder names skipped anywhere in a tree (VCS metadata, vendored dependencies, caches, virtualenvs).
    skip_dirs: list[str] = dataclasses.field(default_factory=lambda: [
        ".git", ".hg", ".svn", ".bzr", "node_modules", "vendor", "third_party", "third-party", "__pycache__",
        ".venv", "venv", "site-packages", ".tox", ".mypy_cache", ".pytest_cache", "bower_components", ".idea",
        ".gradle", "target", "dist-packages", ".eggs",
    ])
    # A NUL byte within the first this-many bytes marks a file as binary (git's heuristic).
    binary_probe_bytes: int = 8000
    snippet_chars: int = 200
    # Spark partitions for reading record files / tree files (0 = Spark's default parallelism x 2).
    partitions: int = 0
    # A plain (uncompressed) JSON Lines file above this many bytes is read by several tasks, one per byte range
    # split at line ends. A compressed one (.gz) is read whole by one task: gzip streams cannot be split.
    split_bytes: int = 128 << 20
    # Identify files with a shared extension (.h .m .pl .ts) or none from their content (`detect_languages`).
    detect_language: bool = True

    def validate(self) -> list[str]:
        problems = []
        if self.format not in ("auto", "jsonl", "parquet", "tree"):
            problems.append(f"format: {self.format!r} is not one of auto, jsonl, parquet, tree")
        if self.max_bytes <= 0:
            problems.append("max_bytes: must be positive")
        if self.split_bytes < 1 << 20:
            problems.append(f"split_bytes: {self.split_bytes} must be at least 1 MiB (1048576)")
        unknown = sorted(set(self.columns) - set(DEFAULT_COLUMNS))
        if unknown:
            problems.append(f"columns: unknown field(s) {unknown}; known: {sorted(DEFAULT_COLUMNS)}")
        bad_req = sorted(set(self.required) - set(DEFAULT_COLUMNS))
        if bad_req:
            problems.append(f"required: unknown field(s) {bad_req}")
        return problems


# ---------------------------------------------------------------------- input resolution (driver, listing only)
@dataclasses.dataclass(frozen=True)
class InputSpec:
    kind: str  # jsonl | parquet | records (both) | tree
    root: str  # directory that relative names (source ids) are taken from
    files: tuple[str, ...] = ()  # record files (jsonl/parquet); empty for a tree


def _record_kind(path: str) -> str | None:
    low = path.lower()
    for kind, suffixes in RECORD_SUFFIXES.items():
        if low.endswith(suffixes):
            return kind
    return None


def resolve_input(input_path: str, *, fmt: str = "auto") -> InputSpec:
    """Classifies `--input` (file, glob or directory; local or an object-store URI) into a record source or a
    repository tree. Listing goes through `codemill.storage` (one recursive listing per glob or folder)."""
    path = storage.absolute(input_path)
    if storage.has_magic(input_path):
        files = storage.glob(path)
        root = storage.glob_root(path)
    elif storage.isfile(path):
        files, root = [path], path.rsplit("/", 1)[0]
    elif storage.isdir(path):
        if fmt == "tree":
            return InputSpec("tree", path)
        files = [u for u, _, _ in storage.walk_files(path) if not u.rsplit("/", 1)[-1].startswith(".")]
        root = path
        kinds = {_record_kind(f) for f in files}
        if fmt == "auto" and (not files or None in kinds):  # anything but record files: a tree of repositories
            return InputSpec("tree", path)
    else:
        raise FileNotFoundError(f"input: {input_path!r} matches no file or directory")
    if not files:
        raise FileNotFoundError(f"input: {input_path!r} matches no file")
    kinds = {_record_kind(f) for f in files}
    if fmt == "auto" and kinds == {"jsonl", "parquet"}:
        kind = "records"  # both record formats: each file read by its own reader
    else:
        kind = fmt if fmt != "auto" else (kinds.pop() if len(kinds) == 1 else None)
    if kind not in ("jsonl", "parquet", "records"):
        raise ValueError(f"input: cannot tell the format of {input_path!r} (found {sorted(map(str, kinds))}); "
                         "set ingest.format to jsonl, parquet or tree")
    return InputSpec(kind, root, tuple(files))


def input_fingerprint(spec: InputSpec, *, skip_dirs: list[str], spark: SparkSession | None = None) -> str:
    """Hash of the input's file names, sizes and modification times: ingest re-runs only when it changes.

    With `spark`, a tree's repositories are walked and hashed on the executors (`tree_digests`): the driver lists
    the top level only, however many files the tree holds. Without, the driver walks it (small trees, tests)."""
    import hashlib

    h = hashlib.sha256(spec.kind.encode())
    if spec.kind == "tree" and spark is not None:
        h.update(b"per-repository\n")
        for top, digest in tree_digests(spark, spec.root, skip_dirs=skip_dirs):
            h.update(f"{top}\0{digest}\n".encode())
    elif spec.kind == "tree":
        skip = set(skip_dirs)
        fs, base = storage.filesystem(spec.root)
        for path, size, mtime in _walk_fs(fs, base, skip):
            h.update(f"{path}\0{size}\0{mtime}\n".encode())
    else:
        import pyarrow.fs as pafs

        fs, _ = storage.filesystem(spec.files[0])
        infos = fs.get_file_info([storage.filesystem(f)[1] for f in spec.files])
        for f, info in zip(spec.files, infos):
            if info.type != pafs.FileType.File:
                raise FileNotFoundError(f"input: {f} disappeared while listing")
            h.update(f"{f}\0{info.size}\0{info.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- worker-side decoding
def _open_bytes(uri: str, fs: Any = None) -> bytes:
    """A file's bytes; `fs` is the pyarrow filesystem the driver built for the input (it carries the store's
    settings to the workers), None for a local file."""
    if fs is None or storage.is_local(uri):
        with open(storage.local_path(uri), "rb") as fh:
            return fh.read()
    with fs.open_input_stream(storage.fs_path(uri)) as fh:
        return fh.read()


def _input_fs(root: str):
    """The pyarrow filesystem of an object-store input (None for local disk), built once on the driver."""
    return None if storage.is_local(root) else storage.filesystem(root)[0]


def _raw_row(**kw) -> dict:
    row = dict.fromkeys(schemas.RAW.fieldNames())
    row.update(kw)
    return row


def _batch(rows: list[dict]):
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(schemas.RAW)
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def _as_int(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _as_license(v, license_type=None) -> str | None:
    """Licences as one comma-separated string; The Stack v2's `license_type` when no licence was detected."""
    if isinstance(v, list | tuple):
        v = ",".join(str(x) for x in v)
    if v is not None and str(v).strip():
        return str(v)
    if license_type is not None and str(license_type).strip() and str(license_type).lower() != "no_license":
        return str(license_type)
    return None


def _open_random(uri: str, fs: Any = None):
    """A file opened for random access (a binary file object with seek/read)."""
    if fs is None or storage.is_local(uri):
        return open(storage.local_path(uri), "rb")
    return fs.open_input_file(storage.fs_path(uri))


def _read_lines_span(uri: str, start: int, end: int, fs: Any = None) -> bytes:
    """The bytes of the lines of a file that begin in [start, end), without the final line's newline: a byte
    range's share of a JSON Lines file (Hadoop's `LineRecordReader` rule). A line begins at 0 or after a newline;
    the range that holds its first byte reads it whole, past `end` if need be."""
    with _open_random(uri, fs) as fh:
        lo = max(0, start - 1)
        fh.seek(lo)
        data = fh.read(end - lo)
        if start > 0:
            # The first line beginning at or after `start` follows the first newline at or after start - 1.
            at = data.find(b"\n", 0, end - 1 - lo)
            if at < 0:
                return b""  # every byte of the range belongs to a line that began in an earlier range
            data = data[at + 1:]
        tail = []
        # The last line that begins before `end` ends at the first newline at or after end - 1.
        if not data.endswith(b"\n"):
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                cut = chunk.find(b"\n")
                if cut >= 0:
                    tail.append(chunk[:cut])
                    break
                tail.append(chunk)
        else:
            data = data[:-1]
        return data + b"".join(tail)


def count_newlines(uri: str, start: int, end: int, fs: Any = None) -> int:
    """Newlines in bytes [max(0, start - 1), end - 1) of a file: summed over the ranges before it, a range's
    first line number (`jsonl_ranges`)."""
    lo, hi = max(0, start - 1), end - 1
    n = 0
    with _open_random(uri, fs) as fh:
        fh.seek(lo)
        while lo < hi:
            chunk = fh.read(min(1 << 24, hi - lo))
            if not chunk:
                break
            n += chunk.count(b"\n")
            lo += len(chunk)
    return n


def _jsonl_rows(uri: str, rel: str, *, columns: dict[str, list[str]], id_columns: list[str], snippet: int,
                fs: Any = None, span: tuple[int, int, int] | None = None):
    """Yields one RAW row per non-blank line of a JSONL file, or with `span` (start, end, first line number) of
    the lines that begin in that byte range of a plain one."""
    import gzip
    import json


    try:
        if span is not None:
            data = _read_lines_span(uri, span[0], span[1], fs)
        else:
            data = _open_bytes(uri, fs)
            if uri.endswith(".gz"):
                data = gzip.decompress(data)
    except Exception as exc:  # an unreadable file is one malformed record, not a failed job
        yield _raw_row(source_id=f"{rel}:0", source_file=uri, line=0, error="malformed_record",
                       detail=f"unreadable file: {type(exc).__name__}: {exc}"[:500])
        return
    if span is not None and not data:
        return
    for lineno, raw in enumerate(data.split(b"\n"), start=1 if span is None else span[2]):
        if not raw.strip():
            continue  # blank lines (a trailing newline) are not records
        fallback_id = f"{rel}:{lineno}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _raw_row(source_id=fallback_id, source_file=uri, line=lineno, error="invalid_utf8",
                           detail=f"byte {exc.start}: {exc.reason}",
                           raw_snippet=raw[:snippet].decode("utf-8", "replace"))
            continue
        try:
            rec = json.loads(text)
            if not isinstance(rec, dict):
                raise ValueError(f"a JSON {type(rec).__name__}, not an object")
        except ValueError as exc:
            yield _raw_row(source_id=fallback_id, source_file=uri, line=lineno, error="malformed_record",
                           detail=str(exc)[:500], raw_snippet=text[:snippet])
            continue
        # A null or blank id is no id: the record is named by its place, `<file>:<line>` (stable across runs).
        source_id = next((str(rec[c]) for c in id_columns if rec.get(c) is not None and str(rec[c]).strip()),
                         fallback_id)
        values = {f: next((rec[c] for c in cols if rec.get(c) is not None), None) for f, cols in columns.items()}
        content = values["content"]
        error = detail = None
        if content is not None and not isinstance(content, str):
            error, detail = "malformed_record", f"content is a JSON {type(content).__name__}, not a string"
            content = None
        size = None
        if content is not None:
            try:
                size = len(content.encode("utf-8"))
            except UnicodeEncodeError as exc:  # lone surrogates written as \ud800 escapes
                error, detail, content = "invalid_utf8", f"char {exc.start}: {exc.reason}", None
        yield _raw_row(
            source_id=source_id, source_file=uri, line=lineno,
            repo=None if values["repo"] is None else str(values["repo"]),
            path=None if values["path"] is None else str(values["path"]),
            lang=canonical_lang(values["lang"]), content=content, size_bytes=size,
            stars=_as_int(values["stars"]), license=_as_license(values["license"], values["license_type"]),
            error=error, detail=detail, raw_snippet=None if error is None else text[:snippet],
        )


def _tree_row(uri: str, rel: str, length: int, *, max_bytes: int, probe: int, snippet: int, fs: Any = None) -> dict:
    """One RAW row for one file of a repository tree (rel = '<repo>/<path inside the repo>')."""
    repo, _, path = rel.partition("/")
    if not path:  # a file directly under the input root: its own one-file repository
        repo, path = os.path.splitext(rel)[0] or rel, rel
    base = dict(source_id=rel, source_file=uri, repo=repo, path=path, size_bytes=length)
    if length > max_bytes:
        return _raw_row(**base, error="too_large", detail=f"{length} bytes > {max_bytes}")
    try:
        data = _open_bytes(uri, fs)
    except Exception as exc:
        return _raw_row(**base, error="malformed_record", detail=f"unreadable file: {type(exc).__name__}: {exc}")
    if b"\x00" in data[:probe]:
        return _raw_row(**base, error="binary", detail=f"NUL byte within the first {probe} bytes",
                        raw_snippet=data[:snippet].decode("latin-1"))
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _raw_row(**base, error="invalid_utf8", detail=f"byte {exc.start}: {exc.reason}",
                        raw_snippet=data[:snippet].decode("utf-8", "replace"))
    return _raw_row(**{**base, "size_bytes": len(data)}, content=content)


def _rel(uri: str, root: str) -> str:
    """The name of a file relative to the input root ('<repo>/<path>' in a tree), for local paths and URIs."""
    p = storage.local_path(uri)
    prefix = storage.local_path(root).rstrip("/") + "/"
    return p[len(prefix):] if p.startswith(prefix) else p.rsplit("/", 1)[-1]


def decode_jsonl(files: DataFrame, *, root: str, columns: dict[str, list[str]], id_columns: list[str],
                 snippet_chars: int = 200) -> DataFrame:
    """One row per JSONL file (`path` column) -> one RAW row per line (vectorised, on the workers). With the
    columns `start`, `end`, `first_line` (`jsonl_ranges`), a row is a byte range of a plain file: its lines."""
    fs = _input_fs(root)

    spans = "start" in files.columns  # byte ranges of files (`jsonl_ranges`), else whole files

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            rows: list[dict] = []
            cols = batch.to_pydict()
            for i, uri in enumerate(cols["path"]):
                span = None
                if spans and cols["start"][i] is not None:
                    span = (cols["start"][i], cols["end"][i], cols["first_line"][i])
                for row in _jsonl_rows(uri, _rel(uri, root), columns=columns, id_columns=id_columns,
                                       snippet=snippet_chars, fs=fs, span=span):
                    rows.append(row)
                    if len(rows) >= 1000:
                        yield _batch(rows)
                        rows = []
            if rows:
                yield _batch(rows)

    return files.mapInArrow(run, schemas.RAW)


def decode_tree(listing: DataFrame, *, root: str, max_bytes: int = 1_000_000, binary_probe_bytes: int = 8000,
                snippet_chars: int = 200) -> DataFrame:
    """Listing (path, length) -> one RAW row per file, read and decoded on the workers."""
    fs = _input_fs(root)

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            rows = [
                _tree_row(uri, _rel(uri, root), length, max_bytes=max_bytes, probe=binary_probe_bytes,
                          snippet=snippet_chars, fs=fs)
                for uri, length in zip(batch.column("path").to_pylist(), batch.column("length").to_pylist())
            ]
            if rows:
                yield _batch(rows)

    return listing.mapInArrow(run, schemas.RAW)


def _walk_fs(fs, top: str, skip: set[str]) -> Iterator[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every regular file under `top` (a folder or a file) of a pyarrow filesystem,
    in path order, leaving out folders named in `skip`. Local folders are walked with os.walk, which prunes the
    skipped folders instead of listing them, and leaves symbolic links out (one may point outside the repository);
    object stores have no folders to prune: their one recursive listing is filtered."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        if os.path.isfile(top) and not os.path.islink(top):
            st = os.stat(top)
            yield top, st.st_size, st.st_mtime_ns
            return
        for d, dirs, names in os.walk(top):
            dirs[:] = sorted(x for x in dirs if x not in skip)
            for name in sorted(names):
                path = os.path.join(d, name)
                st = os.lstat(path)
                if not os.path.islink(path):
                    yield path, st.st_size, st.st_mtime_ns
        return
    info = fs.get_file_info(top)
    if info.type == pafs.FileType.File:
        yield top, info.size, info.mtime_ns or 0
        return
    for info in sorted(fs.get_file_info(pafs.FileSelector(top, recursive=True, allow_not_found=True)),
                       key=lambda i: i.path):
        parts = info.path[len(top):].split("/")[:-1]
        if info.type == pafs.FileType.File and not skip.intersection(parts):
            yield info.path, info.size, info.mtime_ns or 0


def _walk(top: str, skip: set[str], fs=None) -> Iterator[tuple[str, int]]:
    """(uri, size) of every regular file under `top` (a folder or a file, local or a URI)."""
    if fs is None or storage.is_local(top):
        import pyarrow.fs as pafs

        for path, size, _ in _walk_fs(pafs.LocalFileSystem(), storage.local_path(top), skip):
            yield path, size
        return
    prefix = top.split("://", 1)[0] + "://"
    for path, size, _ in _walk_fs(fs, storage.fs_path(top), skip):
        yield prefix + path, size


def list_tree(tops: DataFrame, *, skip_dirs: list[str], root: str = "") -> DataFrame:
    """One row per top-level entry (`top`: a repository folder) -> (path, length) of its files, walked on the
    workers. (Spark's own file listing would drop names starting with `_` or `.`, such as `__init__.py`.)"""
    import pyarrow as pa

    skip = set(skip_dirs)
    schema = pa.schema([("path", pa.string()), ("length", pa.int64())])
    fs = _input_fs(root) if root else None

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            for top in batch.column("top").to_pylist():
                rows = list(_walk(top, skip, fs))
                if rows:
                    paths, sizes = zip(*rows)
                    yield pa.RecordBatch.from_arrays([pa.array(paths, pa.string()), pa.array(sizes, pa.int64())],
                                                     schema=schema)

    return tops.mapInArrow(run, "path string, length long")


def tree_digests(spark: SparkSession, root: str, *, skip_dirs: list[str]) -> list[tuple[str, str]]:
    """(top-level entry, digest of its files' names, sizes and mtimes), sorted, for a repository tree: one Spark
    job whose tasks walk the repositories, so the driver never stats the tree's files."""
    import hashlib

    import pyarrow as pa

    skip = set(skip_dirs)
    fs = _input_fs(root)
    tops = sorted(name for name in storage.listdir(root) if name not in skip)

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            names, digests = [], []
            for name in batch.column("top").to_pylist():
                h = hashlib.sha256()
                top = storage.join(root, name)
                if fs is None or storage.is_local(top):
                    import pyarrow.fs as pafs

                    walked = _walk_fs(pafs.LocalFileSystem(), storage.local_path(top), skip)
                else:
                    walked = _walk_fs(fs, storage.fs_path(top), skip)
                for path, size, mtime in walked:
                    h.update(f"{path}\0{size}\0{mtime}\n".encode())
                names.append(name)
                digests.append(h.hexdigest())
            yield pa.RecordBatch.from_arrays([pa.array(names, pa.string()), pa.array(digests, pa.string())],
                                             names=["top", "digest"])

    if not tops:
        return []
    frame = spark.createDataFrame([(t,) for t in tops], "top string").repartition(
        max(1, min(len(tops), 2 * spark.sparkContext.defaultParallelism)))
    return sorted((r["top"], r["digest"]) for r in frame.mapInArrow(run, "top string, digest string").collect())


def _root_prefix(root: str) -> str:
    """Java regex matching `<root>/` at the start of a path (\\Q...\\E quotes every special character)."""
    return "^\\Q" + root.rstrip("/") + "/\\E"


def map_parquet(df: DataFrame, *, root: str, columns: dict[str, list[str]], id_columns: list[str]) -> DataFrame:
    """Parquet rows (any mapped schema, plus `_metadata`) -> RAW rows."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType


    present = set(df.columns)

    def pick(field: str):
        col = next((c for c in columns[field] if c in present), None)
        return F.col(f"`{col}`") if col else F.lit(None)

    lic_col = next((c for c in columns["license"] if c in present), None)
    license_expr = (F.array_join(F.col(f"`{lic_col}`"), ",")
                    if lic_col and isinstance(df.schema[lic_col].dataType, ArrayType) else pick("license"))
    lic_type = pick("license_type").cast("string")
    license_expr = F.coalesce(F.nullif(F.trim(license_expr.cast("string")), F.lit("")),
                              F.when(F.lower(lic_type) != "no_license", lic_type))
    # Spark names a Parquet file by its URI, percent-encoded (a space is %20): decoded, its name relative to the
    # input root (and so `<file>:<row>` ids and doc_ids) is the same wherever the input lies. A literal "+" stays
    # "+" (url_decode would read it as a space).
    uri = F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), r"\+", "%2B"))
    file_path = F.regexp_replace(uri, "^file:", "")
    rel = F.regexp_replace(file_path, _root_prefix(root), "")
    row = F.col("_metadata.row_index")
    # A null or blank id is no id: the row is named by its place, `<file>:<row index>` (stable across runs).
    ids = [F.when(F.trim(F.col(f"`{c}`").cast("string")) != "", F.col(f"`{c}`").cast("string"))
           for c in id_columns if c in present]
    source_id = F.coalesce(*ids, F.concat_ws(":", rel, row.cast("string")))
    lang = F.lower(F.trim(pick("lang").cast("string")))
    alias = F.create_map(*[F.lit(x) for kv in ALIASES.items() for x in kv])
    content = pick("content").cast("string")
    return df.select(
        source_id.alias("source_id"),
        uri.alias("source_file"),
        row.cast("long").alias("line"),
        pick("repo").cast("string").alias("repo"),
        pick("path").cast("string").alias("path"),
        F.coalesce(alias[lang], F.regexp_replace(lang, " ", "-")).alias("lang"),
        content.alias("content"),
        F.octet_length(content).cast("long").alias("size_bytes"),
        pick("stars").cast("long").alias("stars"),
        license_expr.cast("string").alias("license"),
        F.lit(None).cast("string").alias("error"),
        F.lit(None).cast("string").alias("detail"),
        F.lit(None).cast("string").alias("raw_snippet"),
    )


# `repo` or `path` values that must not reach a table whose consumers build file paths from them: a `..` segment
# (either separator), an absolute POSIX or UNC path, a Windows drive path.
UNSAFE_PATH = r"(^|[/\\])\.\.([/\\]|$)|^[/\\]|^[A-Za-z]:[/\\]"
UNSAFE_FIELDS = ("repo", "path")


def classify(raw: DataFrame, *, root: str, max_bytes: int = 1_000_000, required: tuple[str, ...] = (
        "content", "path", "repo"), ingest_run: str = "", snippet_chars: int = 200) -> DataFrame:
    """RAW rows -> RAW rows plus `doc_id`, a filled `lang` and the final quarantine `reason` (null = usable).

    A source id held by several records: the first in (file relative to the input root, line or row) order keeps
    its own verdict, every later one is `duplicate_source_id` (detail: where the first one is), so the same input
    keeps the same record however Spark partitions it."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F


    rel_file = F.regexp_replace(F.regexp_replace(F.col("source_file"), "^file:", ""),
                                _root_prefix(root), "")
    # Stable: the same record at the same place of the same input always gets the same id.
    line = F.coalesce(F.col("line").cast("string"), F.lit(""))
    doc_id = F.substring(F.sha2(F.concat_ws("\u001f", rel_file, line, F.col("source_id")), 256), 1, 16)
    missing = [F.when(F.col(f).isNull() | (F.trim(F.col(f)) == ""), F.lit(f)) for f in required if f != "content"]
    missing_names = F.array_compact(F.array(*missing)) if missing else F.array().cast("array<string>")
    base = F.lower(F.regexp_extract(F.col("path"), r"([^/]*)$", 1))
    ext = F.regexp_extract(base, r"\.([^.]+)$", 1)
    ext_map = F.create_map(*[F.lit(x) for kv in EXTENSIONS.items() for x in kv])
    name_map = F.create_map(*[F.lit(x) for kv in FILENAMES.items() for x in kv])
    lang = F.coalesce(F.col("lang"), name_map[base], ext_map[ext], F.lit("unknown"))
    unsafe = F.array_compact(F.array(*[F.when(F.col(f).rlike(UNSAFE_PATH), F.format_string(f"{f} %s", F.col(f)))
                                       for f in UNSAFE_FIELDS]))
    place = F.concat_ws(":", rel_file, line)
    first = Window.partitionBy("source_id").orderBy(rel_file, F.col("line").asc_nulls_first())
    occurrence, first_place = F.row_number().over(first), F.first(place).over(first)
    reason = (
        F.when(F.col("error").isNotNull(), F.col("error"))
        .when(F.col("content").isNull(), F.lit("missing_field"))
        .when(F.size(missing_names) > 0, F.lit("missing_field"))
        .when(F.size(unsafe) > 0, F.lit("unsafe_path"))
        .when(occurrence > 1, F.lit("duplicate_source_id"))
        .when(F.col("size_bytes") > max_bytes, F.lit("too_large"))
        .when(F.col("content").rlike(r"\A\s*\z"), F.lit("empty"))
        .when(F.instr(F.substring(F.col("content"), 1, 8000), "\u0000") > 0, F.lit("binary"))
    )
    detail = (
        F.when(F.col("error").isNotNull(), F.col("detail"))
        .when(F.col("content").isNull(), F.lit("content"))
        .when(F.size(missing_names) > 0, F.array_join(missing_names, ","))
        .when(F.size(unsafe) > 0, F.array_join(unsafe, "; "))
        .when(occurrence > 1, F.concat(F.lit("first occurrence at "), first_place))
        .when(F.col("size_bytes") > max_bytes, F.format_string("%d bytes > %d", F.col("size_bytes"), F.lit(max_bytes)))
        .otherwise(F.col("detail"))
    )
    return raw.select(
        *[c for c in raw.columns if c not in ("lang", "detail", "raw_snippet")],
        lang.alias("lang"), doc_id.alias("doc_id"), reason.alias("reason"), detail.alias("detail"),
        F.coalesce(F.col("raw_snippet"), F.substring(F.col("content"), 1, snippet_chars)).alias("raw_snippet"),
        F.lit(ingest_run).alias("ingest_run"),
    )


def to_files(classified: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return classified.where(F.col("reason").isNull()).select(*schemas.FILES.fieldNames())


def detect_languages(files: DataFrame) -> DataFrame:
    """`files` rows whose extension is shared (`.h`, `.m`, `.pl`, `.ts`) or missing get `lang` from their content
    (`codemill.languages.detect_language`: go-enry, then our fallbacks), unless the record named a language other
    than its extension's; the rest pass untouched, so only those files' text goes through Python. The filters'
    per-language thresholds then key on the detected language."""
    import pandas as pd
    from pyspark.sql import functions as F

    base = F.lower(F.regexp_extract(F.col("path"), r"([^/]*)$", 1))
    ext = F.regexp_extract(base, r"\.([^.]+)$", 1)
    name_map = F.create_map(*[F.lit(x) for kv in FILENAMES.items() for x in kv])
    ext_map = F.create_map(*[F.lit(x) for kv in EXTENSIONS.items() for x in kv])
    by_path = F.coalesce(name_map[base], ext_map[ext], F.lit("unknown"))
    shared = ext.isin(*AMBIGUOUS) | ((ext == "") & name_map[base].isNull() & ~base.contains("."))
    todo = shared & (F.col("lang") == by_path)  # the record's own, different language wins

    def identify(path, content):
        return pd.Series([detect_language(p, c) for p, c in zip(path, content)])

    # real types for Spark's type-hint inference (this module's annotations are strings)
    identify.__annotations__ = {"path": pd.Series, "content": pd.Series, "return": pd.Series}
    detect = F.pandas_udf(identify, "string")

    names = schemas.FILES.fieldNames()
    marked = files.withColumn("_todo", todo)
    rest = marked.where(~F.col("_todo")).select(*names)
    done = marked.where(F.col("_todo")).withColumn("lang", detect("path", "content")).select(*names)
    return rest.unionByName(done)


def to_quarantine(classified: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return classified.where(F.col("reason").isNotNull()).select(*schemas.QUARANTINE.fieldNames())


def jsonl_ranges(spark: SparkSession, files: tuple[str, ...] | list[str], *, split_bytes: int, fs: Any = None
                 ) -> list[tuple]:
    """(path, start, end, first_line) per task of a JSON Lines input: one row per file (start null: read whole),
    except plain files above `split_bytes`, which get one row per byte range of `split_bytes`. A range reads the
    lines that begin in it (`_read_lines_span`); its first line number, which record ids fall back on, is counted
    by one Spark job over the ranges (newlines before each range), so line numbers do not depend on the split.
    Compressed files (.gz) are one task each: a gzip stream can only be read from its start."""
    import pyarrow.fs as pafs

    sizes = {}
    plain = [f for f in files if not f.lower().endswith(".gz")]
    if plain:
        filesystem, _ = storage.filesystem(plain[0])
        for f, info in zip(plain, filesystem.get_file_info([storage.filesystem(f)[1] for f in plain])):
            if info.type == pafs.FileType.File:
                sizes[f] = info.size
    big = {f: n for f, n in sizes.items() if n > split_bytes}
    rows: list[tuple] = [(f, None, None, None) for f in files if f not in big]
    spans = [(f, lo, min(lo + split_bytes, n)) for f, n in big.items() for lo in range(0, n, split_bytes)]
    if spans:
        def count(batches: Iterator) -> Iterator:
            import pyarrow as pa

            for batch in batches:
                c = batch.to_pydict()
                n = [count_newlines(p, lo, hi, fs) for p, lo, hi in zip(c["path"], c["start"], c["end"])]
                yield pa.RecordBatch.from_arrays([batch.column(0), batch.column(1), pa.array(n, pa.int64())],
                                                 names=["path", "start", "newlines"])

        frame = spark.createDataFrame(spans, "path string, start long, end long").repartition(
            min(len(spans), spark.sparkContext.defaultParallelism * 2))
        counted = {(r["path"], r["start"]): r["newlines"]
                   for r in frame.mapInArrow(count, "path string, start long, newlines long").collect()}
        before: dict[str, int] = {}
        for f, lo, hi in spans:  # in file order, ranges in byte order
            first = 1 if lo == 0 else 2 + before[f]
            rows.append((f, lo, hi, first))
            before[f] = before.get(f, 0) + counted[f, lo]
    return rows


def read_raw(spark: SparkSession, spec: InputSpec, cfg: IngestConfig) -> DataFrame:
    """The input as RAW rows (the only part of ingest that touches storage)."""
    from pyspark.sql import functions as F

    columns = {f: ([cfg.columns[f]] if f in cfg.columns else cols) for f, cols in DEFAULT_COLUMNS.items()}
    id_columns = [cfg.id_column] if cfg.id_column else DEFAULT_ID_COLUMNS
    parts = cfg.partitions or 2 * spark.sparkContext.defaultParallelism
    if spec.kind == "records":
        frames = [read_raw(spark, dataclasses.replace(spec, kind=kind, files=tuple(
            f for f in spec.files if _record_kind(f) == kind)), cfg) for kind in ("parquet", "jsonl")]
        return frames[0].unionByName(frames[1])
    if spec.kind == "parquet":
        df = spark.read.parquet(*spec.files).select("*", "_metadata")
        return map_parquet(df, root=spec.root, columns=columns, id_columns=id_columns)
    if spec.kind == "jsonl":
        ranges = jsonl_ranges(spark, spec.files, split_bytes=cfg.split_bytes, fs=_input_fs(spec.root))
        files = spark.createDataFrame(ranges, "path string, start long, end long, first_line long")
        files = files.repartition(max(1, min(parts, len(ranges))))
        return decode_jsonl(files, root=spec.root, columns=columns, id_columns=id_columns,
                            snippet_chars=cfg.snippet_chars)
    tops = [storage.join(spec.root, name) for name in storage.listdir(spec.root) if name not in cfg.skip_dirs]
    top_df = spark.createDataFrame([(t,) for t in tops], "top string").repartition(max(1, min(parts, len(tops))))
    listing = list_tree(top_df, skip_dirs=cfg.skip_dirs, root=spec.root)
    # Spread files evenly over tasks: repositories differ in size by orders of magnitude.
    listing = listing.repartition(parts, F.xxhash64("path"))
    return decode_tree(listing, root=spec.root, max_bytes=cfg.max_bytes, binary_probe_bytes=cfg.binary_probe_bytes,
                       snippet_chars=cfg.snippet_chars)
