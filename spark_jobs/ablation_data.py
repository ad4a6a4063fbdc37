"""The data variants of a proxy-model ablation, built from the lake's tables with the recipe's own transforms.

    python -m spark_jobs.ablation_data --ablation demo_out/ablate/demo/ablation.yaml

`python -m trainer.ablate` runs this in its own process (trainer/ never imports spark_jobs) with the resolved
ablation config (`trainer/ablate/config.py`). It builds, in order, what the config declares and skips what is up to
date (`<out>/data_state.json` holds the hash of each item's spec and its inputs' versions):

1. `annotators` with `positives`: the annotator's training and alignment sets (`annotate_dataset.build_training_sets`
   into `ablate_<name>_train` / `ablate_<name>_alignment`), its training (`python -m trainer.annotator fit`), and the
   scores of every file (`annotate.run_scoring` into the annotator's `scores` table); training and scoring are
   marked done separately;
2. `tables`: `top_selection` = an annotator's best files per language at the proxy's budget, counted in the
   recipe's LM tokens (`shard_transforms.count_tokens`, what the shards hold) and split by the phase-1 language mix
   (`select_hq.language_budgets`); `random_selection` = the control: files in a seeded random order, each language
   filled to the tokens the annotator's selection actually has there (equal tokens per language and equal repeats:
   only the ranking differs, the control that isolates the annotator). Both fill a language greedily in their
   order, skipping a file that would overflow the language's budget and going on with smaller ones (`greedy_fill`);
   `repository_documents` = `documents.build_documents` with every file in one language bucket, so files are
   grouped by repository only;
3. `datasets` with `sources`: the phase shards (`tokenize_shards.run_phase`) under `<out>/shards/<dataset>`, with the
   recipe's tokenizer and sequence length; their rows go to `ablate_shards_<dataset>`, never to the recipe's `shards`.

Every table it writes starts with `ablate_`, so no table of the recipe is touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from codemill import storage
from codemill.config import REPO_ROOT, config_hash, load_config, parse_config, repo_path, to_dict
from codemill.lake import Lake, Lineage
from codemill.session import get_spark
from spark_jobs import tokenizer as T
from spark_jobs.annotate import ScoreConfig, run_scoring
from spark_jobs.annotate_dataset import DatasetConfig, PositiveSource, build_training_sets
from spark_jobs.documents import build_documents
from spark_jobs.mixtures import PhaseConfig, SourceConfig
from spark_jobs.select_hq import attach_files, language_budgets
from spark_jobs.shard_transforms import count_tokens
from spark_jobs.tokenize_shards import TokenizeConfig, TokenizerConfig, ensure_tokenizer, run_phase
from trainer.ablate.config import AblationConfig, AnnotatorSpec, DatasetSpec, TableSpec
from trainer.annotator_model import META_FILE
from trainer.data import read_manifest

HASH_BUCKETS = 1_000_000
# Raised when what a spec builds changes (2: selections filled greedily in LM tokens): items built before rebuild.
BUILD_VERSION = 2
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


def greedy_fill(ranked, budgets, *, repeat: int):
    """ranked (doc_id, lang, score, n_tokens), budgets (lang, budget) -> doc_id, lang, score, n_tokens, repeat.

    Per language, files in descending `score` (then `doc_id`) are taken while they fit in the language's budget; a
    file that would overflow it is skipped and the fill goes on with the files after it, so a language ends below
    its budget by less than its smallest file left out. A language without a budget row gets nothing.

    Why not `select_hq.select_top_per_language`: the recipe's phase 2 stops at the first file past the budget, which
    at a proxy's budget (tens of thousands of tokens) can overshoot it several times over with one large file, and a
    control and its selection would then differ by a large file each. The prefix before the first overflow is a
    running sum (one sort per language); after it, whether a file fits depends on which of the ones before it were
    taken, a sequential rule no window expresses, so only the files no larger than the remaining gap (all that
    could still fit) go through a small pandas loop per language.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [F.col("score").desc(), F.col("doc_id")]
    through = Window.partitionBy("lang").orderBy(*order).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ranked = (ranked.select("doc_id", "lang", "score", "n_tokens")
              .join(F.broadcast(budgets.select("lang", F.col("budget").cast("double"))), "lang")
              .withColumn("through", F.sum("n_tokens").over(through)))
    prefix = ranked.where(F.col("through") <= F.col("budget"))
    gaps = (ranked.select("lang", "budget").distinct()
            .join(prefix.groupBy("lang").agg(F.sum("n_tokens").alias("taken")), "lang", "left")
            .select("lang", (F.col("budget") - F.coalesce(F.col("taken"), F.lit(0))).alias("gap")))
    rest = (ranked.where(F.col("through") > F.col("budget")).drop("budget", "through")
            .join(F.broadcast(gaps), "lang").where(F.col("n_tokens") <= F.col("gap")))
    cols = ["doc_id", "lang", "score", "n_tokens"]
    filled = rest.groupBy("lang").applyInPandas(_fill_gap, "doc_id string, lang string, score double, n_tokens long")
    return prefix.select(*cols).unionByName(filled.select(*cols)).withColumn("repeat", F.lit(repeat))


def _fill_gap(pdf):
    """One language's files after the first overflow (all no larger than the gap): taken in rank order while each
    still fits in what is left of the gap."""
    pdf = pdf.sort_values(["score", "doc_id"], ascending=[False, True])
    left = float(pdf["gap"].iloc[0]) if len(pdf) else 0.0
    keep = []
    for n in pdf["n_tokens"].tolist():
        keep.append(n <= left)
        left -= n if keep[-1] else 0
    return pdf.loc[keep, ["doc_id", "lang", "score", "n_tokens"]]


def top_selection(counts, *, token_budget: int, repeat: int):
    """counts (doc_id, lang, score, n_tokens in LM tokens) -> the best files per language, the budget split by each
    language's share of the counted tokens (`select_hq.language_budgets`, the phase-1 mix), greedily filled."""
    return greedy_fill(counts, language_budgets(counts, token_budget=token_budget), repeat=repeat)


def random_control(counts, selected, *, seed: int, repeat: int):
    """The control of `selected` (a `top_selection` of the same `counts`): files in a seeded random order, each
    language filled to the tokens `selected` actually has in it (not the nominal budget), so the two differ per
    language by less than the smallest file the control leaves out."""
    from pyspark.sql import functions as F

    targets = selected.groupBy("lang").agg(F.sum("n_tokens").alias("budget"))
    return greedy_fill(random_scores(counts, seed=seed), targets, repeat=repeat)


def tokens_per_language(selected) -> dict[str, int]:
    from pyspark.sql import functions as F

    return {r["lang"]: int(r["tokens"])
            for r in selected.groupBy("lang").agg(F.sum("n_tokens").alias("tokens")).collect()}


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


def file_lm_tokens(spark, files, *, tokenizer: str):
    """doc_id, n_tokens: each file's LM tokens of `tokenizer` (the recipe's), its ids + end of document, what the
    shards will hold for it (`shard_transforms.count_tokens`). The annotator's `scores.n_tokens` are its WordPiece
    tokens, which drop whitespace: not what the proxy trains on."""
    tok = T.load(tokenizer)
    tok_json = tok.to_str()
    return (files.select("doc_id", "content")
            .transform(count_tokens, text_column="content", tokenizer_json=spark.sparkContext.broadcast(tok_json),
                       tokenizer_key=hashlib.sha256(tok_json.encode()).hexdigest()[:16],
                       eos_id=T.special_ids(tok)["eos"])
            .select("doc_id", "n_tokens"))


def recipe_manifest(cfg: AblationConfig) -> dict[str, Any]:
    """The recipe's phase-1 manifest: its tokenizer and sequence length are the ablation's."""
    recipe, problems = read_manifest(cfg.shards_root, "phase1")
    if problems:
        raise FileNotFoundError(f"shards_root: {problems}")
    return recipe


def recipe_tokenizer(cfg: AblationConfig, recipe: dict[str, Any] | None = None) -> str:
    """The recipe's tokenizer (`recipe`: its phase-1 manifest, when already read)."""
    recipe = recipe_manifest(cfg) if recipe is None else recipe
    return recipe.get("tokenizer") or storage.join(cfg.shards_root, "tokenizer")


def build_table(lake: Lake, t: TableSpec, lineage: Lineage, *, file_tokens=None) -> dict[str, Any]:
    """Writes one table; returns its version and, for a selection, its LM tokens per language (`file_tokens`:
    doc_id, n_tokens of `t.files`, from `file_lm_tokens`), and for a control also those of the selection it was
    matched to."""
    files = lake.read(t.files)
    if t.kind == "repository_documents":
        out = repository_documents(files)
        return {"version": lake.overwrite(t.name, out, lineage=lineage, allow_schema_change=True)}
    counts = lake.read(t.scores).select("doc_id", "lang", "score").join(file_tokens, "doc_id")
    top = top_selection(counts, token_budget=t.token_budget, repeat=t.repeat).persist()
    out = top
    try:
        info: dict[str, Any] = {"tokens_per_language": tokens_per_language(top)}
        if t.kind == "random_selection":
            out = random_control(counts, top, seed=t.seed, repeat=t.repeat).persist()
            info = {"tokens_per_language": tokens_per_language(out),
                    "matched_to_per_language": info["tokens_per_language"]}
        info["version"] = lake.overwrite(t.name, out.transform(attach_files, files), lineage=lineage,
                                         allow_schema_change=True)
    finally:
        top.unpersist()
        out.unpersist()
    print(f"[ablation_data] table {t.name}: {describe_tokens(info)}", flush=True)
    return info


def describe_tokens(info: dict[str, Any]) -> str:
    got = info["tokens_per_language"]
    want = info.get("matched_to_per_language")
    if want is None:
        return f"{sum(got.values()):,} LM tokens " + str(dict(sorted(got.items())))
    langs = sorted(set(got) | set(want))
    per = ", ".join(f"{lang} {got.get(lang, 0):,}/{want.get(lang, 0):,}" for lang in langs)
    total = sum(got.values()) / max(sum(want.values()), 1)
    return (f"control {sum(got.values()):,} LM tokens vs selection {sum(want.values()):,} (ratio {total:.3f}); "
            f"per language control/selection: {per}")


def build_dataset(spark, lake: Lake, cfg: AblationConfig, dcfg: AblationDataConfig, ds: DatasetSpec,
                  lineage: Lineage) -> dict[str, Any]:
    recipe = recipe_manifest(cfg)
    root = storage.join(cfg.out, "shards", ds.name)
    phase = PhaseConfig(name=ds.phase, sources=[SourceConfig(**s) for s in ds.sources], repeat=ds.repeat)
    tcfg = TokenizeConfig(shards_root=root, phases=[phase], build=[ds.phase], seq_len=int(recipe["seq_len"]),
                          val_fraction=dcfg.val_fraction, num_shards=dcfg.num_shards, seed=dcfg.seed,
                          tokenizer=TokenizerConfig(load=recipe_tokenizer(cfg, recipe)))
    view = _ShardsTableAs(lake, f"ablate_shards_{ds.name}")
    tok, tokenizer_path = ensure_tokenizer(tcfg, view)
    broadcast = spark.sparkContext.broadcast(tok.to_str())
    return run_phase(spark, view, tcfg, phase, tok=tok, tokenizer_path=tokenizer_path, tokenizer_json=broadcast,
                     lineage=lineage)


def run(spark, cfg: AblationConfig, dcfg: AblationDataConfig) -> dict[str, Any]:
    from pyspark import StorageLevel

    lake = Lake.open(spark, cfg.lake)
    state = _State(cfg.out)
    done: dict[str, Any] = {}

    def digest(spec: Any, tables: Sequence[str]) -> str:
        versions = {t: lake.version(t) for t in tables if lake.exists(t)}
        return config_hash({"spec": to_dict(spec), "versions": versions, "data": to_dict(dcfg),
                            "build": BUILD_VERSION})

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
    file_tokens: dict[str, Any] = {}
    for t in cfg.tables:
        inputs = [t.files] + ([t.scores] if t.kind != "repository_documents" else [])
        d = digest(t, inputs)
        if state.fresh(f"table:{t.name}", d) and lake.exists(t.name):
            continue
        print(f"[ablation_data] table {t.name} ({t.kind})", flush=True)
        if t.kind != "repository_documents" and t.files not in file_tokens:
            # Persisted once per files table: every selection joins its scores to the same counts, and each read
            # would otherwise tokenize the whole corpus again.
            file_tokens[t.files] = file_lm_tokens(spark, lake.read(t.files), tokenizer=recipe_tokenizer(cfg)
                                                  ).persist(StorageLevel.MEMORY_AND_DISK)
        done[f"table:{t.name}"] = build_table(lake, t, lineage(f"table:{t.name}", t, inputs),
                                              file_tokens=file_tokens.get(t.files))
        state.mark(f"table:{t.name}", d)
    for counted in file_tokens.values():
        counted.unpersist()
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

