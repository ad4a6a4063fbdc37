"""The ablation config (`conf/ablate/*.yaml`): a base proxy run, data variants, schedules, and the variants.

One file declares everything an ablation needs, parsed by `codemill.config.parse_config` and validated at once:

- `proxy`: the trainer config every variant trains (`conf/train/*.yaml`, same model code, data module, callbacks
  and MLflow logger as `python -m trainer fit`) and the proxy's size (`model` overrides), batch and seeds;
- `data`: tables the data-preparation step (`python -m spark_jobs.ablation_data`, a subprocess: trainer/ never
  imports spark_jobs) builds from the lake (random-selection control, a top-k selection at the proxy's budget,
  repository-only documents, a second annotator's scores), and the datasets (phase shards) built from them;
- `datasets`: named phase shards a stage trains on: the recipe's own (`<shards_root>/<phase>`) or one built above;
- `schedules`: named learning-rate schedules (`trainer/schedules.py` kinds);
- `variants`: each a list of stages (dataset, tokens, schedule); every variant's stages sum to `budget_tokens`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from codemill.config import repo_path
from trainer.schedules import validate_schedule

TABLE_KINDS = ("top_selection", "random_selection", "repository_documents")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PHASE_NAMES = ("phase1", "phase2", "phase3")


@dataclasses.dataclass
class ProxyConfig:
    """The proxy model: `config` is a trainer YAML; `model` overrides its `model.*` keys (CodeLM arguments)."""

    config: str = "conf/train/debug-phase1.yaml"
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 8  # sequences per device per micro-batch
    # One optimizer step = devices x num_nodes x accumulate_grad_batches x batch_size sequences (all three are
    # passed to the trainer, so the budget check and the run agree).
    devices: int = 1
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    # Further `python -m trainer fit` flags for every stage, e.g. ["--trainer.precision", "bf16-mixed"].
    args: list[str] = dataclasses.field(default_factory=list)

    @property
    def sequences_per_step(self) -> int:
        return self.batch_size * self.devices * self.num_nodes * self.accumulate_grad_batches

    def validate(self) -> list[str]:
        problems = []
        if not os.path.isfile(repo_path(self.config)):
            problems.append(f"config: no trainer config {self.config!r}")
        for key in ("batch_size", "devices", "num_nodes", "accumulate_grad_batches"):
            if getattr(self, key) < 1:
                problems.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "min_lr", "schedule", "warmup_steps", "init_from", "vocab_size", "seq_len"):
            if key in self.model:
                problems.append(f"model.{key}: set by the ablation (schedules, datasets), not by the proxy")
        return problems


@dataclasses.dataclass
class ScheduleSpec:
    name: str = ""
    schedule: str = "linear"
    lr: float = 5.3e-3
    min_lr: float = 0.0
    warmup_steps: int = 0

    def validate(self) -> list[str]:
        return validate_schedule(kind=self.schedule, peak_lr=self.lr, warmup_steps=self.warmup_steps,
                                 min_lr=self.min_lr)


@dataclasses.dataclass
class TableSpec:
    """A table the data step writes into the lake (names must start with `ablate_`, so no recipe table is touched).

    kind `top_selection`: the best-scored files of `scores` per language, filled greedily up to `token_budget` LM
    tokens split by the phase-1 language mix (spark_jobs.ablation_data.top_selection);
    `random_selection`: files in a seeded random order, each language filled to the tokens the `top_selection` of
    the same `scores` and budget actually has there: equal tokens per language and equal `repeat`, only the
    annotator's ranking is gone (the control of paper §4);
    `repository_documents`: `files` grouped by repository only, languages mixed (spark_jobs.documents with one
    language bucket).
    """

    name: str = ""
    kind: str = "top_selection"
    scores: str = "scores"
    files: str = "clean"
    token_budget: int = 0
    repeat: int = 4
    seed: int = 0

    def validate(self) -> list[str]:
        problems = []
        if not self.name.startswith("ablate_") or not NAME.match(self.name):
            problems.append(f"name: {self.name!r} must start with 'ablate_' (lower case, digits, _)")
        if self.kind not in TABLE_KINDS:
            problems.append(f"kind: {self.kind!r} is not one of {TABLE_KINDS}")
        if self.kind != "repository_documents" and self.token_budget <= 0:
            problems.append(f"token_budget: a {self.kind} needs a positive budget, got {self.token_budget}")
        if self.repeat < 1:
            problems.append(f"repeat: must be >= 1, got {self.repeat}")
        return problems


@dataclasses.dataclass
class AnnotatorSpec:
    """An annotator whose selection a variant trains on. `dir` holds `annotator.json` (its alignment ROC-AUC per
    benchmark, paper Fig. 2). With `positives`, the data step trains it first (annotator set from these positive
    sources, `trainer.annotator fit` with `config` and `args`) and scores `files` into `scores`."""

    name: str = ""
    dir: str = ""
    scores: str = "scores"
    positives: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    config: str = "conf/annotator/minilm.yaml"
    args: list[str] = dataclasses.field(default_factory=list)
    files: str = "clean"
    window: int = 256

    def validate(self) -> list[str]:
        problems = []
        if not NAME.match(self.name):
            problems.append(f"name: {self.name!r} must be lower case letters, digits and _")
        if not self.dir:
            problems.append("dir: the annotator folder (annotator.json inside)")
        if self.positives and not self.scores.startswith("ablate_"):
            problems.append(f"scores: an annotator trained here writes its own table; {self.scores!r} must start "
                            "with 'ablate_'")
        return problems


@dataclasses.dataclass
class DatasetSpec:
    """Phase shards a stage trains on: `phase` of `shards_root` as built by the recipe, or, with `sources`, built
    by the data step into `<out>/shards/<name>/<phase>` (same tokenizer and seq_len as `shards_root`)."""

    name: str = ""
    phase: str = "phase1"
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    repeat: int = 1
    # The annotator whose selection this is (Figure-2 analogue), and the dataset of its random control.
    annotator: str | None = None
    control: str | None = None

    def validate(self) -> list[str]:
        problems = []
        if not NAME.match(self.name):
            problems.append(f"name: {self.name!r} must be lower case letters, digits and _")
        if self.phase not in PHASE_NAMES:
            problems.append(f"phase: {self.phase!r} is not one of {PHASE_NAMES}")
        if self.repeat < 1:
            problems.append(f"repeat: must be >= 1, got {self.repeat}")
        return problems


@dataclasses.dataclass
class StageSpec:
    data: str = ""
    tokens: int = 0
    schedule: str = ""


@dataclasses.dataclass
class VariantSpec:
    name: str = ""
    stages: list[StageSpec] = dataclasses.field(default_factory=list)
    description: str = ""

    def validate(self) -> list[str]:
        problems = []
        if not NAME.match(self.name):
            problems.append(f"name: {self.name!r} must be lower case letters, digits and _")
        if not self.stages:
            problems.append("stages: a variant needs at least one stage")
        return problems


@dataclasses.dataclass
class ComparisonSpec:
    """A difference reported with its interval: `variant` minus `baseline` bits per byte, paired by seed."""

    name: str = ""
    variant: str = ""
    baseline: str = ""


@dataclasses.dataclass
class PassAtOneConfig:
    """pass@1 through the sandboxed evaluation (trainer.evaluation), run only for proxies of at least
    `min_parameters`: below that they score 0.0 on every benchmark and the run would only cost time."""

    min_parameters: int = 100_000_000
    config: str = "conf/eval/cpu.yaml"
    args: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        return [] if os.path.isfile(repo_path(self.config)) else [f"config: no file {self.config!r}"]


@dataclasses.dataclass
class EvalSpec:
    """Bits per byte of each benchmark's canonical solutions given their prompts (`trainer/ablate/bpb.py`)."""

    benchmarks: list[str] = dataclasses.field(default_factory=lambda: [
        "humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "bigcodebench", "evoeval", "humaneval_x"])
    # First `limit` problems of each benchmark (tests); None = all.
    limit: int | None = None
    batch_size: int = 32
    # Contamination check: a problem whose canonical solution has at least `overlap` of its token n-grams in a
    # training shard is a copy; a benchmark with any copy is refused.
    ngram: int = 13
    overlap: float = 0.5
    pass_at_1: PassAtOneConfig = dataclasses.field(default_factory=PassAtOneConfig)

    def validate(self) -> list[str]:
        from trainer.ablate.bpb import BENCHMARKS

        problems = []
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        if bad:
            problems.append(f"benchmarks: unknown {bad}; known: {list(BENCHMARKS)}")
        if self.ngram < 4:
            problems.append(f"ngram: must be >= 4, got {self.ngram}")
        if not 0 < self.overlap <= 1:
            problems.append(f"overlap: must be in (0, 1], got {self.overlap}")
        return problems


@dataclasses.dataclass
class AblationConfig:
    name: str = "ablation"
    lake: str = "lake"
    shards_root: str = "shards"
    out: str = "ablate"
    budget_tokens: int = 0
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3])
    proxy: ProxyConfig = dataclasses.field(default_factory=ProxyConfig)
    tables: list[TableSpec] = dataclasses.field(default_factory=list)
    annotators: list[AnnotatorSpec] = dataclasses.field(default_factory=list)
    datasets: list[DatasetSpec] = dataclasses.field(default_factory=list)
    schedules: list[ScheduleSpec] = dataclasses.field(default_factory=list)
    variants: list[VariantSpec] = dataclasses.field(default_factory=list)
    comparisons: list[ComparisonSpec] = dataclasses.field(default_factory=list)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    mlflow_experiment: str = "codemill-ablate"
    mlflow_tracking_uri: str | None = None
    # The data step's Spark/pipeline overlay (its session settings), passed to spark_jobs.ablation_data.
    data_args: list[str] = dataclasses.field(default_factory=list)
    table: str = "ablations"

    def validate(self) -> list[str]:
        problems = []
        if not NAME.match(self.name):
            problems.append(f"name: {self.name!r} must be lower case letters, digits and _")
        if self.budget_tokens <= 0:
            problems.append(f"budget_tokens: must be positive, got {self.budget_tokens}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: give distinct seeds, got {self.seeds}")
        for kind, items in (("tables", self.tables), ("annotators", self.annotators), ("datasets", self.datasets),
                            ("schedules", self.schedules), ("variants", self.variants),
                            ("comparisons", self.comparisons)):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                problems.append(f"{kind}: duplicate names {dup}")
            for i, item in enumerate(items):
                problems.extend(f"{kind}.{i}.{p}" for p in (item.validate() if hasattr(item, "validate") else []))
        datasets = {d.name: d for d in self.datasets}
        schedules = {s.name for s in self.schedules}
        annotators = {a.name for a in self.annotators}
        for i, d in enumerate(self.datasets):
            if d.annotator is not None and d.annotator not in annotators:
                problems.append(f"datasets.{i}.annotator: {d.annotator!r} is not among annotators "
                                f"{sorted(annotators)}")
            if d.control is not None and d.control not in datasets:
                problems.append(f"datasets.{i}.control: {d.control!r} is not a dataset")
        for i, v in enumerate(self.variants):
            total = 0
            for j, s in enumerate(v.stages):
                key = f"variants.{i}.stages.{j}"
                if s.data not in datasets:
                    problems.append(f"{key}.data: {s.data!r} is not a dataset ({sorted(datasets)})")
                if s.schedule not in schedules:
                    problems.append(f"{key}.schedule: {s.schedule!r} is not a schedule ({sorted(schedules)})")
                if s.tokens <= 0:
                    problems.append(f"{key}.tokens: must be positive, got {s.tokens}")
                total += s.tokens
            if v.stages and total != self.budget_tokens:
                problems.append(f"variants.{i}.stages: {v.name} trains {total:,} tokens, the budget is "
                                f"{self.budget_tokens:,} (every variant gets the same budget)")
        names = {v.name for v in self.variants}
        for i, c in enumerate(self.comparisons):
            for key in ("variant", "baseline"):
                if getattr(c, key) not in names:
                    problems.append(f"comparisons.{i}.{key}: {getattr(c, key)!r} is not a variant")
        return problems
