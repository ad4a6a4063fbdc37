from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json

import pytest

from codemill.config import REPO_ROOT, ConfigError, load_config
from codemill.engines import Engine, Generation, SamplingConfig
from spark_jobs.decontaminate import DecontaminateConfig, benchmark_index, load_benchmarks
from spark_jobs.exact_dedup import ExactDedupConfig
from spark_jobs.near_dedup import NearDedupConfig
from synth.generate import SYNTHETIC_COLUMNS, _raw_schema, build_synthetic, generate_chunk
from synth.postprocess import (
    CONTAMINATION_COL,
    FilterConfig,
    check_row,
    check_rows,
    check_rows_local,
    extract_code,
    redact_generation,
)
from synth.prompts import load_template

GOOD = '''"""Inventory of items with quantities: add, remove and report stock levels."""


class Inventory:
    """Tracks item quantities."""

    def __init__(self):
        self.items = {}

    def add(self, name, count=1):
        """Adds `count` units of `name`."""
        if count <= 0:
            raise ValueError("count must be positive")
        self.items[name] = self.items.get(name, 0) + count

    def remove(self, name, count=1):
        """Removes units, refusing to go below zero."""
        have = self.items.get(name, 0)
        if count > have:
            raise ValueError(f"only {have} of {name} left")
        self.items[name] = have - count

    def report(self):
        """Lines of `name: count`, sorted by name."""
        return [f"{k}: {v}" for k, v in sorted(self.items.items())]


if __name__ == "__main__":
    inv = Inventory()
    inv.add("apple", 3)
    inv.remove("apple")
    print(inv.report())
'''


def fenced(code, lang="python"):
    return f"Here is the file:\n\n```{lang}\n{code}\n```\n"


def test_extract_code_takes_the_longest_closed_block():
    text = "intro\n```python\nx = 1\n```\nmore\n~~~py\ndef f():\n    return 2\n~~~\n"
    assert extract_code(text) == ("def f():\n    return 2", "py", None)
    assert extract_code("no code here") == (None, None, "no_code_block")
    assert extract_code("```python\ndef f():\n    return") == (None, None, "unclosed_code_block")
    assert extract_code("````md\n```python\nx\n```\n````")[0] == "```python\nx\n```"


@pytest.mark.parametrize(("response", "lang", "reason"), [
    (fenced(GOOD), "python", None),
    (GOOD, "python", "no_code_block"),
    ("```python\n" + GOOD, "python", "unclosed_code_block"),
    (fenced(GOOD, "java"), "python", "wrong_language"),
    (fenced("x = 1"), "python", "too_short"),
    (fenced(GOOD * 40), "python", "too_long"),
    (fenced(GOOD.replace("def add(self, name, count=1):", "def add(self, name, count=1")), "python",
     "syntax_error"),
    (fenced(GOOD, "py"), "python", None),
    (fenced(GOOD.replace("class Inventory:", "class Inventory {"), "js"), "javascript", None),  # no JS parser
])
def test_check_row_reasons(response, lang, reason):
    _, got, _ = check_row(response, lang, FilterConfig(min_chars=80, min_lines=3, max_chars=20_000))
    assert got == reason


def _humaneval_text(data_dir):
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt") as fh:
        rec = json.loads(fh.readline())
    return rec["task_id"], rec["prompt"] + rec["canonical_solution"]


def test_build_synthetic_rejects_duplicates_and_contamination_with_reasons(spark, tmp_path):
    task_id, bench_code = _humaneval_text(REPO_ROOT / "data" / "benchmarks")
    seed_code = GOOD.replace("Inventory", "Warehouse").replace("item", "crate")
    near = GOOD.replace('inv.add("apple", 3)', 'inv.add("pear", 3)')
    responses = {
        "g1": fenced(GOOD),
        "g2": "I cannot help with that.",
        "g3": fenced("print(1)"),
        "g4": fenced(seed_code),                       # copies the seed file
        "g5": fenced(GOOD + "\n"),                      # same file as g1 after normalisation
        "g6": fenced(bench_code),                       # a benchmark solution
        "g7": fenced(near),                             # one line away from g1
        "g8": fenced(GOOD.replace("return [", "return [[")),
        "g9": "```python\n" + GOOD[:200],
    }
    now = dt.datetime(2026, 1, 1)
    raw = spark.createDataFrame(
        [(sid, "seed-x", "python", 0.9, "seed", "prompt", resp, "oss_instruct_pretrain", 1, "embedded", "rev",
          "transformers", "{}", 10, 20, "stop", "run", now) for sid, resp in responses.items()], _raw_schema())
    seeds = spark.createDataFrame([("seed-x", seed_code)], "doc_id string, content string")
    bench_yaml = tmp_path / "benchmarks.yaml"
    bench_yaml.write_text("benchmarks:\n  - {name: humaneval, files: humaneval/HumanEval.jsonl.gz, id: task_id,"
                          " fields: [prompt, canonical_solution]}\n")
    decon = DecontaminateConfig(benchmarks_file=str(bench_yaml))
    out = build_synthetic(raw, seeds, load_benchmarks(spark, decon),
                          cfg=FilterConfig(min_chars=80, min_lines=3, decontaminate=decon))
    assert out.columns == SYNTHETIC_COLUMNS
    got = {r.synth_id: r for r in out.collect()}
    reasons = {sid: r.reject_reason for sid, r in got.items()}
    assert reasons == {
        "g1": None, "g2": "no_code_block", "g3": "too_short", "g4": "exact_duplicate", "g5": "exact_duplicate",
        "g6": "benchmark_contamination", "g7": "near_duplicate", "g8": "syntax_error",
        "g9": "unclosed_code_block",
    }
    assert got["g1"].status == "accepted" and got["g1"].content == GOOD.rstrip("\n")
    assert all(r.status == "rejected" for sid, r in got.items() if sid != "g1")
    assert got["g4"].reject_detail == "same as seed:seed-x"
    assert got["g5"].reject_detail == "same as g1"
    assert got["g7"].reject_detail.startswith("similar to g1")
    assert task_id in got["g6"].reject_detail


def test_checks_of_rows_held_in_process_equal_the_spark_checks(spark, tmp_path):
    """`check_rows_local` (what the job runs on each generated chunk) gives `check_rows`' rows column for column:
    verdicts, extracted files, dedup keys and the strongest benchmark hit, also when two benchmarks tie."""
    _, bench_code = _humaneval_text(REPO_ROOT / "data" / "benchmarks")
    responses = [fenced(GOOD), "I cannot help with that.", fenced("print(1)"), fenced(GOOD + "\n"),
                 fenced(bench_code), fenced(GOOD.replace("return [", "return [[")), "```python\n" + GOOD[:200],
                 fenced(GOOD, "javascript"), fenced(GOOD.replace("apple", "pear"))]
    now = dt.datetime(2026, 1, 1, 12, 30)
    rows = [(f"g{i}", "seed-x", "python", 0.9, "seed", "prompt", resp, "oss_instruct_pretrain", 1, "embedded", "rev",
             "transformers", "{}", 10, 20, "stop", "run", now) for i, resp in enumerate(responses)]
    bench_yaml = tmp_path / "benchmarks.yaml"
    # HumanEval+ repeats HumanEval's prompts: a benchmark file matches both, with equal overlaps.
    bench_yaml.write_text(
        "benchmarks:\n  - {name: humaneval, files: humaneval/HumanEval.jsonl.gz, id: task_id, fields: [prompt]}\n"
        "  - {name: humaneval_plus, files: humaneval_plus/HumanEvalPlus.jsonl.gz, id: task_id, fields: [prompt]}\n")
    decon = DecontaminateConfig(benchmarks_file=str(bench_yaml))
    cfg = FilterConfig(min_chars=80, min_lines=3, decontaminate=decon)
    want = check_rows(spark.createDataFrame(rows, _raw_schema()), load_benchmarks(spark, decon), cfg=cfg)
    got = check_rows_local(spark, rows, _raw_schema(), cfg=cfg, index=benchmark_index(decon))
    assert got.columns == want.columns
    got_rows, want_rows = ({r.synth_id: r.asDict() for r in df.collect()} for df in (got, want))
    assert got_rows == want_rows
    assert {r["reject_reason"] for r in got_rows.values()} == {
        None, "no_code_block", "too_short", "syntax_error", "unclosed_code_block", "wrong_language"}
    assert got_rows["g4"][CONTAMINATION_COL].startswith("humaneval_plus ")  # the tie goes to the greater name
    assert got_rows["g0"]["content_hash"] == got_rows["g3"]["content_hash"] and got_rows["g0"]["signature"]
    assert got_rows["g1"]["signature"] is None and got_rows["g1"]["content_hash"] is None


def test_filter_sections_are_the_curation_configs_and_refuse_settings_synth_ignores():
    cfg = load_config(FilterConfig, overrides={"near_dedup.threshold": 0.8, "exact_dedup.normalise": '["strip"]',
                                               "decontaminate.enabled": False})
    assert cfg.near_dedup == NearDedupConfig(threshold=0.8)
    assert cfg.exact_dedup == ExactDedupConfig(normalise=["strip"]) and not cfg.decontaminate.enabled
    with pytest.raises(ConfigError) as err:
        load_config(FilterConfig, overrides={"near_dedup.keep": '["doc_id desc"]', "near_dedup.incremental": True})
    assert sorted(p.split(":")[0] for p in err.value.problems) == ["near_dedup.incremental", "near_dedup.keep"]
    with pytest.raises(ConfigError, match="near_dedup.threshold"):
        load_config(FilterConfig, overrides={"near_dedup.threshold": 2.0})


def test_generations_and_seeds_are_redacted_before_they_are_written():
    secret = 'API_KEY = "AKIAZ7QWERTYUIOPASDF"\nowner = "jane.doe@acme-corp.com"\n'

    class Echo(Engine):
        kind = "echo"

        def __init__(self):
            super().__init__("echo-model", "r0", None)
            self.prompts: list[str] = []

        def render_chat(self, messages):
            return "\n".join(m["content"] for m in messages)

        def generate(self, prompts, sampling):
            self.prompts += list(prompts)
            return [Generation(fenced(GOOD + secret), 10, 20, "stop") for _ in prompts]

    eng, cfg = Echo(), FilterConfig(min_chars=80, min_lines=3)
    seed = {"synth_id": "s1", "doc_id": "d1", "lang": "python", "score": 1.0, "seed_text": GOOD + secret}
    template = load_template("oss_instruct_pretrain")
    row = generate_chunk([seed], engine=eng, template=template, sampling=SamplingConfig(), run_id="r",
                         redact=cfg.redact)[0]
    written = " ".join(str(v) for v in row) + " ".join(eng.prompts)
    assert "AKIAZ7QWERTYUIOPASDF" not in written and "jane.doe@" not in written
    assert '<KEY>' in row[4] and '<EMAIL>' in row[6]  # seed_text, response
    # post-processing redacts rows written before redaction existed, and rejects a dump of secrets
    code, reason, _ = check_row(fenced(GOOD + secret), "python", cfg)
    assert reason is None and "<KEY>" in code and "AKIA" not in code
    dump = GOOD + "".join(f'K{i} = "AKIA{"QWERTYUIOPASDFGH"[i:] + "Z" * i}"\n' for i in range(8))
    capped = FilterConfig(min_chars=80, min_lines=3, redact=dataclasses.replace(cfg.redact, max_findings=5))
    _, reason, detail = check_row(fenced(dump), "python", capped)
    assert reason == "too_many_secrets" and detail.startswith("8 findings")
    assert redact_generation(secret, dataclasses.replace(cfg.redact, enabled=False)) == (secret, 0)
