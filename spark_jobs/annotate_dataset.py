"""Builds the quality annotator's training set (`annotator_train`) and its alignment set (`alignment_set`).

    python -m spark_jobs.pipeline --stages annotator_dataset --lake lake      # the pipeline's `dataset` section

Paper §2.3: positives are high-quality code files and instruction data (instruction + response rendered as one
code document); negatives a uniform random sample of phase-1 files (`clean`, else `files`). The two classes are
deduplicated (within each and against each other: a text in both stays a positive only), decontaminated against
the benchmarks, balanced and split train/val by a hash of the text.

The alignment set (paper Fig. 2) is for evaluation only: benchmark solutions (HumanEval, MBPP, BigCodeBench, ...;
complete reference programs read by the benchmark catalogue, `codemill.benchmarks`) labelled 1 with their
benchmark folder's name, against phase-1 files that are not in the training set, labelled 0 with benchmark
`corpus`. An annotator's ROC-AUC per benchmark is that benchmark's positives against all `corpus` rows.

Positive sources (`positives[].path`: a file or a glob) may be local or on an object store
(`s3a://bucket/hq/*.parquet`); a URI is listed and read when the job runs, with the session's `fs.s3a.*` settings.
The benchmark folder (`benchmarks_dir`, bundled under data/) is local.

Public API: `DatasetConfig`, `PositiveSource`, `build_training_sets` (the stage), `read_positives`,
`source_files`, `instruction_pairs`, `ossinstruct_pairs`, `render_instruction`, `benchmark_solutions`,
`with_text_hash`, `length_filter`, `mark_duplicates`, `mark_contaminated`, `balance_and_split`, `sample_negatives`,
`alignment_set`, `drop_stats`.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import re
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from codemill import storage
from codemill.benchmarks import folder_benchmark
from codemill.config import repo_path
from codemill.lake import TableNotFound
from spark_jobs.decontaminate import DecontaminateConfig, find_contamination, load_benchmarks

TRAIN_COLUMNS = ["text", "label", "source", "split"]
ALIGNMENT_COLUMNS = ["text", "label", "benchmark"]
NEGATIVE_BENCHMARK = "corpus"
INSTRUCTION_KEYS = ("instruction", "prompt", "problem", "question", "query")
RESPONSE_KEYS = ("output", "response", "solution", "answer", "completion")


@dataclass
class PositiveSource:
    """One source of positives. kind: `code` (Parquet/JSONL files with a `content` or `text` column),
    `instruct` (JSON/JSONL records: instruction/prompt/problem + output/response/solution, or chat `messages`),
    `ossinstruct` (StarCoder2-Instruct's self-OSS-Instruct few-shot text file)."""

    path: str
    kind: str = "instruct"
    name: str = ""
    max_rows: int = 0

    def __post_init__(self):
        self.path = repo_path(self.path)


def _default_positives() -> list[PositiveSource]:
    return [
        PositiveSource("data/instruct/evol_instruct_code/*.json.gz", "instruct", "evol_instruct_code"),
        PositiveSource("data/instruct/starcoder2_instruct/self-ossinstruct-fewshot.txt", "ossinstruct",
                       "starcoder2_instruct"),
    ]


@dataclass
class DatasetConfig:
    # Negatives: uniform sample of phase-1 files; the first of these tables that exists is used.
    negative_tables: list[str] = field(default_factory=lambda: ["clean", "files"])
    positives: list[PositiveSource] = field(default_factory=_default_positives)
    output_table: str = "annotator_train"
    alignment_table: str = "alignment_set"
    benchmarks_dir: str = "data/benchmarks"
    # Benchmark folders under benchmarks_dir whose solutions form the alignment set's positives.
    alignment_benchmarks: list[str] = field(default_factory=lambda: [
        "humaneval", "mbpp", "bigcodebench", "humaneval_x", "mbxp", "evoeval", "ds1000"])
    alignment_max_per_benchmark: int = 400
    alignment_negatives: int = 1000
    decontaminate: bool = True
    val_fraction: float = 0.1
    min_chars: int = 32
    max_chars: int = 100_000
    seed: int = 0

    def __post_init__(self):
        self.benchmarks_dir = repo_path(self.benchmarks_dir)

    def validate(self) -> list[str]:
        problems = []
        if not self.positives:
            problems.append("positives: at least one source is needed")
        for i, src in enumerate(self.positives):
            if src.kind not in ("code", "instruct", "ossinstruct"):
                problems.append(f"positives.{i}.kind: code, instruct or ossinstruct, got {src.kind!r}")
            # A URI is listed when the job runs (`source_files`): its settings may come from the Spark session.
            if storage.is_local(src.path) and not glob.glob(storage.local_path(src.path)):
                problems.append(f"positives.{i}.path: no file matches {src.path!r}")
        if not 0.0 < self.val_fraction < 0.5:
            problems.append(f"val_fraction: between 0 and 0.5, got {self.val_fraction}")
        if not os.path.isdir(self.benchmarks_dir):
            problems.append(f"benchmarks_dir: {self.benchmarks_dir!r} is not a folder")
        else:
            for b in self.alignment_benchmarks:
                if not folder_benchmark(b, self.benchmarks_dir).paths():
                    problems.append(f"alignment_benchmarks: no benchmark files under {self.benchmarks_dir}/{b}")
        if self.min_chars < 1 or self.max_chars <= self.min_chars:
            problems.append("min_chars/max_chars: need 1 <= min_chars < max_chars")
        return problems


# ---------------------------------------------------------------------- reading sources (driver side, small)
def render_instruction(instruction: str, response: str) -> str:
    """Instruction + response as one code document: the instruction as a comment block, then the response with
    Markdown code fences removed, so the annotator sees code rather than chat markup."""
    comment = "\n".join(f"# {line}".rstrip() for line in instruction.strip().splitlines())
    body = re.sub(r"(?m)^```[^\n]*\n?", "", response.strip()).rstrip()
    return f"{comment}\n\n{body}\n"


def _read_text(path: str) -> str:
    """A (possibly gzipped) text file, local or on an object store."""
    if storage.is_local(path):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(storage.local_path(path), "rt", encoding="utf-8") as fh:
            return fh.read()
    data = storage.read_bytes(path)
    return (gzip.decompress(data) if path.endswith(".gz") else data).decode("utf-8")


def _records(path: str) -> list[dict]:
    text = _read_text(path)
    if ".jsonl" in path.rsplit("/", 1)[-1]:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    return data if isinstance(data, list) else [data]


def source_files(src: PositiveSource, index: int = 0) -> list[str]:
    """The files of a positive source: the glob's matches (local or on an object store), or the one file or folder
    (a folder of Parquet files for `code`)."""
    path = src.path
    if storage.has_magic(path):
        files = storage.glob(path) if not storage.is_local(path) else sorted(glob.glob(storage.local_path(path)))
    else:
        files = [path] if storage.isfile(path) or storage.isdir(path) else []
    if not files:
        raise FileNotFoundError(f"positives.{index}.path: no file matches {path!r}")
    return files


def _pick(rec: dict, keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, str) and v.strip():
            return v
    return None


def instruction_pairs(records: list[dict]) -> list[tuple[str, str]]:
    """(instruction, response) from the common formats: Alpaca-like keys (with an optional `input`) or chat
    `messages`/`conversations` (first user turn, first assistant turn). Records in no known format are skipped."""
    pairs = []
    for rec in records:
        msgs = rec.get("messages") or rec.get("conversations")
        if isinstance(msgs, list):
            def turn(roles, msgs=msgs):
                return next((m.get("content") or m.get("value") for m in msgs
                             if (m.get("role") or m.get("from")) in roles), None)

            ins, out = turn(("user", "human")), turn(("assistant", "gpt"))
        else:
            ins, out = _pick(rec, INSTRUCTION_KEYS), _pick(rec, RESPONSE_KEYS)
            extra = rec.get("input")
            if ins and isinstance(extra, str) and extra.strip():
                ins = f"{ins}\n{extra}"
        if ins and out:
            pairs.append((ins, out))
    return pairs


def ossinstruct_pairs(text: str) -> list[tuple[str, str]]:
    """(instruction, response) of each `### Example` in StarCoder2-Instruct's few-shot file: its [Instruction]
    section and everything from its [Response] on (or, when absent, its [Solution] section)."""
    pairs = []
    for example in re.split(r"(?m)^### Example \d+\s*$", text)[1:]:
        sections = dict(re.findall(r"(?ms)^\[(\w[\w ]*)\]\s*\n(.*?)(?=^\[\w[\w ]*\]\s*$|\Z)", example))
        ins = sections.get("Instruction", "").strip()
        # [Response] holds sub-sections ([Reasoning], [Implementation], ...): take all of it up to the end.
        response = re.search(r"(?ms)^\[Response\]\s*\n(.*)", example)
        out = (response.group(1) if response else sections.get("Solution", "")).strip()
        if ins and out:
            pairs.append((ins, out))
    return pairs


def read_positives(spark: SparkSession, sources: list[PositiveSource]) -> DataFrame:
    """text, source of every configured positive source."""
    schema = StructType([StructField("text", StringType()), StructField("source", StringType())])
    frames = []
    for i, src in enumerate(sources):
        files = source_files(src, i)
        name = src.name or files[0].rsplit("/", 1)[-1].split(".")[0]
        if src.kind == "code":
            reader = spark.read.parquet if files[0].endswith(".parquet") else spark.read.json
            df = reader(*files)
            col = "content" if "content" in df.columns else "text"
            df = df.select(F.col(col).alias("text"), F.lit(f"code:{name}").alias("source"))
        else:
            pairs: list[tuple[str, str]] = []
            for path in files:
                if src.kind == "ossinstruct":
                    pairs += ossinstruct_pairs(_read_text(path))
                else:
                    pairs += instruction_pairs(_records(path))
            rows = [(render_instruction(i, o), f"instruct:{name}") for i, o in pairs]
            df = spark.createDataFrame(rows, schema)
        if src.max_rows:
            df = df.limit(src.max_rows)
        frames.append(df)
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def benchmark_solutions(benchmarks_dir: str, benchmarks: list[str]) -> list[tuple[str, str, str]]:
    """(text, benchmark, task_id) of every benchmark solution: the complete reference program of every problem in
    the folders `benchmarks` under `benchmarks_dir` (`codemill.benchmarks.Problem.solution`: prompt + canonical
    solution, or the `code` / `reference_code` field). Tasks without a solution (e.g. Multi-HumanEval's `None`) are
    skipped; `task_id` is `<file name>:<task id>`."""
    rows = []
    for bench in benchmarks:
        folder = folder_benchmark(bench, benchmarks_dir)
        for problem in folder.problems() if folder.paths() else []:
            if isinstance(problem.solution, str) and problem.solution.strip():
                rows.append((problem.solution, bench, f"{os.path.basename(problem.path)}:{problem.task_id}"))
    return rows


# ---------------------------------------------------------------------- transforms
def with_text_hash(df: DataFrame) -> DataFrame:
    """Adds `text_hash`: SHA-256 of the text with whitespace runs collapsed (formatting-only copies collide)."""
    return df.withColumn("text_hash", F.sha2(F.regexp_replace(F.trim("text"), r"\s+", " "), 256))


def length_filter(df: DataFrame, *, min_chars: int = 32, max_chars: int = 100_000) -> DataFrame:
    """Sets `drop_reason` to too_short / too_long (kept rows: null)."""
    n = F.length("text")
    reason = F.when(F.col("text").isNull() | (n < min_chars), "too_short").when(n > max_chars, "too_long")
    return df.withColumn("drop_reason", F.coalesce(F.col("drop_reason"), reason) if "drop_reason" in df.columns
                         else reason)


def mark_duplicates(positives: DataFrame, negatives: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Marks repeated texts within each class (`duplicate`) and negatives whose text is also a positive
    (`also_positive`), via `drop_reason`."""
    def within(df):
        w = Window.partitionBy("text_hash").orderBy("source", "text")
        first = F.row_number().over(w) == 1
        return df.withColumn("drop_reason", F.coalesce("drop_reason", F.when(~first, F.lit("duplicate"))))

    positives, negatives = within(positives), within(negatives)
    pos_hashes = positives.where("drop_reason IS NULL").select("text_hash").distinct().withColumn("in_pos", F.lit(1))
    negatives = (negatives.join(pos_hashes, "text_hash", "left")
                 .withColumn("drop_reason", F.coalesce("drop_reason", F.when(F.col("in_pos") == 1,
                                                                             F.lit("also_positive"))))
                 .drop("in_pos"))
    return positives, negatives


def mark_contaminated(df: DataFrame, contaminated: DataFrame) -> DataFrame:
    """Sets `drop_reason` = contaminated for rows whose `text_hash` is among `contaminated.doc_id`."""
    bad = contaminated.select(F.col("doc_id").alias("text_hash")).distinct().withColumn("_bad", F.lit(1))
    return (df.join(bad, "text_hash", "left")
            .withColumn("drop_reason", F.coalesce("drop_reason", F.when(F.col("_bad") == 1, F.lit("contaminated"))))
            .drop("_bad"))


def balance_and_split(positives: DataFrame, negatives: DataFrame, *, val_fraction: float = 0.1,
                      seed: int = 0) -> DataFrame:
    """Kept rows (null `drop_reason`) of both classes, the larger class cut at random to the smaller one's size,
    labelled and split by a hash of the text (so a text's split never changes between runs)."""
    pos = positives.where("drop_reason IS NULL")
    neg = negatives.where("drop_reason IS NULL")
    n = min(pos.count(), neg.count())
    rand = F.rand(seed)
    pos = pos.orderBy(F.xxhash64("text_hash", F.lit(seed))).limit(n).withColumn("label", F.lit(1))
    neg = neg.withColumn("_r", rand).orderBy("_r").limit(n).drop("_r").withColumn("label", F.lit(0))
    bucket = F.pmod(F.xxhash64("text_hash", F.lit(seed + 1)), F.lit(10_000))
    return (pos.unionByName(neg)
            .withColumn("split", F.when(bucket < int(val_fraction * 10_000), "val").otherwise("train"))
            .select("text", F.col("label").cast("int").alias("label"), "source", "split"))


def sample_negatives(files: DataFrame, *, n: int, seed: int = 0, source: str = "negative") -> DataFrame:
    """About `n` files drawn uniformly (Bernoulli sample with 30% headroom for later drops), as text, source."""
    total = files.count()
    fraction = min(1.0, 1.3 * n / max(total, 1))
    return files.sample(withReplacement=False, fraction=fraction, seed=seed).select(
        F.col("content").alias("text"), F.lit(source).alias("source"))


def alignment_set(solutions: DataFrame, corpus: DataFrame, train: DataFrame, *, negatives: int = 1000,
                  max_per_benchmark: int = 400, seed: int = 0) -> DataFrame:
    """Benchmark solutions (label 1, their benchmark) and corpus files absent from the training set (label 0,
    benchmark `corpus`). `solutions`: text, benchmark; `corpus`: text; `train`: text."""
    w = Window.partitionBy("benchmark").orderBy(F.xxhash64("text", F.lit(seed)))
    pos = (solutions.withColumn("_n", F.row_number().over(w)).where(F.col("_n") <= max_per_benchmark)
           .select("text", F.lit(1).alias("label"), "benchmark"))
    seen = with_text_hash(train.select("text")).select("text_hash").distinct()
    total = corpus.count()
    unseen = (with_text_hash(corpus.sample(False, min(1.0, 2.0 * negatives / max(total, 1)), seed + 7))
              .join(seen, "text_hash", "left_anti").dropDuplicates(["text_hash"]))
    neg = (unseen.withColumn("_r", F.rand(seed + 7)).orderBy("_r").limit(negatives)
           .select("text", F.lit(0).alias("label"), F.lit(NEGATIVE_BENCHMARK).alias("benchmark")))
    return pos.unionByName(neg).select("text", F.col("label").cast("int").alias("label"), "benchmark")


def drop_stats(positives: DataFrame, negatives: DataFrame) -> dict[str, dict[str, int]]:
    """Rows per drop reason (and `kept`) for each class: recorded in the commit's lineage and printed."""
    out = {}
    for name, df in (("positives", positives), ("negatives", negatives)):
        rows = df.groupBy("drop_reason").count().collect()
        out[name] = {(r["drop_reason"] or "kept"): int(r["count"]) for r in rows}
    return out


# ---------------------------------------------------------------------- job
def _contaminated_hashes(spark: SparkSession, docs: DataFrame, benchmarks_dir: str) -> DataFrame:
    """doc_id (= text_hash) of every text that the curation stage's decontamination flags (same benchmarks,
    n-gram size and thresholds as phase 1's `clean`)."""
    dc = DecontaminateConfig(data_dir=os.path.abspath(benchmarks_dir))
    return find_contamination(docs, load_benchmarks(spark, dc), dc).select("doc_id")


def build_training_sets(spark: SparkSession, lake, cfg: DatasetConfig, lineage) -> dict:
    """The stage: `annotator_train` and `alignment_set` from the lake's phase-1 files and the configured sources;
    returns the drop counts per class."""
    table = next((t for t in cfg.negative_tables if lake.exists(t)), None)
    if table is None:
        raise TableNotFound(f"dataset.negative_tables: none of {cfg.negative_tables} exists under {lake.root}; run "
                            "curation first")
    corpus = lake.read(table)

    positives = (read_positives(spark, cfg.positives).transform(with_text_hash)
                 .transform(length_filter, min_chars=cfg.min_chars, max_chars=cfg.max_chars)).cache()
    n_pos = positives.where("drop_reason IS NULL").count()
    negatives = (sample_negatives(corpus, n=n_pos, seed=cfg.seed, source=f"negative:{table}")
                 .transform(with_text_hash)
                 .transform(length_filter, min_chars=cfg.min_chars, max_chars=cfg.max_chars))
    positives, negatives = mark_duplicates(positives, negatives)
    if cfg.decontaminate:
        docs = (positives.select("text_hash", "text").unionByName(negatives.select("text_hash", "text"))
                .dropDuplicates(["text_hash"])
                .select(F.col("text_hash").alias("doc_id"), F.col("text").alias("content")))
        bad = _contaminated_hashes(spark, docs, cfg.benchmarks_dir).cache()
        positives, negatives = mark_contaminated(positives, bad), mark_contaminated(negatives, bad)
    positives, negatives = positives.cache(), negatives.cache()
    stats = drop_stats(positives, negatives)
    train = balance_and_split(positives, negatives, val_fraction=cfg.val_fraction, seed=cfg.seed)
    v_train = lake.overwrite(cfg.output_table, train, allow_schema_change=True,
                             lineage=dataclasses.replace(lineage, extra={**lineage.extra, "drops": stats}))

    sol_rows = benchmark_solutions(cfg.benchmarks_dir, cfg.alignment_benchmarks)
    solutions = spark.createDataFrame([(t, b) for t, b, _ in sol_rows], "text string, benchmark string")
    align = alignment_set(solutions, corpus.select(F.col("content").alias("text")), lake.read(cfg.output_table),
                          negatives=cfg.alignment_negatives, max_per_benchmark=cfg.alignment_max_per_benchmark,
                          seed=cfg.seed)
    v_align = lake.overwrite(cfg.alignment_table, align, allow_schema_change=True, lineage=lineage)
    print(f"drops per class: {json.dumps(stats)}")
    print(f"{cfg.output_table} v{v_train}:")
    lake.read(cfg.output_table).groupBy("split", "label", "source").count().orderBy("split", "label").show(50, False)
    print(f"{cfg.alignment_table} v{v_align}:")
    lake.read(cfg.alignment_table).groupBy("benchmark", "label").count().orderBy("benchmark").show(50, False)
    return stats
