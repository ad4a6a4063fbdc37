"""Checkpoint evaluation: generate completions, execute them in the sandbox, score pass@k, store and log.

    python -m trainer.evaluation --config conf/eval/default.yaml --model runs/phase1/hf
    python -m trainer.evaluation --config conf/eval/debug.yaml --model runs/debug/hf --mlflow_run_id <id>

Flow (each step a function, so tests and the bench call them directly):
`load_tasks` -> `generate_samples` (codemill.engines, greedy by default) -> `ground_truth` (canonical outputs of the
differential benchmarks, cached) -> `execute_samples` (SandboxPool) -> `score` (pass@k per benchmark, EvoEval
mean) -> `write_results` (Delta table `eval_results` under the lake root) -> `log_to_mlflow` (the checkpoint's
run, found in `run_info.json` next to the trainer's HF export, or `--mlflow_run_id`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codemill import storage
from codemill.benchmarks import DATA_DIR
from codemill.config import ConfigError, config_hash, parse_config, to_dict
from codemill.engines import SamplingConfig, make_engine
from codemill.lake import Lineage
from trainer.evaluation.benchmarks import BENCHMARKS, GROUPS, Task, expand, load_benchmark, unknown
from trainer.evaluation.passk import mean_pass_at_k
from trainer.evaluation.sandbox import Job, Result, SandboxConfig, SandboxPool, check_protected

log = logging.getLogger("codemill.evaluation")

TABLE = "eval_results"
DEFAULT_CACHE = Path(os.environ.get("CODEMILL_EVAL_CACHE", Path.home() / ".cache" / "codemill" / "eval_expected"))


@dataclasses.dataclass
class EngineConfig:
    """`kind` and its options, passed unchanged to `codemill.engines.make_engine` (docs/CONTRACTS.md)."""

    kind: str = "transformers"
    args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> list[str]:
        return [] if self.kind in ("transformers", "vllm") else [f"kind: 'transformers' or 'vllm', got {self.kind!r}"]


@dataclasses.dataclass
class GenerationConfig:
    """Greedy by default (the paper's pass@1). With temperature > 0, `n_samples` per task give pass@k."""

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    ks: list[int] = dataclasses.field(default_factory=lambda: [1])

    def validate(self) -> list[str]:
        problems = []
        if self.n_samples < 1:
            problems.append(f"n_samples: must be >= 1, got {self.n_samples}")
        if self.temperature == 0 and self.n_samples > 1:
            problems.append("n_samples: greedy decoding (temperature 0) gives identical samples; use n_samples 1 "
                            "or set temperature > 0")
        if any(k < 1 or k > self.n_samples for k in self.ks):
            problems.append(f"ks: every k must be in [1, n_samples={self.n_samples}], got {self.ks}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        return problems


@dataclasses.dataclass
class EvalConfig:
    model: str = ""
    benchmarks: list[str] = dataclasses.field(
        default_factory=lambda: ["humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "evoeval"])
    data_dir: str = str(DATA_DIR)
    # First `limit` tasks of each benchmark (debug runs); None = all.
    limit: int | None = None
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
    sandbox: SandboxConfig = dataclasses.field(default_factory=SandboxConfig)
    lake: str = "lake"
    table: str = TABLE
    # The checkpoint's MLflow run; default: `mlflow_run_id` of run_info.json next to (or inside) the model folder.
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    # Used when no run is known: a new run is started in this experiment.
    mlflow_experiment: str = "codemill-eval"
    expected_cache: str = str(DEFAULT_CACHE)

    def validate(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("model: give the Hugging Face folder to evaluate (the trainer's <run_dir>/hf)")
        bad = unknown(self.benchmarks)
        if bad:
            problems.append(f"benchmarks: unknown {bad}; known: {list(GROUPS) + list(BENCHMARKS)}")
        if not Path(self.data_dir).is_dir():
            problems.append(f"data_dir: {self.data_dir} is not a folder (data/benchmarks of the checkout)")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit: must be >= 1 or null, got {self.limit}")
        return problems


@dataclasses.dataclass(frozen=True)
class Sample:
    task: Task
    sample_idx: int
    completion: str
    program: str
    completion_tokens: int = 0
    finish_reason: str = ""


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    expected: bytes | None
    runtime_s: float
    error: str = ""


# --------------------------------------------------------------------------------------------------- steps
def load_tasks(names: Sequence[str], *, data_dir: str | Path = DATA_DIR, limit: int | None = None) -> list[Task]:
    tasks: list[Task] = []
    for name in expand(names):
        tasks.extend(load_benchmark(name, data_dir)[:limit])
    return tasks


def canonical_samples(tasks: Sequence[Task]) -> list[Sample]:
    """Each task's reference solution as a sample (the acceptance check: these must all pass)."""
    return [Sample(t, 0, t.canonical_solution, t.canonical_solution) for t in tasks]


def generate_samples(tasks: Sequence[Task], engine: Any, gen: GenerationConfig) -> list[Sample]:
    """`gen.n_samples` completions per task; one engine call per stop-sequence family."""

    by_stops: dict[tuple[str, ...], list[Task]] = defaultdict(list)
    for t in tasks:
        by_stops[t.stops].append(t)
    samples: list[Sample] = []
    for stops, group in by_stops.items():
        sampling = SamplingConfig(temperature=gen.temperature, top_p=gen.top_p if gen.temperature > 0 else 1.0,
                                  max_new_tokens=gen.max_new_tokens, seed=gen.seed, stop=list(stops))
        prompts = [t.render_prompt() for t in group for _ in range(gen.n_samples)]
        gens = engine.generate(prompts, sampling)
        for i, g in enumerate(gens):
            task = group[i // gen.n_samples]
            completion = truncate(g.text, stops)
            samples.append(Sample(task, i % gen.n_samples, completion, task.program(completion),
                                  g.completion_tokens, g.finish_reason))
    return samples


def truncate(text: str, stops: Sequence[str]) -> str:
    """Cuts at the first stop sequence (engines differ in whether they return it)."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else text


def _gt_key(task: Task) -> str:
    # v2: outputs as the sandbox's checker stores them (plain data, `Opaque`, `Digest`), not as the sample made them.
    h = hashlib.sha256(b"v2")
    for part in (task.canonical_solution, task.entry_point, task.inputs_source or ""):
        h.update(part.encode())
    h.update(task.inputs or b"")
    return h.hexdigest()[:32]


def ground_truth(tasks: Sequence[Task], pool: SandboxPool, *, cache_dir: str | Path | None = DEFAULT_CACHE
                 ) -> dict[tuple[str, str], GroundTruth]:
    """Expected outputs of every differential task: its canonical solution run on the inputs, in the sandbox.

    Cached on disk by a hash of the solution and inputs, so a phase's evaluations run them once.
    """
    cache = Path(cache_dir) if cache_dir else None
    out: dict[tuple[str, str], GroundTruth] = {}
    todo: list[Task] = []
    for t in tasks:
        if t.kind != "diff":
            continue
        path = cache / f"{_gt_key(t)}.pkl" if cache else None
        if path is not None and path.is_file():
            out[(t.benchmark, t.task_id)] = pickle.loads(path.read_bytes())
        else:
            todo.append(t)
    # Canonical solutions get a generous limit: some plus inputs are deliberately large.
    timeout = max(pool.cfg.timeout_s, pool.cfg.ground_truth_timeout_s)
    jobs = [Job(t.canonical_solution, timeout, entry_point=t.entry_point, inputs=t.inputs,
                inputs_source=t.inputs_source, collect_outputs=True) for t in todo]
    for t, r in zip(todo, pool.run(jobs)):
        gt = GroundTruth(r.outputs if r.passed else None, r.runtime_s, "" if r.passed else f"{r.status}: {r.detail}")
        out[(t.benchmark, t.task_id)] = gt
        if cache is not None and r.passed:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{_gt_key(t)}.{os.getpid()}.tmp"
            tmp.write_bytes(pickle.dumps(gt))
            tmp.replace(cache / f"{_gt_key(t)}.pkl")
    return out


def job_for(sample: Sample, gt: GroundTruth | None, cfg: SandboxConfig) -> Job:
    task = sample.task
    if task.kind == "assert":  # the tests run in the sandbox's checker process, never in the sample's
        return Job(sample.program, cfg.timeout_s, tests=task.tests)
    assert gt is not None and gt.expected is not None, f"no ground truth for {task.task_id}"
    timeout = max(cfg.timeout_s, gt.runtime_s * cfg.timeout_factor)
    return Job(sample.program, timeout, entry_point=task.entry_point, inputs=task.inputs,
               inputs_source=task.inputs_source, expected=gt.expected, oracle=task.oracle, atol=task.atol)


def execute_samples(samples: Sequence[Sample], pool: SandboxPool, *, cache_dir: str | Path | None = DEFAULT_CACHE
                    ) -> list[Result]:
    """Sandboxed results, one per sample, in order. A task whose canonical solution fails to produce expected
    outputs cannot be scored: its samples get status `error` with the reason (and are reported by `score`)."""
    tasks = list({(s.task.benchmark, s.task.task_id): s.task for s in samples}.values())
    gts = ground_truth(tasks, pool, cache_dir=cache_dir)
    results: list[Result | None] = [None] * len(samples)
    jobs, idx = [], []
    for i, s in enumerate(samples):
        gt = gts.get((s.task.benchmark, s.task.task_id))
        if s.task.kind == "diff" and (gt is None or gt.expected is None):
            results[i] = Result("error", f"canonical solution failed: {gt.error if gt else 'missing'}", 0.0)
            continue
        jobs.append(job_for(s, gt, pool.cfg))
        idx.append(i)
    for i, r in zip(idx, pool.run(jobs)):
        results[i] = r
    return [r for r in results if r is not None]


def score(samples: Sequence[Sample], results: Sequence[Result], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """`<benchmark>/pass@k`, `<benchmark>/n_tasks`, `<benchmark>/n_unscorable` and group means (`evoeval/pass@k`)."""
    per_task: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    unscorable: dict[str, set[str]] = defaultdict(set)
    for s, r in zip(samples, results):
        if r.status == "error":
            unscorable[s.task.benchmark].add(s.task.task_id)
            continue
        nc = per_task[s.task.benchmark][s.task.task_id]
        nc[0] += 1
        nc[1] += int(r.passed)
    metrics: dict[str, float] = {}
    for bench in sorted(set(per_task) | set(unscorable)):
        counts = [(n, c) for n, c in per_task[bench].values()]
        for k in ks:
            metrics[f"{bench}/pass@{k}"] = mean_pass_at_k([(n, c) for n, c in counts if n >= k], k)
        metrics[f"{bench}/n_tasks"] = float(len(counts))
        metrics[f"{bench}/n_unscorable"] = float(len(unscorable[bench]))
    for group, members in GROUPS.items():
        present = [m for m in members if f"{m}/n_tasks" in metrics]
        if present:
            for k in ks:
                # EvoEval reports the mean over its categories (EvoEval paper, Table 2).
                metrics[f"{group}/pass@{k}"] = sum(metrics[f"{m}/pass@{k}"] for m in present) / len(present)
    return metrics


# -------------------------------------------------------------------------------------------- storage, MLflow
def results_table(samples: Sequence[Sample], results: Sequence[Result], *, eval_id: str, model: str,
                  run_id: str | None, cfg_hash: str, checkpoint: dict[str, Any]):
    """Per-sample rows as an Arrow table (schema: docs/evaluation.md)."""

    import pyarrow as pa

    now = datetime.datetime.now(datetime.timezone.utc)
    schema = pa.schema([
        ("eval_id", pa.string()), ("model", pa.string()), ("mlflow_run_id", pa.string()), ("phase", pa.string()),
        ("global_step", pa.int64()), ("benchmark", pa.string()), ("task_id", pa.string()),
        ("sample_idx", pa.int32()), ("completion", pa.string()), ("passed", pa.bool_()), ("status", pa.string()),
        ("detail", pa.string()), ("runtime_s", pa.float64()), ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()), ("config_hash", pa.string()), ("evaluated_at", pa.timestamp("us", "UTC")),
    ])
    cols: dict[str, list] = {name: [] for name in schema.names}
    for s, r in zip(samples, results):
        row = {
            "eval_id": eval_id, "model": model, "mlflow_run_id": run_id, "phase": checkpoint.get("phase"),
            "global_step": checkpoint.get("global_step"), "benchmark": s.task.benchmark, "task_id": s.task.task_id,
            "sample_idx": s.sample_idx, "completion": s.completion, "passed": r.passed, "status": r.status,
            "detail": r.detail, "runtime_s": r.runtime_s, "completion_tokens": s.completion_tokens,
            "finish_reason": s.finish_reason, "config_hash": cfg_hash, "evaluated_at": now,
        }
        for k, v in row.items():
            cols[k].append(v)
    return pa.table(cols, schema=schema)


def write_results(table, *, lake_root: str, name: str = TABLE, eval_id: str, lineage_json: str,
                  key: str = "eval_id") -> int:
    """Replaces this evaluation's rows (same `eval_id` in column `key`) in one Delta commit, so a re-run never
    duplicates (also the writer of trainer.ablate's `ablations`, keyed by `ablation`)."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake


    # No Spark on a GPU node: delta-rs writes this table, the only writer it ever has (docs/lake.md).
    path = storage.delta_uri(storage.join(storage.absolute(lake_root), name))
    opts = storage.storage_options(lake_root) or None
    props = CommitProperties(custom_metadata={"userMetadata": lineage_json})
    if DeltaTable.is_deltatable(path, storage_options=opts):
        write_deltalake(path, table, mode="overwrite", predicate=f"{key} = '{eval_id}'", commit_properties=props,
                        storage_options=opts)
    else:
        write_deltalake(path, table, mode="append", commit_properties=props, storage_options=opts)
    return DeltaTable(path, storage_options=opts).version()


def checkpoint_info(model: str) -> dict[str, Any]:
    """`run_info.json` written by trainer.callbacks.HFExport (in the run folder, the HF folder's parent); the model
    folder may be local or on an object store."""

    model = storage.absolute(model)
    for candidate in (storage.join(model, "run_info.json"), storage.join(model.rstrip("/").rsplit("/", 1)[0],
                                                                          "run_info.json")):
        if storage.isfile(candidate):
            return json.loads(storage.read_text(candidate))
    return {}


def mlflow_key(name: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces: `humaneval/pass@1` -> `eval/humaneval/pass_at_1`
    return "eval/" + name.replace("@", "_at_")


def log_to_mlflow(metrics: dict[str, float], *, run_id: str | None, tracking_uri: str | None, experiment: str,
                  run_name: str, step: int, tags: dict[str, str]) -> str:
    """Logs the metrics to `run_id` (the checkpoint's training run) or a new run; returns the run id."""

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri=tracking_uri)
    if run_id is None:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run_id = client.create_run(exp_id, run_name=run_name).info.run_id
        created = True
    else:
        created = False
    ts = int(time.time() * 1000)
    batch = [Metric(mlflow_key(k), v, ts, step) for k, v in sorted(metrics.items()) if not math.isnan(v)]
    client.log_batch(run_id, metrics=batch, tags=[RunTag(k, v) for k, v in tags.items()])
    if created:
        client.set_terminated(run_id)
    return run_id


# ------------------------------------------------------------------------------------------------------ job
def log_isolation(sandbox: SandboxConfig, isolation: str) -> None:
    """Says what samples run under; loudly when the confinement was switched off (`sandbox.isolation: none`)."""
    if sandbox.isolation == "none":
        log.warning("sandbox.isolation=none: samples run WITHOUT Landlock and seccomp (%s); they can read and "
                    "write whatever this user can and open network connections. Recorded with the results.",
                    isolation)
    else:
        log.info("sandbox: samples run under %s", isolation)


def evaluate(cfg: EvalConfig, *, engine: Any = None) -> dict[str, Any]:
    """The whole evaluation; returns `{"metrics", "eval_id", "mlflow_run_id", "table_version"}`."""

    protected = [f"{key}: {problem}" for key, path in (("lake", cfg.lake), ("model", cfg.model),
                                                        ("expected_cache", cfg.expected_cache))
                 for problem in check_protected([path])]
    if protected:  # a folder samples may read must not hold what they must not see
        raise ConfigError(protected)
    info = checkpoint_info(cfg.model)
    run_id = cfg.mlflow_run_id or info.get("mlflow_run_id")
    tracking_uri = cfg.mlflow_tracking_uri or info.get("mlflow_tracking_uri")
    cfg_hash = config_hash(cfg)
    eval_id = hashlib.sha256(f"{os.path.abspath(cfg.model)}|{cfg_hash}".encode()).hexdigest()[:16]
    tasks = load_tasks(cfg.benchmarks, data_dir=cfg.data_dir, limit=cfg.limit)
    log.info("evaluating %s on %d tasks (%s)", cfg.model, len(tasks), ", ".join(expand(cfg.benchmarks)))

    t0 = time.monotonic()
    owned = engine is None
    if owned:

        engine = make_engine(cfg.engine.kind, cfg.model, **cfg.engine.args)
    try:
        samples = generate_samples(tasks, engine, cfg.generation)
    finally:
        if owned:
            engine.close()
    gen_s = time.monotonic() - t0
    t1 = time.monotonic()
    with SandboxPool(cfg.sandbox) as pool:
        isolation = pool.isolation
        log_isolation(cfg.sandbox, isolation)
        results = execute_samples(samples, pool, cache_dir=cfg.expected_cache)
    exec_s = time.monotonic() - t1
    metrics = score(samples, results, cfg.generation.ks)
    for bench in expand(cfg.benchmarks):
        if metrics.get(f"{bench}/n_unscorable"):
            log.warning("%s: %d tasks could not be scored (canonical solution failed); see status 'error' rows",
                        bench, int(metrics[f"{bench}/n_unscorable"]))
    metrics.update({"generation_s": gen_s, "execution_s": exec_s,
                    "samples_per_s": len(samples) / exec_s if exec_s > 0 else float("nan")})

    table = results_table(samples, results, eval_id=eval_id, model=cfg.model, run_id=run_id, cfg_hash=cfg_hash,
                          checkpoint=info)
    lineage = Lineage("evaluation", cfg_hash, {}, extra={"model": cfg.model, "eval_id": eval_id,
                                                          "config": to_dict(cfg), "sandbox_isolation": isolation})
    version = write_results(table, lake_root=cfg.lake, name=cfg.table, eval_id=eval_id, lineage_json=lineage.to_json())
    run_id = log_to_mlflow(metrics, run_id=run_id, tracking_uri=tracking_uri, experiment=cfg.mlflow_experiment,
                           run_name=f"eval-{Path(cfg.model).name}", step=int(info.get("global_step") or 0),
                           tags={"eval.eval_id": eval_id, "eval.model": cfg.model,
                                 "eval.benchmarks": ",".join(expand(cfg.benchmarks)),
                                 "eval.sandbox_isolation": isolation})
    for key in sorted(k for k in metrics if "/pass@" in k):
        log.info("%-28s %.4f", key, metrics[key])
    return {"metrics": metrics, "eval_id": eval_id, "mlflow_run_id": run_id, "table_version": version}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(EvalConfig, argv, prog="python -m trainer.evaluation",
                       description="pass@k of a Hugging Face checkpoint on HumanEval(+), MBPP(+) and EvoEval")
    out = evaluate(cfg)
    print(json.dumps({"eval_id": out["eval_id"], "mlflow_run_id": out["mlflow_run_id"],
                      "table_version": out["table_version"], "metrics": out["metrics"]}, indent=2, sort_keys=True))
    return out
