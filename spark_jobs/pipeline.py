"""Phase-1 curation pipeline: raw code -> files -> filtered -> exact_deduped -> near_deduped -> clean -> documents,
with `outcomes` accounting for every input record and a funnel printed at the end.

    python -m spark_jobs.pipeline --input data/raw --lake lake [--config conf/spark/pipeline.yaml] [--stages ...]
    spark-submit spark_jobs/pipeline.py --input /data/the-stack --lake /data/lake --stages ingest filter

`--stages` takes stage names (space or comma separated) or `all` (default: every registered stage, in order).
A stage whose input table versions and config (for ingest: the input files' names, sizes and times) have not
changed since its last run is skipped; `--force true` re-runs it. Other modules add stages with `register(...)`.
Tables and columns: docs/tables.md; how to run and tune: docs/curation.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # spark-submit runs this file as a script: make `spark_jobs` importable
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spark_jobs.decontaminate import DecontaminateConfig  # noqa: E402
from spark_jobs.documents import DocumentsConfig  # noqa: E402
from spark_jobs.exact_dedup import ExactDedupConfig  # noqa: E402
from spark_jobs.filter import FilterConfig  # noqa: E402
from spark_jobs.ingest import IngestConfig  # noqa: E402
from spark_jobs.near_dedup import NearDedupConfig  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from spark_jobs.lake import Lake, Lineage


@dataclasses.dataclass
class PipelineConfig:
    """Top-level keys; each stage reads its own section."""

    # File, glob or directory of raw code (needed by the ingest stage only).
    input: str = ""
    lake: str = "lake"
    # "all" or stage names separated by commas/spaces, run in registry order.
    stages: str = "all"
    force: bool = False
    # Identifies this run in stage_stats and the commits' lineage; empty = a timestamp.
    run_id: str = ""
    print_funnel: bool = True
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    exact_dedup: ExactDedupConfig = dataclasses.field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = dataclasses.field(default_factory=NearDedupConfig)
    decontaminate: DecontaminateConfig = dataclasses.field(default_factory=DecontaminateConfig)
    documents: DocumentsConfig = dataclasses.field(default_factory=DocumentsConfig)

    def stage_names(self) -> list[str]:
        names = [s for s in self.stages.replace(",", " ").split() if s]
        return list(STAGES) if not names or names == ["all"] else [s for s in STAGES if s in names]

    def validate(self) -> list[str]:
        problems = []
        names = [s for s in self.stages.replace(",", " ").split() if s and s != "all"]
        unknown = [s for s in names if s not in STAGES]
        if unknown:
            problems.append(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
        if "ingest" in self.stage_names() and not self.input:
            problems.append("input: the ingest stage needs --input (a file, glob or directory of raw code)")
        if not self.lake:
            problems.append("lake: give the lake root (--lake DIR)")
        return problems


@dataclasses.dataclass
class Context:
    spark: SparkSession
    lake: Lake
    cfg: PipelineConfig
    run_id: str
    _spec: Any = None

    @property
    def spec(self):
        """The resolved `--input` (listing only; cached)."""
        if self._spec is None:
            from spark_jobs.ingest import resolve_input

            self._spec = resolve_input(self.cfg.input, fmt=self.cfg.ingest.format)
        return self._spec


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline. `run(ctx, lineage)` writes `outputs`; `stats(ctx)` returns (in, out) DataFrames
    with `lang` and `size_bytes` columns for the funnel (None: no funnel row)."""

    name: str
    run: Callable[[Context, Lineage], Any]
    outputs: tuple[str, ...]
    inputs: Callable[[PipelineConfig], tuple[str, ...]] = lambda cfg: ()
    section: Callable[[PipelineConfig], Any] = lambda cfg: None
    fingerprint: Callable[[Context], str] = lambda ctx: ""
    stats: Callable[[Context], tuple[DataFrame, DataFrame]] | None = None
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True


STAGES: dict[str, Stage] = {}


def register(stage: Stage, *, after: str | None = None) -> None:
    """Adds (or replaces) a stage; `after` places it behind an existing one instead of at the end."""
    STAGES.pop(stage.name, None)
    if after is None or after not in STAGES:
        STAGES[stage.name] = stage
        return
    items = list(STAGES.items())
    pos = [n for n, _ in items].index(after) + 1
    items.insert(pos, (stage.name, stage))
    STAGES.clear()
    STAGES.update(items)


# ---------------------------------------------------------------------- the phase-1 stages
def _decontam_source(cfg: PipelineConfig) -> str:
    return "near_deduped" if cfg.near_dedup.enabled else "exact_deduped"


@contextlib.contextmanager
def _persisted(df: DataFrame) -> Iterator[DataFrame]:
    """`df` cached for a stage that writes several tables from it, released when the stage ends or fails."""
    from pyspark import StorageLevel

    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield df
    finally:
        df.unpersist()


def _run_ingest(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs import ingest

    cfg = ctx.cfg.ingest
    raw = ingest.read_raw(ctx.spark, ctx.spec, cfg)
    classified = ingest.classify(raw, root=ctx.spec.root, max_bytes=cfg.max_bytes, required=tuple(cfg.required),
                                 ingest_run=ctx.run_id, snippet_chars=cfg.snippet_chars)
    with _persisted(classified) as classified:
        ctx.lake.overwrite("files", ingest.to_files(classified), lineage=lineage)
        ctx.lake.overwrite("quarantine", ingest.to_quarantine(classified), lineage=lineage)


def _run_filter(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs import filter as filters

    with _persisted(filters.judge(ctx.lake.read("files"), ctx.cfg.filter)) as judged:
        ctx.lake.overwrite("filtered", filters.filtered_rows(judged), lineage=lineage)
        ctx.lake.overwrite("rejected", filters.rejected_rows(judged), lineage=lineage)
        stats = filters.filter_stats(judged, run_id=ctx.run_id)
        ctx.lake.append("filter_stats", stats, lineage=lineage)


def _run_exact_dedup(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs import exact_dedup

    c = ctx.cfg.exact_dedup
    marked = exact_dedup.mark_duplicates(ctx.lake.read("filtered"), normalise=c.normalise, order_by=c.order_by)
    with _persisted(marked) as marked:
        ctx.lake.overwrite("exact_deduped", exact_dedup.kept_rows(marked), lineage=lineage)
        ctx.lake.overwrite("exact_duplicates", exact_dedup.duplicate_rows(marked), lineage=lineage)


def _run_near_dedup(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs.near_dedup import run_near_dedup

    run_near_dedup(ctx.lake, ctx.cfg.near_dedup, source="exact_deduped", lineage=lineage)


def _run_decontaminate(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs import decontaminate as dc

    c = ctx.cfg.decontaminate
    source = ctx.lake.read(_decontam_source(ctx.cfg))
    hits = dc.find_contamination(source, dc.load_benchmarks(ctx.spark, c), ngram=c.ngram, min_overlap=c.min_overlap,
                                 min_matched_ngrams=c.min_matched_ngrams, min_short_chars=c.min_short_chars)
    ctx.lake.overwrite("contamination", hits, lineage=lineage)
    # Read the hits back: the matching (a Python pass over every file) runs once.
    ctx.lake.overwrite("clean", dc.clean_rows(source, ctx.lake.read("contamination")), lineage=lineage)


def _run_documents(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs.documents import build_documents

    docs = build_documents(ctx.lake.read("clean"), **dataclasses.asdict(ctx.cfg.documents))
    ctx.lake.overwrite("documents", docs, lineage=lineage, partition_by=["lang"])


def _outcome_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    near = ("near_dup_clusters", "near_deduped") if cfg.near_dedup.enabled else ()
    return ("files", "quarantine", "rejected", "exact_duplicates", *near, "contamination", "clean")


def _run_outcomes(ctx: Context, lineage: Lineage) -> None:
    from spark_jobs.accounting import build_outcomes, verdicts

    lake = ctx.lake

    def opt(name: str):
        return lake.read(name) if lake.exists(name) else None

    near = ctx.cfg.near_dedup.enabled
    decided = verdicts(rejected=opt("rejected"), exact_duplicates=opt("exact_duplicates"),
                       near_clusters=opt("near_dup_clusters") if near else None,
                       near_source=opt("exact_deduped") if near else None,
                       contamination=opt("contamination"), kept=opt("clean"))
    out = build_outcomes(files=lake.read("files"), quarantine=lake.read("quarantine"), decided=decided)
    lake.overwrite("outcomes", out, lineage=lineage)


def _table_stats(inp: str | tuple[str, ...], out: str) -> Callable[[Context], tuple[DataFrame, DataFrame]]:
    def stats(ctx: Context):
        names = (inp,) if isinstance(inp, str) else inp
        frames = [ctx.lake.read(n).select("lang", "size_bytes") for n in names]
        df_in = frames[0]
        for f in frames[1:]:
            df_in = df_in.unionByName(f)
        return df_in, ctx.lake.read(out).select("lang", "size_bytes")

    return stats


def _documents_stats(ctx: Context):
    from pyspark.sql import functions as F

    docs = ctx.lake.read("documents").select("lang", F.octet_length("text").cast("long").alias("size_bytes"))
    return ctx.lake.read("clean").select("lang", "size_bytes"), docs


def _ingest_fingerprint(ctx: Context) -> str:
    from spark_jobs.ingest import input_fingerprint
    from spark_jobs.storage import absolute

    return f"{absolute(ctx.cfg.input)}:{input_fingerprint(ctx.spec, skip_dirs=ctx.cfg.ingest.skip_dirs)}"


def _file_hash(*paths: str) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


register(Stage("ingest", _run_ingest, ("files", "quarantine"), section=lambda c: c.ingest,
               fingerprint=_ingest_fingerprint, stats=_table_stats(("files", "quarantine"), "files")))
register(Stage("filter", _run_filter, ("filtered", "rejected"), inputs=lambda c: ("files",),
               section=lambda c: c.filter, fingerprint=lambda ctx: _file_hash(ctx.cfg.filter.rules_file),
               stats=_table_stats("files", "filtered")))
register(Stage("exact_dedup", _run_exact_dedup, ("exact_deduped", "exact_duplicates"),
               inputs=lambda c: ("filtered",), section=lambda c: c.exact_dedup,
               stats=_table_stats("filtered", "exact_deduped")))
register(Stage("near_dedup", _run_near_dedup, ("near_deduped", "near_dup_clusters"),
               inputs=lambda c: ("exact_deduped",), section=lambda c: c.near_dedup,
               stats=_table_stats("exact_deduped", "near_deduped"), enabled=lambda c: c.near_dedup.enabled))
register(Stage("decontaminate", _run_decontaminate, ("contamination", "clean"),
               inputs=lambda c: (_decontam_source(c),), section=lambda c: c.decontaminate,
               fingerprint=lambda ctx: _file_hash(ctx.cfg.decontaminate.benchmarks_file),
               stats=lambda ctx: _table_stats(_decontam_source(ctx.cfg), "clean")(ctx)))
register(Stage("documents", _run_documents, ("documents",), inputs=lambda c: ("clean",),
               section=lambda c: c.documents, stats=_documents_stats))
register(Stage("outcomes", _run_outcomes, ("outcomes",), inputs=_outcome_inputs,
               section=lambda c: {"near_dedup": c.near_dedup.enabled}))


# ---------------------------------------------------------------------- running
def stage_stats(df_in: DataFrame, df_out: DataFrame, *, stage: str, run_id: str) -> DataFrame:
    """Rows and bytes in and out per language (schemas.STAGE_STATS)."""
    from pyspark.sql import functions as F

    from spark_jobs import schemas

    def agg(df, rows, nbytes):
        return df.groupBy(F.coalesce("lang", F.lit("unknown")).alias("lang")).agg(
            F.count("*").alias(rows), F.sum("size_bytes").alias(nbytes))

    joined = agg(df_in, "rows_in", "bytes_in").join(agg(df_out, "rows_out", "bytes_out"), on="lang", how="full")
    return joined.select(
        F.lit(stage).alias("stage"), "lang",
        *[F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c) for c in ("rows_in", "bytes_in", "rows_out",
                                                                           "bytes_out")],
        F.lit(run_id).alias("run_id"),
    ).select(*schemas.STAGE_STATS.fieldNames())


def _up_to_date(lake: Lake, stage: Stage, config_hash: str, inputs: dict[str, int]) -> bool:
    for name in stage.outputs:
        if not lake.exists(name):
            return False
        last = lake.history(name, 1)[0]["lineage"]
        if last.get("job") != stage.name or last.get("config_hash") != config_hash or last.get("inputs") != inputs:
            return False
    return True


def run_stage(ctx: Context, stage: Stage) -> dict[str, Any]:
    """Runs one stage unless disabled or up to date; returns {"stage", "status", "seconds"}."""
    from spark_jobs.config import config_hash, to_dict
    from spark_jobs.lake import Lineage

    cfg, lake = ctx.cfg, ctx.lake
    if not stage.enabled(cfg):
        return {"stage": stage.name, "status": "disabled", "seconds": 0.0}
    wanted = stage.inputs(cfg)
    inputs = lake.versions(wanted)
    missing = [t for t in wanted if t not in inputs]
    if missing:
        from spark_jobs.config import ConfigError

        producers = sorted({s.name for s in STAGES.values() for t in missing if t in s.outputs})
        raise ConfigError([f"stages: {stage.name} needs table(s) {missing} under {lake.root}; run "
                           f"{', '.join(producers) or 'the stage that writes them'} first"])
    section = stage.section(cfg)
    payload = {"stage": stage.name, "config": to_dict(section) if dataclasses.is_dataclass(section) else section,
               "fingerprint": stage.fingerprint(ctx)}
    digest = config_hash(payload)
    if not cfg.force and _up_to_date(lake, stage, digest, inputs):
        return {"stage": stage.name, "status": "skipped (inputs and config unchanged)", "seconds": 0.0}
    lineage = Lineage(stage.name, digest, inputs, write_id=f"{ctx.run_id}:{stage.name}",
                      extra={"run_id": ctx.run_id})
    t0 = time.perf_counter()
    stage.run(ctx, lineage)
    if stage.stats is not None:
        df_in, df_out = stage.stats(ctx)
        lake.append("stage_stats", stage_stats(df_in, df_out, stage=stage.name, run_id=ctx.run_id),
                    lineage=Lineage("stage_stats", digest, inputs, write_id=f"{ctx.run_id}:{stage.name}"))
    return {"stage": stage.name, "status": "ran", "seconds": round(time.perf_counter() - t0, 2)}


def funnel_rows(lake: Lake) -> list[dict[str, Any]]:
    """The latest stage_stats rows of every stage, in pipeline order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not lake.exists("stage_stats"):
        return []
    stats = lake.read("stage_stats")
    latest = stats.withColumn("_last", F.max("run_id").over(Window.partitionBy("stage"))) \
        .where(F.col("run_id") == F.col("_last")).drop("_last")
    order = {name: i for i, name in enumerate(STAGES)}
    rows = [r.asDict() for r in latest.collect()]
    return sorted(rows, key=lambda r: (order.get(r["stage"], 99), -r["bytes_in"], r["lang"]))


def format_funnel(rows: list[dict[str, Any]], *, top_langs: int = 8) -> str:
    """A plain-text funnel: per stage the total, then its largest languages."""
    lines = [f"{'stage':<14} {'lang':<14} {'files in':>10} {'MB in':>9} {'files out':>10} {'MB out':>9} {'kept':>6}"]
    by_stage: dict[str, list[dict]] = {}
    for r in rows:
        by_stage.setdefault(r["stage"], []).append(r)

    def line(stage, lang, ri, bi, ro, bo):
        share = f"{100 * bo / bi:5.1f}%" if bi else "    -"
        return f"{stage:<14} {lang:<14} {ri:>10,} {bi / 1e6:>9.2f} {ro:>10,} {bo / 1e6:>9.2f} {share:>6}"

    for stage, items in by_stage.items():
        tot = [sum(r[k] for r in items) for k in ("rows_in", "bytes_in", "rows_out", "bytes_out")]
        lines.append(line(stage, "(all)", *tot))
        for r in items[:top_langs]:
            lines.append(line("", r["lang"], r["rows_in"], r["bytes_in"], r["rows_out"], r["bytes_out"]))
    return "\n".join(lines)


def _ship_package(spark: SparkSession) -> None:
    """Under spark-submit, send the `spark_jobs` package to the executors (their Python imports it to run
    the vectorised UDFs), so no stage depends on running inside the driver's directory."""
    import tempfile
    import zipfile

    from spark_jobs.session import under_spark_submit

    if not under_spark_submit() or getattr(_ship_package, "_done", False):
        return
    pkg = Path(__file__).resolve().parent
    target = os.path.join(tempfile.mkdtemp(prefix="codemill-"), "spark_jobs.zip")
    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(pkg.glob("*.py")):
            zf.write(f, f"spark_jobs/{f.name}")
    spark.sparkContext.addPyFile(target)
    _ship_package._done = True


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """`--stages a b c` -> `--stages a,b,c` (jsonargparse takes one value per flag)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--stages":
            j = i + 1
            vals = []
            while j < len(argv) and not argv[j].startswith("--"):
                vals.append(argv[j])
                j += 1
            out += ["--stages", ",".join(vals) or "all"]
            i = j
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses the config, runs the selected stages in order, prints the funnel; returns a summary dict."""
    from spark_jobs.config import CONF_DIR, parse_config
    from spark_jobs.lake import Lake
    from spark_jobs.session import get_spark

    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    cfg = parse_config(PipelineConfig, argv, prog="spark_jobs.pipeline", description=__doc__,
                       default_config_files=[CONF_DIR / "spark" / "pipeline.yaml"])
    spark = get_spark("codemill-pipeline")
    _ship_package(spark)
    run_id = cfg.run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    ctx = Context(spark, Lake.open(spark, cfg.lake), cfg, run_id)
    results = []
    for name in cfg.stage_names():
        res = run_stage(ctx, STAGES[name])
        print(f"[pipeline] {name}: {res['status']} ({res['seconds']} s)", flush=True)
        results.append(res)
    summary: dict[str, Any] = {"run_id": run_id, "stages": results, "lake": ctx.lake.root}
    if ctx.lake.exists("outcomes"):
        from spark_jobs.accounting import summarize

        summary["accounting"] = summarize(ctx.lake.read("outcomes"))
    if cfg.print_funnel:
        rows = funnel_rows(ctx.lake)
        summary["funnel"] = rows
        print(format_funnel(rows), flush=True)
        if "accounting" in summary:
            print(f"[pipeline] outcomes: {summary['accounting']}", flush=True)
    return summary


if __name__ == "__main__":
    main()
