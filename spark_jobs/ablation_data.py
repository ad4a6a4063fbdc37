"""The data variants of a proxy-model ablation, built from the lake's tables with the recipe's own transforms.

    python -m spark_jobs.ablation_data --ablation demo_out/ablate/demo/ablation.yaml

`python -m trainer.ablate` runs this in its own process (trainer/ never imports spark_jobs) with the resolved
ablation config (`trainer/ablate/config.py`). It builds, in order, what the config declares and skips what is up to
date (`<out>/data_state.json` holds the hash of each item's spec and its inputs' versions):

1. `annotators` with `positives`: the annotator's training and alignment sets (`annotate_dataset.build_training_sets`
   into `ablate_<name>_train` / `ablate_<name>_alignment`), its training (`python -m trainer.annotator fit`), and the
   scores of every file (`annotate.run_scoring` into the annotator's `scores` table); training and scoring are
   marked done separately;
2. `tables`: `top_selection` = `select_hq.select_top_per_language` on an annotator's scores at the proxy's budget;
   `random_selection` = the same with every score replaced by a seeded hash (equal tokens per language and equal
   repeats: only the ranking differs, the control that isolates the annotator); `repository_documents` =
   `documents.build_documents` with every file in one language bucket, so files are grouped by repository only;
3. `datasets` with `sources`: the phase shards (`tokenize_shards.run_phase`) under `<out>/shards/<dataset>`, with the
   recipe's tokenizer and sequence length; their rows go to `ablate_shards_<dataset>`, never to the recipe's `shards`.

Every table it writes starts with `ablate_`, so no table of the recipe is touched.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from codemill import storage
from codemill.config import REPO_ROOT, config_hash, load_config, parse_config, repo_path, to_dict
from codemill.lake import Lake, Lineage
from codemill.session import get_spark
from spark_jobs.annotate import ScoreConfig, run_scoring
from spark_jobs.annotate_dataset import DatasetConfig, PositiveSource, build_training_sets
from spark_jobs.documents import build_documents
from spark_jobs.mixtures import PhaseConfig, SourceConfig
from spark_jobs.select_hq import attach_files, select_top_per_language
from spark_jobs.tokenize_shards import TokenizeConfig, TokenizerConfig, ensure_tokenizer, run_phase
from trainer.ablate.config import AblationConfig, AnnotatorSpec, DatasetSpec, TableSpec
from trainer.annotator_model import META_FILE
from trainer.data import read_manifest

HASH_BUCKETS = 1_000_000
# Files of every language share this bucket in repository-only documents.
MIXED = "mixed"


@dataclasses.dataclass
class AblationDataConfig:
    ablation: str = ""
    # Tokenization of the built datasets (the recipe's tokenizer and seq_len are read from its phase1 manifest).
    val_fraction: float = 0.02
    num_shards: int = 2
    seed: int = 1234

    def validate(self) -> list[str]:
        return [] if storage.isfile(self.ablation) else [f"ablation: no file {self.ablation!r}"]


# ---------------------------------------------------------------------- transforms
def random_scores(scores, *, seed: int):
    """The `scores` rows with `score` replaced by a seeded hash of the file id, uniform in [0, 1)."""
    from pyspark.sql import functions as F

    u = F.pmod(F.xxhash64(F.lit(seed), F.lit("ablate-random"), F.col("doc_id")), F.lit(HASH_BUCKETS))
    return scores.withColumn("score", (u / F.lit(float(HASH_BUCKETS))).cast("double"))


def repository_documents(files, **documents_config):
    """Documents of files grouped by repository only (languages mixed, in one seeded random order)."""
    from pyspark.sql import functions as F

    return build_documents(files.withColumn("lang", F.lit(MIXED)), **documents_config)


def selection(scores, files, *, token_budget: int, repeat: int):
    return select_top_per_language(scores, token_budget=token_budget, repeat=repeat).transform(attach_files, files)


class _ShardsTableAs:
    """A lake whose `shards` table is another one, so a dataset's shard rows never replace the recipe's."""

    def __init__(self, lake: Lake, table: str):
        self._lake, self._table = lake, table

    def __getattr__(self, name: str):
        return getattr(self._lake, name)

    def _name(self, name: str) -> str:
        return self._table if name == "shards" else name

    def exists(self, name: str) -> bool:
        return self._lake.exists(self._name(name))

    def replace(self, name: str, *args, **kwargs):
        return self._lake.replace(self._name(name), *args, **kwargs)

    def overwrite(self, name: str, *args, **kwargs):
        return self._lake.overwrite(self._name(name), *args, **kwargs)


# ---------------------------------------------------------------------- steps
class _State:
    """Spec hashes of what was built (`<out>/data_state.json`): an item is rebuilt when its hash changes."""

    def __init__(self, out: str):
        self.path = storage.join(out, "data_state.json")
        self.items = json.loads(storage.read_text(self.path)) if storage.isfile(self.path) else {}

    def fresh(self, item: str, digest: str) -> bool:
        return self.items.get(item) == digest

    def mark(self, item: str, digest: str) -> None:
        self.items[item] = digest
        storage.write_text(self.path, json.dumps(self.items, indent=2, sort_keys=True))


def train_annotator(spark, lake: Lake, a: AnnotatorSpec, lineage: Lineage) -> None:
    """The annotator's training and alignment sets, then `python -m trainer.annotator fit` exporting to `a.dir`."""
    train, align = f"ablate_{a.name}_train", f"ablate_{a.name}_alignment"
    dcfg = DatasetConfig(positives=[PositiveSource(**p) for p in a.positives], output_table=train,
                         alignment_table=align)
    build_training_sets(spark, lake, dcfg, lineage)
    cmd = [sys.executable, "-m", "trainer.annotator", "fit", "--config", repo_path(a.config), "--data.lake",
           lake.root, "--data.train_table", train, "--data.alignment_table", align, "--model.export_dir", a.dir,
           *a.args]
    print("  $ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)


def score_with(spark, lake: Lake, a: AnnotatorSpec, lineage: Lineage) -> int:
    return run_scoring(spark, lake, ScoreConfig(input_table=a.files, output_table=a.scores, annotator=a.dir,
                                                window=a.window), lineage)


def build_table(lake: Lake, t: TableSpec, lineage: Lineage) -> int:
    files = lake.read(t.files)
    if t.kind == "repository_documents":
        out = repository_documents(files)
        return lake.overwrite(t.name, out, lineage=lineage, allow_schema_change=True)
    scores = lake.read(t.scores)
    if t.kind == "random_selection":
        scores = random_scores(scores, seed=t.seed)
    out = selection(scores, files, token_budget=t.token_budget, repeat=t.repeat)
    return lake.overwrite(t.name, out, lineage=lineage, allow_schema_change=True)


def build_dataset(spark, lake: Lake, cfg: AblationConfig, dcfg: AblationDataConfig, ds: DatasetSpec,
                  lineage: Lineage) -> dict[str, Any]:
    recipe, problems = read_manifest(cfg.shards_root, "phase1")
    if problems:
        raise FileNotFoundError(f"shards_root: {problems}")
    root = storage.join(cfg.out, "shards", ds.name)
    phase = PhaseConfig(name=ds.phase, sources=[SourceConfig(**s) for s in ds.sources], repeat=ds.repeat)
    tcfg = TokenizeConfig(shards_root=root, phases=[phase], build=[ds.phase], seq_len=int(recipe["seq_len"]),
                          val_fraction=dcfg.val_fraction, num_shards=dcfg.num_shards, seed=dcfg.seed,
                          tokenizer=TokenizerConfig(load=recipe.get("tokenizer")
                                                    or storage.join(cfg.shards_root, "tokenizer")))
    view = _ShardsTableAs(lake, f"ablate_shards_{ds.name}")
    tok, tokenizer_path = ensure_tokenizer(tcfg, view)
    broadcast = spark.sparkContext.broadcast(tok.to_str())
    return run_phase(spark, view, tcfg, phase, tok=tok, tokenizer_path=tokenizer_path, tokenizer_json=broadcast,
                     lineage=lineage)


def run(spark, cfg: AblationConfig, dcfg: AblationDataConfig) -> dict[str, Any]:
    lake = Lake.open(spark, cfg.lake)
    state = _State(cfg.out)
    done: dict[str, Any] = {}

    def digest(spec: Any, tables: Sequence[str]) -> str:
        versions = {t: lake.version(t) for t in tables if lake.exists(t)}
        return config_hash({"spec": to_dict(spec), "versions": versions, "data": to_dict(dcfg)})

    def lineage(job: str, spec: Any, tables: Sequence[str]) -> Lineage:
        return Lineage(f"ablation_data:{job}", config_hash(to_dict(spec)),
                       {t: lake.version(t) for t in tables if lake.exists(t)}, extra={"ablation": cfg.name})

    for a in cfg.annotators:
        if not a.positives:
            continue
        d = digest(a, [a.files])
        if state.fresh(f"annotator:{a.name}", d) and lake.exists(a.scores):
            continue
        # Training and scoring are marked separately: an interrupted scoring does not train the annotator again.
        if not (state.fresh(f"annotator-train:{a.name}", d) and storage.isfile(storage.join(a.dir, META_FILE))):
            print(f"[ablation_data] annotator {a.name}: training", flush=True)
            train_annotator(spark, lake, a, lineage(f"annotator:{a.name}", a, [a.files]))
            state.mark(f"annotator-train:{a.name}", d)
        print(f"[ablation_data] annotator {a.name}: scoring {a.files}", flush=True)
        score_with(spark, lake, a, lineage(f"annotator:{a.name}", a, [a.files]))
        state.mark(f"annotator:{a.name}", d)
        done[f"annotator:{a.name}"] = a.scores
    for t in cfg.tables:
        inputs = [t.files] + ([t.scores] if t.kind != "repository_documents" else [])
        d = digest(t, inputs)
        if state.fresh(f"table:{t.name}", d) and lake.exists(t.name):
            continue
        print(f"[ablation_data] table {t.name} ({t.kind})", flush=True)
        done[f"table:{t.name}"] = build_table(lake, t, lineage(f"table:{t.name}", t, inputs))
        state.mark(f"table:{t.name}", d)
    for ds in cfg.datasets:
        if not ds.sources:
            continue
        tables = sorted({s.get("table", "documents") for s in ds.sources})
        d = digest(ds, tables)
        manifest = storage.join(cfg.out, "shards", ds.name, ds.phase, "manifest.json")
        if state.fresh(f"dataset:{ds.name}", d) and storage.isfile(manifest):
            continue
        print(f"[ablation_data] dataset {ds.name} ({ds.phase} from {tables})", flush=True)
        m = build_dataset(spark, lake, cfg, dcfg, ds, lineage(f"dataset:{ds.name}", ds, tables))
        done[f"dataset:{ds.name}"] = {"tokens": m["tokens"], "repeat": m["repeat"],
                                      "tokens_per_language": m["tokens_per_language"]}
        state.mark(f"dataset:{ds.name}", d)
    return done


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    dcfg = parse_config(AblationDataConfig, argv, prog="spark_jobs.ablation_data", description=__doc__)
    cfg = load_config(AblationConfig, dcfg.ablation)
    spark = get_spark("codemill-ablation-data")
    done = run(spark, cfg, dcfg)
    print(json.dumps({"ablation_data": done}, default=str, sort_keys=True), flush=True)
    return done


if __name__ == "__main__":
    main()

