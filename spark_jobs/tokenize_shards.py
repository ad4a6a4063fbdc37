"""The tokenize stage: the tokenizer, then each phase mixture as litdata streaming shards, a manifest and rows of
the `shards` table.

    python -m spark_jobs.pipeline --stages tokenize --lake lake                  # the `tokenize` section
    python -m spark_jobs.pipeline --stages tokenize --lake lake --tokenize.build '[phase2]' --tokenize.seq_len 2048
    spark-submit spark_jobs/pipeline.py --stages tokenize --lake s3a://bucket/lake \
        --tokenize.shards_root s3a://bucket/shards

This module wires the stage (`TokenizeConfig`, `run_tokenize`, `run_phase`); the work is done by

    spark_jobs/tokenizer.py         train or load the tokenizer, save it as a Hugging Face folder
    spark_jobs/mixtures.py          the phases' source tables as documents; phase 3's language weighting
    spark_jobs/shard_transforms.py  split, encoding and the deterministic shuffle (DataFrame -> DataFrame)
    spark_jobs/shard_writer.py      per shard: pack items of seq_len + 1 tokens, write litdata chunks; index merge
    spark_jobs/shard_manifest.py    what manifest.json and the `shards` table hold

The tokenizer is normally trained (or adopted) by the pipeline's `tokenizer` stage, before `select`, whose
budget counts its tokens (`ensure_tokenizer(..., rebuild=True)`); this stage reuses it, or makes it when missing.

Phases come from `conf/spark/phases.yaml` (loaded first; see `spark_jobs.mixtures`). For each phase (the chunk files
come from one Spark job; phase 3 runs one more before it, to count tokens for the weight):

1. read its source tables at pinned versions and turn them into documents (doc_key, source, lang, text,
   special_offsets: where phase 1's separators are, which become special ids; docs/tokenization.md);
2. split train/val by a seeded hash of the document key (`val_fraction`; `shard_transforms.assign_split`);
3. phase 3: tokenize first (`shard_transforms.tokenize_documents`, `mapInArrow`), count tokens per language and
   weight Python documents to the target share (`spark_jobs.mixtures`);
4. shuffle deterministically (`shard_transforms.assign_shards`): every document gets a shard and a position from
   seeded hashes; one Spark task per shard (`shard_writer.write_shards`) encodes its documents (tokenizer loaded
   once per Python worker from a broadcast JSON, `<|endoftext|>` appended), packs them in position order into
   items of seq_len + 1 tokens (consecutive items overlap by one token so every token is a training target once)
   and writes them with litdata's `BinaryWriter` as `chunk-<shard>-<i>.bin` straight into
   `<shards_root>/<phase>/<split>/` (local or shared filesystem) or into a local folder uploaded with the pyarrow
   filesystem the driver built (object stores: `codemill.storage`, with the session's `fs.s3a.*` endpoint and
   credentials). Each task returns its shard's index; the driver merges them into one `index.json`, so a task
   retry or a speculative copy rewrites the same files. With fewer shards than cores (`encode`), documents are
   encoded before the shuffle instead, on every core; same bytes;
5. write `manifest.json` and the phase's rows of the `shards` table (`shard_manifest`; docs/CONTRACTS.md,
   docs/tokenization.md).

The trainer reads the splits with `litdata.StreamingDataset` + `StreamingDataLoader` (`trainer/data.py`: mid-epoch
resume through `state_dict`, sharding over nodes and workers); no custom loader. For shards on an object store,
`codemill.storage.litdata_source` gives litdata the `s3://` form and the endpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from codemill import faults, storage
from codemill.config import CONF_DIR, ConfigError, load_config
from codemill.lake import TableNotFound
from spark_jobs import tokenizer as T
from spark_jobs.mixtures import PhaseConfig, boost_weight, source_documents, weight_documents
from spark_jobs.shard_manifest import phase_manifest, shards_rows
from spark_jobs.shard_transforms import SPLITS, assign_shards, assign_split, tokenize_documents
from spark_jobs.shard_writer import parse_chunk_bytes, write_indexes, write_shards

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ENCODE_MODES = ("auto", "writers", "mappers")
# Expected val documents from which a phase is built without the val fallback first (`run_phase`): hashing then
# finds none with probability at most about exp(-3) = 5 %, and 5 % of a rebuild costs less than the fallback's
# aggregate always would (a small phase's build takes a few times as long as that aggregate).
VAL_DOCS_WITHOUT_FALLBACK = 3


@dataclasses.dataclass
class TokenizerConfig:
    # An existing tokenizer.json, sentencepiece .model or HF folder (local or a URI); None = reuse
    # <shards_root>/tokenizer if it exists, else train a byte-level BPE on a sample of phase 1.
    load: str | None = None
    vocab_size: int = 64000  # paper §3: 64k vocabulary
    min_frequency: int = 2
    sample_docs: int = 200_000
    sample_chars: int = 20_000

    def validate(self) -> list[str]:
        problems = []
        if self.load is None and self.vocab_size < 260:
            problems.append(f"vocab_size: {self.vocab_size} is below the 256 bytes + 4 special tokens")
        # A URI is checked when the job has its session (the store's settings may come from it): ensure_tokenizer.
        if self.load is not None and storage.is_local(self.load) and not os.path.exists(self.load):
            problems.append(f"load: {self.load!r} does not exist")
        if self.sample_docs < 1 or self.sample_chars < 1:
            problems.append("sample_docs, sample_chars: must be >= 1")
        return problems


@dataclasses.dataclass
class _Phases:
    phases: list[PhaseConfig] = dataclasses.field(default_factory=list)


def shipped_phases() -> list[PhaseConfig]:
    """The recipe's three phase mixtures, declared in conf/spark/phases.yaml."""
    return load_config(_Phases, CONF_DIR / "spark" / "phases.yaml").phases


@dataclasses.dataclass
class TokenizeConfig:
    """`tokenize.*`: the tokenizer and the phase shards (phases declared in conf/spark/pipeline.yaml)."""

    shards_root: str = "shards"
    # The phase mixtures; default: conf/spark/phases.yaml (paper §2).
    phases: list[PhaseConfig] = dataclasses.field(default_factory=shipped_phases)
    build: list[str] = dataclasses.field(default_factory=lambda: ["phase1", "phase2", "phase3"])
    seq_len: int = 8192  # paper §3: 8192-token context
    val_fraction: float = 0.005
    num_shards: int = 8  # train writers (and Spark tasks) per phase; more shards = more parallel readers
    val_shards: int = 1
    seed: int = 1234
    chunk_bytes: str = "64MB"
    # Where documents are encoded: "writers" = in the shard-writing tasks after the shuffle (one pass, the
    # shuffle moves text instead of token arrays; encoding runs on num_shards + val_shards tasks), "mappers" = in
    # the input tasks before the shuffle (encoding uses every core when the cluster has more cores than shards),
    # "auto" = writers when num_shards >= the session's default parallelism. Same shards either way.
    encode: str = "auto"
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)

    def validate(self) -> list[str]:
        problems = []
        names = [p.name for p in self.phases]
        if not self.phases:
            problems.append("phases: none declared (conf/spark/phases.yaml holds the recipe's three)")
        if len(set(names)) != len(names):
            problems.append(f"phases: duplicate phase names {names}")
        missing = sorted(set(self.build) - set(names))
        if missing:
            problems.append(f"build: {missing} are not declared in phases ({names})")
        if self.seq_len < 2:
            problems.append(f"seq_len: must be >= 2, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.num_shards < 1 or self.val_shards < 1:
            problems.append("num_shards, val_shards: must be >= 1")
        if self.encode not in ENCODE_MODES:
            problems.append(f"encode: must be one of {list(ENCODE_MODES)}, got {self.encode!r}")
        try:
            parse_chunk_bytes(self.chunk_bytes)
        except ValueError as exc:
            problems.append(f"chunk_bytes: {exc}")
        for i, phase in enumerate(self.phases):
            problems.extend(f"phases[{i}].{p}" for p in phase.validate())
        return problems


def build_phase_documents(lake, phase: PhaseConfig, versions: dict[str, int]) -> DataFrame:
    """The union of the phase's sources as unified documents, read at the pinned `versions`."""
    frames = [source_documents(lake.read(s.table, version=versions[s.table]), table=s.table,
                               text_column=s.text_column, key_column=s.key_column, where=s.where,
                               special_offsets_column=s.special_offsets_column)
              for s in phase.sources]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def tokenizer_inputs(cfg: TokenizeConfig) -> tuple[str, ...]:
    """The tables a trained tokenizer samples (phase 1's sources); none when `tokenizer.load` adopts one."""
    if cfg.tokenizer.load is not None:
        return ()
    return tuple(sorted({s.table for s in tokenizer_phase(cfg).sources}))


def tokenizer_phase(cfg: TokenizeConfig) -> PhaseConfig:
    """The phase whose documents a trained tokenizer samples: phase 1 (else the first declared)."""
    return next((p for p in cfg.phases if p.name == "phase1"), cfg.phases[0])


def ensure_tokenizer(cfg: TokenizeConfig, lake, *, rebuild: bool = False):
    """Loads `tokenizer.load`, or reuses `<shards_root>/tokenizer` (unless `rebuild`), or trains one on a phase-1
    sample; saves it to `<shards_root>/tokenizer` so selection, every phase, the trainer and the synthetic job
    share it. The pipeline's `tokenizer` stage calls it with `rebuild=True` when its inputs or config change."""
    target = storage.absolute(storage.join(cfg.shards_root, "tokenizer"))
    load = cfg.tokenizer.load
    if load is None and not rebuild and storage.isfile(storage.join(target, "tokenizer.json")):
        return T.load(target), target
    if load is not None and not storage.is_local(load) and not storage.exists(load):
        raise ConfigError([f"tokenizer.load: {load!r} does not exist"])
    texts = None
    if cfg.tokenizer.load is None:
        phase1 = tokenizer_phase(cfg)
        docs = build_phase_documents(lake, phase1, lake.versions([s.table for s in phase1.sources]))
        texts = T.sample_texts(docs, column="text", max_docs=cfg.tokenizer.sample_docs,
                               max_chars=cfg.tokenizer.sample_chars, seed=cfg.seed)
    tok = T.prepare(out_dir=target, load_from=load, texts=texts, vocab_size=cfg.tokenizer.vocab_size,
                    min_frequency=cfg.tokenizer.min_frequency, model_max_length=cfg.seq_len)
    return tok, target


def run_phase(spark, lake, cfg: TokenizeConfig, phase: PhaseConfig, *, tok, tokenizer_path: str,
              tokenizer_json: Any, lineage) -> dict[str, Any]:
    """Builds one phase end to end and returns its manifest."""
    tables = sorted({s.table for s in phase.sources})
    versions = lake.versions(tables)
    missing = [t for t in tables if t not in versions]
    if missing:
        raise TableNotFound(f"{phase.name}: input tables {missing} do not exist under {lake.root}; run the stages "
                            f"that produce them first (docs/CONTRACTS.md)")
    ids = T.special_ids(tok)
    key = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]
    encoder = {"tokenizer_json": tokenizer_json, "tokenizer_key": key, "eos_id": ids["eos"]}
    out_dir = storage.join(cfg.shards_root, phase.name)
    build = functools.partial(_build_shards, spark, lake, cfg, phase, versions=versions, out_dir=out_dir,
                              pad_id=ids["pad"], encoder=encoder)
    # assign_split's small-input fallback costs an extra Spark job. It is only needed when hashing puts no document
    # in val, which is likely only when few are expected there (the row counts of the Delta log, an upper bound
    # under `where` filters), so larger phases build without it and rebuild with it in the rare case it was needed.
    # Either way the shards equal those built with the fallback from the start.
    rows = sum(lake.info(t).rows for t in tables)
    expect_val = rows * cfg.val_fraction >= VAL_DOCS_WITHOUT_FALLBACK
    stats, mixture = build(ensure_val=not expect_val)
    documents = {split: sum(r["documents"] for r in stats if r["split"] == split) for split in SPLITS}
    if expect_val and cfg.val_fraction > 0 and documents["val"] == 0 and documents["train"] > 1:
        stats, mixture = build(ensure_val=True)
    manifest = phase_manifest(phase, stats, seq_len=cfg.seq_len, seed=cfg.seed, tokenizer_path=tokenizer_path,
                              vocab_size=tok.get_vocab_size(), versions=versions, mixture=mixture, special=ids)
    write_indexes(stats, out_dir=out_dir)
    faults.point(faults.TOKENIZE_SHARD_FILES)
    # The manifest is written last: its presence marks a complete phase.
    storage.write_text(storage.join(out_dir, "manifest.json"), json.dumps(manifest, indent=2, sort_keys=True))
    faults.point(faults.TOKENIZE_MANIFEST)
    table = shards_rows(spark, phase.name, stats, versions=versions, out_dir=out_dir)
    # One write id per phase: the phases' commits follow each other on the one `shards` table, and the table's
    # latest commit decides whether a write id was written already.
    lineage = dataclasses.replace(lineage, extra={**lineage.extra, "phase": phase.name},
                                  write_id=f"{lineage.write_id}:{phase.name}" if lineage.write_id else None)
    if lake.exists("shards"):
        lake.replace("shards", table, where={"phase": phase.name}, lineage=lineage)
    else:
        lake.overwrite("shards", table, lineage=lineage, partition_by=("phase",))
    faults.point(faults.TOKENIZE_PHASE)
    return manifest


def _build_shards(spark, lake, cfg: TokenizeConfig, phase: PhaseConfig, *, versions: dict[str, int], out_dir: str,
                  pad_id: int, encoder: dict[str, Any], ensure_val: bool) -> tuple[list[dict[str, Any]], dict]:
    """Writes the phase's chunk files (one Spark job; one more before it for a phase-3 weight); returns the
    per-shard stats and the mixture facts for the manifest."""
    from pyspark.sql import functions as F

    docs = (build_phase_documents(lake, phase, versions)
            .transform(assign_split, val_fraction=cfg.val_fraction, seed=cfg.seed, ensure_val=ensure_val))
    mixture: dict[str, Any] = {}
    tokenized = None
    if phase.boost_share is not None:
        # The weight needs the token counts first: keep the tokenized rows instead of encoding twice.
        tokenized = docs.transform(tokenize_documents, **encoder).persist()
        before = {(r["source"], r["lang"]): (int(r["tokens"]), int(r["docs"])) for r in
                  tokenized.groupBy("source", "lang").agg(F.sum("n_tokens").alias("tokens"),
                                                          F.count("*").alias("docs")).collect()}
        weight = boost_weight({k: v[0] for k, v in before.items()}, lang=phase.boost_lang, share=phase.boost_share,
                              boost_sources=list(phase.boost_sources))
        docs = weight_documents(tokenized, weight=weight, lang=phase.boost_lang, sources=list(phase.boost_sources),
                                seed=cfg.seed)
        mixture = {"boost_lang": phase.boost_lang, "boost_share_target": phase.boost_share, "boost_weight": weight,
                   "boost_sources": list(phase.boost_sources),
                   "tokens_before_weighting": {f"{s}/{lg}": v[0] for (s, lg), v in sorted(before.items())},
                   "documents_before_weighting": {f"{s}/{lg}": v[1] for (s, lg), v in sorted(before.items())}}
    elif not _encode_in_writers(cfg, spark):
        docs = docs.transform(tokenize_documents, **encoder)
    storage.delete_dir(out_dir)
    try:
        stats = (docs.transform(assign_shards, num_shards=cfg.num_shards, val_shards=cfg.val_shards, seed=cfg.seed)
                 .transform(write_shards, out_dir=out_dir, seq_len=cfg.seq_len, pad_id=pad_id,
                            chunk_bytes=cfg.chunk_bytes, **encoder)
                 .collect())
    finally:
        if tokenized is not None:
            tokenized.unpersist()
    return sorted((r.asDict() for r in stats), key=lambda r: (r["split"], r["shard"])), mixture


def _encode_in_writers(cfg: TokenizeConfig, spark) -> bool:
    if cfg.encode != "auto":
        return cfg.encode == "writers"
    # Writers encode when there is one per core anyway; with fewer shards than cores, encoding before the shuffle
    # keeps every core busy (it costs a second Python pass and a shuffle of token arrays instead of text).
    return cfg.num_shards >= spark.sparkContext.defaultParallelism


# ---------------------------------------------------------------------- job
def run_tokenize(spark, lake, cfg: TokenizeConfig, lineage) -> dict[str, Any]:
    """The stage: the tokenizer, then each phase of `cfg.build`; returns the manifests by phase."""
    tok, tokenizer_path = ensure_tokenizer(cfg, lake)
    tokenizer_json = spark.sparkContext.broadcast(tok.to_str())
    manifests = {}
    for phase in (p for p in cfg.phases if p.name in cfg.build):
        manifest = run_phase(spark, lake, cfg, phase, tok=tok, tokenizer_path=tokenizer_path,
                             tokenizer_json=tokenizer_json, lineage=lineage)
        manifests[phase.name] = manifest
        print(json.dumps({"phase": phase.name, "tokens": manifest["tokens"], "repeat": manifest["repeat"],
                          "splits": {s: {k: v[k] for k in ("sequences", "tokens")}
                                     for s, v in manifest["splits"].items()},
                          "tokens_per_language": manifest["tokens_per_language"]}, sort_keys=True))
    return manifests
