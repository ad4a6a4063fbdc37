"""Proxy-model ablations: train the same small model on each data recipe under one token budget, and compare them.

    python -m trainer.ablate --config conf/ablate/demo.yaml              # after `make demo` (demo_out/)
    python -m trainer.ablate --config conf/ablate/demo.yaml --seeds '[1]' --out /tmp/ablate-try

Flow (each step a function; tests and bench/ablate.py call them):

1. `prepare_data`: the tables and datasets the variants need that the recipe did not build (random-selection control,
   a selection at the proxy's budget, repository-only documents, a second annotator) come from
   `python -m spark_jobs.ablation_data` in its own process (trainer/ never imports spark_jobs);
2. `make_plan`: every variant x seed becomes a chain of stages; a stage is named by a hash of everything that
   determines its weights (seed, proxy, the stages before it, its dataset, tokens and schedule), so variants that
   share a prefix (phase 1) share its run folder and train it once. The token budget is checked (every variant's
   stages sum to `budget_tokens`; each stage's tokens are whole optimizer steps and fit in its dataset's
   repeats) and printed;
3. `check_contamination`: no benchmark may have copies in any training shard a variant uses;
4. `train_stage`: `python -m trainer fit` (in this process, `trainer.cli.main`) with the proxy config, the stage's
   dataset, schedule and steps, `init_from` the previous stage's export; a finished stage leaves `done.json`, an
   interrupted one resumes from its `checkpoints/last.ckpt`, so re-running the command continues where it stopped;
5. `evaluate_variant`: bits per byte per benchmark (`trainer/ablate/bpb.py`), pass@1 when the proxy is large enough;
6. `record`: MLflow (one parent run per ablation, a child per variant and seed), the `ablations` Delta table under the
   lake (delta-rs, like `eval_results`), and `<out>/result.json` with the summary (`summarize`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from codemill import storage
from codemill.config import REPO_ROOT, ConfigError, config_hash, parse_config, repo_path, to_dict
from codemill.lake import Lineage
from trainer.ablate import bpb
from trainer.ablate.config import AblationConfig, DatasetSpec, ScheduleSpec
from trainer.ablate.stats import mean_std, paired_delta, spearman
from trainer.callbacks import DEFAULT_TRACKING_URI
from trainer.cli import main as trainer_main
from trainer.data import read_manifest
from trainer.evaluation.run import EvalConfig, evaluate, write_results

log = logging.getLogger("codemill.ablate")
# spark_jobs.ablation_data.BUILD_VERSION (trainer/ does not import spark_jobs): a new one re-runs the data step.
DATA_BUILD_VERSION = 2


# ------------------------------------------------------------------------------------------------- datasets
def dataset_root(cfg: AblationConfig, ds: DatasetSpec) -> str:
    """The shards root holding `<phase>/` for this dataset: the recipe's, or the data step's."""
    return storage.join(cfg.out, "shards", ds.name) if ds.sources else cfg.shards_root


def data_spec_hash(cfg: AblationConfig) -> str:
    """What the data step builds: a change re-runs it (the step itself skips what is already up to date)."""
    return config_hash({"tables": [to_dict(t) for t in cfg.tables], "annotators": [to_dict(a) for a in cfg.annotators],
                        "datasets": [to_dict(d) for d in cfg.datasets if d.sources], "lake": cfg.lake,
                        "shards_root": cfg.shards_root, "build": DATA_BUILD_VERSION})


def prepare_data(cfg: AblationConfig, config_file: str) -> None:
    """Runs `python -m spark_jobs.ablation_data` unless every built dataset carries this config's data hash."""
    built = [d for d in cfg.datasets if d.sources]
    if not built and not cfg.tables and not any(a.positives for a in cfg.annotators):
        return
    want = data_spec_hash(cfg)
    marker = storage.join(cfg.out, "data.json")
    if storage.isfile(marker) and json.loads(storage.read_text(marker)).get("data_hash") == want:
        return
    cmd = [sys.executable, "-m", "spark_jobs.ablation_data", "--ablation", config_file, *cfg.data_args]
    print("[ablate] data: $ " + " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=REPO_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), check=True)
    storage.write_text(marker, json.dumps({"data_hash": want, "seconds": round(time.monotonic() - t0, 1)}))


def manifests(cfg: AblationConfig) -> dict[str, dict[str, Any]]:
    """Each dataset's shard manifest; one ConfigError naming every missing or inconsistent dataset."""
    out, problems = {}, []
    for i, ds in enumerate(cfg.datasets):
        manifest, found = read_manifest(dataset_root(cfg, ds), ds.phase)
        problems += [f"datasets.{i} ({ds.name}): {p}" for p in found]
        out[ds.name] = manifest
    if not problems:
        facts = {(m["seq_len"], m["vocab_size"]) for m in out.values()}
        if len(facts) > 1:
            problems.append(f"datasets: every dataset must share seq_len and vocab_size (one proxy), got {facts}")
    if problems:
        raise ConfigError(problems)
    return out


# ------------------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Stage:
    key: str
    seed: int
    index: int  # position in its chain
    dataset: str
    tokens: int
    steps: int
    schedule: ScheduleSpec
    parent: str | None
    run_dir: str


@dataclasses.dataclass
class Plan:
    stages: dict[str, Stage]  # by key, in first-use order
    chains: dict[tuple[str, int], list[str]]  # (variant, seed) -> stage keys
    tokens_per_step: int
    seq_len: int

    @property
    def trainings_without_sharing(self) -> int:
        return sum(len(c) for c in self.chains.values())


def make_plan(cfg: AblationConfig, mans: dict[str, dict[str, Any]]) -> Plan:
    """Stages of every variant and seed, shared where the prefix is the same; checks the budget."""
    seq_len = int(next(iter(mans.values()))["seq_len"])
    tokens_per_step = cfg.proxy.sequences_per_step * seq_len
    schedules = {s.name: s for s in cfg.schedules}
    proxy = to_dict(cfg.proxy)
    problems: list[str] = []
    stages: dict[str, Stage] = {}
    chains: dict[tuple[str, int], list[str]] = {}
    for v in cfg.variants:
        for j, st in enumerate(v.stages):
            if st.tokens % tokens_per_step:
                problems.append(f"variants.{v.name}.stages.{j}.tokens: {st.tokens:,} is not a whole number of "
                                f"optimizer steps of {tokens_per_step:,} tokens ({cfg.proxy.sequences_per_step} "
                                f"sequences x seq_len {seq_len})")
            m = mans[st.data]
            # each device reads its share of the split (drop_last): whole steps per pass
            batches = int(m["splits"]["train"]["sequences"]) // cfg.proxy.sequences_per_step
            repeat = int(m.get("repeat", 1))
            if st.tokens // tokens_per_step > batches * repeat:
                problems.append(f"variants.{v.name}.stages.{j}.tokens: {st.tokens:,} tokens need "
                                f"{st.tokens // tokens_per_step} steps, but dataset {st.data} holds {batches} "
                                f"steps x {repeat} repeats; lower the stage's tokens or raise the dataset's size")
    if problems:
        raise ConfigError(problems)
    for seed in cfg.seeds:
        for v in cfg.variants:
            parent, chain = None, []
            for j, st in enumerate(v.stages):
                ident = {"seed": seed, "proxy": proxy, "parent": parent, "data": st.data,
                         "data_manifest": _manifest_id(mans[st.data]), "tokens": st.tokens,
                         "schedule": {k: v2 for k, v2 in to_dict(schedules[st.schedule]).items() if k != "name"}}
                key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
                if key not in stages:
                    stages[key] = Stage(key, seed, j, st.data, st.tokens, st.tokens // tokens_per_step,
                                        schedules[st.schedule], parent,
                                        storage.join(cfg.out, "runs", f"seed{seed}", f"{j}-{st.data}-{key}"))
                chain.append(key)
                parent = key
            chains[(v.name, seed)] = chain
    return Plan(stages, chains, tokens_per_step, seq_len)


def _manifest_id(m: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({k: m.get(k) for k in ("splits", "table_versions", "tokens", "repeat", "seed")},
                                     sort_keys=True).encode()).hexdigest()[:12]


def print_budget(cfg: AblationConfig, plan: Plan, mans: dict[str, dict[str, Any]] | None = None) -> str:
    lines = [f"[ablate] {cfg.name}: budget {cfg.budget_tokens:,} tokens per variant = "
             f"{cfg.budget_tokens // plan.tokens_per_step} steps of {plan.tokens_per_step:,} tokens; "
             f"{len(cfg.seeds)} seeds; {len(plan.stages)} trainings ({plan.trainings_without_sharing} without "
             "shared prefixes)"]
    for v in cfg.variants:
        parts = " -> ".join(f"{s.data}:{s.tokens:,} ({s.schedule})" for s in v.stages)
        lines.append(f"  {v.name:<22} {sum(s.tokens for s in v.stages):>12,}  {parts}")
    # What each dataset holds and how often a stage passes over it: a selection and its control should match here.
    for ds in cfg.datasets if mans else ():
        train = int(mans[ds.name]["splits"]["train"]["tokens"])
        passes = sorted({round(s.tokens / max(train, 1), 2) for v in cfg.variants for s in v.stages
                         if s.data == ds.name})
        lines.append(f"  dataset {ds.name:<14} {train:>12,} train tokens, repeat {mans[ds.name].get('repeat', 1)}, "
                     f"passes per stage {passes}")
    for c in control_tokens(cfg, mans or {}):
        per = ", ".join(f"{lang} {s:,}/{n:,}" for lang, (s, n) in c["per_language"].items())
        lines.append(f"  control {c['control']} of {c['selection']}: {c['control_tokens']:,} vs "
                     f"{c['selection_tokens']:,} tokens (ratio {c['ratio']:.3f}; per language selection/control: "
                     f"{per}); train splits {c['control_train_tokens']:,} vs {c['selection_train_tokens']:,} "
                     f"(ratio {c['train_ratio']:.3f})"
                     + ("" if abs(c["ratio"] - 1) <= CONTROL_TOLERANCE else
                        f"  WARNING: not token-matched (more than {CONTROL_TOLERANCE:.0%} apart)")
                     + ("" if abs(c["train_ratio"] - 1) <= CONTROL_TOLERANCE else
                        f"  WARNING: the train splits are more than {CONTROL_TOLERANCE:.0%} apart (the validation "
                        "documents differ): the two repeat their data a different number of times"))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# A control further than this from its selection's tokens confounds ranking with repetition (docs/ablations.md).
CONTROL_TOLERANCE = 0.05


def control_tokens(cfg: AblationConfig, mans: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each annotator's selection against its random control, in the tokens their shards hold (manifest
    `tokens_per_language`, both splits, which the data step matches) and in their train splits (the validation
    documents, 2% by hash, are not matched): the reader sees whether the control is token-matched."""
    out = []
    for ds in cfg.datasets:
        if not (ds.annotator and ds.control and ds.name in mans and ds.control in mans):
            continue
        sel, ctl = mans[ds.name].get("tokens_per_language", {}), mans[ds.control].get("tokens_per_language", {})
        total_s, total_c = sum(sel.values()), sum(ctl.values())
        train_s, train_c = (int(mans[n].get("splits", {}).get("train", {}).get("tokens", 0))
                            for n in (ds.name, ds.control))
        out.append({"selection": ds.name, "control": ds.control, "selection_tokens": total_s,
                    "control_tokens": total_c, "ratio": total_c / total_s if total_s else math.nan,
                    "selection_train_tokens": train_s, "control_train_tokens": train_c,
                    "train_ratio": train_c / train_s if train_s else math.nan,
                    "per_language": {lang: [int(sel.get(lang, 0)), int(ctl.get(lang, 0))]
                                     for lang in sorted(set(sel) | set(ctl))}})
    return out


# ------------------------------------------------------------------------------------------------- training
def stage_args(cfg: AblationConfig, stage: Stage, ds: DatasetSpec, *, parent_export: str | None,
               mlflow_parent: str | None, resume: str | None) -> list[str]:
    """`python -m trainer fit` arguments of one stage."""
    s = stage.schedule
    args = ["fit", "--config", repo_path(cfg.proxy.config), "--data.shards_root", dataset_root(cfg, ds),
            "--data.phase", ds.phase, "--data.batch_size", str(cfg.proxy.batch_size),
            "--data.seed", str(stage.seed), "--seed_everything", str(stage.seed), "--run_dir", stage.run_dir,
            "--trainer.max_steps", str(stage.steps), "--trainer.devices", str(cfg.proxy.devices),
            "--trainer.num_nodes", str(cfg.proxy.num_nodes),
            "--trainer.accumulate_grad_batches", str(cfg.proxy.accumulate_grad_batches),
            # validation once, at the end (the interval counts micro-batches)
            "--trainer.val_check_interval", str(stage.steps * cfg.proxy.accumulate_grad_batches),
            "--model.schedule", s.schedule, "--model.lr", str(s.lr), "--model.min_lr", str(s.min_lr),
            "--model.warmup_steps", str(s.warmup_steps),
            "--trainer.logger.init_args.experiment_name", cfg.mlflow_experiment,
            "--trainer.logger.init_args.run_name", f"{cfg.name}/seed{stage.seed}/{stage.index}-{stage.dataset}",
            "--trainer.logger.init_args.tags", json.dumps({"mlflow.parentRunId": mlflow_parent or "",
                                                           "ablate.name": cfg.name, "ablate.stage": stage.key}
                                                          if mlflow_parent else {"ablate.stage": stage.key})]
    if cfg.mlflow_tracking_uri:
        args += ["--trainer.logger.init_args.tracking_uri", cfg.mlflow_tracking_uri]
    for key, value in sorted(cfg.proxy.model.items()):
        args += [f"--model.{key}", json.dumps(value) if not isinstance(value, str) else value]
    if resume:
        args += ["--ckpt_path", resume]
    elif parent_export:
        args += ["--init_from", parent_export]
    return args + list(cfg.proxy.args)


def train_stage(cfg: AblationConfig, plan: Plan, stage: Stage, *, mlflow_parent: str | None) -> dict[str, Any]:
    """Trains one stage unless its `done.json` exists; resumes an interrupted one; returns `done.json`'s content."""
    done = storage.join(stage.run_dir, "done.json")
    if storage.isfile(done):
        return json.loads(storage.read_text(done))
    ds = next(d for d in cfg.datasets if d.name == stage.dataset)
    parent_export = storage.join(plan.stages[stage.parent].run_dir, "hf") if stage.parent else None
    last = storage.join(stage.run_dir, "checkpoints", "last.ckpt")
    resume = last if storage.isfile(last) else None
    t0 = time.monotonic()
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI parses `args`; our own flags must not reach it
    try:
        trainer_main(stage_args(cfg, stage, ds, parent_export=parent_export, mlflow_parent=mlflow_parent,
                                resume=resume))
    finally:
        sys.argv = argv
    info = json.loads(storage.read_text(storage.join(stage.run_dir, "run_info.json")))
    if int(info.get("global_step") or 0) != stage.steps:
        raise RuntimeError(f"stage {stage.key} ({stage.dataset}, seed {stage.seed}) stopped at step "
                           f"{info.get('global_step')} of {stage.steps}: its dataset ran out before the budget "
                           f"({stage.tokens:,} tokens)")
    result = {"key": stage.key, "steps": stage.steps, "tokens": stage.steps * plan.tokens_per_step,
              "dataset": stage.dataset, "seed": stage.seed, "seconds": round(time.monotonic() - t0, 2),
              "resumed": resume is not None, "mlflow_run_id": info.get("mlflow_run_id"),
              "hf": storage.join(stage.run_dir, "hf")}
    storage.delete_dir(storage.join(stage.run_dir, "checkpoints"))  # the export is all later stages need
    storage.write_text(done, json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------------------------------------- evaluation
def load_eval_problems(cfg: AblationConfig) -> list[bpb.Problem]:
    return [p for b in cfg.eval.benchmarks for p in bpb.load_problems(b, limit=cfg.eval.limit)]


def check_contamination(cfg: AblationConfig, mans: dict[str, dict[str, Any]], problems: Sequence[bpb.Problem],
                        tokenizer) -> dict[str, int]:
    """Refuses (ContaminatedBenchmark) when a benchmark's solutions are in the train split of a used dataset;
    returns the n-gram count checked per dataset."""
    import numpy as np

    used = sorted({s.data for v in cfg.variants for s in v.stages})
    checked = {}
    cache = storage.join(cfg.out, "ngrams") if storage.is_local(cfg.out) else None
    for name in used:
        ds = next(d for d in cfg.datasets if d.name == name)
        split = storage.join(dataset_root(cfg, ds), ds.phase, mans[name]["splits"]["train"].get("dir", "train"))
        grams = bpb.shard_ngrams(split, cfg.eval.ngram, cache=cache)
        found = bpb.contamination(problems, tokenizer, grams, n=cfg.eval.ngram, overlap=cfg.eval.overlap)
        bpb.refuse_contaminated(found, where=f"dataset {name}: {split}")
        checked[name] = int(np.size(grams))
    return checked


def evaluate_model(cfg: AblationConfig, hf_dir: str, problems: Sequence[bpb.Problem], tokenizer, seq_len: int,
                   digest: str) -> dict[str, Any]:
    """Bits per byte of every benchmark key (cached next to the model as `bpb-<digest>.json`), and pass@1 when
    the proxy has at least `eval.pass_at_1.min_parameters` parameters."""
    cache = storage.join(hf_dir.rstrip("/").rsplit("/", 1)[0], f"bpb-{digest}.json")
    if storage.isfile(cache):
        return json.loads(storage.read_text(cache))
    model = bpb.load_model(hf_dir)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    t0 = time.monotonic()
    result: dict[str, Any] = {"bpb": bpb.bits_per_byte(model, tokenizer, problems, seq_len=seq_len,
                                                       batch_size=cfg.eval.batch_size),
                              "parameters": n_params, "eval_s": 0.0, "pass_at_1": {}}
    del model
    if n_params >= cfg.eval.pass_at_1.min_parameters:
        result["pass_at_1"] = pass_at_1(cfg, hf_dir)
    result["eval_s"] = round(time.monotonic() - t0, 2)
    storage.write_text(cache, json.dumps(result, indent=2, sort_keys=True))
    return result


def pass_at_1(cfg: AblationConfig, hf_dir: str) -> dict[str, float]:
    """pass@1 per benchmark through the sandboxed evaluation (trainer.evaluation), its rows in `eval_results`."""
    pc = cfg.eval.pass_at_1
    ecfg = parse_config(EvalConfig, ["--config", repo_path(pc.config), "--model", hf_dir, "--lake", cfg.lake,
                                     *pc.args])
    metrics = evaluate(ecfg)["metrics"]
    return {k.split("/")[0]: v for k, v in metrics.items() if k.endswith("/pass@1")}


# ------------------------------------------------------------------------------------------------- recording
def mlflow_parent(cfg: AblationConfig) -> str:
    """The ablation's parent run (its id kept in `<out>/state.json`, so a resumed ablation logs into it)."""
    from mlflow import MlflowClient

    state_path = storage.join(cfg.out, "state.json")
    state = json.loads(storage.read_text(state_path)) if storage.isfile(state_path) else {}
    client = MlflowClient(tracking_uri=_tracking_uri(cfg) or DEFAULT_TRACKING_URI)
    run_id = state.get("mlflow_parent")
    if run_id:
        try:
            client.get_run(run_id)
            return run_id
        except Exception:  # another tracking store, or the run was deleted: start a new parent
            run_id = None
    exp = client.get_experiment_by_name(cfg.mlflow_experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.mlflow_experiment)
    run_id = client.create_run(exp_id, run_name=f"ablate-{cfg.name}",
                               tags={"ablate.name": cfg.name, "ablate.kind": "ablation"}).info.run_id
    storage.write_text(state_path, json.dumps({**state, "mlflow_parent": run_id}))
    return run_id


def _tracking_uri(cfg: AblationConfig) -> str | None:
    return cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def log_variant(cfg: AblationConfig, parent: str, variant: str, seed: int, result: dict[str, Any],
                chain: list[dict[str, Any]]) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=_tracking_uri(cfg) or DEFAULT_TRACKING_URI)
    exp_id = client.get_run(parent).info.experiment_id
    run = client.create_run(exp_id, run_name=f"{variant}/seed{seed}", tags={
        "mlflow.parentRunId": parent, "ablate.name": cfg.name, "ablate.kind": "variant", "ablate.variant": variant})
    ts = int(time.time() * 1000)
    metrics = [Metric(f"bpb/{k}", v["bpb"], ts, 0) for k, v in result["bpb"].items()]
    metrics += [Metric(f"pass_at_1/{k}", v, ts, 0) for k, v in result.get("pass_at_1", {}).items()]
    params = [Param("seed", str(seed)), Param("budget_tokens", str(cfg.budget_tokens)),
              Param("parameters", str(result["parameters"])),
              Param("stages", json.dumps([(c["dataset"], c["tokens"]) for c in chain])[:6000])]
    tags = [RunTag("ablate.stage_runs", json.dumps([c.get("mlflow_run_id") for c in chain])[:5000])]
    client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def write_table(rows: list[dict[str, Any]], *, lake_root: str, name: str, ablation: str, lineage_json: str) -> int:
    """Replaces this ablation's rows of the `ablations` Delta table in one commit (delta-rs, as eval_results)."""
    import pyarrow as pa

    schema = pa.schema([
        ("ablation", pa.string()), ("variant", pa.string()), ("seed", pa.int64()), ("benchmark", pa.string()),
        ("bpb", pa.float64()), ("bits", pa.float64()), ("bytes", pa.int64()), ("problems", pa.int64()),
        ("pass_at_1", pa.float64()), ("budget_tokens", pa.int64()), ("tokens_trained", pa.int64()),
        ("stages", pa.string()), ("annotator", pa.string()), ("baseline", pa.string()), ("align_auc", pa.float64()),
        ("parameters", pa.int64()), ("model", pa.string()), ("mlflow_run_id", pa.string()),
        ("train_s", pa.float64()), ("config_hash", pa.string()), ("evaluated_at", pa.timestamp("us", "UTC")),
    ])
    return write_results(pa.Table.from_pylist(rows, schema=schema), lake_root=lake_root, name=name,
                         eval_id=ablation, key="ablation", lineage_json=lineage_json)


def annotator_auc(cfg: AblationConfig) -> dict[str, dict[str, float]]:
    """Each annotator's alignment ROC-AUC per benchmark, from its `annotator.json` (trainer/annotator.py)."""
    out = {}
    for a in cfg.annotators:
        meta = json.loads(storage.read_text(storage.join(a.dir, "annotator.json")))
        out[a.name] = {k.split("/", 1)[1]: float(v) for k, v in meta.get("metrics", {}).items()
                       if k.startswith("align_auc/")}
    return out


def figure2_pairs(cfg: AblationConfig) -> dict[str, tuple[str, str]]:
    """variant -> (annotator, control variant): comparisons whose variant trains on an annotator's selection where
    the baseline trains, stage for stage, on that selection's random control."""
    datasets = {d.name: d for d in cfg.datasets}
    variants = {v.name: v for v in cfg.variants}
    out = {}
    for c in cfg.comparisons:
        a, b = variants[c.variant].stages, variants[c.baseline].stages
        if len(a) != len(b):
            continue
        diff = [(x.data, y.data) for x, y in zip(a, b) if x.data != y.data]
        same_rest = all(x.tokens == y.tokens and x.schedule == y.schedule for x, y in zip(a, b))
        if len(diff) == 1 and same_rest:
            sel, ctl = diff[0]
            if datasets[sel].annotator and datasets[sel].control == ctl:
                out[c.variant] = (datasets[sel].annotator, c.baseline)
    return out


# ------------------------------------------------------------------------------------------------- summary
def summarize(cfg: AblationConfig, results: dict[tuple[str, int], dict[str, Any]],
              aucs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per variant and benchmark: mean/std of bpb over seeds; comparisons with paired 95% intervals; Figure 2."""
    keys = sorted({k for r in results.values() for k in r["bpb"]})
    per_variant: dict[str, dict[str, dict[str, float]]] = {}
    for v in cfg.variants:
        per_variant[v.name] = {}
        for k in keys:
            vals = [results[(v.name, s)]["bpb"][k]["bpb"] for s in cfg.seeds if k in results[(v.name, s)]["bpb"]]
            if vals:
                m, sd = mean_std(vals)
                per_variant[v.name][k] = {"mean": m, "std": sd, "n": len(vals)}
    comparisons = {}
    for c in cfg.comparisons:
        comparisons[c.name] = {k: paired_delta([results[(c.variant, s)]["bpb"][k]["bpb"] for s in cfg.seeds],
                                               [results[(c.baseline, s)]["bpb"][k]["bpb"] for s in cfg.seeds])
                               for k in keys}
    points = []
    for variant, (annotator, control) in figure2_pairs(cfg).items():
        for k, align in bpb.ALIGNMENT.items():
            if k in keys and align in aucs.get(annotator, {}):
                gain = per_variant[control][k]["mean"] - per_variant[variant][k]["mean"]
                points.append({"annotator": annotator, "variant": variant, "control": control, "benchmark": k,
                               "align_auc": aucs[annotator][align], "bpb_gain": gain})
    fig2 = {"points": points, "spearman": spearman([p["align_auc"] for p in points], [p["bpb_gain"] for p in points]),
            "per_annotator": {a: spearman([p["align_auc"] for p in points if p["annotator"] == a],
                                          [p["bpb_gain"] for p in points if p["annotator"] == a])
                              for a in sorted({p["annotator"] for p in points})}}
    return {"variants": per_variant, "comparisons": comparisons, "figure2": fig2}


def headline(summary: dict[str, Any], cfg: AblationConfig) -> dict[str, Any]:
    """`p2_vs_random_bpb_delta` / `p2_vs_random_ci95`: the first Figure-2 pair's comparison, pooled over the
    benchmark keys that are not per-language parts (mean of per-benchmark deltas' ... per benchmark)."""
    pairs = figure2_pairs(cfg)
    comp = next((c for c in cfg.comparisons if c.variant in pairs), None)
    if comp is None:
        return {}
    per = summary["comparisons"][comp.name]
    return {"p2_vs_random_comparison": comp.name,
            "p2_vs_random_bpb_delta": {k: v["delta"] for k, v in per.items()},
            "p2_vs_random_ci95": {k: v["ci95"] for k, v in per.items()}}


# ------------------------------------------------------------------------------------------------- the job
def run(cfg: AblationConfig, *, config_file: str) -> dict[str, Any]:
    """The whole ablation; returns the summary also written to `<out>/result.json`."""
    t_start = time.monotonic()
    storage.makedirs(cfg.out)
    prepare_data(cfg, config_file)
    mans = manifests(cfg)
    plan = make_plan(cfg, mans)
    budget_text = print_budget(cfg, plan, mans)
    tokenizer_dir = mans[cfg.datasets[0].name].get("tokenizer") or storage.join(cfg.shards_root, "tokenizer")
    tokenizer = bpb.load_tokenizer(tokenizer_dir)
    problems = load_eval_problems(cfg)
    checked = check_contamination(cfg, mans, problems, tokenizer)
    print(f"[ablate] contamination: none of {len(problems)} benchmark solutions is in the training shards "
          f"({', '.join(f'{k}: {v:,} {cfg.eval.ngram}-grams' for k, v in checked.items())})", flush=True)
    parent = mlflow_parent(cfg)
    digest = bpb.problems_digest(problems) + config_hash(to_dict(cfg.eval))[:6]

    done: dict[str, dict[str, Any]] = {}
    order = list(plan.stages.values())
    t_train = time.monotonic()
    trained = 0
    for i, stage in enumerate(order, 1):
        was_done = storage.isfile(storage.join(stage.run_dir, "done.json"))
        done[stage.key] = train_stage(cfg, plan, stage, mlflow_parent=parent)
        if not was_done:
            trained += 1
        elapsed = time.monotonic() - t_train
        eta = elapsed / max(trained, 1) * sum(1 for s in order[i:] if not storage.isfile(
            storage.join(s.run_dir, "done.json")))
        took = "reused" if was_done else f"{done[stage.key]['seconds']:.1f}s"
        print(f"[ablate] stage {i}/{len(order)} seed {stage.seed} {stage.index}-{stage.dataset} "
              f"({stage.steps} steps) {took}; "
              f"elapsed {elapsed:.0f}s, ETA {eta:.0f}s", flush=True)

    results: dict[tuple[str, int], dict[str, Any]] = {}
    for (variant, seed), chain in plan.chains.items():
        last = plan.stages[chain[-1]]
        results[(variant, seed)] = evaluate_model(cfg, storage.join(last.run_dir, "hf"), problems, tokenizer,
                                                  plan.seq_len, digest)
        print(f"[ablate] {variant} seed {seed}: " + ", ".join(
            f"{k} {v['bpb']:.4f}" for k, v in results[(variant, seed)]["bpb"].items() if "/" not in k), flush=True)

    aucs = annotator_auc(cfg)
    summary = summarize(cfg, results, aucs)
    pairs = figure2_pairs(cfg)
    cfg_hash = config_hash(cfg)
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for (variant, seed), chain in plan.chains.items():
        stages = [done[k] for k in chain]
        run_id = log_variant(cfg, parent, variant, seed, results[(variant, seed)], stages)
        annotator, baseline = pairs.get(variant, (None, None))
        for k, v in results[(variant, seed)]["bpb"].items():
            align = aucs.get(annotator, {}).get(bpb.ALIGNMENT.get(k, ""), None) if annotator else None
            rows.append({
                "ablation": cfg.name, "variant": variant, "seed": seed, "benchmark": k, "bpb": v["bpb"],
                "bits": v["bits"], "bytes": int(v["bytes"]), "problems": int(v["problems"]),
                "pass_at_1": results[(variant, seed)].get("pass_at_1", {}).get(k), "budget_tokens": cfg.budget_tokens,
                "tokens_trained": sum(s["tokens"] for s in stages),
                "stages": json.dumps([(s["dataset"], s["tokens"]) for s in stages]), "annotator": annotator,
                "baseline": baseline, "align_auc": align, "parameters": results[(variant, seed)]["parameters"],
                "model": stages[-1]["hf"], "mlflow_run_id": run_id,
                "train_s": float(sum(s["seconds"] for s in stages)), "config_hash": cfg_hash, "evaluated_at": now})
    lineage = Lineage("ablate", cfg_hash, {}, extra={"ablation": cfg.name, "config": to_dict(cfg)})
    version = write_table(rows, lake_root=cfg.lake, name=cfg.table, ablation=cfg.name,
                          lineage_json=lineage.to_json())
    wall = time.monotonic() - t_start
    out = {"ablation": cfg.name, "budget_tokens": cfg.budget_tokens, "seeds": list(cfg.seeds),
           "trainings": len(plan.stages), "trainings_without_sharing": plan.trainings_without_sharing,
           "trained_this_run": trained, "wall_s": round(wall, 1),
           "train_s": round(sum(d["seconds"] for d in done.values()), 1),
           "eval_s": round(sum(r["eval_s"] for r in results.values()), 1), "data_s": _data_seconds(cfg),
           "table": cfg.table, "table_version": version,
           "mlflow_parent_run": parent, "budget": budget_text, "controls": control_tokens(cfg, mans), **summary,
           **headline(summary, cfg)}
    _log_parent(cfg, parent, out)
    storage.write_text(storage.join(cfg.out, "result.json"), json.dumps(out, indent=2, sort_keys=True, default=str))
    _print_summary(cfg, out)
    return out


def _data_seconds(cfg: AblationConfig) -> float:
    marker = storage.join(cfg.out, "data.json")
    return float(json.loads(storage.read_text(marker)).get("seconds", 0.0)) if storage.isfile(marker) else 0.0


def _log_parent(cfg: AblationConfig, parent: str, out: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=_tracking_uri(cfg) or DEFAULT_TRACKING_URI)
    ts = int(time.time() * 1000)
    metrics = [Metric("wall_s", out["wall_s"], ts, 0)]
    for name, per in out["comparisons"].items():
        metrics += [Metric(f"delta/{name}/{k}", v["delta"], ts, 0) for k, v in per.items()
                    if not math.isnan(v["delta"])]
    rho = out["figure2"]["spearman"]["rho"]
    if not math.isnan(rho):
        metrics.append(Metric("figure2/spearman_rho", rho, ts, 0))
    client.log_batch(parent, metrics=metrics)
    client.log_text(parent, json.dumps(out, indent=2, sort_keys=True, default=str), "result.json")


def _print_summary(cfg: AblationConfig, out: dict[str, Any]) -> None:
    keys = sorted({k for v in out["variants"].values() for k in v if "/" not in k})
    print("\n[ablate] bits per byte (mean ± std over seeds):")
    print(f"  {'variant':<22}" + "".join(f"{k:>20}" for k in keys))
    for v, per in out["variants"].items():
        print(f"  {v:<22}" + "".join(f"{per[k]['mean']:>12.4f} ± {per[k]['std']:.4f}" for k in keys))
    print("\n[ablate] paired differences (variant - baseline, negative = variant better), 95% interval:")
    for name, per in out["comparisons"].items():
        print(f"  {name}: " + "; ".join(f"{k} {v['delta']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
                                        for k, v in per.items() if "/" not in k))
    print(f"\n[ablate] figure 2: spearman {out['figure2']['spearman']}")
    print(f"[ablate] wall {out['wall_s']} s; table {cfg.table} v{out['table_version']}; result {cfg.out}/result.json",
          flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(AblationConfig, argv, prog="python -m trainer.ablate",
                       description="proxy-model ablations of data recipes under one token budget")
    # The data step reads the same resolved config (command-line overrides included) from the run folder.
    storage.makedirs(cfg.out)
    resolved = storage.join(cfg.out, "ablation.yaml")
    storage.write_text(resolved, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run(cfg, config_file=resolved)

