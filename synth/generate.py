"""The synthetic-data job (paper §2.4): seeds -> prompts -> generations -> `synthetic_raw` -> `synthetic`.

    python -m spark_jobs.pipeline --stages synth --lake lake --synth conf/synth/local.yaml
    python -m spark_jobs.pipeline --stages synth --lake s3a://bucket/lake --synth conf/synth/vllm-70b.yaml \
        --synth.shard_index 3 --synth.num_shards 8            # one of 8 GPU nodes (conf/cluster/synth-gpu.sh)

1. Seeds: the annotator's best files (`selected_hq`, or `scores` joined with a content table) filtered by score
   percentile, per-language quotas and the job shard (`synth.seeds`); each shows the model a snippet or the file.
2. Generation, resumable: the seeds not yet done for this prompt template version and model are generated in
   chunks of `chunk_size`; each chunk is one atomic append to `synthetic_raw` whose write id is derived from the
   chunk's seeds, the template version and the model, so a killed run loses at most the chunk in flight and a
   repeated commit is a no-op. A restart skips every seed already in `synthetic_raw` for the same key.
3. Post-processing (`synth.postprocess`): extraction, language, length and syntax checks, exact and near dedup
   against the seeds and each other, benchmark decontamination; `synthetic` is rebuilt from all of `synthetic_raw`
   in one overwrite, every generation kept with `status` and `reject_reason`. Its per-row half (checks and
   benchmark matching, and the per-row dedup keys: content hashes and MinHash signatures of the generations and of
   the run's seeds) runs on a background thread, one committed chunk at a time, while the engine generates the
   next chunk; only the cross-row half (comparing those keys) and the write wait for the last chunk. The
   background thread writes nothing, so a killed job still loses at most the chunk in flight.

The stage runs on a GPU node without spark-submit (embedded Spark for the table I/O); scale-out is vLLM's own
(`engine.engine_args.tensor_parallel_size`, `data_parallel_size`) or one job per node on disjoint seed shards
(`conf/cluster/synth-gpu.sh`). Generated code is never executed.

Public API: `SynthConfig` (`SeedsConfig`, `EngineConfig`; its `filter` section is `synth.postprocess.FilterConfig`),
`run`, `run_generation`, `run_postprocess`, `build_synthetic`, `ChunkChecks`, `read_seeds`, `with_synth_id`,
`pending`, `chunked`, `chunk_write_id`, `generate_chunk`, `SYNTHETIC_COLUMNS`.
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType, TimestampType

from codemill import faults
from codemill.config import config_hash
from codemill.engines import Engine, SamplingConfig, check_vllm_engine_args, make_engine, vllm_engine_fields
from codemill.lake import Lake, Lineage
from codemill.models import resolve_model
from spark_jobs.decontaminate import benchmark_index, load_benchmarks
from spark_jobs.redact import RedactConfig
from synth.postprocess import FilterConfig, check_rows, check_rows_local, finish, redact_generation, seed_keys
from synth.prompts import PromptTemplate, load_template, template_path, template_problems
from synth.seeds import filter_seeds, seed_text, seeds_from_scores

JOB = "synth.generate"
TRANSFORMERS_ARGS = {"batch_size", "dtype", "device", "num_threads"}


def _raw_schema():
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
    """`synth.*`: the synthetic-data stage (conf/synth/*.yaml documents each key)."""

    seeds: SeedsConfig = dataclasses.field(default_factory=SeedsConfig)
    # A template id under conf/synth/prompts/ or a YAML path.
    prompt: str = "oss_instruct_pretrain"
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    # The checks of post-processing, with the curation stages' exact_dedup, near_dedup and decontaminate configs.
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
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
        problems = []
        if self.chunk_size < 1:
            problems.append(f"chunk_size: must be >= 1, got {self.chunk_size}")
        if not 0 <= self.shard_index < self.num_shards:
            problems.append(f"shard_index: must be in [0, num_shards={self.num_shards}), got {self.shard_index}")
        path = template_path(self.prompt)
        if not path.is_file():
            problems.append(f"prompt: no template {path}")
        else:
            data = yaml.safe_load(path.read_text())
            problems += [f"prompt: {p}" for p in template_problems(data if isinstance(data, dict) else {}, str(path))]
        return problems


# ------------------------------------------------------------------------------------------------ seeds
def read_seeds(lake: Lake, cfg: SeedsConfig) -> DataFrame:
    """doc_id, lang, score, content of the candidate seed files."""
    if cfg.source == "scores":
        return seeds_from_scores(lake.read(cfg.table), lake.read(cfg.content_table))
    return lake.read(cfg.table).select("doc_id", "lang", "score", "content")


def with_synth_id(seeds: DataFrame, *, template: PromptTemplate, model: str, revision: str) -> DataFrame:
    """Adds `synth_id`, the resume key: one generation per seed, template version and model."""
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
                   run_id: str, redact: RedactConfig | None = None) -> list[tuple]:
    """Raw rows (schema of `synthetic_raw`) for one chunk of seed rows (synth_id, doc_id, lang, score, seed_text).
    `redact`: the seed text and the responses pass the curation's redaction first (`postprocess.redact_generation`)."""
    if redact is not None:
        rows = [{**r, "seed_text": redact_generation(r["seed_text"], redact)[0]} for r in rows]
    prompts = [engine.render_chat(template.messages(lang=r["lang"], seed=r["seed_text"])) for r in rows]
    gens = engine.generate(prompts, sampling)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    sampling_json = json.dumps(sampling.to_dict(), sort_keys=True)
    return [
        (r["synth_id"], r["doc_id"], r["lang"], r["score"], r["seed_text"], p,
         g.text if redact is None else redact_generation(g.text, redact)[0], template.id,
         template.version, engine.model, engine.revision, engine.kind, sampling_json, g.prompt_tokens,
         g.completion_tokens, g.finish_reason, run_id, now)
        for r, p, g in zip(rows, prompts, gens)
    ]


def run_generation(lake: Lake, cfg: SynthConfig, *, engine: Engine | None = None,
                   engine_factory: Callable[[], Engine] | None = None,
                   checks: ChunkChecks | None = None) -> dict[str, Any]:
    """Generates every pending seed in committed chunks; returns counts and timings.

    `checks` hears of the run's seeds before the first chunk (`ChunkChecks.start`), and of each
    chunk this run committed (`submit`; a commit skipped because its write id was already in the table wrote
    nothing and is not reported)."""
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
        if checks is not None and stats["chunks"] == 0:
            checks.start(seeds)
        t = time.perf_counter()
        rows = generate_chunk(chunk, engine=engine, template=template, sampling=cfg.sampling, run_id=run_id,
                              redact=cfg.filter.redact)
        faults.point(faults.SYNTH_GENERATED)
        stats["generate_s"] += time.perf_counter() - t
        t = time.perf_counter()
        write_id = chunk_write_id([r["synth_id"] for r in chunk], template=template, model=model, revision=revision)
        before = lake.version(cfg.raw_table) if lake.exists(cfg.raw_table) else -1
        df = lake.spark.createDataFrame(rows, schema)
        # `append` skips a write id the table already has and then returns the unchanged version.
        skipped = before == lake.append(cfg.raw_table, df, lineage=Lineage(
            JOB, cfg_hash, inputs, write_id=write_id, extra={"run_id": run_id, "seeds": len(rows)}))
        stats["commit_s"] += time.perf_counter() - t
        faults.point(faults.SYNTH_CHUNK)
        if checks is not None and not skipped:
            checks.submit(rows, schema)
        stats["chunks"] += 1
        stats["generated"] += len(rows)
        stats["prompt_tokens"] += sum(r[13] for r in rows)
        stats["completion_tokens"] += sum(r[14] for r in rows)
        print(f"[{JOB}] chunk {stats['chunks']}: {len(rows)} generations committed "
              f"({stats['generated']} this run)", file=sys.stderr, flush=True)
    stats["elapsed_s"] = time.perf_counter() - t0
    return stats


def _make_engine(ecfg: EngineConfig) -> Engine:
    return make_engine(ecfg.kind, ecfg.model, **ecfg.engine_args)


# ---------------------------------------------------------------------------------------- post-processing
def build_synthetic(raw: DataFrame, seeds: DataFrame | None, benchmarks: DataFrame | None, *,
                    cfg: FilterConfig) -> DataFrame:
    """The `synthetic` table from `synthetic_raw`: every generation, accepted or rejected with its reason.

    `seeds` (doc_id, content) are the seed files the generations must not duplicate; `benchmarks` the output of
    `spark_jobs.decontaminate.load_benchmarks` for `cfg.decontaminate` (None skips decontamination).
    """
    return finish(check_rows(raw, benchmarks, cfg=cfg), seeds, cfg=cfg).select(*SYNTHETIC_COLUMNS)


class ChunkChecks:
    """The per-row half of post-processing (checks, benchmark matching and dedup keys, by
    `synth.postprocess.check_rows_local` on the rows the engine returned) of each committed chunk, and the dedup
    keys of the run's seeds (`seed_keys`), on one background thread while the engine generates: what is left
    after the last chunk is comparing the keys. On a GPU node the driver's CPU is idle during generation, so this
    work costs no time; with an engine on the same CPU cores it takes their CPU time from the engine
    (docs/synth.md measures how much).

    Results are cached Spark data (`localCheckpoint`), never table writes: a killed job loses them with nothing
    to clean up, and `run_postprocess` checks any raw row they do not cover (rows of earlier runs) itself.
    """

    # Merge the cached chunks every so often: a plan over thousands of small cached frames is slow to analyse.
    COMPACT_EVERY = 32

    def __init__(self, lake: Lake, cfg: SynthConfig):
        self.lake, self.cfg = lake, cfg
        self.rows = 0
        self.busy_s = 0.0
        self._frames: list[DataFrame] = []  # touched only by the worker thread until `result`
        self._seed_keys: DataFrame | None = None  # idem
        self._index = None  # the benchmark index, found once by the worker thread's first check
        self._futures: list = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-checks")

    def start(self, seeds: DataFrame) -> None:
        """Before the first chunk: queues the dedup keys of `seeds` (doc_id, ...), the run's selected seeds. Not
        `pending` ones: that frame reads `raw_table`, which the chunks change meanwhile. When every raw row is this
        run's (`run_postprocess` checks), nothing was done before the run, so these are exactly the seeds the rows
        were generated from."""
        self._futures.append(self._pool.submit(self._keys_of_seeds, seeds.select("doc_id")))

    def _keys_of_seeds(self, ids: DataFrame) -> None:
        t = time.perf_counter()
        seeds = read_seeds(self.lake, self.cfg.seeds).join(ids, on="doc_id")
        self._seed_keys = seed_keys(seeds, cfg=self.cfg.filter).localCheckpoint(eager=True)
        self.busy_s += time.perf_counter() - t

    def submit(self, rows: Sequence[tuple], schema: StructType) -> None:
        """Queues the checks of a committed chunk: `rows` as committed, tuples of `schema`."""
        self._raise_failed()
        self.rows += len(rows)
        self._futures.append(self._pool.submit(self._check, rows, schema))

    def _check(self, rows: Sequence[tuple], schema: StructType) -> None:
        t = time.perf_counter()
        f = self.cfg.filter
        # The chunk is in this process already: `check_rows_local` checks it here (one Spark job per chunk, to
        # store the result) rather than through `check_rows`' Spark jobs; both give the same rows
        # (tests/synth/test_postprocess.py).
        if f.decontaminate.enabled and self._index is None:
            # Reads the benchmark list and hashes its files: once per run.
            self._index = benchmark_index(f.decontaminate)
        checked = check_rows_local(self.lake.spark, rows, schema, cfg=f, index=self._index)
        self._frames.append(checked.localCheckpoint(eager=True))
        if len(self._frames) >= self.COMPACT_EVERY:
            self._frames = [_union(self._frames).localCheckpoint(eager=True)]
        self.busy_s += time.perf_counter() - t

    def _raise_failed(self) -> None:
        """A failed check stops the job now rather than after hours of generation."""
        for f in self._futures:
            if f.done() and f.exception() is not None:
                raise f.exception()

    def result(self) -> tuple[DataFrame | None, DataFrame | None]:
        """(checked rows of every submitted chunk, dedup keys of the run's seeds), None where nothing was
        submitted; waits for the thread."""
        for f in self._futures:
            f.result()
        self._pool.shutdown(wait=True)
        return (_union(self._frames) if self._frames else None), self._seed_keys

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _union(frames: Sequence[DataFrame]) -> DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def run_postprocess(lake: Lake, cfg: SynthConfig, *, checks: ChunkChecks | None = None,
                    lineage: Lineage | None = None) -> dict[str, Any]:
    """Rebuilds `output_table` from all of `raw_table` (one atomic overwrite); returns counts per status/reason.

    `checks` holds the per-row checks already done for this run's chunks; raw rows it does not cover are checked
    here, so the result is the same with or without it.
    """
    t0 = time.perf_counter()
    raw = lake.read(cfg.raw_table)
    decon = cfg.filter.decontaminate
    benchmarks = load_benchmarks(lake.spark, decon) if decon.enabled else None
    checked, keys = checks.result() if checks is not None else (None, None)
    wait_s = time.perf_counter() - t0
    jobs0 = _jobs_started(lake.spark)
    used = raw.select(F.col("seed_doc_id").alias("doc_id")).distinct()
    # The used seeds' content: near dedup reads it only to verify a pair of files that share an LSH bucket.
    seeds = read_seeds(lake, cfg.seeds).join(used, on="doc_id").select("doc_id", "content")
    if checked is None or keys is None or lake.info(cfg.raw_table).rows != checks.rows:
        # Rows of earlier runs (the Delta log's row counts tell, without a Spark job), or no chunk checked ahead:
        # check them, and key the seeds they were generated from.
        rest = raw if checked is None else raw.join(checked.select("synth_id"), on="synth_id", how="left_anti")
        rest = check_rows(rest, benchmarks, cfg=cfg.filter)
        # Materialised: the dedup steps read it several times; the per-row checks then run once.
        checked = (rest if checked is None else checked.unionByName(rest)).localCheckpoint(eager=True)
        if keys is None:
            keys = seed_keys(seeds, cfg=cfg.filter)
        else:
            keys = keys.join(used, on="doc_id", how="left_semi").unionByName(seed_keys(
                seeds.join(keys.select("doc_id"), on="doc_id", how="left_anti"), cfg=cfg.filter))
        keys = keys.localCheckpoint(eager=True)
    # else: every raw row is this run's and was checked ahead, so the seeds keyed ahead (the run's selected seeds,
    # none done before it, all generated by it) are exactly the used seeds (`ChunkChecks.start`).
    t1 = time.perf_counter()
    out = finish(checked, seeds, cfg=cfg.filter, keys=keys).select(*SYNTHETIC_COLUMNS)
    # localCheckpoint: the counts below and the write read one computed result, not three re-computations.
    out = out.localCheckpoint(eager=True)
    t2 = time.perf_counter()
    inputs = lake.versions([cfg.raw_table, cfg.seeds.table])
    settings = [dataclasses.asdict(cfg.filter), cfg.seeds.table]
    # Same raw and seed versions with the same settings = the same `synthetic`: the rewrite is skipped (run by the
    # pipeline, its stage lineage decides instead).
    lineage = lineage or Lineage(JOB, config_hash(settings), inputs,
                                 write_id=f"synthetic-{config_hash([inputs, settings])}")
    lake.overwrite(cfg.output_table, out, lineage=lineage, allow_schema_change=True)
    counts = {f"{r['status']}:{r['reject_reason'] or ''}".rstrip(":"): r["count"]
              for r in out.groupBy("status", "reject_reason").count().collect()}
    return {"rows": sum(counts.values()), "by_reason": counts, "elapsed_s": time.perf_counter() - t0,
            "wait_checks_s": wait_s, "checks_s": t1 - t0 - wait_s, "dedup_s": t2 - t1,
            "write_s": time.perf_counter() - t2, "chunk_checks_s": checks.busy_s if checks else 0.0,
            "chunk_checked_rows": checks.rows if checks else 0, "spark_jobs": _jobs_started(lake.spark) - jobs0}


def _jobs_started(spark: SparkSession) -> int:
    """Spark jobs this application has started so far (job ids count up from 0)."""
    ids = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    return max(ids, default=-1) + 1


def run(cfg: SynthConfig, *, lake: Lake, lineage: Lineage | None = None,
        engine: Engine | None = None) -> dict[str, Any]:
    """The stage: generation (resumable), then the rebuild of `output_table` (written with `lineage`)."""
    stats: dict[str, Any] = {}
    # On a shard of a multi-node run `synthetic` is not rebuilt here (below), so nothing is checked ahead.
    checks = ChunkChecks(lake, cfg) if cfg.generate and cfg.postprocess and cfg.num_shards == 1 else None
    try:
        if cfg.generate:
            stats["generation"] = run_generation(lake, cfg, engine=engine, checks=checks)
        if cfg.postprocess and cfg.num_shards > 1:
            # Other shards may still be generating: rebuilding `synthetic` now would miss their rows. Run it once
            # at the end instead (`--synth.generate false --synth.num_shards 1`).
            print(f"[{JOB}] shard {cfg.shard_index}/{cfg.num_shards}: post-processing skipped; run it once all "
                  "shards are done with --synth.generate false", file=sys.stderr)
        elif cfg.postprocess and lake.exists(cfg.raw_table):
            stats["postprocess"] = run_postprocess(lake, cfg, checks=checks, lineage=lineage)
    finally:
        if checks is not None:
            checks.close()
    return stats
