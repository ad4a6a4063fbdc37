"""Redaction of secrets and personal data: `near_deduped` (or `exact_deduped`) -> `redacted` + `redactions` +
`redaction_rejected`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages redact

Runs between near dedup and decontamination (so `clean`, the documents, the annotator's scores, the phase-2
selection and the synthetic seeds all read redacted text). Each file is scanned by the detectors of
`spark_jobs/redact_detectors.py` (cloud keys and tokens, private keys, passwords in connection strings and
assignments, high-entropy secret assignments, e-mail addresses, IP addresses; the exceptions in `redact.rules`) in a
vectorised `mapInArrow`, the detectors compiled once per Python worker. Every finding is replaced by its StarCoder
placeholder (`<KEY>`, `<PASSWORD>`, `<EMAIL>`, `<IP_ADDRESS>`):
- `redacted`: the files (schema of `files`), text redacted, `size_bytes` recounted; `doc_id` unchanged, so a file's
  findings are found by joining `redactions` on it, and the table's commit lineage names this stage and config;
- `redactions`: one row per replaced span (doc_id, kind, start/end character offsets in the text before redaction,
  detector, `secret_hash`). The secret itself is never stored: `secret_hash` is HMAC-SHA256 under a salt read from
  the environment variable `redact.salt_env` (never from the config file, never logged or recorded); without it
  the lake's own salt file (`resolve_salt`), so re-runs write the same hashes;
- `redaction_rejected`: files with more than `max_findings` findings (a dump of keys or of addresses) are dropped
  with a reason instead of redacted; their text (which holds the secrets) is not copied.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType

from codemill import schemas, storage
from spark_jobs.redact_detectors import Detectors, RedactRules, redact_text, salted_hash

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DEFAULT_SALT_ENV = "CODEMILL_REDACT_SALT"

FINDING = StructType([StructField("kind", StringType()), StructField("start", LongType()),
                      StructField("end", LongType()), StructField("detector", StringType()),
                      StructField("secret_hash", StringType())])
# `files` columns, redacted, plus what the scan found (internal to the stage).
_MARKED = StructType(schemas.FILES.fields + [StructField("n_findings", LongType()),
                                             StructField("findings", ArrayType(FINDING)),
                                             StructField("summary", StringType())])


@dataclasses.dataclass
class RedactConfig:
    """`redact.*` keys (conf/spark/redact.yaml documents them)."""

    enabled: bool = True
    # A file with more findings than this is rejected (`redaction_rejected`) instead of redacted.
    max_findings: int = 50
    # Name of the environment variable holding the salt of `redactions.secret_hash` (the value is never recorded).
    salt_env: str = DEFAULT_SALT_ENV
    rules: RedactRules = dataclasses.field(default_factory=RedactRules)

    def validate(self) -> list[str]:
        problems = [] if self.max_findings >= 0 else ["max_findings: must be >= 0"]
        if not self.salt_env:
            problems.append("salt_env: name the environment variable that holds the salt")
        return problems + [f"rules.{p}" for p in self.rules.validate()]


SALT_FILE = "_codemill_redact_salt"


def resolve_salt(cfg: RedactConfig, lake_root: str | None = None) -> bytes:
    """The salt of `redactions.secret_hash`: from the environment variable `cfg.salt_env`; else the lake's own salt
    (`<lake>/_codemill_redact_salt`, 32 random bytes made on first use, owner-only on local disk), so a re-run or a
    recovered run writes the same hashes; else (no lake) a random salt of this process. The lake's salt is readable
    by whoever reads the lake's files: a shared lake should set the variable (docs/curation.md)."""
    value = os.environ.get(cfg.salt_env, "")
    if value:
        return value.encode("utf-8")
    if lake_root is None:
        print(f"[redact] ${cfg.salt_env} is not set: secret hashes use a random salt of this process", file=sys.stderr)
        return os.urandom(32)
    path = storage.join(lake_root, SALT_FILE)
    if not storage.exists(path):
        storage.makedirs(lake_root)
        storage.write_bytes(path, os.urandom(32).hex().encode())
        if storage.is_local(path):
            os.chmod(storage.local_path(path), 0o600)
        print(f"[redact] ${cfg.salt_env} is not set: secret hashes use this lake's salt ({path})", file=sys.stderr)
    return storage.read_bytes(path).strip()


def scan_text(text: str | None, detectors: Detectors, salt: bytes, *, path: str | None = None,
              max_findings: int = 50) -> tuple[str | None, list[dict], str | None]:
    """(redacted text, findings as FINDING dicts, summary); the text is None when the file is rejected."""
    if text is None:
        return None, [], None
    found = detectors.find(text, path)
    if not found:
        return text, [], None
    rows = [{"kind": f.kind, "start": f.start, "end": f.end, "detector": f.detector,
             "secret_hash": salted_hash(f.value, salt)} for f in found]
    summary = ", ".join(f"{k} {n}" for k, n in sorted(Counter(f.kind for f in found).items()))
    if len(found) > max_findings:
        return None, rows, summary
    return redact_text(text, found), rows, summary


def scan(df: DataFrame, *, rules: RedactRules | None = None, salt: bytes, max_findings: int = 50) -> DataFrame:
    """`files`-schema rows -> the same rows redacted, plus `n_findings`, `findings` and `summary` (per-kind
    counts); a rejected file (over `max_findings`) keeps its findings but a null `content`."""
    rules = rules or RedactRules()
    out_schema = to_arrow_schema(_MARKED)
    names = schemas.FILES.fieldNames()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        detectors = Detectors.get(rules)  # compiled once per worker process (cached on the class)
        for batch in batches:
            texts, sizes, counts, findings, summaries = [], [], [], [], []
            for text, path, size in zip(batch.column("content").to_pylist(), batch.column("path").to_pylist(),
                                        batch.column("size_bytes").to_pylist()):
                new, rows, summary = scan_text(text, detectors, salt, path=path, max_findings=max_findings)
                texts.append(new)
                sizes.append(size if new is None or not rows else len(new.encode("utf-8")))
                counts.append(len(rows))
                findings.append(rows)
                summaries.append(summary)
            cols = {n: batch.column(n) for n in names}
            cols["content"] = pa.array(texts, pa.string())
            cols["size_bytes"] = pa.array(sizes, pa.int64())
            arrays = [cols[n].cast(out_schema.field(n).type) for n in names]
            arrays += [pa.array(counts, pa.int64()), pa.array(findings, out_schema.field("findings").type),
                       pa.array(summaries, pa.string())]
            yield pa.RecordBatch.from_arrays(arrays, schema=out_schema)

    return df.select(*names).mapInArrow(run, _MARKED)


def redacted_rows(marked: DataFrame, *, max_findings: int = 50) -> DataFrame:
    """The files kept (redacted where anything was found), schema of `files`."""
    from pyspark.sql import functions as F

    return marked.where(F.col("n_findings") <= max_findings).select(*schemas.FILES.fieldNames())


def redaction_rows(marked: DataFrame, *, max_findings: int = 50) -> DataFrame:
    """One row per replaced span of the kept files (schemas.REDACTIONS)."""
    from pyspark.sql import functions as F

    kept = marked.where((F.col("n_findings") > 0) & (F.col("n_findings") <= max_findings))
    return kept.select("doc_id", "lang", F.explode("findings").alias("f")) \
        .select("doc_id", "lang", "f.kind", "f.start", "f.end", "f.detector", "f.secret_hash") \
        .select(*schemas.REDACTIONS.fieldNames())


def rejected_rows(marked: DataFrame, *, max_findings: int = 50) -> DataFrame:
    """Files over the cap, without their text (schemas.REDACTION_REJECTED)."""
    from pyspark.sql import functions as F

    over = marked.where(F.col("n_findings") > max_findings)
    return over.select(
        "doc_id", "source_id", "repo", "path", "lang", "size_bytes", "n_findings",
        F.lit("too_many_findings").alias("reason"),
        F.format_string("%d findings > max_findings %d (%s)", "n_findings", F.lit(max_findings),
                        "summary").alias("detail"),
    ).select(*schemas.REDACTION_REJECTED.fieldNames())
