"""Paths on local disk and on object stores, one small API for the driver and the Python workers.

Every codemill path (input globs, the lake root, annotator, tokenizer and model folders, shards, manifests, exports)
may be a local path, a `file://` URI or an object-store URI (`s3a://`, `s3://`, `gs://`, `abfss://`). Spark itself
reads and writes such URIs through Hadoop's FileSystem; everything codemill does outside Spark (listing, small
files, model folders, Delta metadata through delta-rs) goes through this module, never through `os.path` on a URI.

- `filesystem(uri)`: a pyarrow filesystem and the path inside it. For S3 the options come from the active Spark
  session's Hadoop configuration (`spark.hadoop.fs.s3a.endpoint`, `.access.key`, `.secret.key`, `.session.token`,
  `.endpoint.region`, `.connection.ssl.enabled`, `.path.style.access`) and otherwise from the standard `AWS_*`
  environment (or the machine's instance role, which pyarrow finds on its own). pyarrow filesystems pickle, so a
  function running on the workers takes the one the driver built.
- `storage_options(uri)`: the same settings in the form delta-rs, Polars and DuckDB take.
- `glob(pattern)`: files matching a glob (`*`, `?`, `[...]`, `**`), listed with one recursive listing of the
  pattern's fixed prefix.

Credentials are only ever passed to the clients: nothing here logs or records them (`S3Settings` hides them
from its repr).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlparse

# URI schemes that name S3 (Hadoop's s3a, EMR's s3, the old s3n) and the ones pyarrow handles natively.
S3_SCHEMES = ("s3a", "s3", "s3n")
# Hadoop keys (under `spark.hadoop.` in Spark settings) -> meaning.
_S3A_KEYS = {
    "endpoint": "fs.s3a.endpoint",
    "access_key": "fs.s3a.access.key",
    "secret_key": "fs.s3a.secret.key",
    "session_token": "fs.s3a.session.token",
    "region": "fs.s3a.endpoint.region",
    "ssl": "fs.s3a.connection.ssl.enabled",
    "path_style": "fs.s3a.path.style.access",
}


def scheme(uri: str) -> str:
    """The URI scheme ('' for a plain local path)."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_local(uri: str) -> bool:
    return scheme(uri) in ("", "file")


def local_path(uri: str) -> str:
    """A local path for a local path or `file://` URI (unchanged otherwise)."""
    return unquote(urlparse(uri).path) if uri.startswith("file:") else uri


def absolute(uri: str) -> str:
    """Local paths made absolute (`~` expanded); URIs as given, without a trailing slash."""
    if is_local(uri):
        return os.path.abspath(os.path.expanduser(local_path(uri)))
    return uri.rstrip("/")


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a local path or a URI."""
    if is_local(base):
        return os.path.join(local_path(base), *parts)
    return posixpath.join(base.rstrip("/"), *parts)


# ---------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Where and how to reach S3; empty fields mean the client's own default chain (environment, instance role)."""

    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""
    session_token: str = ""
    region: str = ""
    ssl: bool = True
    path_style: bool = False

    def __repr__(self) -> str:  # never show credentials
        return f"S3Settings(endpoint={self.endpoint!r}, region={self.region!r}, ssl={self.ssl})"

    @property
    def endpoint_url(self) -> str:
        if not self.endpoint:
            return ""
        if "://" in self.endpoint:
            return self.endpoint
        return ("https://" if self.ssl else "http://") + self.endpoint


def _hadoop_conf() -> dict[str, str]:
    """fs.s3a.* settings of the active Spark session's Hadoop configuration (empty without a session)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return {}
    spark = SparkSession.getActiveSession()
    if spark is None:
        return {}
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    out = {}
    for key in _S3A_KEYS.values():
        value = conf.get(key)
        if value:
            out[key] = str(value)
    return out


def s3_settings(hadoop: Mapping[str, str] | None = None) -> S3Settings:
    """S3 settings from Hadoop's fs.s3a.* keys (the active session's unless given), then the AWS_* environment."""
    h = _hadoop_conf() if hadoop is None else dict(hadoop)
    env = os.environ

    def pick(field: str, *env_keys: str) -> str:
        return h.get(_S3A_KEYS[field]) or next((env[k] for k in env_keys if env.get(k)), "")

    endpoint = pick("endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    ssl_value = h.get(_S3A_KEYS["ssl"])
    ssl = (ssl_value.lower() != "false") if ssl_value else not endpoint.startswith("http://")
    path_style = (h.get(_S3A_KEYS["path_style"], "") or "").lower() == "true" or bool(endpoint)
    return S3Settings(
        endpoint=endpoint,
        access_key=pick("access_key", "AWS_ACCESS_KEY_ID"),
        secret_key=pick("secret_key", "AWS_SECRET_ACCESS_KEY"),
        session_token=pick("session_token", "AWS_SESSION_TOKEN"),
        region=pick("region", "AWS_REGION", "AWS_DEFAULT_REGION"),
        ssl=ssl,
        path_style=path_style,
    )


def s3a_conf(settings: S3Settings) -> dict[str, str]:
    """Spark settings (`spark.hadoop.fs.s3a.*`) for the given S3 settings: what a session or spark-submit needs to
    reach the same store."""
    out = {"spark.hadoop.fs.s3a.path.style.access": str(settings.path_style).lower(),
           "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.ssl).lower()}
    if settings.endpoint:
        out["spark.hadoop.fs.s3a.endpoint"] = settings.endpoint_url
    if settings.region:
        out["spark.hadoop.fs.s3a.endpoint.region"] = settings.region
    if settings.access_key:
        out["spark.hadoop.fs.s3a.access.key"] = settings.access_key
        out["spark.hadoop.fs.s3a.secret.key"] = settings.secret_key
        out["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider" if settings.session_token
            else "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
    if settings.session_token:
        out["spark.hadoop.fs.s3a.session.token"] = settings.session_token
    return out


def storage_options(uri: str, settings: S3Settings | None = None) -> dict[str, str]:
    """Options for delta-rs / Polars (`storage_options=`) to reach `uri`; empty for local paths and for stores
    whose clients read their standard environment (GCS, Azure)."""
    if scheme(uri) not in S3_SCHEMES:
        return {}
    s = settings or s3_settings()
    out: dict[str, str] = {}
    if s.endpoint:
        out["AWS_ENDPOINT_URL"] = s.endpoint_url
        if s.endpoint_url.startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    if s.path_style:
        out["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    if s.access_key:
        out["AWS_ACCESS_KEY_ID"] = s.access_key
        out["AWS_SECRET_ACCESS_KEY"] = s.secret_key
    if s.session_token:
        out["AWS_SESSION_TOKEN"] = s.session_token
    if s.region:
        out["AWS_REGION"] = s.region
    return out


def delta_uri(uri: str) -> str:
    """The table URI as delta-rs takes it (local paths absolute, `s3a://` as `s3://`)."""
    if is_local(uri):
        return absolute(uri)
    if scheme(uri) in S3_SCHEMES:
        return "s3://" + uri.split("://", 1)[1].rstrip("/")
    return uri.rstrip("/")


# ---------------------------------------------------------------------- filesystems
def fs_path(uri: str) -> str:
    """The path inside the filesystem that `filesystem(uri)` returns (without building one)."""
    if is_local(uri):
        return absolute(uri)
    rest = uri.split("://", 1)[1]
    if scheme(uri) in ("abfs", "abfss"):
        container_at, _, path = rest.partition("/")
        return f"{container_at.partition('@')[0]}/{path}".rstrip("/")
    return rest.rstrip("/")


def filesystem(uri: str, settings: S3Settings | None = None):
    """(pyarrow filesystem, path inside it) for a local path or URI."""
    import pyarrow.fs as pafs

    if is_local(uri):
        return pafs.LocalFileSystem(), absolute(uri)
    sch = scheme(uri)
    rest = uri.split("://", 1)[1]
    if sch in S3_SCHEMES:
        s = settings or s3_settings()
        kwargs: dict[str, Any] = {}
        if s.endpoint:
            kwargs["endpoint_override"] = s.endpoint_url
            kwargs["scheme"] = "https" if s.endpoint_url.startswith("https") else "http"
        if s.access_key:
            kwargs.update(access_key=s.access_key, secret_key=s.secret_key)
            if s.session_token:
                kwargs["session_token"] = s.session_token
        if s.region:
            kwargs["region"] = s.region
        kwargs["force_virtual_addressing"] = not s.path_style
        return pafs.S3FileSystem(**kwargs), fs_path(uri)
    if sch in ("abfs", "abfss"):
        # abfss://container@account.dfs.core.windows.net/path -> pyarrow's "container/path" in that account
        host = rest.split("/", 1)[0].partition("@")[2]
        return pafs.AzureFileSystem(account_name=host.split(".", 1)[0]), fs_path(uri)
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def _uri(prefix_uri: str, fs_path: str) -> str:
    """The URI of a path inside the filesystem of `prefix_uri` (the inverse of `filesystem`)."""
    if is_local(prefix_uri):
        return fs_path
    sch = scheme(prefix_uri)
    if sch in ("abfs", "abfss"):
        container_at = prefix_uri.split("://", 1)[1].split("/", 1)[0]
        container, _, host = container_at.partition("@")
        inner = fs_path[len(container):].lstrip("/")
        return f"{sch}://{container}@{host}/{inner}"
    return f"{sch}://{fs_path}"


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def isfile(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def isdir(uri: str) -> bool:
    """True for a folder; on an object store, for a prefix that holds at least one object."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return True
    if is_local(uri):
        return False
    return bool(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def listdir(uri: str) -> list[str]:
    """Names directly under a folder, sorted (empty when it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def walk_files(uri: str) -> Iterator[tuple[str, int, int]]:
    """(uri, size, mtime_ns) of every file under a folder, recursively, in path order."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
        yield _uri(uri, info.path), int(info.size or 0), int(info.mtime_ns or 0)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file; on an object store the object appears at once when the upload completes."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path) if not is_local(uri) else os.path.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if is_local(uri):  # atomic on one filesystem: readers never see half a file
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as fh:
            fh.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as fh:
        fh.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def makedirs(uri: str) -> None:
    """Creates a local folder (object stores have no folders: nothing to do)."""
    if is_local(uri):
        os.makedirs(absolute(uri), exist_ok=True)


def delete_dir(uri: str) -> None:
    """Deletes a folder and everything under it (nothing when it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound and not (not is_local(uri) and isdir(uri)):
        return
    fs.delete_dir(path)


def upload_dir(local_dir: str, uri: str) -> list[str]:
    """Copies every file under `local_dir` to `uri` (a local folder or a prefix); returns the relative names."""
    names = []
    for d, _, files in os.walk(local_dir):
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(d, name), local_dir).replace(os.sep, "/")
            with open(os.path.join(d, name), "rb") as fh:
                write_bytes(join(uri, rel), fh.read())
            names.append(rel)
    return sorted(names)


def local_copy(uri: str, *, fs: Any = None, cache_root: str | None = None) -> str:
    """A local folder holding the files under `uri`: the folder itself when local, else a copy in a cache folder
    keyed on the URI and its objects' names, sizes and times (re-used while they are unchanged).

    `fs` is the pyarrow filesystem to read with: Spark workers pass the one the driver built (it carries the store's
    endpoint and credentials, which a worker may not have). A lock file makes the processes of one machine (Spark's
    Python workers) download once: the others wait, then re-use the copy.
    """
    import fcntl
    import hashlib
    import json
    import shutil

    import pyarrow.fs as pafs

    if is_local(uri):
        return absolute(uri)
    uri = absolute(uri)
    fs = fs if fs is not None else filesystem(uri)[0]
    base = fs_path(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
    if not files:
        raise FileNotFoundError(f"{uri}: no files there")
    listing = [(f"{scheme(uri)}://{i.path}", int(i.size or 0), int(i.mtime_ns or 0)) for i in files]
    key = hashlib.sha256(json.dumps([uri, listing]).encode()).hexdigest()[:16]
    root = cache_root or os.path.join(os.environ.get("CODEMILL_CACHE_DIR")
                                      or os.path.join(os.path.expanduser("~"), ".cache", "codemill"), "remote")
    target = os.path.join(root, key)
    if os.path.exists(os.path.join(target, ".complete")):
        return target
    os.makedirs(root, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(target, ".complete")):
            tmp = f"{target}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for info in files:
                dest = os.path.join(tmp, *info.path[len(base):].lstrip("/").split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with fs.open_input_stream(info.path) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=8 << 20)
            open(os.path.join(tmp, ".complete"), "w").close()
            shutil.rmtree(target, ignore_errors=True)  # an unfinished copy left by a killed process
            os.replace(tmp, target)
    return target


# ---------------------------------------------------------------------- globs
_MAGIC = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    return _MAGIC.search(pattern) is not None


def _glob_regex(pattern: str) -> re.Pattern:
    """A regex for a glob over '/'-separated paths: `**` crosses folders, `*`, `?` and `[...]` do not."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            ch = pattern[i]
            if ch == "*":
                out.append("[^/]*")
            elif ch == "?":
                out.append("[^/]")
            elif ch == "[":
                end = pattern.find("]", i + 1)
                if end < 0:
                    out.append(re.escape(ch))
                else:
                    body = pattern[i + 1:end]
                    out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                    i = end
            else:
                out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob(pattern: str) -> list[str]:
    """Files matching `pattern` (local or URI), sorted; a pattern without wildcards lists that one file."""
    import pyarrow.fs as pafs

    if not has_magic(pattern):
        return [pattern if not is_local(pattern) else absolute(pattern)] if isfile(pattern) else []
    fs, path = filesystem(pattern)
    if is_local(pattern):
        path = absolute(pattern)
    fixed = path[:_MAGIC.search(path).start()]
    base = fixed.rsplit("/", 1)[0] if "/" in fixed else ""
    rx = _glob_regex(path)
    infos = fs.get_file_info(pafs.FileSelector(base or "/", recursive=True, allow_not_found=True))
    hits = sorted(i.path for i in infos if i.type == pafs.FileType.File and rx.match(i.path))
    return [_uri(pattern, p) for p in hits]


def glob_root(pattern: str) -> str:
    """The folder above a glob's first wildcard (what names inside the matches are taken relative to)."""
    head = pattern[:_MAGIC.search(pattern).start()] if has_magic(pattern) else pattern
    if is_local(pattern):
        head = absolute(head) + ("/" if head.endswith("/") else "")
    return head.rsplit("/", 1)[0] if "/" in head else head


# ---------------------------------------------------------------------- litdata (the shards' reader)
def _litdata_allow_http() -> None:
    """Lets litdata's chunk downloads reach a plain-http endpoint (an S3-compatible server without TLS).

    litdata (0.2.x) fetches chunks with obstore, built from its boto3 client's endpoint but with fixed client
    options that lack `allow_http`, so object_store refuses `http://` URLs ("BadScheme"); boto3, which fetches
    `index.json`, has no such rule. Adding the option to that module-level dict is the only hook litdata offers;
    DataLoader workers forked afterwards inherit it."""
    try:
        from litdata.streaming import downloader
    except ImportError:
        return
    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict) and "allow_http" not in options:
        downloader._OBSTORE_CLIENT_OPTIONS = {**options, "allow_http": "true"}


def litdata_source(uri: str, settings: S3Settings | None = None) -> tuple[str, dict[str, Any]]:
    """(input_dir, storage_options) for litdata's `StreamingDataset` reading a split folder.

    Local folders as they are. S3 (`s3a://`, `s3://`) as `s3://` (the only S3 scheme litdata knows) with boto3
    client options: the endpoint of an S3-compatible server and the keys when `codemill.storage` finds them (the
    active session's `fs.s3a.*` settings, else the AWS_* environment); without keys boto3 uses its own chain
    (profile, instance role). Other stores (gs://, azure) go to litdata unchanged."""
    if is_local(uri):
        return local_path(uri), {}
    if scheme(uri) not in S3_SCHEMES:
        return uri, {}
    s = settings or s3_settings()
    options: dict[str, Any] = {}
    if s.endpoint:
        options["endpoint_url"] = s.endpoint_url
        if s.endpoint_url.startswith("http://"):
            _litdata_allow_http()
    if s.region:
        options["region_name"] = s.region
    if s.access_key:
        options.update(aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key)
        if s.session_token:
            options["aws_session_token"] = s.session_token
    return "s3://" + fs_path(uri), options
