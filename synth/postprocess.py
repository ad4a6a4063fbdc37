"""Post-processing of generations into the `synthetic` table: extraction, checks, dedup, decontamination.

Every generation is kept, accepted or rejected with the first failing check as `reject_reason` (docs/synth.md):

1. `no_code_block` / `unclosed_code_block` (malformed): the answer has no fenced code block, or the block never
   closes (generation cut by max_new_tokens, `finish_reason = length`); `too_many_secrets`: more findings of the
   redaction detectors than `filter.redact.max_findings` (fewer are replaced by placeholders, as in curation;
   `synth.generate` already redacts the seed text and the response before `synthetic_raw` is written);
2. `wrong_language`: the fence names a language other than the seed's;
3. `too_short` / `too_long`: characters or non-blank lines outside the configured bounds;
4. `syntax_error`: the file does not parse (Python: `ast.parse`; the code is parsed, never executed);
5. `exact_duplicate`: same normalised content as a seed or an earlier generation (`spark_jobs.exact_dedup`);
6. `near_duplicate`: a MinHash near-duplicate of a seed or of another generation (`spark_jobs.near_dedup`);
7. `benchmark_contamination`: n-gram overlap with a benchmark (`spark_jobs.decontaminate`).

Checks 1-4 are per row (a vectorised `mapInPandas`); 5-7 call the curation stages' public APIs on the accepted
rows, each with its stage's config, which `FilterConfig` holds whole (`filter.exact_dedup`, `filter.near_dedup`,
`filter.decontaminate`): dedup keys (`exact_dedup.with_content_hash`, `near_dedup.minhash_keys`), clustering
(`exact_dedup.mark_hashed_duplicates`, `near_dedup.cluster_documents`) and benchmark matching
(`decontaminate.find_contamination`, `decontaminate.benchmark_hits`). Seeds always win their group, then the
smallest id (`SEEDS_FIRST`).

The work splits in two (`synth.generate` overlaps the first with generation, one committed chunk at a time):
`check_rows` (checks 1-4, the benchmark match of 7, and the per-row keys of 5-6: the normalised content hash and
the MinHash signature with its LSH band keys, all of which depend on nothing but the row) and `finish` (5-6, which
compare every generation and seed by those keys, then the verdict of 7 in its place in the order).
`check_rows_local` gives `check_rows`' output for rows the process already holds (each chunk the engine returns).

Public API: `FilterConfig`, `check_row`, `check_values`, `extract_code`, `syntax_error`, `row_checks`,
`check_rows`, `match_rows`, `check_rows_local`, `dedup_keys`, `key_columns`, `seed_keys`, `dedup_against_seeds`,
`contamination_details`, `finish`, `exact_dedup_config`, `near_dedup_config`, `SEEDS_FIRST`, `ACCEPTED`,
`REJECTED`, `CONTAMINATION_COL`, `CHECK_COLUMNS`, `GENERATION_ONLY_COLUMNS`.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import warnings
from collections.abc import Iterator, Sequence

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from codemill.languages import canonical_lang
from spark_jobs import near_dedup
from spark_jobs.benchmark_index import BenchmarkIndex
from spark_jobs.decontaminate import DecontaminateConfig, benchmark_hits, find_contamination
from spark_jobs.exact_dedup import HASH_COL, ExactDedupConfig, mark_hashed_duplicates, with_content_hash
from spark_jobs.near_dedup import (
    NearDedupConfig,
    cluster_documents,
    minhash_key_arrays,
    minhash_key_fields,
    minhash_keys,
)
from spark_jobs.redact import RedactConfig
from spark_jobs.redact_detectors import Detectors, redact_text

ACCEPTED, REJECTED = "accepted", "rejected"
# Set by `check_rows`: the strongest benchmark hit of a row that passed checks 1-4, applied by `finish`.
CONTAMINATION_COL = "_contamination"
# Which file of a group of (near-)duplicates is kept: a seed (origin 0) before any generation, then the smallest id,
# so which generation survives does not depend on chunking or on the order of runs.
SEEDS_FIRST = ["origin asc", "doc_id asc"]
# ```lang or ~~~lang at the start of a line; the info string's first word is the language.
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n", re.MULTILINE)


@dataclasses.dataclass
class FilterConfig:
    """`filter.*` keys: bounds and the per-row checks, then the curation stages' own configs for the checks
    against seeds, other generations and benchmarks, each reused whole (conf/spark/pipeline.yaml documents their
    keys; `enabled: false` skips the check)."""

    min_chars: int = 200
    max_chars: int = 40_000
    min_lines: int = 5
    check_language: bool = True
    check_syntax: bool = True
    # Check 5. `normalise` as in curation; `keep` does not apply (SEEDS_FIRST).
    exact_dedup: ExactDedupConfig = dataclasses.field(default_factory=ExactDedupConfig)
    # Check 6: StarCoder's near-dedup settings, as the curation stage uses them; `keep` and `incremental` do not
    # apply (SEEDS_FIRST; generations are always compared with every seed).
    near_dedup: NearDedupConfig = dataclasses.field(default_factory=NearDedupConfig)
    # Check 7: the curation stage's benchmarks and thresholds.
    decontaminate: DecontaminateConfig = dataclasses.field(default_factory=DecontaminateConfig)
    # The curation stage's redaction (spark_jobs/redact.py), applied to the seed text shown to the model and to
    # every response before `synthetic_raw` is written; a file with more than `max_findings` findings is rejected
    # (`too_many_secrets`).
    redact: RedactConfig = dataclasses.field(default_factory=RedactConfig)

    def validate(self) -> list[str]:
        problems = []
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            problems.append(f"max_chars: must exceed min_chars ({self.min_chars}), got {self.max_chars}")
        if self.min_lines < 0:
            problems.append(f"min_lines: must be >= 0, got {self.min_lines}")
        # Settings that synth would silently ignore are errors: seeds always win, then the smallest id.
        for name, section, default in (("exact_dedup", self.exact_dedup, ExactDedupConfig()),
                                       ("near_dedup", self.near_dedup, NearDedupConfig())):
            if not section.validate() and section.keep_policy() != default.keep_policy():
                problems.append(f"{name}.keep: not used by synth (seeds win, then the smallest id); leave it out")
        if self.near_dedup.incremental:
            problems.append("near_dedup.incremental: not used by synth (generations are always compared with "
                            "every seed); leave it out")
        return problems


def exact_dedup_config(cfg: FilterConfig) -> ExactDedupConfig:
    """The exact-dedup settings synth applies: `cfg.exact_dedup` with seeds first (`SEEDS_FIRST`)."""
    return dataclasses.replace(cfg.exact_dedup, keep=list(SEEDS_FIRST), order_by=None)


def near_dedup_config(cfg: FilterConfig) -> NearDedupConfig:
    """The near-dedup settings synth applies: `cfg.near_dedup` with seeds first (`SEEDS_FIRST`)."""
    return dataclasses.replace(cfg.near_dedup, keep=list(SEEDS_FIRST), representative=None)


# ------------------------------------------------------------------------------------------ per-row checks
def extract_code(response: str) -> tuple[str | None, str | None, str | None]:
    """(code, fence language, problem) from a model answer: the longest closed fenced block.

    problem is "no_code_block" or "unclosed_code_block" when no closed block exists.
    """
    blocks: list[tuple[str, str]] = []
    pos = 0
    unclosed = False
    while True:
        m = _FENCE.search(response, pos)
        if not m:
            break
        fence = m.group(1)
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end = close.search(response, m.end())
        if end is None:
            unclosed = True
            break
        blocks.append((response[m.end():end.start()].rstrip("\n"), m.group(2).lower()))
        pos = end.end()
    if not blocks:
        return None, None, "unclosed_code_block" if unclosed else "no_code_block"
    code, lang = max(blocks, key=lambda b: len(b[0]))
    return code, lang or None, None


def syntax_error(code: str, lang: str) -> str | None:
    """A parse error message, or None when the code parses (or no parser is available for `lang`)."""
    if lang in ("python", "jupyter"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # invalid escape sequences and the like
                ast.parse(code)  # parsing only: generated code is never executed
        except (SyntaxError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def redact_generation(text: str | None, cfg: RedactConfig) -> tuple[str | None, int]:
    """(`text` with its secrets and personal data replaced by placeholders, number of findings): what seeds and
    generations pass before they are written; unchanged when `cfg.enabled` is false."""
    if not text or not cfg.enabled:
        return text, 0
    found = Detectors.get(cfg.rules).find(text)
    return (redact_text(text, found) if found else text), len(found)


def check_row(response: str, lang: str, cfg: FilterConfig) -> tuple[str | None, str | None, str | None]:
    """(code, reject_reason, detail) for one generation; reject_reason None = passes the per-row checks."""
    code, fence_lang, problem = extract_code(response or "")
    if problem:
        return None, problem, None
    code, n_secrets = redact_generation(code, cfg.redact)  # rows written before redaction existed, too
    if n_secrets > cfg.redact.max_findings:
        return code, "too_many_secrets", f"{n_secrets} findings > redact.max_findings {cfg.redact.max_findings}"
    if cfg.check_language and fence_lang:
        got = canonical_lang(fence_lang)
        same = {lang, "python" if lang == "jupyter" else lang}
        if got not in same and not (lang == "shell" and got in {"bash", "sh", "zsh", "console"}):
            return code, "wrong_language", f"fence says {fence_lang!r}, seed is {lang!r}"
    n_lines = sum(1 for line in code.splitlines() if line.strip())
    if len(code) < cfg.min_chars or n_lines < cfg.min_lines:
        return code, "too_short", f"{len(code)} chars, {n_lines} lines"
    if len(code) > cfg.max_chars:
        return code, "too_long", f"{len(code)} chars"
    if cfg.check_syntax:
        err = syntax_error(code, lang)
        if err:
            return code, "syntax_error", err[:500]
    return code, None, None


def row_checks(df: DataFrame, *, cfg: FilterConfig) -> DataFrame:
    """Adds content (the extracted file), status, reject_reason and reject_detail from the per-row checks."""
    schema = StructType(df.schema.fields + [StructField(c, StringType(), True) for c in CHECK_COLUMNS])

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            results = check_values(pdf["response"], pdf["lang"], cfg)
            pdf = pdf.copy()
            for i, name in enumerate(CHECK_COLUMNS):
                pdf[name] = [r[i] for r in results]
            yield pdf[schema.fieldNames()]

    return df.mapInPandas(apply, schema)


# Raw-table columns that only generation needs: checked rows do not carry them.
GENERATION_ONLY_COLUMNS = ("prompt", "seed_text")
# What `row_checks` adds, in this order.
CHECK_COLUMNS = ("content", "status", "reject_reason", "reject_detail")


def check_values(responses, langs, cfg: FilterConfig) -> list[tuple]:
    """(content, status, reject_reason, reject_detail) per generation: `check_row` with its verdict."""
    return [(code, REJECTED if reason else ACCEPTED, reason, detail)
            for code, reason, detail in (check_row(r, lg, cfg) for r, lg in zip(responses, langs))]


# ------------------------------------------------------------------------------- cross-row checks (Spark)
def _reject(df: DataFrame, flagged: DataFrame, reason: str) -> DataFrame:
    """Marks the accepted rows whose synth_id is in `flagged` (synth_id, detail) as rejected for `reason`."""
    hit = flagged.select("synth_id", F.col("detail").alias("_detail")).dropDuplicates(["synth_id"])
    out = df.join(hit, on="synth_id", how="left")
    newly = (F.col("status") == ACCEPTED) & F.col("_detail").isNotNull()
    return out.select(
        *[c for c in df.columns if c not in ("status", "reject_reason", "reject_detail")],
        F.when(newly, F.lit(REJECTED)).otherwise(F.col("status")).alias("status"),
        F.when(newly, F.lit(reason)).otherwise(F.col("reject_reason")).alias("reject_reason"),
        F.when(newly, F.col("_detail")).otherwise(F.col("reject_detail")).alias("reject_detail"),
    ).select(*df.columns)


def key_columns(cfg: FilterConfig) -> list[str]:
    """The columns `dedup_keys` adds for these settings."""
    cols = [HASH_COL] if cfg.exact_dedup.enabled else []
    if cfg.near_dedup.enabled:
        cols += near_dedup.key_columns(cfg.near_dedup)
    return cols


def dedup_keys(df: DataFrame, *, cfg: FilterConfig, id_col: str = "synth_id", where=None) -> DataFrame:
    """Adds `key_columns(cfg)`: what exact dedup groups by (`spark_jobs.exact_dedup.with_content_hash`: the hash of
    the normalised content) and what near dedup compares (`spark_jobs.near_dedup.minhash_keys`: the MinHash
    signature with its LSH band keys), for the rows where the Column `where` holds (all rows when None; null
    elsewhere). A row's keys depend on that row alone, so they can be computed chunk by chunk and compared once at
    the end."""
    out = df
    if cfg.exact_dedup.enabled:
        out = with_content_hash(out, cfg.exact_dedup)
        if where is not None:
            out = out.withColumn(HASH_COL, F.when(where, F.col(HASH_COL)))
    if cfg.near_dedup.enabled:
        keys = minhash_keys(df if where is None else df.where(where), cfg.near_dedup, id_col=id_col)
        out = out.join(keys, on=id_col, how="left")
    return out


def seed_keys(seeds: DataFrame, *, cfg: FilterConfig) -> DataFrame:
    """doc_id and the dedup keys (`dedup_keys`) of seed files (doc_id, content)."""
    return dedup_keys(seeds.select("doc_id", "content"), cfg=cfg, id_col="doc_id").drop("content")


def _candidates(checked: DataFrame, seeds: DataFrame | None, columns: list[str]) -> DataFrame:
    """doc_id, `columns`, origin (0 = seed, 1 = generation): the accepted generations and the seeds."""
    gens = checked.where(F.col("status") == ACCEPTED).select(
        F.col("synth_id").alias("doc_id"), *columns, F.lit(1).alias("origin"))
    if seeds is None:
        return gens
    seed_rows = seeds.select(F.concat(F.lit("seed:"), F.col("doc_id")).alias("doc_id"), *columns,
                             F.lit(0).alias("origin"))
    return seed_rows.unionByName(gens)


def dedup_against_seeds(checked: DataFrame, seeds: DataFrame | None, *, cfg: FilterConfig,
                        keys: DataFrame | None = None) -> DataFrame:
    """Rejects accepted generations that exactly / nearly duplicate a seed or another generation.

    `checked` carries the dedup keys of its accepted rows (`check_rows`); `keys` are the seeds' (`seed_keys`;
    computed here from `seeds` (doc_id, content) when None). The seeds' content is read only when two files
    share an LSH bucket and the pair needs verifying. Seeds always win their group (origin 0 sorts first), then
    the smallest synth_id (`SEEDS_FIRST`), so which generation survives does not depend on chunking or on the order
    of runs.
    """
    if keys is None and seeds is not None:
        keys = seed_keys(seeds, cfg=cfg)
    out = checked
    if cfg.exact_dedup.enabled:
        marked = mark_hashed_duplicates(_candidates(out, keys, [HASH_COL]), exact_dedup_config(cfg))
        flagged = marked.where((F.col("origin") == 1) & (F.col("doc_id") != F.col("representative"))).select(
            F.col("doc_id").alias("synth_id"), F.concat(F.lit("same as "), F.col("representative")).alias("detail"))
        out = _reject(out, flagged, "exact_duplicate")
    if cfg.near_dedup.enabled:
        # spark_jobs.near_dedup.near_duplicates on stored signatures, as its incremental path does.
        ncfg = near_dedup_config(cfg)
        sigs = _candidates(out, keys, near_dedup.key_columns(ncfg))
        clusters = cluster_documents(_candidates(out, seeds, ["content"]), sigs, ncfg)
        flagged = clusters.where((F.col("doc_id") != F.col("representative")) & ~F.col("doc_id").startswith("seed:"))
        flagged = flagged.select(
            F.col("doc_id").alias("synth_id"),
            F.format_string("similar to %s (%.2f)", F.col("representative"), F.col("similarity")).alias("detail"))
        out = _reject(out, flagged, "near_duplicate")
    return out


def _contamination_text(benchmark, task_id, overlap):
    """CONTAMINATION_COL's text for a hit (Spark Columns or names)."""
    return F.format_string("%s %s (overlap %.2f)", benchmark, task_id, overlap)


def _strongest(hits: list[tuple]) -> tuple | None:
    """The benchmark hit that `contamination_details` reports: highest overlap, ties broken by the greatest
    (benchmark, task_id), so the text never depends on the order hits come in."""
    return max(hits, key=lambda h: (h[6], h[0], h[1]), default=None)


def contamination_details(checked: DataFrame, benchmarks: DataFrame, *, cfg: DecontaminateConfig) -> DataFrame:
    """Adds CONTAMINATION_COL: the strongest benchmark text found in an accepted row's content (null when clean;
    `_strongest` says which), by `spark_jobs.decontaminate.find_contamination`, the curation stage's own matcher
    with its settings; `benchmarks` comes from `load_benchmarks`."""
    docs = checked.where(F.col("status") == ACCEPTED).select("synth_id", "content")
    hits = find_contamination(docs, benchmarks, cfg, id_col="synth_id")
    strongest = hits.groupBy("synth_id").agg(F.max_by(
        _contamination_text("benchmark", "task_id", "overlap"), F.struct("overlap", "benchmark", "task_id"))
        .alias(CONTAMINATION_COL))
    return checked.join(strongest, on="synth_id", how="left").select(*checked.columns, CONTAMINATION_COL)


def check_rows(raw: DataFrame, benchmarks: DataFrame | None, *, cfg: FilterConfig) -> DataFrame:
    """The per-row half of post-processing: checks 1-4 (`row_checks`), then `match_rows`. A row's result depends
    on that row alone, so chunks can be checked as they are committed."""
    return match_rows(row_checks(raw.drop(*GENERATION_ONLY_COLUMNS), cfg=cfg), benchmarks, cfg=cfg)


def match_rows(checked: DataFrame, benchmarks: DataFrame | None, *, cfg: FilterConfig) -> DataFrame:
    """For the rows of `row_checks` output that passed checks 1-4: their dedup keys (`dedup_keys`) and the
    benchmark match (CONTAMINATION_COL; null everywhere when `benchmarks` is None or `cfg.decontaminate` is off).
    Both read `checked` again: materialise it first when it is expensive (`synth.generate.ChunkChecks` does)."""
    out = dedup_keys(checked, cfg=cfg, where=F.col("status") == ACCEPTED)
    if cfg.decontaminate.enabled and benchmarks is not None:
        return contamination_details(out, benchmarks, cfg=cfg.decontaminate)
    return out.withColumn(CONTAMINATION_COL, F.lit(None).cast("string"))


def check_rows_local(spark: SparkSession, rows: Sequence[tuple], schema: StructType, *, cfg: FilterConfig,
                     index: BenchmarkIndex | None) -> DataFrame:
    """`check_rows` of rows this process already holds (tuples of `schema`, the raw table's), with the same output.

    The functions the Spark transforms apply to each batch run here on the rows (`check_values`,
    `spark_jobs.near_dedup.minhash_key_arrays`, `spark_jobs.decontaminate.benchmark_hits` against `index`, the
    `benchmark_index` of `cfg.decontaminate`; None skips the match, as `benchmarks=None` does), and only what is a
    Spark expression (the content hash, the text of the strongest hit) runs in Spark, in the one job that
    materialises the result. `synth.generate.ChunkChecks` checks each chunk the engine returned this way.
    Why not `check_rows` on the chunk: measured on 16-row chunks after warm-up, it ran 6 Spark jobs and used
    1.7-2.9 CPU-s per chunk (JVM 1.2-2.3, Python workers 0.5-0.6), almost all of it Spark's cost per job, while the
    Python work itself takes ~15 ms; with the engine on the same CPU cores, that CPU is taken from generation.
    """
    names = schema.fieldNames()
    keep = [i for i, n in enumerate(names) if n not in GENERATION_ONLY_COLUMNS]
    checks = check_values([r[names.index("response")] for r in rows], [r[names.index("lang")] for r in rows], cfg)
    extra: list[list] = [list(c) for c in checks]
    fields = [schema.fields[i] for i in keep] + [StructField(c, StringType(), True) for c in CHECK_COLUMNS]
    if cfg.near_dedup.enabled:
        key_fields = minhash_key_fields(cfg.near_dedup, nullable=True)
        fields += key_fields
        accepted = [content for content, status, _, _ in checks if status == ACCEPTED]
        # One row of key values per accepted row, in order; rejected rows get nulls.
        keyed = iter(zip(*(c.to_pylist() for c in minhash_key_arrays(pa.array(accepted, pa.string()),
                                                                       cfg.near_dedup))) if accepted else ())
        for (_, status, _, _), e in zip(checks, extra):
            e += next(keyed) if status == ACCEPTED else [None] * len(key_fields)
    hits = cfg.decontaminate.enabled and index is not None
    if hits:
        fields += [StructField("_benchmark", StringType(), True), StructField("_task_id", StringType(), True),
                   StructField("_overlap", DoubleType(), True)]
        for (content, status, _, _), e in zip(checks, extra):
            best = None
            if status == ACCEPTED:  # benchmark_hits skips empty contents, as find_contamination does
                best = _strongest(benchmark_hits(content, index, cfg.decontaminate))
            e += [best[0], best[1], best[6]] if best else [None] * 3
    df = spark.createDataFrame([tuple(r[i] for i in keep) + tuple(e) for r, e in zip(rows, extra)], StructType(fields))
    if cfg.exact_dedup.enabled:
        df = with_content_hash(df, cfg.exact_dedup)
        df = df.withColumn(HASH_COL, F.when(F.col("status") == ACCEPTED, F.col(HASH_COL)))
    contamination = F.lit(None).cast("string")
    if hits:
        contamination = F.when(F.col("_benchmark").isNotNull(),
                               _contamination_text("_benchmark", "_task_id", "_overlap"))
    return df.select(*[names[i] for i in keep], *CHECK_COLUMNS, *key_columns(cfg),
                     contamination.alias(CONTAMINATION_COL))


def finish(checked: DataFrame, seeds: DataFrame | None, *, cfg: FilterConfig,
           keys: DataFrame | None = None) -> DataFrame:
    """The cross-row half: exact and near dedup over every checked row and the seeds (`keys`: the seeds' dedup
    keys when computed ahead, see `dedup_against_seeds`), then the benchmark verdict (`check_rows` found the
    hits) on the rows still accepted, so the first failing check in the documented order is the one reported.
    Drops CONTAMINATION_COL and the dedup keys."""
    out = dedup_against_seeds(checked, seeds, cfg=cfg, keys=keys)
    flagged = out.where(F.col(CONTAMINATION_COL).isNotNull()).select(
        "synth_id", F.col(CONTAMINATION_COL).alias("detail"))
    return _reject(out, flagged, "benchmark_contamination").drop(CONTAMINATION_COL, *key_columns(cfg))
