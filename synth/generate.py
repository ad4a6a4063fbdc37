"""The synthetic-data job (paper §2.4): seeds -> prompts -> generations -> `synthetic_raw` -> `synthetic`.

    python -m synth.generate --config conf/synth/local.yaml --lake lake
    python -m synth.generate --config conf/synth/vllm-70b.yaml --lake s3://bucket/lake --shard_index 3 --num_shards 8

1. Seeds: the annotator's best files (`selected_hq`, or `scores` joined with a content table) filtered by score
   percentile, per-language quotas and the job shard (`synth.seeds`); each shows the model a snippet or the file.
2. Generation, resumable: the seeds not yet done for this prompt template version and model are generated in
   chunks of `chunk_size`; each chunk is one atomic append to `synthetic_raw` whose write id is derived from the
   chunk's seeds, the template version and the model, so a killed run loses at most the chunk in flight and a
   repeated commit is a no-op. A restart skips every seed already in `synthetic_raw` for the same key.
3. Post-processing (`synth.postprocess`): extraction, language, length and syntax checks, exact and near dedup
   against the seeds and each other, benchmark decontamination; `synthetic` is rebuilt from all of `synthetic_raw`
   in one overwrite, every generation kept with `status` and `reject_reason`.

The job runs on a GPU node without spark-submit (embedded Spark for the table I/O); scale-out is vLLM's own
(`engine.engine_args.tensor_parallel_size`, `data_parallel_size`) or one job per node on disjoint seed shards
(`conf/cluster/synth-gpu.sh`). Generated code is never executed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from spark_jobs.config import config_hash, parse_config
from spark_jobs.decontaminate import DecontaminateConfig
from synth.engines import SamplingConfig
from synth.postprocess import FilterConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from spark_jobs.lake import Lake
    from synth.engines import Engine
    from synth.prompts import PromptTemplate

JOB = "synth.generate"
TRANSFORMERS_ARGS = {"batch_size", "dtype", "device", "num_threads"}


def _raw_schema():
    from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType, TimestampType

    fields = [
        ("synth_id", StringType()), ("seed_doc_id", StringType()), ("lang", StringType()),
        ("seed_score", DoubleType()), ("seed_text", StringType()), ("prompt", StringType()),
        ("response", StringType()), ("template_id", StringType()), ("template_version", IntegerType()),
        ("model", StringType()), ("model_revision", StringType()), ("engine", StringType()),
        ("sampling", StringType()), ("prompt_tokens", IntegerType()), ("completion_tokens", IntegerType()),
        ("finish_reason", StringType()), ("run_id", StringType()), ("generated_at", TimestampType()),
    ]
    return StructType([StructField(n, t, True) for n, t in fields])


# Columns of `synthetic` (docs/CONTRACTS.md): the file, its verdict, and the provenance of its generation.
SYNTHETIC_COLUMNS = [
    "synth_id", "seed_doc_id", "lang", "content", "status", "reject_reason", "reject_detail", "template_id",
    "template_version", "model", "model_revision", "engine", "sampling", "prompt_tokens", "completion_tokens",
    "finish_reason", "seed_score", "response", "run_id", "generated_at",
]


@dataclasses.dataclass
class SeedsConfig:
    """`seeds.*`: which files seed the generations and what the model is shown of them."""

    # selected_hq (doc_id, lang, content, score) or scores (doc_id, lang, score) joined with `content_table`.
    source: Literal["selected_hq", "scores"] = "selected_hq"
    table: str = "selected_hq"
    content_table: str = "clean"
    languages: list[str] = dataclasses.field(default_factory=list)
    # Keep seeds whose score is at least this percentile within their language (0.9 = top 10 %).
    min_percentile: float = 0.0
    quota_per_language: dict[str, int] = dataclasses.field(default_factory=dict)
    default_quota: int | None = None
    # snippet: OSS-Instruct's random span of 1-15 lines (Magicoder §2.1); file: the whole file up to max_chars.
    mode: Literal["snippet", "file"] = "snippet"
    min_lines: int = 1
    max_lines: int = 15
    max_chars: int = 6000
    seed: int = 0

    def validate(self) -> list[str]:
        problems = []
        if not 0 <= self.min_percentile < 1:
            problems.append(f"min_percentile: must be in [0, 1), got {self.min_percentile}")
        if not 1 <= self.min_lines <= self.max_lines:
            problems.append(f"max_lines: need 1 <= min_lines <= max_lines, got {self.min_lines}..{self.max_lines}")
        if self.max_chars < 1:
            problems.append(f"max_chars: must be positive, got {self.max_chars}")
        problems += [f"quota_per_language.{k}: must be >= 0" for k, v in self.quota_per_language.items() if v < 0]
        if self.default_quota is not None and self.default_quota < 0:
            problems.append("default_quota: must be >= 0")
        return problems


@dataclasses.dataclass
class EngineConfig:
    """`engine.*`: the engine kind, the model (hub id, folder, or `embedded`) and the engine's own arguments."""

    kind: Literal["transformers", "vllm"] = "transformers"
    model: str = "embedded"
    # vllm: any vLLM EngineArgs field (tensor_parallel_size, dtype, max_model_len, ...), checked against vLLM's own
    # dataclass; transformers: batch_size, dtype, device, num_threads.
    engine_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> list[str]:
        from synth.engines import check_vllm_engine_args, vllm_engine_fields

        if self.kind == "transformers":
            unknown = sorted(set(self.engine_args) - TRANSFORMERS_ARGS)
            return [f"engine_args.{k}: not a transformers engine option ({sorted(TRANSFORMERS_ARGS)})"
                    for k in unknown]
        try:
            fields = vllm_engine_fields()
        except ImportError:
            return ["kind: vllm is not installed in this environment (GPU node: pip install codemill[vllm]; "
                    "CPU: scripts/setup_vllm_cpu.sh)"]
        return check_vllm_engine_args(self.engine_args, fields)


@dataclasses.dataclass
class SynthConfig:
    """The synthetic-data job (conf/synth/*.yaml documents each key)."""

    lake: str = "lake"
    seeds: SeedsConfig = dataclasses.field(default_factory=SeedsConfig)
    # A template id under conf/synth/prompts/ or a YAML path.
    prompt: str = "oss_instruct_pretrain"
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    decontaminate: DecontaminateConfig = dataclasses.field(default_factory=DecontaminateConfig)
    # Seeds per committed chunk: big enough to keep the engine's batch full (vLLM schedules the whole chunk).
    chunk_size: int = 256
    shard_index: int = 0
    num_shards: int = 1
    raw_table: str = "synthetic_raw"
    output_table: str = "synthetic"
    # Stages: generation (resumable) and the rebuild of `output_table` from `raw_table` (skipped on a shard of a
    # multi-node run: run it once at the end with `--generate false`).
    generate: bool = True
    postprocess: bool = True

    def validate(self) -> list[str]:
        from synth.prompts import template_path, template_problems

        problems = []
        if self.chunk_size < 1:
            problems.append(f"chunk_size: must be >= 1, got {self.chunk_size}")
        if not 0 <= self.shard_index < self.num_shards:
            problems.append(f"shard_index: must be in [0, num_shards={self.num_shards}), got {self.shard_index}")
        path = template_path(self.prompt)
        if not path.is_file():
            problems.append(f"prompt: no template {path}")
        else:
            import yaml

            data = yaml.safe_load(path.read_text())
            problems += [f"prompt: {p}" for p in template_problems(data if isinstance(data, dict) else {}, str(path))]
        return problems


# ------------------------------------------------------------------------------------------------ seeds
def read_seeds(lake: Lake, cfg: SeedsConfig) -> DataFrame:
    """doc_id, lang, score, content of the candidate seed files."""
    if cfg.source == "scores":
        from synth.seeds import seeds_from_scores

        return seeds_from_scores(lake.read(cfg.table), lake.read(cfg.content_table))
    return lake.read(cfg.table).select("doc_id", "lang", "score", "content")


def with_synth_id(seeds: DataFrame, *, template: PromptTemplate, model: str, revision: str) -> DataFrame:
    """Adds `synth_id`, the resume key: one generation per seed, template version and model."""
    from pyspark.sql import functions as F

    key = F.concat_ws("\u001f", F.col("doc_id"), F.lit(template.id), F.lit(str(template.version)), F.lit(model),
                      F.lit(revision))
    return seeds.withColumn("synth_id", F.substring(F.sha2(key, 256), 1, 32))


def pending(keyed: DataFrame, done: DataFrame | None) -> DataFrame:
    """The seeds whose synth_id is not in `done` yet, in synth_id order (deterministic chunks)."""
    if done is not None:
        keyed = keyed.join(done.select("synth_id").distinct(), on="synth_id", how="left_anti")
    return keyed.orderBy("synth_id")


def chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def chunk_write_id(synth_ids: Sequence[str], *, template: PromptTemplate, model: str, revision: str) -> str:
    h = hashlib.sha256(f"{template.id}\u001f{template.version}\u001f{model}\u001f{revision}".encode())
    for sid in sorted(synth_ids):
        h.update(sid.encode())
    return f"synth-chunk-{h.hexdigest()[:32]}"


# ------------------------------------------------------------------------------------------- generation
def generate_chunk(rows: Sequence[Any], *, engine: Engine, template: PromptTemplate, sampling: SamplingConfig,
                   run_id: str) -> list[tuple]:
    """Raw rows (schema of `synthetic_raw`) for one chunk of seed rows (synth_id, doc_id, lang, score, seed_text)."""
    prompts = [engine.render_chat(template.messages(lang=r["lang"], seed=r["seed_text"])) for r in rows]
    gens = engine.generate(prompts, sampling)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    sampling_json = json.dumps(sampling.to_dict(), sort_keys=True)
    return [
        (r["synth_id"], r["doc_id"], r["lang"], r["score"], r["seed_text"], p, g.text, template.id,
         template.version, engine.model, engine.revision, engine.kind, sampling_json, g.prompt_tokens,
         g.completion_tokens, g.finish_reason, run_id, now)
        for r, p, g in zip(rows, prompts, gens)
    ]


def run_generation(lake: Lake, cfg: SynthConfig, *, engine: Engine | None = None,
                   engine_factory: Callable[[], Engine] | None = None) -> dict[str, Any]:
    """Generates every pending seed in committed chunks; returns counts and timings."""
    from spark_jobs.lake import Lineage
    from synth.models import resolve_model
    from synth.prompts import load_template
    from synth.seeds import filter_seeds, seed_text

    t0 = time.perf_counter()
    template = load_template(cfg.prompt)
    model = engine.model if engine else cfg.engine.model
    if engine:
        revision = engine.revision
    else:
        _, revision = resolve_model(model)
        revision = cfg.engine.engine_args.get("revision") or revision
    s = cfg.seeds
    seeds = (read_seeds(lake, s)
             .transform(filter_seeds, languages=s.languages, min_percentile=s.min_percentile,
                        quota_per_language=s.quota_per_language, default_quota=s.default_quota,
                        num_shards=cfg.num_shards, shard_index=cfg.shard_index)
             .transform(seed_text, mode=s.mode, min_lines=s.min_lines, max_lines=s.max_lines,
                        max_chars=s.max_chars, seed=s.seed)
             .transform(with_synth_id, template=template, model=model, revision=revision))
    done = lake.read(cfg.raw_table) if lake.exists(cfg.raw_table) else None
    todo = pending(seeds, done)
    inputs = lake.versions([s.table] + ([s.content_table] if s.source == "scores" else []))
    cfg_hash = config_hash(cfg)
    run_id = uuid.uuid4().hex[:16]
    schema = _raw_schema()
    stats = {"run_id": run_id, "chunks": 0, "generated": 0, "prompt_tokens": 0, "completion_tokens": 0,
             "generate_s": 0.0, "commit_s": 0.0}
    for chunk in chunked((r.asDict() for r in todo.toLocalIterator()), cfg.chunk_size):
        if engine is None:
            engine = engine_factory() if engine_factory else _make_engine(cfg.engine)
        t = time.perf_counter()
        rows = generate_chunk(chunk, engine=engine, template=template, sampling=cfg.sampling, run_id=run_id)
        stats["generate_s"] += time.perf_counter() - t
        t = time.perf_counter()
        write_id = chunk_write_id([r["synth_id"] for r in chunk], template=template, model=model, revision=revision)
        lake.append(cfg.raw_table, lake.spark.createDataFrame(rows, schema),
                    lineage=Lineage(JOB, cfg_hash, inputs, write_id=write_id,
                                    extra={"run_id": run_id, "seeds": len(rows)}))
        stats["commit_s"] += time.perf_counter() - t
        stats["chunks"] += 1
        stats["generated"] += len(rows)
        stats["prompt_tokens"] += sum(r[13] for r in rows)
        stats["completion_tokens"] += sum(r[14] for r in rows)
        print(f"[{JOB}] chunk {stats['chunks']}: {len(rows)} generations committed "
              f"({stats['generated']} this run)", file=sys.stderr, flush=True)
    stats["elapsed_s"] = time.perf_counter() - t0
    return stats


def _make_engine(ecfg: EngineConfig) -> Engine:
    from synth.engines import make_engine

    return make_engine(ecfg.kind, ecfg.model, **ecfg.engine_args)


# ---------------------------------------------------------------------------------------- post-processing
def build_synthetic(raw: DataFrame, seeds: DataFrame | None, benchmarks: DataFrame | None, *, cfg: FilterConfig,
                    decon: DecontaminateConfig) -> DataFrame:
    """The `synthetic` table from `synthetic_raw`: every generation, accepted or rejected with its reason.

    `seeds` (doc_id, content) are the seed files the generations must not duplicate; `benchmarks` the output of
    `spark_jobs.decontaminate.load_benchmarks` (None skips decontamination).
    """
    from synth.postprocess import decontaminate, dedup_against_seeds, row_checks

    out = row_checks(raw.drop("prompt", "seed_text"), cfg=cfg)
    out = dedup_against_seeds(out, seeds, cfg=cfg)
    if cfg.decontaminate and benchmarks is not None:
        out = decontaminate(out, benchmarks, ngram=decon.ngram, min_overlap=decon.min_overlap,
                            min_matched_ngrams=decon.min_matched_ngrams, min_short_chars=decon.min_short_chars)
    return out.select(*SYNTHETIC_COLUMNS)


def run_postprocess(lake: Lake, cfg: SynthConfig) -> dict[str, Any]:
    """Rebuilds `output_table` from all of `raw_table` (one atomic overwrite); returns counts per status/reason."""
    from pyspark.sql import functions as F

    from spark_jobs.decontaminate import load_benchmarks
    from spark_jobs.lake import Lineage

    t0 = time.perf_counter()
    raw = lake.read(cfg.raw_table)
    seeds = read_seeds(lake, cfg.seeds)
    used = raw.select(F.col("seed_doc_id").alias("doc_id")).distinct()
    seeds = seeds.join(used, on="doc_id").select("doc_id", "content")
    benchmarks = load_benchmarks(lake.spark, cfg.decontaminate) if cfg.filter.decontaminate else None
    out = build_synthetic(raw, seeds, benchmarks, cfg=cfg.filter, decon=cfg.decontaminate)
    # localCheckpoint: the counts below and the write read one computed result, not three re-computations.
    out = out.localCheckpoint(eager=True)
    inputs = lake.versions([cfg.raw_table, cfg.seeds.table])
    settings = [dataclasses.asdict(cfg.filter), dataclasses.asdict(cfg.decontaminate), cfg.seeds.table]
    # Same raw and seed versions with the same settings = the same `synthetic`: the rewrite is skipped.
    lineage = Lineage(JOB, config_hash(settings), inputs, write_id=f"synthetic-{config_hash([inputs, settings])}")
    lake.overwrite(cfg.output_table, out, lineage=lineage, allow_schema_change=True)
    counts = {f"{r['status']}:{r['reject_reason'] or ''}".rstrip(":"): r["count"]
              for r in out.groupBy("status", "reject_reason").count().collect()}
    return {"rows": sum(counts.values()), "by_reason": counts, "elapsed_s": time.perf_counter() - t0}


def run(cfg: SynthConfig, *, spark: SparkSession | None = None, engine: Engine | None = None) -> dict[str, Any]:
    from spark_jobs.lake import Lake
    from spark_jobs.session import get_spark

    lake = Lake.open(spark or get_spark("codemill-synth"), cfg.lake)
    stats: dict[str, Any] = {}
    if cfg.generate:
        stats["generation"] = run_generation(lake, cfg, engine=engine)
    if cfg.postprocess and cfg.num_shards > 1:
        # Other shards may still be generating: rebuilding `synthetic` now would miss their rows. Run it once at
        # the end instead (`--generate false --num_shards 1`).
        print(f"[{JOB}] shard {cfg.shard_index}/{cfg.num_shards}: post-processing skipped; run it once all shards "
              "are done with --generate false", file=sys.stderr)
    elif cfg.postprocess and lake.exists(cfg.raw_table):
        stats["postprocess"] = run_postprocess(lake, cfg)
    return stats


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(SynthConfig, argv, prog="python -m synth.generate", description=__doc__)
    stats = run(cfg)
    print(json.dumps(stats, indent=2, default=str))
    return stats


if __name__ == "__main__":  # the guard vLLM's worker processes need (they re-import the main module)
    main()
