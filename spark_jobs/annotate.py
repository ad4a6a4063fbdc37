"""Scores every phase-1 file with the trained quality annotator (paper §2.3) into the `scores` table.

    python -m spark_jobs.pipeline --stages score --lake lake --score.annotator artifacts/annotator
    spark-submit spark_jobs/pipeline.py --stages score ...       # cluster; GPUs: conf/cluster/score-gpu.sh

A file's score is the mean of the annotator's logits on its top, middle and bottom windows (`window` tokens each,
512 by default; a file no longer than one window is one window). Scoring runs in `mapInArrow`: each Python worker
loads the model once and scores each Arrow batch with windows batched by length. A task that holds a Spark GPU
resource (`spark.task.resource.gpu.amount`) runs on that GPU in `gpu_precision`; otherwise on the CPU in
`precision` with `threads` intra-op threads (docs/annotator.md has the measured speed and agreement of each).

`score.annotator` may be an object-store folder (`s3a://bucket/annotator`): the driver builds its filesystem from
the session's `fs.s3a.*` settings and ships it to the workers, each machine downloads the folder once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codemill import storage
from codemill.config import ConfigError
from trainer.annotator_model import META_FILE, PRECISIONS, Annotator

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SCORES_COLUMNS = ["doc_id", "lang", "score", "window_scores", "n_tokens", "annotator_id"]


@dataclass
class ScoreConfig:
    input_table: str = "clean"
    output_table: str = "scores"
    # Exported annotator folder written by `python -m trainer.annotator fit` (annotator.json inside); local or an
    # object-store URI (s3a://bucket/annotator).
    annotator: str = "artifacts/annotator"
    # Window length in tokens, special tokens included (paper: 512); capped at the encoder's positions.
    window: int = 512
    # CPU: fp32 | bf16 | int8 (dynamic quantisation); GPU tasks use gpu_precision.
    precision: str = "fp32"
    gpu_precision: str = "bf16"
    # Intra-op threads per Python worker; 0 = executor cores / concurrent tasks (no oversubscription).
    threads: int = 0
    max_batch: int = 64
    max_tokens: int = 16384
    # Input partitions (0 = keep): more than the task slots keeps every core busy to the end.
    partitions: int = 0

    def validate(self) -> list[str]:

        problems = []
        if self.window < 8:
            problems.append(f"window: must be at least 8 tokens, got {self.window}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: one of {PRECISIONS}, got {self.precision!r}")
        if self.gpu_precision not in ("fp32", "bf16"):
            problems.append(f"gpu_precision: fp32 or bf16, got {self.gpu_precision!r}")
        if self.threads < 0 or self.max_batch < 1 or self.max_tokens < self.window:
            problems.append("threads/max_batch/max_tokens: threads >= 0, max_batch >= 1, max_tokens >= window")
        return problems

    def annotator_problems(self) -> list[str]:
        """Checked by the scoring job only: the other jobs of the stage run before an annotator exists."""

        try:
            if storage.isfile(storage.join(self.annotator, META_FILE)):
                return []
        except OSError as exc:  # unreachable store, no permission: name the path, keep the client's reason
            return [f"score.annotator: cannot read {self.annotator!r}: {exc}"]
        return [f"score.annotator: no {META_FILE} under {self.annotator!r}; train and export one with "
                "`python -m trainer.annotator fit --config conf/annotator/minilm.yaml`"]


def _task_device() -> str:
    """The GPU Spark assigned to this task (resource scheduling), else the CPU."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    resources = ctx.resources() if ctx is not None else {}
    if "gpu" in resources and resources["gpu"].addresses:
        return f"cuda:{resources['gpu'].addresses[0]}"
    return "cpu"


def score_files(df: DataFrame, *, annotator: str, window: int = 512, precision: str = "fp32",
                gpu_precision: str = "bf16", threads: int = 1, max_batch: int = 64,
                max_tokens: int = 16384) -> DataFrame:
    """(doc_id, lang, content, ...) -> scores columns: doc_id, lang, score, window_scores, n_tokens, annotator_id.

    `annotator` is a local folder or an object-store URI; for a URI the filesystem is built here, on the driver
    (from the session's s3a settings), and travels to the workers with the function."""
    import pyarrow as pa
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StringType, StructField, StructType

    schema = StructType([
        StructField("doc_id", StringType()),
        StructField("lang", StringType()),
        StructField("score", DoubleType()),
        StructField("window_scores", ArrayType(DoubleType())),
        StructField("n_tokens", LongType()),
        StructField("annotator_id", StringType()),
    ])

    fs = None if storage.is_local(annotator) else storage.filesystem(annotator)[0]

    def score_batches(batches):

        device = _task_device()
        model = Annotator.cached(annotator, device=device, precision=gpu_precision if device != "cpu" else precision,
                                 threads=threads if device == "cpu" else None, max_batch=max_batch,
                                 max_tokens=max_tokens, window=window, fs=fs)
        for batch in batches:
            texts = [t or "" for t in batch.column("content").to_pylist()]
            res = model.score_texts(texts)
            yield pa.RecordBatch.from_arrays(
                [batch.column("doc_id"), batch.column("lang"), pa.array(res.score, pa.float64()),
                 pa.array(res.window_scores, pa.list_(pa.float64())), pa.array(res.n_tokens, pa.int64()),
                 pa.array([model.annotator_id] * len(texts), pa.string())],
                names=SCORES_COLUMNS,
            )

    src = df.select(df["doc_id"].cast("string").alias("doc_id"), df["lang"].cast("string").alias("lang"),
                    "content")
    return src.mapInArrow(score_batches, schema).select(*SCORES_COLUMNS)


def default_threads(spark) -> int:
    """Cores of this machine shared by the tasks that run at once on it (local mode) or 1 per executor core."""
    cores = os.cpu_count() or 1
    master = spark.sparkContext.master
    if master.startswith("local"):
        return max(1, cores // max(1, spark.sparkContext.defaultParallelism))
    task_cpus = int(spark.conf.get("spark.task.cpus", "1"))
    return max(1, task_cpus)


def run_scoring(spark, lake, cfg: ScoreConfig, lineage) -> int:
    """The stage: scores `cfg.input_table` into `cfg.output_table`; returns the new version."""
    if problems := cfg.annotator_problems():  # a URI is read with the session's fs.s3a.* settings
        raise ConfigError(problems)
    files = lake.read(cfg.input_table)
    if cfg.partitions:
        files = files.repartition(cfg.partitions)
    scores = files.transform(
        score_files, annotator=cfg.annotator, window=cfg.window, precision=cfg.precision,
        gpu_precision=cfg.gpu_precision, threads=cfg.threads or default_threads(spark), max_batch=cfg.max_batch,
        max_tokens=cfg.max_tokens,
    )
    version = lake.overwrite(cfg.output_table, scores, allow_schema_change=True, lineage=lineage)
    stats = lake.read(cfg.output_table).groupBy("lang").agg({"score": "avg", "n_tokens": "sum", "*": "count"})
    print(f"{cfg.output_table} v{version}:")
    stats.orderBy("lang").show(100, truncate=False)
    return version
