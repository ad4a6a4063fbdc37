"""What the tokenize stage records about a built phase: `<shards_root>/<phase>/manifest.json` and its rows of the
`shards` table (contract: docs/CONTRACTS.md, "Token shards"; fields: docs/tokenization.md, "Outputs").

Both are computed on the driver from the per-shard stats that `shard_writer.write_shards` returns; the stage
(`spark_jobs.tokenize_shards`, not runnable on its own) writes them, the manifest last. The trainer reads the
manifest (`trainer.data.read_manifest`), the report its token counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codemill import storage
from spark_jobs.mixtures import PhaseConfig
from spark_jobs.shard_transforms import SPLITS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


def phase_manifest(phase: PhaseConfig, stats: list[dict[str, Any]], *, seq_len: int, seed: int,
                   tokenizer_path: str, vocab_size: int, versions: dict[str, int], mixture: dict[str, Any],
                   special: dict[str, int]) -> dict[str, Any]:
    """The phase's `manifest.json` from its per-shard stats; adds the achieved share to `mixture` (phase 3)."""
    splits = {}
    for split in SPLITS:
        rows = [r for r in stats if r["split"] == split]
        splits[split] = {"dir": split, "sequences": sum(r["sequences"] for r in rows),
                         "tokens": sum(r["tokens"] for r in rows),
                         "padding_tokens": sum(r["padding_tokens"] for r in rows),
                         "documents": sum(r["documents"] for r in rows), "shards": len(rows),
                         "tokens_per_language": _sum_maps(rows, "tokens_per_language")}
    per_lang = _sum_maps(stats, "tokens_per_language")
    total = sum(per_lang.values())
    if phase.boost_share is not None:
        mixture["boost_share_achieved"] = per_lang.get(phase.boost_lang, 0) / total if total else 0.0
    return {
        "phase": phase.name, "seq_len": seq_len, "vocab_size": vocab_size, "tokenizer": tokenizer_path,
        "repeat": phase.repeat, "splits": splits, "tokens": total, "tokens_per_language": per_lang,
        "tokens_per_source": _sum_maps(stats, "tokens_per_source"), "table_versions": dict(versions),
        "special_token_ids": special, "seed": seed, "packing": "overlap-1",
        "mixture": mixture,
    }


def shards_rows(spark: SparkSession, phase: str, stats: list[dict[str, Any]], *, versions: dict[str, int],
                out_dir: str) -> DataFrame:
    """The phase's rows of the `shards` table as a DataFrame."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    rows = [{"phase": phase, "split": r["split"], "shard": r["shard"], "sequences": r["sequences"],
             "tokens": r["tokens"], "padding_tokens": r["padding_tokens"], "documents": r["documents"],
             "tokens_per_language": sorted(dict(r["tokens_per_language"]).items()),
             "input_versions": sorted(versions.items()), "path": storage.join(out_dir, r["split"])} for r in stats]
    # From Arrow rather than Python rows: creating and checking the DataFrame took ~0.1 s instead of ~0.3 s per
    # phase on the 2-core bench machine, a visible share of a small phase's fixed cost.
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=to_arrow_schema(shards_schema())))


def shards_schema() -> StructType:
    """Schema of the `shards` table (one row per phase, split and shard)."""
    from pyspark.sql.types import IntegerType, LongType, MapType, StringType, StructField, StructType

    return StructType([
        StructField("phase", StringType()), StructField("split", StringType()), StructField("shard", IntegerType()),
        StructField("sequences", LongType()), StructField("tokens", LongType()),
        StructField("padding_tokens", LongType()), StructField("documents", LongType()),
        StructField("tokens_per_language", MapType(StringType(), LongType())),
        StructField("input_versions", MapType(StringType(), LongType())),
        StructField("path", StringType()),
    ])


def _sum_maps(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in dict(r[key]).items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))
