"""Near-dedup: planted near-duplicates vs hard negatives, partition invariance, verification, incremental runs."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from codemill.config import CONF_DIR, ConfigError, load_config
from spark_jobs import minhash
from spark_jobs.keep_policy import KeepPolicy
from spark_jobs.near_dedup import (
    NearDedupConfig,
    key_columns,
    minhash_key_arrays,
    minhash_key_fields,
    minhash_keys,
    near_duplicates,
    run_near_dedup,
)
from spark_jobs.near_dup_pairs import (
    band_column,
    estimate_candidates,
    lsh_candidates,
    minhash_signatures,
    verify_candidates,
    with_band_keys,
)
from spark_jobs.pipeline import PipelineConfig, main

LICENCE = "\n".join(
    ["# Copyright (c) 2021 The Example Authors. All rights reserved.",
     "#",
     "# Licensed under the Apache License, Version 2.0 (the \"License\");",
     "# you may not use this file except in compliance with the License.",
     "# You may obtain a copy of the License at",
     "#",
     "#     http://www.apache.org/licenses/LICENSE-2.0",
     "#",
     "# Unless required by applicable law or agreed to in writing, software",
     "# distributed under the License is distributed on an \"AS IS\" BASIS,",
     "# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.",
     "# See the License for the specific language governing permissions and",
     "# limitations under the License.",
     "import os", "import sys", "import json", "import logging", "from typing import Any, Dict, List, Optional",
     "from collections import defaultdict, OrderedDict", "logger = logging.getLogger(__name__)", ""])


def _code(seed: int, n_funcs: int) -> str:
    rng = random.Random(seed)
    verbs = ["load", "parse", "merge", "split", "emit", "scan", "fold", "pack", "sort", "walk", "hash", "trim"]
    nouns = ["row", "key", "node", "buf", "item", "page", "edge", "leaf", "span", "cell", "path", "word"]
    out = []
    for f in range(n_funcs):
        name = f"{rng.choice(verbs)}_{rng.choice(nouns)}_{seed}_{f}"
        args = rng.sample(nouns, 3)
        out.append(f"def {name}({', '.join(args)}):")
        for _ in range(rng.randint(3, 6)):
            out.append(f"    {rng.choice(nouns)}_{rng.randint(0, 99)} = {rng.choice(args)} "
                       f"{rng.choice('+-*')} {rng.choice(verbs)}({rng.choice(args)}, {rng.randint(0, 999)})")
        out.append(f"    return {args[0]}\n")
    return "\n".join(out)


def _corpus() -> tuple[list[tuple], set[frozenset], set[frozenset]]:
    """(rows, planted duplicate pairs, hard-negative pairs); rows are (doc_id, content, stars, size_bytes)."""
    base = {i: _code(i, 14) for i in range(6)}
    docs = {f"b{i}": base[i] for i in base}
    docs["b0_reformat"] = base[0].replace("    ", "\t").replace(", ", " , ")
    docs["b0_copy"] = base[0] + "\n"
    docs["b1_rename"] = base[1].replace("fold", "reduce")  # an identifier renamed everywhere
    docs["b2_comment"] = base[2].replace("\n\n", "\n# helper follows\n\n", 3) + "# end of module\n"
    lines = base[3].splitlines()
    docs["b3_trunc"] = "\n".join(lines[: int(len(lines) * 0.9)])
    docs["b4_append"] = base[4] + "\n" + "\n".join(f"extra_{i} = merge_row(item, {i})" for i in range(6))
    for h in range(4):
        docs[f"h{h}"] = LICENCE + _code(100 + h, 4)
    stars = {"b0_copy": 50, "b0_reformat": 50, "b0": 3}  # b0_copy wins b0's cluster on stars, then on size
    rows = [(k, v, stars.get(k, 1), len(v.encode())) for k, v in sorted(docs.items())]
    planted = {frozenset(p) for p in [("b0", "b0_reformat"), ("b0", "b0_copy"), ("b0_reformat", "b0_copy"),
                                      ("b1", "b1_rename"), ("b2", "b2_comment"), ("b3", "b3_trunc"),
                                      ("b4", "b4_append")]}
    negatives = {frozenset((f"h{i}", f"h{j}")) for i in range(4) for j in range(i + 1, 4)}
    return rows, planted, negatives


ROWS, PLANTED, NEGATIVES = _corpus()
SCHEMA = "doc_id string, content string, stars int, size_bytes long"
POLICY = ["stars desc", "size_bytes desc", "doc_id asc"]


def test_fixture_has_known_true_jaccard():
    contents = {r[0]: r[1] for r in ROWS}
    sets = dict(zip(contents, minhash.shingle_sets(list(contents.values()))))
    for pair in PLANTED:
        a, b = sorted(pair)
        assert minhash.jaccard(sets[a], sets[b]) >= 0.8, pair
    for pair in NEGATIVES:
        a, b = sorted(pair)
        assert 0.2 < minhash.jaccard(sets[a], sets[b]) < 0.6, pair  # they do share a licence header + imports


def _pairs(clusters) -> set[frozenset]:
    by = {}
    for r in clusters:
        by.setdefault(r["cluster_id"], []).append(r["doc_id"])
    return {frozenset((a, b)) for m in by.values() for a in m for b in m if a < b}


# The ways of clustering: one task for small candidate graphs (the default here), distributed steps otherwise, and
# one task whose uncertain pairs' contents exceed `local_max_bytes` (verified distributed, then clustered in one).
PATHS = {"one_task": {"local_max_edges": 50_000}, "distributed": {"local_max_edges": 0},
         "one_task_over_bytes": {"local_max_edges": 50_000, "local_max_bytes": 0}}


@pytest.fixture(scope="module")
def partitioned_runs(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    runs = {}
    for path, limit in PATHS.items():
        for parts in (1, 2, 8):
            kept, clusters = near_duplicates(df.repartition(parts), keep=POLICY, **limit)
            runs[path, parts] = (sorted(r["doc_id"] for r in kept.collect()),
                                 sorted(tuple(r) for r in clusters.collect()))
        # Broadcast joins off: every join of the pairs with signatures, texts and policy columns is a shuffle join.
        previous = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
        try:
            kept, clusters = near_duplicates(df.repartition(2), keep=POLICY, **limit)
            runs[path, "no_broadcast"] = (sorted(r["doc_id"] for r in kept.collect()),
                                          sorted(tuple(r) for r in clusters.collect()))
        finally:
            spark.conf.set("spark.sql.autoBroadcastJoinThreshold", previous)
    return runs


@pytest.mark.parametrize("path", PATHS)
def test_planted_clustered_hard_negatives_not(partitioned_runs, path):
    kept, clusters = partitioned_runs[path, 1]
    rows = [dict(zip(("doc_id", "cluster_id", "representative", "similarity"), c)) for c in clusters]
    assert _pairs(rows) == PLANTED
    reps = {r["doc_id"]: r["representative"] for r in rows}
    assert reps["b0"] == reps["b0_reformat"] == "b0_copy"  # most stars, then longest (b0_copy has "\n" more)
    assert reps["b3_trunc"] == "b3" and reps["b4"] == "b4_append"  # equal stars: the longer file
    for r in rows:
        assert (r["similarity"] == 1.0) if r["doc_id"] == r["representative"] else (0.7 <= r["similarity"] <= 1.0)
    removed = {r["doc_id"] for r in rows if r["doc_id"] != r["representative"]}
    assert kept == sorted({r[0] for r in ROWS} - removed)
    assert {"h0", "h1", "h2", "h3"} <= set(kept)


@pytest.mark.parametrize("path", PATHS)
def test_clusters_identical_for_1_2_8_partitions(partitioned_runs, path):
    assert partitioned_runs[path, 1] == partitioned_runs[path, 2] == partitioned_runs[path, 8]


@pytest.mark.parametrize("path", PATHS)
def test_shuffle_joins_give_the_same_clusters_as_broadcast_joins(partitioned_runs, path):
    assert partitioned_runs[path, "no_broadcast"] == partitioned_runs[path, 1]


def test_one_task_clustering_equals_the_distributed_steps(partitioned_runs):
    assert partitioned_runs["one_task", 1] == partitioned_runs["distributed", 1]


@pytest.mark.parametrize("path", PATHS)
def test_representative_policy_with_ties_and_nulls(spark, path):
    # Four copies of one file: stars desc puts the null last (b: 5 > a, c: 2 > d: null); a and c tie on stars and
    # size, so doc_id asc decides. A string policy column sorts by UTF-8 bytes ("Z" < "z" < "é").
    text = _code(1, 14)
    rows = [("d", text, None, 10, "z"), ("c", text, 2, 10, "é"), ("a", text, 2, 10, "Z"), ("b", text, 5, 1, None)]
    df = spark.createDataFrame(rows, "doc_id string, content string, stars int, size_bytes long, owner string")
    limit = PATHS[path]
    for policy, winner in ((["stars desc", "size_bytes desc"], "b"), (["stars asc"], "a"), (["stars desc"], "b"),
                           (["owner asc"], "a"), (["owner desc"], "c"), (["size_bytes desc", "stars asc"], "a"),
                           (["doc_id desc"], "d")):
        _, clusters = near_duplicates(df, keep=policy, **limit)
        assert {r["representative"] for r in clusters.collect()} == {winner}, policy
    # `representative`, the old name of `keep`, still picks the kept file.
    _, clusters = near_duplicates(df, representative=["doc_id desc"], **limit)
    assert {r["representative"] for r in clusters.collect()} == {"d"}


@pytest.mark.parametrize("path", PATHS)
def test_verification_rejects_shared_boilerplate(spark, path):
    df = spark.createDataFrame([r for r in ROWS if r[0].startswith("h")], SCHEMA)
    limit = PATHS[path]
    # Permissive banding (64 bands of 2 rows) makes every licence-sharing pair an LSH candidate.
    sigs = minhash_signatures(df)
    assert lsh_candidates(sigs, bands=64, rows=2).count() >= 3
    _, unverified = near_duplicates(df, bands=64, rows=2, verify=False, **limit)
    assert unverified.count() == 4
    kept, verified = near_duplicates(df, bands=64, rows=2, verify=True, **limit)
    assert verified.count() == 0 and kept.count() == 4
    # verify_margin 1.0: every candidate goes through the exact Jaccard check, none is decided by its estimate.
    kept, verified = near_duplicates(df, bands=64, rows=2, verify=True, verify_margin=1.0, **limit)
    assert verified.count() == 0 and kept.count() == 4
    # ... and exact checks that pass keep the true near-duplicates clustered.
    df = spark.createDataFrame(ROWS, SCHEMA)
    _, clusters = near_duplicates(df, verify_margin=1.0, **limit)
    assert _pairs([r.asDict() for r in clusters.collect()]) == PLANTED


def test_estimate_decides_only_clear_candidates(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    sigs = minhash_signatures(df)
    edges = lsh_candidates(sigs, bands=64, rows=2)
    est = {frozenset((r["src"], r["dst"])): r["estimate"] for r in estimate_candidates(edges, sigs).collect()}
    contents = {r[0]: r[1] for r in ROWS}
    sets = dict(zip(contents, minhash.shingle_sets(list(contents.values()))))
    assert est and PLANTED & set(est) and NEGATIVES & set(est)
    for pair, e in est.items():
        a, b = sorted(pair)
        assert abs(e - minhash.jaccard(sets[a], sets[b])) < 0.15, (pair, e)  # the default verify_margin
    assert edges.where(F.col("src") == F.col("dst")).count() == 0


def test_band_keys_from_signature_pass_equal_keys_from_stored_signatures(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    with_keys = minhash_signatures(df, bands=28, rows=9)
    column = band_column(28, 9)
    recomputed = with_band_keys(with_keys.drop(column), bands=28, rows=9)
    a = {r["doc_id"]: list(r[column]) for r in with_keys.collect()}
    b = {r["doc_id"]: list(r[column]) for r in recomputed.collect()}
    assert a == b and all(len(k) == 28 for k in a.values())


def test_verify_candidates_gives_exact_jaccard_per_pair(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    contents = {r[0]: r[1] for r in ROWS}
    sets = dict(zip(contents, minhash.shingle_sets(list(contents.values()))))
    ids = sorted(contents)
    # One group with several members (same dst), one pair in another group, one pair whose dst has no text.
    pairs = [(ids[1], ids[0]), (ids[2], ids[0]), (ids[3], ids[0]), (ids[5], ids[4]), (ids[6], "missing")]
    edges = spark.createDataFrame(pairs, "src string, dst string").repartition(3)
    got = {(r["src"], r["dst"]): r["jaccard"] for r in verify_candidates(edges, df, threshold=0.0).collect()}
    expected = {(a, b): minhash.jaccard(sets[a], sets[b]) for a, b in pairs if b in sets}
    assert got.keys() == expected.keys() | {(ids[6], "missing")}
    assert got[(ids[6], "missing")] == 0.0  # nothing to compare with: never confirmed
    for pair, value in expected.items():
        assert got[pair] == pytest.approx(value), pair


@pytest.mark.parametrize("path", PATHS)
def test_incremental_equals_union_semantics(spark, lake, path):
    contents = {r[0]: r for r in ROWS}
    batch1 = ["b0", "b0_reformat", "b1", "b2", "h0", "h1"]
    # b0_copy has more stars than the kept b0 but must not displace it; b1_rename duplicates an old file;
    # b3/b3_trunc duplicate each other inside the new batch; b4 and h2 are new and unique.
    batch2 = ["b0_copy", "b1_rename", "b3", "b3_trunc", "b4", "h2"]
    cfg = NearDedupConfig(incremental=True, **PATHS[path])

    stars = {"b0": 10, "b0_reformat": 1, "b0_copy": 100}

    def source(ids):
        rows = [(i, "repo", f"{i}.py", "python", contents[i][1], contents[i][3], stars.get(i, 1)) for i in ids]
        df = spark.createDataFrame(rows, "doc_id string, repo string, path string, lang string, content string, "
                                         "size_bytes long, stars int")
        lake.overwrite("exact_deduped", df, allow_schema_change=True)

    source(batch1)
    first = run_near_dedup(lake, cfg)
    assert first == {"rows_in": 6, "rows_out": 5, "removed": 1, "clusters": 1, "incremental": False,
                     "previously_kept": 0}
    kept1 = {r["doc_id"] for r in lake.read("near_deduped").collect()}
    assert kept1 == {"b0", "b1", "b2", "h0", "h1"}
    old_sigs = {r["doc_id"]: list(r["signature"]) for r in lake.read("minhash_signatures").collect()}

    source(batch1 + batch2)
    second = run_near_dedup(lake, cfg)
    assert second["rows_in"] == 6 and second["incremental"] and second["previously_kept"] == 5
    kept2 = {r["doc_id"] for r in lake.read("near_deduped").collect()}
    assert kept2 == kept1 | {"b3", "h2", "b4"}  # never removes an old kept file
    assert second["removed"] == 3 and second["rows_out"] == 3
    sigs = lake.read("minhash_signatures")
    assert sigs.count() == 12
    kept_flags = {r["doc_id"]: r["kept"] for r in sigs.collect()}
    assert {k for k, v in kept_flags.items() if v} == kept2
    assert {r["doc_id"]: list(r["signature"]) for r in sigs.where(F.col("doc_id").isin(batch1)).collect()} == old_sigs
    clusters = {r["doc_id"]: r["representative"] for r in lake.read("near_dup_clusters").collect()}
    assert clusters["b0_copy"] == clusters["b0_reformat"] == "b0"
    assert clusters["b1_rename"] == "b1" and clusters["b3_trunc"] == "b3"


class _Crash(BaseException):
    """Raised at a kill point in place of SIGKILL (tests/faults kills for real, in child processes)."""


# The fault suite (tests/faults) kills the full path on the one-task clustering path and the incremental path on the
# distributed one; these are the other two (each ~90 s on 2 cores: all six combinations cost CI 6 min).
@pytest.mark.parametrize(("path", "point"), [("distributed", "near_dedup:near_deduped"),
                                             ("one_task", "near_dedup:incremental:near_deduped")])
def test_run_killed_between_commits_is_rolled_back_and_redone(spark, lake, path, point, monkeypatch):
    """A run that dies between its commits (full path: before the signatures; incremental path: after the batch
    went into near_deduped) leaves readers the previous tables, and the retry gives the uninterrupted result: it
    neither treats the batch as seen nor unions it twice (the retry used to fail on Lake.merge's duplicate keys)."""
    from codemill import faults
    from codemill.lake import Lake

    incremental = point.startswith("near_dedup:incremental")
    cfg = NearDedupConfig(incremental=True, **PATHS[path])
    ids = [r[0] for r in ROWS]
    rows = [(r[0], "repo", f"{r[0]}.py", "python", r[1], r[3], r[2]) for r in ROWS]
    schema = "doc_id string, repo string, path string, lang string, content string, size_bytes long, stars int"
    lake.overwrite("exact_deduped", spark.createDataFrame(rows[::2] if incremental else rows, schema))
    if incremental:
        run_near_dedup(lake, cfg)
        lake.overwrite("exact_deduped", spark.createDataFrame(rows, schema))
    before = {t: lake.version(t) for t in ("near_deduped", "near_dup_clusters", "minhash_signatures")
              if lake.exists(t)}
    real = faults.point

    def crash(name, *, where=""):
        if name == point:
            raise _Crash(name)
        real(name, where=where)

    monkeypatch.setattr(faults, "point", crash)
    with pytest.raises(_Crash):
        run_near_dedup(lake, cfg)
    monkeypatch.setattr(faults, "point", real)
    reader = Lake(spark, lake.root)
    assert reader.versions(list(before) + ["near_deduped"]) == before  # nothing of the dead run is visible
    run_near_dedup(lake, cfg)

    def tables(lk):
        return {t: sorted(tuple(r) for r in lk.read(t).collect())
                for t in ("near_deduped", "near_dup_clusters", "minhash_signatures")}

    got = tables(lake)
    assert len({r[0] for r in got["near_deduped"]}) == len(got["near_deduped"])
    assert sorted(r[0] for r in got["minhash_signatures"]) == sorted(ids)
    # the same rows as a run that was never interrupted
    clean = Lake(spark, lake.root + "-clean")
    clean.overwrite("exact_deduped", spark.createDataFrame(rows[::2] if incremental else rows, schema))
    if incremental:
        run_near_dedup(clean, cfg)
        clean.overwrite("exact_deduped", spark.createDataFrame(rows, schema))
    run_near_dedup(clean, cfg)
    assert got == tables(clean)


def test_config_validation_names_keys(tmp_path):
    bad = NearDedupConfig(num_perm=0, threshold=1.5, bands=40, rows=10, representative=["stars sideways"],
                          checkpoint="disk", verify_margin=2.0)
    problems = bad.validate()
    for key in ("num_perm", "threshold", "bands", "representative[0]", "checkpoint", "verify_margin"):
        assert any(p.startswith(f"{key}:") for p in problems), (key, problems)
    assert NearDedupConfig(representative=["doc_id desc"]).keep_policy() == KeepPolicy.parse(["doc_id desc"])
    assert NearDedupConfig(keep=["a", "b desc", "a desc"]).keep_policy() == KeepPolicy((("a", False), ("b", True)))
    assert NearDedupConfig().band_params() == minhash.optimal_bands(0.7, 256, fp_weight=0.2, fn_weight=0.8)
    assert NearDedupConfig(bands=32).band_params() == (32, 8)
    with pytest.raises(ConfigError, match="near_dedup.threshold"):
        load_config(PipelineConfig, overrides={"near_dedup.threshold": 2.0, "stages": "near_dedup"})


def test_shipped_yaml_parses():
    assert load_config(NearDedupConfig, CONF_DIR / "spark" / "near_dedup.yaml") == NearDedupConfig()


@pytest.mark.parametrize("path", PATHS)
def test_custom_id_column(spark, path):
    picked = [r[1] for r in ROWS if r[0] in ("b1", "b1_rename", "b2")]
    rows = [(f"s{i}", text) for i, text in enumerate(picked)]
    df = spark.createDataFrame(rows, "synth_id string, content string")
    kept, clusters = near_duplicates(df, id_col="synth_id", **PATHS[path])
    assert sorted(r["synth_id"] for r in kept.collect()) == ["s0", "s2"]  # smallest id represents by default
    assert [(r["doc_id"], r["representative"]) for r in clusters.orderBy("doc_id").collect()] == [
        ("s0", "s0"), ("s1", "s0")]
    # Integer ids: numeric order, not string order, picks the representative (10 < 9 as strings).
    df = spark.createDataFrame([(10, picked[0]), (9, picked[1]), (11, picked[2])], "n long, content string")
    _, clusters = near_duplicates(df, id_col="n", **PATHS[path])
    assert sorted((r["doc_id"], r["representative"]) for r in clusters.collect()) == [(9, 9), (10, 9)]


def test_pipeline_stage_wires_config_to_tables(spark, lake):
    df = spark.createDataFrame([(r[0], r[1], r[2], r[3]) for r in ROWS[:3]], SCHEMA)
    lake.overwrite("exact_deduped", df.selectExpr("*", "'python' AS lang"))  # the funnel counts per language
    main(["--lake", lake.root, "--stages", "near_dedup", "--near_dedup.num_perm", "64", "--print_funnel", "false"])
    kept, clusters = lake.read("near_deduped").count(), lake.read("near_dup_clusters").collect()
    assert kept + sum(r.doc_id != r.representative for r in clusters) == 3
    assert lake.history("near_deduped", 1)[0]["lineage"]["job"] == "near_dedup"
    with pytest.raises(ConfigError, match="near_dedup.ngram"):
        main(["--lake", lake.root, "--stages", "near_dedup", "--near_dedup.ngram", "0"])


def test_no_candidate_pair_gives_empty_clusters_and_keeps_everything(spark):
    df = spark.createDataFrame([r for r in ROWS if r[0] in ("b1", "b5")], SCHEMA)  # two unrelated files
    kept, clusters = near_duplicates(df)
    assert clusters.columns == ["doc_id", "cluster_id", "representative", "similarity"]
    assert clusters.count() == 0
    assert sorted(r["doc_id"] for r in kept.collect()) == ["b1", "b5"]


def test_keys_of_rows_held_in_process_equal_the_dataframe_keys(spark):
    """`minhash_key_arrays` (rows in this process, e.g. synth's chunks) gives `minhash_keys`' columns."""
    cfg = NearDedupConfig(num_perm=64)
    df = spark.createDataFrame(ROWS, SCHEMA)
    want = {r["doc_id"]: tuple(r[c] for c in key_columns(cfg)) for r in minhash_keys(df, cfg).collect()}
    arrays = minhash_key_arrays(pa.array([r[1] for r in ROWS], pa.string()), cfg)
    got = {r[0]: tuple(a[i].as_py() for a in arrays) for i, r in enumerate(ROWS)}
    assert got == want and key_columns(cfg)[2] == band_column(*cfg.band_params())
    assert [f.name for f in minhash_key_fields(cfg)] == key_columns(cfg)


def test_one_task_over_local_max_bytes_verifies_distributed_and_gives_the_same_clusters(spark, caplog):
    # (The parametrised tests above run the `one_task_over_bytes` path against the planted clusters.)
    # verify_margin 1.0: every candidate is uncertain, so their contents weigh more than 0 bytes and the
    # fallback is taken; the clusters are still those of the distributed steps.
    df = spark.createDataFrame(ROWS, SCHEMA)
    with caplog.at_level("INFO", logger="spark_jobs.near_dedup"):
        over = near_duplicates(df, keep=POLICY, local_max_bytes=0, verify_margin=1.0)[1].collect()
    assert "> local_max_bytes 0; verifying them distributed" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="spark_jobs.near_dedup"):
        within = near_duplicates(df, keep=POLICY, verify_margin=1.0)[1].collect()
    assert "verifying them distributed" not in caplog.text
    distributed = near_duplicates(df, keep=POLICY, verify_margin=1.0, local_max_edges=0)[1].collect()
    assert sorted(map(tuple, over)) == sorted(map(tuple, within)) == sorted(map(tuple, distributed))


def test_one_task_bounds_are_validated_below_arrow_offsets():
    problems = NearDedupConfig(local_max_bytes=2 << 30).validate()
    assert any(p.startswith("local_max_bytes: 2147483648 must be in 0..1073741824") for p in problems)
    problems = NearDedupConfig(local_max_edges=5_000_000).validate()
    assert any(p.startswith("local_max_edges: 5000000 pairs need up to") for p in problems)
    assert NearDedupConfig().validate() == []


def test_hot_bucket_is_aggregated_not_gathered_by_a_window(spark):
    # One file copied 300 times plus unrelated files: every copy links to the bucket's centre, k - 1 edges; the
    # plan holds no window (a window partitioned by bucket sorted a hot bucket in one task).
    text = _code(7, 12)
    rows = [(f"c{i:03d}", text) for i in range(300)] + [(f"u{i}", _code(100 + i, 6)) for i in range(20)]
    sigs = minhash_signatures(spark.createDataFrame(rows, "doc_id string, content string").repartition(4))
    pairs = lsh_candidates(sigs, bands=16, rows=16)
    assert "Window" not in pairs._jdf.queryExecution().executedPlan().toString()
    got = sorted(tuple(r) for r in pairs.collect())
    assert got == [(f"c{i:03d}", "c000") for i in range(1, 300)]


def test_hot_verification_centre_is_split_into_bounded_groups(spark):
    from spark_jobs.near_dup_pairs import verification_groups

    edges = spark.createDataFrame([(f"m{i:03d}", "c") for i in range(250)] + [("x", "y")], "src string, dst string")
    groups = verification_groups(edges, max_group=50).collect()
    parts = {}
    for r in groups:
        parts.setdefault((r["_group"], r["_part"]), set()).add(r["_id"])
    hot = [m for (g, _), m in parts.items() if g == "c"]
    assert len(hot) == 5 and all("c" in m for m in hot)  # ceil(250 / 50) parts, the centre in each
    assert max(len(m) for m in hot) <= 80  # ~50 members each (a hash split), never all 250
    assert sorted(set().union(*hot) - {"c"}) == sorted(f"m{i:03d}" for i in range(250))
    assert parts[("y", 0)] == {"x", "y"}
    # Verification gives the same pairs whatever the split.
    text = _code(3, 10)
    docs = spark.createDataFrame([(f"m{i:03d}", text) for i in range(250)] + [("c", text), ("x", "a b"),
                                                                             ("y", "c d")],
                                 "doc_id string, content string")
    split = sorted(tuple(r)[:2] for r in verify_candidates(edges, docs, max_group=50).collect())
    whole = sorted(tuple(r)[:2] for r in verify_candidates(edges, docs, max_group=10_000).collect())
    assert split == whole == sorted((f"m{i:03d}", "c") for i in range(250))
