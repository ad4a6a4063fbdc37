"""The whole recipe as one pipeline: raw code -> phase-1 curation -> quality annotator -> phase-2 selection ->
synthetic phase 3 -> the three phases' shards -> training and evaluation (docs/ARCHITECTURE.md draws it).

    python -m spark_jobs.pipeline --input data/raw --lake lake                       # curation (phase 1 tables)
    python -m spark_jobs.pipeline --input data/raw --lake lake --until tokenize      # the data side of the recipe
    python -m spark_jobs.pipeline --lake lake --stages score select                  # named stages only
    spark-submit spark_jobs/pipeline.py --input 's3a://bucket/the-stack/*.parquet' --lake s3a://bucket/lake

Stages, in order (`STAGES`; each module holds its transforms, this one only wires them):

| stage | reads | writes |
|---|---|---|
| ingest | `--input` (files, globs, repository trees) | files, quarantine |
| licences | files | licensed, licence_rejected (licence allow-list, opt-out list) |
| filter | licensed (files when `licences.enabled: false`) | filtered, rejected, filter_stats |
| exact_dedup | filtered | exact_deduped, exact_duplicates |
| near_dedup | exact_deduped | near_deduped, near_dup_clusters, minhash_signatures |
| redact | near_deduped | redacted, redactions, redaction_rejected (secrets and PII -> placeholders) |
| decontaminate | redacted | contamination, clean |
| documents | clean | documents (phase 1: language, then repository, files in random order) |
| outcomes | every table above | outcomes (one verdict per input record) |
| annotator_dataset | clean, positives, benchmarks | annotator_train, alignment_set |
| annotator_train | annotator_train, alignment_set | the annotator folder (`score.annotator`) |
| score | clean, the annotator | scores |
| tokenizer | documents | the LM tokenizer folder (`<tokenize.shards_root>/tokenizer`) |
| select | scores, clean, the LM tokenizer | selected_hq (phase 2; the budget in LM tokens) |
| synth | selected_hq, clean | synthetic_raw, synthetic (phase 3) |
| tokenize | documents, selected_hq, synthetic | shards (+ the shard files and manifests) |
| train | shards | one run folder per phase (`python -m trainer fit`) |
| evaluate | the phases' exported models | eval_results (`python -m trainer.evaluation`) |
| report | everything | the HTML report |

`--stages` takes stage names (space or comma separated), `curation` (ingest through outcomes, the default) or
`all`; `--until STAGE` runs every stage from the first through STAGE. A stage whose input table versions and config
(plus, where it reads files, their names, sizes and times) have not changed since its last run is skipped; `--force
true` re-runs it. Table stages compare the lineage of their outputs' last commit; steps whose output is a folder
(annotator training, training, evaluation) compare their row in `step_runs`. Tables and columns: docs/tables.md;
every key: conf/spark/pipeline.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # spark-submit runs this file as a script: make the packages importable
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codemill import faults, schemas, storage  # noqa: E402
from codemill.config import CONF_DIR, REPO_ROOT, ConfigError, config_hash, parse_config, repo_path, to_dict  # noqa: E402
from codemill.lake import Lake, Lineage  # noqa: E402
from codemill.session import get_spark, under_spark_submit  # noqa: E402
from spark_jobs import (  # noqa: E402  # noqa: E402
    accounting,
    annotate,
    annotate_dataset,
    decontaminate,
    documents,
    exact_dedup,
    ingest,
    licences,
    near_dedup,
    redact,
    report,
    select_hq,
    tokenize_shards,
)
from spark_jobs import filter as filters  # noqa: E402
from synth import generate as synth  # noqa: E402
from trainer.annotator_model import META_FILE  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The modules whose source makes each stage's output (besides its run function): part of its write id.
NEAR_DEDUP_CODE = ("spark_jobs.near_dedup", "spark_jobs.near_dup_pairs", "spark_jobs.near_dup_clusters",
                   "spark_jobs.minhash", "spark_jobs.minhash_kernels", "spark_jobs.components",
                   "spark_jobs.keep_policy")
SYNTH_CODE = ("synth.generate", "synth.postprocess", "synth.prompts", "synth.seeds")
TOKENIZE_CODE = ("spark_jobs.tokenize_shards", "spark_jobs.shard_transforms", "spark_jobs.shard_writer",
                 "spark_jobs.shard_manifest", "spark_jobs.tokenizer", "spark_jobs.mixtures")

CURATION = ("ingest", "licences", "filter", "exact_dedup", "near_dedup", "redact", "decontaminate", "documents",
            "outcomes")


# ---------------------------------------------------------------------- the steps that run in their own process
@dataclasses.dataclass
class AnnotatorStepConfig:
    """`annotator.*`: training the quality annotator (`python -m trainer.annotator fit`, its own process); it
    reads `dataset`'s tables and exports to `score.annotator`."""

    config: str = "conf/annotator/minilm.yaml"
    # Further trainer.annotator flags, e.g. ["--trainer.max_steps", "40"].
    args: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        return [] if os.path.isfile(repo_path(self.config)) else [f"config: no file {self.config!r}"]


@dataclasses.dataclass
class TrainPhase:
    name: str
    config: str


def _default_phases() -> list[TrainPhase]:
    return [TrainPhase(f"phase{i}", f"conf/train/phase{i}.yaml") for i in (1, 2, 3)]


@dataclasses.dataclass
class TrainStepConfig:
    """`train.*`: the trainer's phases in order (`python -m trainer fit`, each its own process), each started from
    the previous phase's exported weights; shards from `tokenize.shards_root`."""

    run_root: str = "runs"
    phases: list[TrainPhase] = dataclasses.field(default_factory=_default_phases)
    args: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        return [f"phases.{i}.config: no file {p.config!r}" for i, p in enumerate(self.phases)
                if not os.path.isfile(repo_path(p.config))]


@dataclasses.dataclass
class EvalStepConfig:
    """`evaluate.*`: pass@1 of each trained phase's model (`python -m trainer.evaluation`, its own process)."""

    config: str = "conf/eval/default.yaml"
    args: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        return [] if os.path.isfile(repo_path(self.config)) else [f"config: no file {self.config!r}"]


# ---------------------------------------------------------------------- the configuration
@dataclasses.dataclass
class PipelineConfig:
    """Top-level keys; each stage reads its own section (conf/spark/pipeline.yaml documents every key)."""

    # File, glob or directory of raw code, local or on an object store (needed by the ingest stage only).
    input: str = ""
    lake: str = "lake"
    # Stage names separated by commas/spaces, `curation` (ingest..outcomes) or `all`, run in registry order.
    stages: str = "curation"
    # Every stage from the first through this one (overrides `stages`).
    until: str = ""
    force: bool = False
    # Identifies this run in stage_stats and the commits' lineage; empty = a timestamp.
    run_id: str = ""
    print_funnel: bool = True
    ingest: ingest.IngestConfig = dataclasses.field(default_factory=ingest.IngestConfig)
    licences: licences.LicencesConfig = dataclasses.field(default_factory=licences.LicencesConfig)
    filter: filters.FilterConfig = dataclasses.field(default_factory=filters.FilterConfig)
    exact_dedup: exact_dedup.ExactDedupConfig = dataclasses.field(default_factory=exact_dedup.ExactDedupConfig)
    near_dedup: near_dedup.NearDedupConfig = dataclasses.field(default_factory=near_dedup.NearDedupConfig)
    redact: redact.RedactConfig = dataclasses.field(default_factory=redact.RedactConfig)
    decontaminate: decontaminate.DecontaminateConfig = dataclasses.field(
        default_factory=decontaminate.DecontaminateConfig)
    documents: documents.DocumentsConfig = dataclasses.field(default_factory=documents.DocumentsConfig)
    dataset: annotate_dataset.DatasetConfig = dataclasses.field(default_factory=annotate_dataset.DatasetConfig)
    annotator: AnnotatorStepConfig = dataclasses.field(default_factory=AnnotatorStepConfig)
    score: annotate.ScoreConfig = dataclasses.field(default_factory=annotate.ScoreConfig)
    select: select_hq.SelectConfig = dataclasses.field(default_factory=select_hq.SelectConfig)
    synth: synth.SynthConfig = dataclasses.field(default_factory=synth.SynthConfig)
    tokenize: tokenize_shards.TokenizeConfig = dataclasses.field(default_factory=tokenize_shards.TokenizeConfig)
    train: TrainStepConfig = dataclasses.field(default_factory=TrainStepConfig)
    evaluate: EvalStepConfig = dataclasses.field(default_factory=EvalStepConfig)
    report: report.ReportConfig = dataclasses.field(default_factory=report.ReportConfig)

    def _names(self) -> list[str]:
        return [s for s in self.stages.replace(",", " ").split() if s]

    def stage_names(self) -> list[str]:
        if self.until:
            names = list(STAGES)
            return names[:names.index(self.until) + 1] if self.until in names else []
        names = self._names()
        if not names or names == ["curation"]:
            return list(CURATION)
        if names == ["all"]:
            return list(STAGES)
        return [s for s in STAGES if s in names]

    def validated_sections(self) -> list[str]:
        """The sections of the stages this run runs: a section is checked only when its stage will use it."""
        names = self.stage_names() if not self.validate() else []
        return sorted({section for name in names for section in STAGES[name].sections})

    def validate(self) -> list[str]:
        problems = []
        unknown = [s for s in self._names() if s not in STAGES and s not in ("all", "curation")]
        if unknown:
            problems.append(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}, curation, all")
        if self.until and self.until not in STAGES:
            problems.append(f"until: unknown stage {self.until!r}; known: {list(STAGES)}")
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
            self._spec = ingest.resolve_input(self.cfg.input, fmt=self.cfg.ingest.format)
        return self._spec


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the pipeline. `run(ctx, lineage)` writes `outputs` (tables), or, for a step whose output is a
    folder, returns the paths it wrote (`artifacts`), recorded in `step_runs`. `stats(ctx)` returns (in, out)
    DataFrames with `lang` and `size_bytes` columns for the funnel (None: no funnel row). `always`: never skipped.
    `lineage_tables`: the outputs whose last commit carries the stage's lineage (default: all of them)."""

    name: str
    run: Callable[[Context, Lineage], Any]
    outputs: tuple[str, ...] = ()
    inputs: Callable[[PipelineConfig], tuple[str, ...]] = lambda cfg: ()
    section: Callable[[PipelineConfig], Any] = lambda cfg: None
    fingerprint: Callable[[Context], str] = lambda ctx: ""
    stats: Callable[[Context], tuple[DataFrame, DataFrame]] | None = None
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True
    artifacts: Callable[[PipelineConfig], list[str]] | None = None
    always: bool = False
    lineage_tables: tuple[str, ...] | None = None
    # The config sections the stage reads: validated when the stage is selected (default: the one of its name).
    reads: tuple[str, ...] | None = None
    # `inputs` are alternatives: the stage reads the first of them that exists.
    first_input: bool = False
    # Outputs whose commits are resumable progress, kept when an interrupted run is rolled back (synth's chunks).
    progress: tuple[str, ...] = ()
    # The modules whose source makes the output, besides `run` itself: part of the stage's write id.
    code: tuple[str, ...] = ()

    @property
    def sections(self) -> tuple[str, ...]:
        return self.reads if self.reads is not None else (self.name,)

    def code_version(self) -> str:
        """Hash of the source that makes the stage's output: `run` and the modules of `code`."""
        h = hashlib.sha256(inspect.getsource(self.run).encode())
        for module in self.code:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.origin:
                raise ConfigError([f"stage {self.name}: code module {module!r} not found"])
            h.update(Path(spec.origin).read_bytes())
        return h.hexdigest()[:16]


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


# ---------------------------------------------------------------------- phase 1: curation
def _redact_source(cfg: PipelineConfig) -> str:
    return "near_deduped" if cfg.near_dedup.enabled else "exact_deduped"


def _decontam_source(cfg: PipelineConfig) -> str:
    return "redacted" if cfg.redact.enabled else _redact_source(cfg)


def _filter_source(cfg: PipelineConfig) -> str:
    return "licensed" if cfg.licences.enabled else "files"


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
    cfg = ctx.cfg.ingest
    raw = ingest.read_raw(ctx.spark, ctx.spec, cfg)
    classified = ingest.classify(raw, root=ctx.spec.root, max_bytes=cfg.max_bytes, required=tuple(cfg.required),
                                 ingest_run=ctx.run_id, snippet_chars=cfg.snippet_chars)
    with _persisted(classified) as classified:
        files = ingest.to_files(classified)
        files = ingest.detect_languages(files) if cfg.detect_language else files
        ctx.lake.overwrite("files", files, lineage=lineage)
        faults.point(faults.INGEST_FILES)
        ctx.lake.overwrite("quarantine", ingest.to_quarantine(classified), lineage=lineage)


def _run_licences(ctx: Context, lineage: Lineage) -> None:
    c = ctx.cfg.licences
    opt_out = licences.opt_out_entries(ctx.spark, c, ctx.lake)
    judged = licences.judge(ctx.lake.read("files"), allow=c.allow, no_licence=c.no_licence, opt_out=opt_out)
    with _persisted(judged) as judged:
        ctx.lake.overwrite("licensed", licences.licensed_rows(judged), lineage=lineage)
        faults.point(faults.LICENSED)
        ctx.lake.overwrite("licence_rejected", licences.rejected_rows(judged), lineage=lineage)


def _run_filter(ctx: Context, lineage: Lineage) -> None:
    with _persisted(filters.judge(ctx.lake.read(_filter_source(ctx.cfg)), ctx.cfg.filter)) as judged:
        ctx.lake.overwrite("filtered", filters.filtered_rows(judged), lineage=lineage)
        faults.point(faults.FILTER_FILTERED)
        ctx.lake.overwrite("rejected", filters.rejected_rows(judged), lineage=lineage)
        faults.point(faults.FILTER_REJECTED)
        stats = filters.filter_stats(judged, run_id=ctx.run_id)
        ctx.lake.append("filter_stats", stats, lineage=lineage)


def _run_exact_dedup(ctx: Context, lineage: Lineage) -> None:
    c = ctx.cfg.exact_dedup
    marked = exact_dedup.mark_duplicates(ctx.lake.read("filtered"), normalise=c.normalise, order_by=c.order_by)
    with _persisted(marked) as marked:
        ctx.lake.overwrite("exact_deduped", exact_dedup.kept_rows(marked), lineage=lineage)
        faults.point(faults.EXACT_DEDUPED)
        ctx.lake.overwrite("exact_duplicates", exact_dedup.duplicate_rows(marked), lineage=lineage)


def _run_near_dedup(ctx: Context, lineage: Lineage) -> None:
    near_dedup.run_near_dedup(ctx.lake, ctx.cfg.near_dedup, source="exact_deduped", lineage=lineage)


def _run_redact(ctx: Context, lineage: Lineage) -> None:
    c = ctx.cfg.redact
    marked = redact.scan(ctx.lake.read(_redact_source(ctx.cfg)), rules=c.rules,
                         salt=redact.resolve_salt(c, ctx.lake.root), max_findings=c.max_findings)
    with _persisted(marked) as marked:
        ctx.lake.overwrite("redacted", redact.redacted_rows(marked, max_findings=c.max_findings), lineage=lineage)
        faults.point(faults.REDACTED)
        ctx.lake.overwrite("redactions", redact.redaction_rows(marked, max_findings=c.max_findings),
                           lineage=lineage)
        faults.point(faults.REDACTIONS)
        ctx.lake.overwrite("redaction_rejected", redact.rejected_rows(marked, max_findings=c.max_findings),
                           lineage=lineage)


def _run_decontaminate(ctx: Context, lineage: Lineage) -> None:
    c = ctx.cfg.decontaminate
    source = ctx.lake.read(_decontam_source(ctx.cfg))
    hits = decontaminate.find_contamination(
        source, decontaminate.load_benchmarks(ctx.spark, c), ngram=c.ngram, min_overlap=c.min_overlap,
        min_matched_ngrams=c.min_matched_ngrams, min_short_chars=c.min_short_chars)
    ctx.lake.overwrite("contamination", hits, lineage=lineage)
    faults.point(faults.DECONTAMINATION)
    # Read the hits back: the matching (a Python pass over every file) runs once.
    ctx.lake.overwrite("clean", decontaminate.clean_rows(source, ctx.lake.read("contamination")), lineage=lineage)


def _run_documents(ctx: Context, lineage: Lineage) -> None:
    docs = documents.build_documents(ctx.lake.read("clean"), **dataclasses.asdict(ctx.cfg.documents))
    ctx.lake.overwrite("documents", docs, lineage=lineage, partition_by=["lang"])


def _outcome_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    near = ("near_dup_clusters", "near_deduped") if cfg.near_dedup.enabled else ()
    lic = ("licence_rejected",) if cfg.licences.enabled else ()
    red = ("redaction_rejected",) if cfg.redact.enabled else ()
    return ("files", "quarantine", *lic, "rejected", "exact_duplicates", *near, *red, "contamination", "clean")


def _run_outcomes(ctx: Context, lineage: Lineage) -> None:
    lake = ctx.lake

    def opt(name: str):
        return lake.read(name) if lake.exists(name) else None

    near = ctx.cfg.near_dedup.enabled
    decided = accounting.verdicts(rejected=opt("rejected"), exact_duplicates=opt("exact_duplicates"),
                                  near_clusters=opt("near_dup_clusters") if near else None,
                                  near_source=opt("exact_deduped") if near else None,
                                  contamination=opt("contamination"), kept=opt("clean"),
                                  licence_rejected=opt("licence_rejected") if ctx.cfg.licences.enabled else None,
                                  redaction_rejected=opt("redaction_rejected") if ctx.cfg.redact.enabled else None)
    out = accounting.build_outcomes(files=lake.read("files"), quarantine=lake.read("quarantine"), decided=decided)
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
    listing = ingest.input_fingerprint(ctx.spec, skip_dirs=ctx.cfg.ingest.skip_dirs, spark=ctx.spark)
    return f"{storage.absolute(ctx.cfg.input)}:{listing}"


def _file_hash(*paths: str) -> str:
    """Content hash of files, local or on an object store (missing ones count as empty)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode() + b"\0")
        if storage.isfile(p):
            h.update(storage.read_bytes(p))
    return h.hexdigest()[:16]


register(Stage("ingest", _run_ingest, ("files", "quarantine"), section=lambda c: c.ingest,
               fingerprint=_ingest_fingerprint, stats=_table_stats(("files", "quarantine"), "files"),
               code=("spark_jobs.ingest", "codemill.languages")))
register(Stage("licences", _run_licences, ("licensed", "licence_rejected"),
               inputs=lambda c: ("files", *([c.licences.opt_out_table] if c.licences.opt_out_table else [])),
               section=lambda c: c.licences, fingerprint=lambda ctx: _file_hash(ctx.cfg.licences.opt_out_file),
               stats=_table_stats("files", "licensed"), enabled=lambda c: c.licences.enabled,
               code=("spark_jobs.licences",)))
register(Stage("filter", _run_filter, ("filtered", "rejected"), inputs=lambda c: (_filter_source(c),),
               section=lambda c: c.filter, fingerprint=lambda ctx: _file_hash(ctx.cfg.filter.rules_file),
               stats=lambda ctx: _table_stats(_filter_source(ctx.cfg), "filtered")(ctx),
               code=("spark_jobs.filter",)))
register(Stage("exact_dedup", _run_exact_dedup, ("exact_deduped", "exact_duplicates"),
               inputs=lambda c: ("filtered",), section=lambda c: c.exact_dedup,
               stats=_table_stats("filtered", "exact_deduped"),
               code=("spark_jobs.exact_dedup", "spark_jobs.keep_policy")))
register(Stage("near_dedup", _run_near_dedup, ("near_deduped", "near_dup_clusters", near_dedup.SIGNATURES_TABLE),
               inputs=lambda c: ("exact_deduped",), section=lambda c: c.near_dedup,
               stats=_table_stats("exact_deduped", "near_deduped"), enabled=lambda c: c.near_dedup.enabled,
               code=NEAR_DEDUP_CODE))
register(Stage("redact", _run_redact, ("redacted", "redactions", "redaction_rejected"),
               inputs=lambda c: (_redact_source(c),), section=lambda c: c.redact,
               stats=lambda ctx: _table_stats(_redact_source(ctx.cfg), "redacted")(ctx),
               enabled=lambda c: c.redact.enabled, code=("spark_jobs.redact",)))
register(Stage("decontaminate", _run_decontaminate, ("contamination", "clean"),
               inputs=lambda c: (_decontam_source(c),), section=lambda c: c.decontaminate,
               fingerprint=lambda ctx: _file_hash(ctx.cfg.decontaminate.benchmarks_file),
               stats=lambda ctx: _table_stats(_decontam_source(ctx.cfg), "clean")(ctx),
               code=("spark_jobs.decontaminate", "spark_jobs.benchmark_index")))
register(Stage("documents", _run_documents, ("documents",), inputs=lambda c: ("clean",),
               section=lambda c: c.documents, fingerprint=lambda ctx: f"format {documents.FORMAT_VERSION}",
               stats=_documents_stats, code=("spark_jobs.documents",)))
register(Stage("outcomes", _run_outcomes, ("outcomes",), inputs=_outcome_inputs,
               section=lambda c: {"near_dedup": c.near_dedup.enabled, "licences": c.licences.enabled,
                                  "redact": c.redact.enabled}, reads=(),
               code=("spark_jobs.accounting",)))


# ---------------------------------------------------------------------- phase 2: the quality annotator, selection
def _run_annotator_dataset(ctx: Context, lineage: Lineage) -> None:
    annotate_dataset.build_training_sets(ctx.spark, ctx.lake, ctx.cfg.dataset, lineage)


def _dataset_fingerprint(ctx: Context) -> str:
    """The positive sources' and benchmarks' files, by name, size and time."""
    c = ctx.cfg.dataset
    listing = [annotate_dataset.source_files(src, i) for i, src in enumerate(c.positives)]
    listing.append([u for u, _, _ in storage.walk_files(c.benchmarks_dir)])
    return config_hash([[(u, *_stat(u)) for u in files] for files in listing])


def _stat(uri: str) -> tuple[int, int]:
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    return int(info.size or 0), int(info.mtime_ns or 0)


def _run_annotator_train(ctx: Context, lineage: Lineage) -> list[str]:
    c, out = ctx.cfg.annotator, ctx.cfg.score.annotator
    _command(["-m", "trainer.annotator", "fit", "--config", repo_path(c.config), "--data.lake", ctx.lake.root,
              "--model.export_dir", out, *c.args])
    return [out]


def _annotator_fingerprint(ctx: Context) -> str:
    """The exported annotator (its metadata names the run and the weights): a new one re-scores every file."""
    return _file_hash(storage.join(ctx.cfg.score.annotator, META_FILE))


def _run_score(ctx: Context, lineage: Lineage) -> None:
    annotate.run_scoring(ctx.spark, ctx.lake, ctx.cfg.score, lineage)


def _tokenizer_dir(cfg: PipelineConfig) -> str:
    return storage.join(cfg.tokenize.shards_root, "tokenizer")


def _run_tokenizer(ctx: Context, lineage: Lineage) -> list[str]:
    _, path = tokenize_shards.ensure_tokenizer(ctx.cfg.tokenize, ctx.lake, rebuild=True)
    return [storage.join(path, "tokenizer.json")]


def _select_tokenizer(cfg: PipelineConfig) -> str:
    return cfg.select.tokenizer or _tokenizer_dir(cfg)


def _run_select(ctx: Context, lineage: Lineage) -> None:
    path = _select_tokenizer(ctx.cfg)
    if not (storage.isfile(storage.join(path, "tokenizer.json")) or storage.isfile(path)):
        raise ConfigError([f"select.tokenizer: no tokenizer at {path!r}; the budget counts LM tokens, so run the "
                           f"tokenizer stage first (--stages tokenizer) or name one"])
    select_hq.run_selection(ctx.lake, ctx.cfg.select, lineage, tokenizer=path)


def _select_fingerprint(ctx: Context) -> str:
    """The LM tokenizer counts the budget: a new one selects again."""
    path = _select_tokenizer(ctx.cfg)
    return _file_hash(path if storage.isfile(path) else storage.join(path, "tokenizer.json"))


register(Stage("annotator_dataset", _run_annotator_dataset, ("annotator_train", "alignment_set"),
               inputs=lambda c: tuple(c.dataset.negative_tables), section=lambda c: c.dataset,
               fingerprint=_dataset_fingerprint, reads=("dataset",), first_input=True,
               code=("spark_jobs.annotate_dataset",)))
register(Stage("annotator_train", _run_annotator_train, inputs=lambda c: (c.dataset.output_table,
                                                                           c.dataset.alignment_table),
               section=lambda c: {"annotator": c.annotator, "export_dir": c.score.annotator},
               fingerprint=lambda ctx: _file_hash(repo_path(ctx.cfg.annotator.config)),
               artifacts=lambda c: [storage.join(c.score.annotator, META_FILE)], reads=("annotator",)))
register(Stage("score", _run_score, ("scores",), inputs=lambda c: (c.score.input_table,),
               section=lambda c: c.score, fingerprint=_annotator_fingerprint,
               code=("spark_jobs.annotate",)))
# The LM tokenizer comes before selection, whose budget is counted in its tokens (issue 20.2).
register(Stage("tokenizer", _run_tokenizer, inputs=lambda c: tokenize_shards.tokenizer_inputs(c.tokenize),
               section=lambda c: {"shards_root": c.tokenize.shards_root, "tokenizer": c.tokenize.tokenizer,
                                  "seed": c.tokenize.seed, "seq_len": c.tokenize.seq_len,
                                  "sources": tokenize_shards.tokenizer_phase(c.tokenize).sources},
               artifacts=lambda c: [storage.join(_tokenizer_dir(c), "tokenizer.json")], reads=("tokenize",),
               code=("spark_jobs.tokenizer",)))
register(Stage("select", _run_select, ("selected_hq",),
               inputs=lambda c: (c.select.scores_table, c.select.files_table), section=lambda c: c.select,
               fingerprint=_select_fingerprint, code=("spark_jobs.select_hq", "spark_jobs.tokenizer")))


# ---------------------------------------------------------------------- phase 3 and the shards
def _run_synth(ctx: Context, lineage: Lineage) -> None:
    stats = synth.run(ctx.cfg.synth, lake=ctx.lake, lineage=lineage)
    print(json.dumps(stats, default=str), flush=True)


def _synth_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    s = cfg.synth.seeds
    return tuple(dict.fromkeys([s.table] + ([s.content_table] if s.source == "scores" else [])))


def _run_tokenize(ctx: Context, lineage: Lineage) -> None:
    tokenize_shards.run_tokenize(ctx.spark, ctx.lake, ctx.cfg.tokenize, lineage)


def _tokenize_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    t = cfg.tokenize
    return tuple(sorted({s.table for p in t.phases if p.name in t.build for s in p.sources}))


register(Stage("synth", _run_synth, (synth.SynthConfig().raw_table, synth.SynthConfig().output_table),
               inputs=_synth_inputs, section=lambda c: c.synth, progress=(synth.SynthConfig().raw_table,),
               lineage_tables=(synth.SynthConfig().output_table,),
               code=SYNTH_CODE))
register(Stage("tokenize", _run_tokenize, ("shards",), inputs=_tokenize_inputs, section=lambda c: c.tokenize,
               code=TOKENIZE_CODE))


# ---------------------------------------------------------------------- training and evaluation
def _phase_dir(cfg: PipelineConfig, name: str) -> str:
    return storage.join(cfg.train.run_root, name)


def _run_train(ctx: Context, lineage: Lineage) -> list[str]:
    c, written, previous = ctx.cfg.train, [], None
    for phase in c.phases:
        args = ["-m", "trainer", "fit", "--config", repo_path(phase.config), "--data.shards_root",
                ctx.cfg.tokenize.shards_root, "--run_dir", _phase_dir(ctx.cfg, phase.name), *c.args]
        if previous is not None:
            args += ["--init_from", storage.join(_phase_dir(ctx.cfg, previous), "hf")]
        _command(args)
        written.append(storage.join(_phase_dir(ctx.cfg, phase.name), "hf"))
        previous = phase.name
    return written


def _run_evaluate(ctx: Context, lineage: Lineage) -> list[str]:
    for phase in ctx.cfg.train.phases:
        _command(["-m", "trainer.evaluation", "--config", repo_path(ctx.cfg.evaluate.config), "--model",
                  storage.join(_phase_dir(ctx.cfg, phase.name), "hf"), "--lake", ctx.lake.root,
                  *ctx.cfg.evaluate.args])
    return [ctx.lake.path("eval_results")]


def _models_fingerprint(ctx: Context) -> str:
    """The phases' exported models (their run_info.json): a retrained model is evaluated again."""
    return _file_hash(*[storage.join(_phase_dir(ctx.cfg, p.name), "run_info.json") for p in ctx.cfg.train.phases])


def _run_report(ctx: Context, lineage: Lineage) -> None:
    path = report.build_report(ctx.lake, ctx.cfg.report, shards=ctx.cfg.tokenize.shards_root)
    print(f"[pipeline] report: {path}", flush=True)


register(Stage("train", _run_train, inputs=lambda c: ("shards",), section=lambda c: c.train,
               fingerprint=lambda ctx: _file_hash(*[repo_path(p.config) for p in ctx.cfg.train.phases]),
               artifacts=lambda c: [storage.join(_phase_dir(c, p.name), "hf", "config.json") for p in c.train.phases],
               reads=("train", "tokenize")))
register(Stage("evaluate", _run_evaluate, section=lambda c: c.evaluate, fingerprint=_models_fingerprint,
               artifacts=lambda c: [], reads=("evaluate", "train")))
register(Stage("report", _run_report, always=True))


def _command(args: list[str]) -> None:
    """Runs `python <args>` in its own process (a trainer: its own threads, memory and exit code), from the
    repository root, with this process's environment (MLflow tracking URI, object-store settings)."""
    cmd = [sys.executable, *args]
    print("  $ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), check=True)


# ---------------------------------------------------------------------- running
def stage_stats(df_in: DataFrame, df_out: DataFrame, *, stage: str, run_id: str) -> DataFrame:
    """Rows and bytes in and out per language (schemas.STAGE_STATS)."""
    from pyspark.sql import functions as F

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


STEP_RUNS = "step_runs"


def _up_to_date(lake: Lake, stage: Stage, cfg: PipelineConfig, config_hash_: str, inputs: dict[str, int]) -> bool:
    if stage.always:
        return False
    if stage.artifacts is not None:
        from pyspark.sql import functions as F

        if not lake.exists(STEP_RUNS):
            return False
        last = (lake.read(STEP_RUNS).where(F.col("stage") == stage.name).orderBy(F.desc("run_id")).limit(1)
                .collect())
        return bool(last) and last[0]["config_hash"] == config_hash_ and \
            json.loads(last[0]["inputs"]) == inputs and all(storage.exists(a) for a in stage.artifacts(cfg))
    for name in stage.lineage_tables or stage.outputs:
        if not lake.exists(name):
            return False
        last = lake.history(name, 1)[0]["lineage"]
        if last.get("job") != stage.name or last.get("config_hash") != config_hash_ or last.get("inputs") != inputs:
            return False
    return True


def run_stage(ctx: Context, stage: Stage) -> dict[str, Any]:
    """Runs one stage unless disabled or up to date; returns {"stage", "status", "seconds"}."""
    cfg, lake = ctx.cfg, ctx.lake
    if not stage.enabled(cfg):
        return {"stage": stage.name, "status": "disabled", "seconds": 0.0}
    wanted = stage.inputs(cfg)
    inputs = lake.versions(wanted)
    if stage.first_input:
        inputs = dict(list(inputs.items())[:1])
    missing = [t for t in wanted if t not in inputs] if not (stage.first_input and inputs) else []
    if missing:
        producers = sorted({s.name for s in STAGES.values() for t in missing if t in s.outputs})
        raise ConfigError([f"stages: {stage.name} needs table(s) {missing} under {lake.root}; run "
                           f"{', '.join(producers) or 'the stage that writes them'} first"])
    section = json.dumps(stage.section(cfg), sort_keys=True,
                         default=lambda o: to_dict(o) if dataclasses.is_dataclass(o) else str(o))
    payload = {"stage": stage.name, "config": json.loads(section), "fingerprint": stage.fingerprint(ctx),
               "code": stage.code_version()}
    digest = config_hash(payload)
    interrupted = stage.name in lake.pending_stages()
    if not cfg.force and not interrupted and _up_to_date(lake, stage, cfg, digest, inputs):
        return {"stage": stage.name, "status": "skipped (inputs and config unchanged)", "seconds": 0.0}
    lineage = Lineage(stage.name, digest, inputs, write_id=write_id(stage.name, digest, inputs, force=cfg.force,
                                                                   run_id=ctx.run_id),
                      extra={"run_id": ctx.run_id})
    t0 = time.perf_counter()
    # One transaction per stage: readers see all of its outputs change at once, and a run killed inside it is
    # rolled back by the next run of the stage (codemill/lake.py `Lake.stage`, docs/lake.md#stages).
    with lake.stage(stage.name, stage.outputs, write_id=lineage.write_id or "", run_id=ctx.run_id,
                    progress=stage.progress):
        faults.point(faults.STAGE_BEGUN, where=stage.name)
        written = stage.run(ctx, lineage)
        faults.point(faults.STAGE_OUTPUTS, where=stage.name)
        if stage.artifacts is not None:
            row = (stage.name, digest, json.dumps(inputs, sort_keys=True), json.dumps(written or []), ctx.run_id)
            _replace_stage_rows(lake, STEP_RUNS, ctx.spark.createDataFrame([row], schemas.STEP_RUNS), stage.name,
                                lineage)
        if stage.stats is not None:
            df_in, df_out = stage.stats(ctx)
            _replace_stage_rows(lake, "stage_stats", stage_stats(df_in, df_out, stage=stage.name, run_id=ctx.run_id),
                                stage.name, dataclasses.replace(lineage, job="stage_stats"))
        faults.point(faults.STAGE_STATS, where=stage.name)
    faults.point(faults.STAGE_COMMITTED, where=stage.name)
    return {"stage": stage.name, "status": "ran", "seconds": round(time.perf_counter() - t0, 2)}


def write_id(stage: str, digest: str, inputs: dict[str, int], *, force: bool = False, run_id: str = "") -> str:
    """The write id of a stage's commits: what makes its output, i.e. the config digest (config section,
    fingerprint of the files it reads, code version) and the input tables' versions. An unchanged id is skipped
    (`Lake` checks the table's latest commit), a changed one always writes; `force` makes it unique to the run."""
    wid = f"{stage}:{config_hash({'config': digest, 'inputs': inputs})}"
    return f"{wid}:force-{run_id}" if force else wid


def _replace_stage_rows(lake: Lake, table: str, df: DataFrame, stage: str, lineage: Lineage) -> None:
    """The stage's rows of a table shared by all stages (stage_stats, step_runs), replaced in one commit: a
    re-run after a kill leaves one set of rows per stage, never two."""
    if lake.exists(table):
        lake.replace(table, df, where={"stage": stage}, lineage=lineage)
    else:
        lake.overwrite(table, df, lineage=lineage)


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


def _ship_packages(spark: SparkSession) -> None:
    """Under spark-submit, send codemill's packages to the executors (their Python imports them to run the
    vectorised UDFs), so no stage depends on running inside the driver's directory."""
    if not under_spark_submit() or getattr(_ship_packages, "_done", False):
        return
    target = os.path.join(tempfile.mkdtemp(prefix="codemill-"), "codemill.zip")
    with zipfile.ZipFile(target, "w") as zf:
        for package in ("codemill", "spark_jobs", "synth", "trainer"):
            for f in sorted((REPO_ROOT / package).rglob("*.py")):
                zf.write(f, str(f.relative_to(REPO_ROOT)))
    spark.sparkContext.addPyFile(target)
    _ship_packages._done = True


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
            out += ["--stages", ",".join(vals) or "curation"]
            i = j
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses the config, runs the selected stages in order, prints the funnel; returns a summary dict."""
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    cfg = parse_config(PipelineConfig, argv, prog="spark_jobs.pipeline", description=__doc__,
                       default_config_files=[CONF_DIR / "spark" / "pipeline.yaml"])
    spark = get_spark("codemill-pipeline")
    _ship_packages(spark)
    run_id = cfg.run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    ctx = Context(spark, Lake.open(spark, cfg.lake), cfg, run_id)
    results = []
    for name in cfg.stage_names():
        print(f"[pipeline] {name} ...", flush=True)
        res = run_stage(ctx, STAGES[name])
        print(f"[pipeline] {name}: {res['status']} ({res['seconds']} s)", flush=True)
        results.append(res)
    summary: dict[str, Any] = {"run_id": run_id, "stages": results, "lake": ctx.lake.root}
    if ctx.lake.exists("outcomes"):
        summary["accounting"] = accounting.summarize(ctx.lake.read("outcomes"))
    if cfg.print_funnel:
        rows = funnel_rows(ctx.lake)
        summary["funnel"] = rows
        print(format_funnel(rows), flush=True)
        if "accounting" in summary:
            print(f"[pipeline] outcomes: {summary['accounting']}", flush=True)
    return summary


if __name__ == "__main__":  # also the guard vLLM's worker processes need (they re-import the main module)
    main()
