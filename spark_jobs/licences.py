"""Licences and opt-out: `files` -> `licensed` + `licence_rejected`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages ingest licences filter

Runs right after ingest, so nothing a licence forbids or an owner withdrew is filtered, deduplicated, scored or
trained on. Ingest maps the licence fields of the common schemas into `files.license` (comma separated): The Stack
v1's `max_stars_repo_licenses` / `licenses`, The Stack v2's `detected_licenses`, and its `license_type` when no
licence was detected (`permissive` / `no_license`), or a simple `license` column. Then, per file:
- **opt-out** (outcome `opted_out`): the repository (`owner/name`) or its owner is on the opt-out list, a text file
  (`opt_out_file`: one `owner/name` or `owner` per line, `#` comments) and/or a lake table (`opt_out_table`, column
  `repo`). Matching ignores case. Every file of such a repository is removed, whatever its licence;
- **licence** (outcome `licence_rejected`): a file is kept when every licence it lists is in `allow` (SPDX ids,
  compared case-insensitively; default: the permissive licences The Stack v1 kept, plus The Stack v2's
  `permissive` class). A file without licence information follows `no_licence`: `keep` (default: a local
  repository tree or a corpus without licence fields carries none, and the rest of the pipeline must still run) or
  `reject` (what The Stack did: only files of repositories with a detected permissive licence).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from codemill import schemas, storage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# The Stack v1 (arXiv 2211.15533, Appendix: "permissive licenses"): the SPDX ids it kept, the most common first.
PERMISSIVE = [
    "mit", "apache-2.0", "bsd-3-clause", "bsd-2-clause", "isc", "cc0-1.0", "unlicense", "zlib", "bsl-1.0",
    "0bsd", "mit-0", "bsd-3-clause-clear", "bsd-4-clause", "python-2.0", "psf-2.0", "artistic-2.0", "wtfpl",
    "afl-3.0", "ecl-2.0", "ms-pl", "ncsa", "postgresql", "upl-1.0", "x11", "cc-by-4.0", "cc-by-3.0", "ofl-1.1",
    "zpl-2.1", "mulanpsl-2.0", "blueoak-1.0.0", "permissive",
]


@dataclasses.dataclass
class LicencesConfig:
    """`licences.*` keys (conf/spark/licences.yaml documents them)."""

    enabled: bool = True
    # Licences kept (SPDX ids, any case); a file is kept when every licence it lists is here.
    allow: list[str] = dataclasses.field(default_factory=lambda: list(PERMISSIVE))
    # Files without licence information: keep | reject.
    no_licence: str = "keep"
    # Opt-out list: a text file (one `owner/name` or `owner` per line, `#` comments), local or on an object store.
    opt_out_file: str = ""
    # Opt-out list as a lake table with a `repo` column (`owner/name` or `owner`).
    opt_out_table: str = ""

    def validate(self) -> list[str]:
        problems = []
        if self.no_licence not in ("keep", "reject"):
            problems.append(f"no_licence: {self.no_licence!r} is not keep or reject")
        if self.opt_out_file and not storage.isfile(self.opt_out_file):
            problems.append(f"opt_out_file: no file {self.opt_out_file!r}")
        if not self.allow:
            problems.append("allow: empty; every file with a licence would be rejected")
        return problems


def read_opt_out_file(path: str) -> list[str]:
    """The entries of an opt-out file, lowercased, comments and blank lines left out."""
    text = storage.read_bytes(path).decode("utf-8")
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip().strip("/").lower()
        if not entry:
            continue
        if entry.count("/") > 1 or " " in entry:
            raise ValueError(f"{path}:{n}: {line.strip()!r} is not `owner` or `owner/name`")
        entries.append(entry)
    return entries


def judge(files: DataFrame, *, allow: list[str], no_licence: str = "keep",
          opt_out: DataFrame | None = None) -> DataFrame:
    """`files` rows plus `_outcome` (null = kept, `opted_out`, `licence_rejected`) and `_reason`.
    `opt_out`: one column `entry` (`owner/name` or `owner`, lowercase)."""
    from pyspark.sql import functions as F

    allowed = F.array(*[F.lit(a.lower()) for a in allow])
    lic = F.filter(F.transform(F.split(F.coalesce(F.col("license"), F.lit("")), ","), lambda x: F.lower(F.trim(x))),
                   lambda x: x != "")
    not_allowed = F.array_except(lic, allowed)
    df = files.withColumn("_lic", lic)
    if opt_out is not None:
        entries = F.broadcast(opt_out.select(F.lower(F.trim("entry")).alias("_entry")).distinct())
        repo = F.lower(F.trim(F.col("repo")))
        df = (df.withColumn("_repo", repo).withColumn("_owner", F.substring_index(repo, "/", 1))
              .join(entries.withColumnRenamed("_entry", "_by_repo"), F.col("_repo") == F.col("_by_repo"), "left")
              .join(entries.withColumnRenamed("_entry", "_by_owner"), F.col("_owner") == F.col("_by_owner"), "left"))
        opted = F.col("_by_repo").isNotNull() | F.col("_by_owner").isNotNull()
        opted_reason = F.when(F.col("_by_repo").isNotNull(), F.concat(F.lit("opt-out: repository "), "_repo")) \
            .otherwise(F.concat(F.lit("opt-out: owner "), "_owner"))
    else:
        opted, opted_reason = F.lit(False), F.lit(None).cast("string")
    empty = F.size("_lic") == 0
    outcome = (F.when(opted, F.lit("opted_out"))
               .when(empty & F.lit(no_licence == "reject"), F.lit("licence_rejected"))
               .when(~empty & (F.size(not_allowed) > 0), F.lit("licence_rejected")))
    reason = (F.when(opted, opted_reason)
              .when(empty, F.lit("no_licence: no licence information"))
              .otherwise(F.concat(F.lit("licence_not_allowed: "), F.array_join(not_allowed, ","))))
    return df.select(*files.columns, outcome.alias("_outcome"),
                     F.when(outcome.isNotNull(), reason).alias("_reason"))


def licensed_rows(judged: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return judged.where(F.col("_outcome").isNull()).select(*schemas.FILES.fieldNames())


def rejected_rows(judged: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return judged.where(F.col("_outcome").isNotNull()).select(
        *[c for c in schemas.LICENCE_REJECTED.fieldNames() if c not in ("outcome", "reason")],
        F.col("_outcome").alias("outcome"), F.col("_reason").alias("reason"))


def opt_out_entries(spark, cfg: LicencesConfig, lake=None) -> DataFrame | None:
    """The configured opt-out list as a DataFrame (`entry`), or None when there is none."""
    frames = []
    if cfg.opt_out_file:
        frames.append(spark.createDataFrame([(e,) for e in read_opt_out_file(cfg.opt_out_file)], "entry string"))
    if cfg.opt_out_table:
        if lake is None or not lake.exists(cfg.opt_out_table):
            raise ValueError(f"licences.opt_out_table: no table {cfg.opt_out_table!r} in the lake")
        frames.append(lake.read(cfg.opt_out_table).selectExpr("CAST(repo AS STRING) AS entry"))
    return functools.reduce(lambda a, b: a.unionByName(b), frames) if frames else None
