"""Selects the highest-scored files per language into `selected_hq`, the phase-2 data (paper §2.3).

    python -m spark_jobs.pipeline --stages tokenizer select --lake lake --select.token_budget 12500000000

Tokens are the LM tokenizer's (the one the phase shards use, `<tokenize.shards_root>/tokenizer`, written by the
pipeline's `tokenizer` stage): each scored file is counted as the phase-2 shards will hold it (`count_tokens`: its
ids + `<|endoftext|>`), not in the annotator's WordPiece tokens (`scores.n_tokens`, which drop whitespace).
Each language gets the share of `token_budget` it has in phase 1 (LM tokens of every scored phase-1 file), so
phase 2 keeps phase 1's language mix; within a language the best-scored files are taken
until its share is reached. No global sort: per language, approximate score quantiles cut the files into
`n_buckets` buckets; token totals per bucket (a tiny table) give the bucket where the budget runs out; buckets
above it are taken whole and only the files of that one bucket are ranked. A language therefore gets at least its
share and less than its share plus one file (or all its files when the budget exceeds the corpus). `repeat` is the
number of passes phase 2 makes over the selection (paper: 4). Measured on the built shards, each language's
tokens in the phase-2 `manifest.json` lie within one file of its share (tests/spark_jobs/test_select_hq.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spark_jobs import tokenizer as T
from spark_jobs.shard_transforms import count_tokens

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SELECTED_COLUMNS = ["doc_id", "lang", "repo", "path", "content", "score", "n_tokens", "repeat"]


@dataclass
class SelectConfig:
    scores_table: str = "scores"
    files_table: str = "clean"
    output_table: str = "selected_hq"
    # Paper §2.3: the top 12.5B tokens, repeated 4 times in phase 2. LM tokens (those of the phase shards).
    token_budget: int = 12_500_000_000
    # The LM tokenizer whose tokens the budget counts (folder or tokenizer.json); None: the pipeline's
    # <tokenize.shards_root>/tokenizer, which its `tokenizer` stage writes before this one.
    tokenizer: str | None = None
    repeat: int = 4
    n_buckets: int = 1000

    def validate(self) -> list[str]:
        problems = []
        if self.token_budget <= 0:
            problems.append(f"token_budget: must be positive, got {self.token_budget}")
        if self.repeat < 1:
            problems.append(f"repeat: must be at least 1, got {self.repeat}")
        if not 2 <= self.n_buckets <= 10000:
            problems.append(f"n_buckets: between 2 and 10000, got {self.n_buckets}")
        return problems


def language_budgets(scores: DataFrame, *, token_budget: int) -> DataFrame:
    """lang, lang_tokens, budget: each language's share of the budget by its share of the scored tokens."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per_lang = scores.groupBy("lang").agg(F.sum("n_tokens").alias("lang_tokens"))
    total = F.sum("lang_tokens").over(Window.partitionBy())
    return per_lang.select(
        "lang", "lang_tokens",
        F.least(F.col("lang_tokens").cast("double"),
                F.col("lang_tokens") / total * F.lit(float(token_budget))).alias("budget"),
    )


def select_top_per_language(scores: DataFrame, *, token_budget: int, repeat: int = 4,
                            n_buckets: int = 1000) -> DataFrame:
    """scores (doc_id, lang, score, n_tokens) -> doc_id, lang, score, n_tokens, repeat of the selected files."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    budgets = language_budgets(scores, token_budget=token_budget)
    probs = F.array(*[F.lit(i / n_buckets) for i in range(1, n_buckets)])
    edges = scores.groupBy("lang").agg(F.percentile_approx("score", probs, 10 * n_buckets).alias("edges"))
    # bucket = how many quantile edges lie at or below the score: 0 (worst) .. n_buckets - 1 (best).
    bucketed = (scores.join(F.broadcast(edges), "lang")
                .withColumn("bucket", F.size(F.filter("edges", lambda e: e <= F.col("score"))))
                .drop("edges"))
    per_bucket = bucketed.groupBy("lang", "bucket").agg(F.sum("n_tokens").alias("bucket_tokens"))
    above = Window.partitionBy("lang").orderBy(F.col("bucket").desc()).rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    plan = (per_bucket.join(budgets, "lang")
            .withColumn("tokens_through", F.sum("bucket_tokens").over(above))
            .withColumn("tokens_above", F.col("tokens_through") - F.col("bucket_tokens"))
            .where(F.col("tokens_above") < F.col("budget"))
            .withColumn("whole", F.col("tokens_through") <= F.col("budget"))
            .select("lang", "bucket", "tokens_above", "budget", "whole"))
    rows = bucketed.join(F.broadcast(plan), ["lang", "bucket"])
    whole = rows.where("whole")
    # Only the bucket where the budget runs out is ranked: files in score order while the tokens before them
    # are still under the budget (the last one may cross it).
    rank = Window.partitionBy("lang").orderBy(F.col("score").desc(), F.col("doc_id")).rowsBetween(
        Window.unboundedPreceding, -1)
    partial = (rows.where(~F.col("whole"))
               .withColumn("before", F.coalesce(F.sum("n_tokens").over(rank), F.lit(0)))
               .where(F.col("tokens_above") + F.col("before") < F.col("budget")))
    cols = ["doc_id", "lang", "score", "n_tokens"]
    return whole.select(*cols).unionByName(partial.select(*cols)).withColumn("repeat", F.lit(repeat))


def lm_token_counts(scores: DataFrame, files: DataFrame, *, tokenizer_json: Any, tokenizer_key: str,
                    eos_id: int) -> DataFrame:
    """doc_id, lang, score, n_tokens: the scored files with their LM token counts (`count_tokens` on the files'
    content; `tokenizer_json` as for `shard_transforms.tokenize_documents`). Scored files without content in
    `files` are left out."""
    joined = scores.select("doc_id", "lang", "score").join(files.select("doc_id", "content"), "doc_id")
    return (joined.transform(count_tokens, text_column="content", tokenizer_json=tokenizer_json,
                             tokenizer_key=tokenizer_key, eos_id=eos_id)
            .select("doc_id", "lang", "score", "n_tokens"))


def attach_files(selected: DataFrame, files: DataFrame) -> DataFrame:
    """Adds repo, path and content from the phase-1 files, so the tokenizer can build phase-2 documents."""
    return selected.join(files.select("doc_id", "repo", "path", "content"), "doc_id").select(*SELECTED_COLUMNS)


def selection_stats(scores: DataFrame, selected: DataFrame, *, token_budget: int) -> DataFrame:
    """Per language: tokens scored, budget, tokens and files selected, phase-1 and selected share."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sel = selected.groupBy("lang").agg(F.sum("n_tokens").alias("selected_tokens"), F.count("*").alias("files"))
    all_ = Window.partitionBy()
    return (language_budgets(scores, token_budget=token_budget).join(sel, "lang", "left")
            .fillna(0, ["selected_tokens", "files"])
            .withColumn("phase1_share", F.col("lang_tokens") / F.sum("lang_tokens").over(all_))
            .withColumn("selected_share", F.col("selected_tokens") / F.sum("selected_tokens").over(all_))
            .orderBy("lang"))


def run_selection(lake, cfg: SelectConfig, lineage, *, tokenizer: str) -> int:
    """The stage: `cfg.output_table` from the scores and the files they score, the budget in the LM tokens of
    `tokenizer`; returns the new version."""
    from pyspark import StorageLevel

    tok = T.load(tokenizer)
    tok_json = tok.to_str()
    files = lake.read(cfg.files_table)
    # Persisted: the selection reads the counts several times (quantiles, bucket totals, ranking, stats), and
    # each read would otherwise tokenize every scored file again. Only ids, scores and counts are kept.
    scores = lm_token_counts(lake.read(cfg.scores_table), files,
                             tokenizer_json=lake.spark.sparkContext.broadcast(tok_json),
                             tokenizer_key=hashlib.sha256(tok_json.encode()).hexdigest()[:16],
                             eos_id=T.special_ids(tok)["eos"]).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        selected = scores.transform(select_top_per_language, token_budget=cfg.token_budget, repeat=cfg.repeat,
                                    n_buckets=cfg.n_buckets)
        out = selected.transform(attach_files, files)
        version = lake.overwrite(cfg.output_table, out, lineage=lineage, allow_schema_change=True)
        print(f"{cfg.output_table} v{version}: budget {cfg.token_budget:,} LM tokens ({tokenizer}), "
              f"repeat {cfg.repeat}")
        selection_stats(scores, lake.read(cfg.output_table), token_budget=cfg.token_budget).show(100,
                                                                                               truncate=False)
    finally:
        scores.unpersist()
    return version
