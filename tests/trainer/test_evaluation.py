"""Tests for trainer/evaluation: pass@k, the sandbox, canonical solutions and the end-to-end job."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import trainer.evaluation.callback as callback_mod
from codemill.config import ConfigError, parse_config
from trainer.evaluation.benchmarks import BENCHMARKS, KNOWN_BROKEN, expand, load_benchmark
from trainer.evaluation.callback import EvaluateAtFitEnd
from trainer.evaluation.passk import mean_pass_at_k, pass_at_k
from trainer.evaluation.run import (
    EvalConfig,
    Sample,
    canonical_samples,
    evaluate,
    execute_samples,
    load_tasks,
    mlflow_key,
    score,
    truncate,
    write_results,
)
from trainer.evaluation.sandbox import Digest, Job, SandboxConfig, SandboxPool, execute, outputs_match

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(SandboxConfig(timeout_s=5.0, memory_mb=1024, workers=2)) as p:
        yield p


# ------------------------------------------------------------------------------------------------ pass@k
def test_pass_at_k_matches_combinatorial_definition():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 20, 1), (7, 2, 7), (200, 13, 10)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert mean_pass_at_k([(1, 1), (1, 0), (1, 0), (1, 1)], 1) == 0.5
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


# ------------------------------------------------------------------------------------------------ sandbox
def test_sandbox_stops_hostile_samples_without_affecting_others(pool, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    jobs = {
        "ok": Job("x = sum(range(4))", 5.0, tests="assert x == 6"),
        "wrong": Job("x = 1 + 1", 5.0, tests="assert x == 3"),
        "loop": Job("while True:\n    pass", 1.5),
        "memory": Job("blocks = []\nwhile True:\n    blocks.append(bytearray(10**8))", 20.0),
        # Without RLIMIT_AS this would fill 8 GiB (bytearray zero-fills); with it the allocation fails at once.
        "memory_big": Job("block = bytearray(8 * 1024**3)", 20.0),
        "network": Job("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)", 5.0),
        "delete": Job(f"import os\nos.remove({str(victim)!r})", 5.0),
        "fake_exit": Job("import os\nos._exit(0)", 5.0, tests="assert False"),
        "sys_exit": Job("raise SystemExit(0)", 5.0),
        "ok_after": Job("import math\ng = math.gcd(12, 18)", 5.0, tests="assert g == 6"),
    }
    start = time.monotonic()
    results = dict(zip(jobs, pool.run(list(jobs.values()))))
    elapsed = time.monotonic() - start
    assert results["ok"].passed and results["ok_after"].passed
    for name in ("wrong", "loop", "memory", "network", "delete", "fake_exit", "sys_exit"):
        assert not results[name].passed, name
    assert results["loop"].status == "timeout"
    assert "MemoryError" in results["memory_big"].detail
    assert results["memory_big"].runtime_s < 5
    assert results["network"].status == "failed"
    assert victim.read_text() == "keep me"
    assert elapsed < 60


def test_sandbox_reports_its_isolation(pool):
    # Every result says what the sample ran under (strict: Landlock + seccomp + rlimits), as the pool does.
    r = pool.run([Job("x = 1", 5.0)])[0]
    assert r.passed and r.isolation == pool.isolation
    assert pool.isolation.startswith("landlock-abi") and pool.isolation.endswith("+seccomp+rlimits")
    loose = execute(Job("import socket\nsocket.socket().close()", 5.0),
                    SandboxConfig(timeout_s=5.0, memory_mb=512, workers=1, isolation="none"))
    assert loose.passed and loose.isolation == "rlimits"


def test_differential_job_collects_and_compares_outputs(pool):
    inputs = pickle.dumps([[1], [2.5], [[1, 2]]])
    collect, = pool.run([Job("def f(x):\n    return x * 2", 5.0, entry_point="f", inputs=inputs,
                             collect_outputs=True)])
    assert collect.passed and pickle.loads(collect.outputs) == [2, 5.0, [1, 2, 1, 2]]
    good, bad, missing = pool.run([
        Job("def f(x):\n    return x + x", 5.0, entry_point="f", inputs=inputs, expected=collect.outputs),
        Job("def f(x):\n    return x * 3", 5.0, entry_point="f", inputs=inputs, expected=collect.outputs),
        Job("def g(x):\n    return x * 2", 5.0, entry_point="f", inputs=inputs, expected=collect.outputs),
    ])
    assert good.passed and not bad.passed and not missing.passed


def test_outputs_match_oracles():
    assert outputs_match(0.1 + 0.2, 0.3, oracle="exact", atol=0)
    assert not outputs_match(0.31, 0.3, oracle="exact", atol=0)
    assert outputs_match([3, 1, 2], [1, 2, 3], oracle="set", atol=0)
    assert outputs_match(1.0, 1.0000001, oracle="poly_root", atol=1e-4, args=([-1.0, 1.0],))
    assert not outputs_match(2.0, 1.0, oracle="poly_root", atol=1e-4, args=([-1.0, 1.0],))
    assert not outputs_match((1, 2), [1, 2, 3], oracle="exact", atol=0)
    assert not outputs_match([1, 2], (1, 2), oracle="exact", atol=0)  # EvalPlus: a list is not a tuple
    nan = float("nan")
    assert outputs_match([nan, None, 1.5], [nan, None, 1.5], oracle="exact", atol=0)
    big = "ab" * 10**6
    assert outputs_match(big, Digest.of(big), oracle="exact", atol=0)
    assert not outputs_match(big + "c", Digest.of(big), oracle="exact", atol=0)


# ------------------------------------------------------------------------------------------------ benchmarks
def test_benchmark_loading_and_prompts():
    humaneval = load_benchmark("humaneval")
    assert len(humaneval) == 164 and humaneval[0].task_id == "HumanEval/0"
    assert not humaneval[0].render_prompt().endswith("\n")  # paper: trailing newlines stripped
    assert len(load_benchmark("mbpp")) == 500  # test split, tasks 11-510
    assert len(load_benchmark("mbpp_plus")) == 378
    assert expand(["evoeval"]) == [b for b in BENCHMARKS if b.startswith("evoeval_")]
    assert truncate("    return 1\ndef other():\n", load_benchmark("humaneval")[0].stops) == "    return 1"
    # JSON stored MBPP+ tuple arguments as lists; the contract restores them (Mbpp/2 takes two tuples).
    mbpp2 = next(t for t in load_benchmark("mbpp_plus") if t.task_id == "Mbpp/2")
    assert all(isinstance(a, tuple) for a in pickle.loads(mbpp2.inputs)[0])


# Tasks of each benchmark as loaded before the benchmark catalogue (codemill/benchmarks.py) existed: (count, sha256
# prefix of the tasks with their inputs unpickled). A change means evaluation scores other problems than before.
LOADED_TASKS = {"humaneval": [164, "ef2f65688ee71a72"],
                "humaneval_plus": [164, "6a5d8a6e4899e859"],
                "mbpp": [500, "f3f8a9836e18264d"],
                "mbpp_plus": [378, "4a6156b50158485f"],
                "evoeval_difficult": [100, "1374f96f9af2a569"],
                "evoeval_creative": [100, "c396caadf1e77574"],
                "evoeval_subtle": [100, "2da870b66f769d11"],
                "evoeval_combine": [100, "d5df67ae3e38023a"],
                "evoeval_tool_use": [100, "2fffd62f9a0bb219"]}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_loaded_tasks_are_unchanged(name):
    tasks = load_benchmark(name, include_broken=True)
    rows = [{**dataclasses.asdict(t), "inputs": repr(pickle.loads(t.inputs)) if t.inputs is not None else None}
            for t in tasks]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    assert [len(tasks), digest] == LOADED_TASKS[name]


def _wrong(task) -> str:
    # A solution that defines the entry point but answers a constant.
    return (task.render_prompt() + "\n    return None\n" if task.style == "function"
            else f"def {task.entry_point}(*args, **kwargs):\n    return None\n")


def _check_benchmark(tasks, pool, tmp_path):
    samples = canonical_samples(tasks)
    results = execute_samples(samples, pool, cache_dir=tmp_path / "expected")
    failures = [(s.task.task_id, r.status, r.detail) for s, r in zip(samples, results) if not r.passed]
    assert failures == []
    wrong = [Sample(t, 0, "", _wrong(t)) for t in tasks]
    wrong_results = execute_samples(wrong, pool, cache_dir=tmp_path / "expected")
    return score(samples, results), score(wrong, wrong_results)


def test_canonical_solutions_pass_all_of_humaneval(pool, tmp_path):
    """A whole benchmark end to end: 164 canonical solutions pass, 164 constant answers fail."""
    good, bad = _check_benchmark(load_tasks(["humaneval"]), pool, tmp_path)
    assert good["humaneval/pass@1"] == 1.0 and good["humaneval/n_tasks"] == 164
    assert bad["humaneval/pass@1"] == 0.0


# Canonical solutions taking tens of seconds on their plus inputs: run in bench/eval.py, kept out of the tests.
HEAVY = {"Mbpp/255", "Mbpp/599", "EvoEval/23", "EvoEval/84", "EvoEval/12", "EvoEval/66", "HumanEval/15"}


@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp", "mbpp_plus", "evoeval"])
def test_canonical_solutions_pass_stratified_subset(name, pool, tmp_path):
    """Every 12th task of each benchmark (the full sets run in bench/eval.py)."""
    tasks = [t for b in expand([name]) for t in load_benchmark(b)[::12] if t.task_id not in HEAVY]
    good, bad = _check_benchmark(tasks, pool, tmp_path)
    for b in expand([name]):
        assert good[f"{b}/pass@1"] == 1.0 and good[f"{b}/n_unscorable"] == 0
        assert bad[f"{b}/pass@1"] == 0.0
    if name == "evoeval":
        assert good["evoeval/pass@1"] == 1.0


def test_known_broken_entries_name_a_reason():
    for bench, entries in KNOWN_BROKEN.items():
        assert bench in BENCHMARKS
        assert all(reason.strip() for reason in entries.values())


# ------------------------------------------------------------------------------------------------ config, table
@pytest.mark.parametrize("path", sorted((REPO / "conf" / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    cfg = parse_config(EvalConfig, ["--config", str(path), "--model", "some/model"])
    assert cfg.model == "some/model" and expand(cfg.benchmarks)


def test_config_errors_name_keys():
    with pytest.raises(ConfigError) as err:
        parse_config(EvalConfig, ["--benchmarks", "[humaneval, nope]", "--generation.n_samples", "3",
                                  "--sandbox.workers", "0"])
    text = str(err.value)
    assert "model:" in text and "benchmarks:" in text and "generation.n_samples" in text
    assert "sandbox.workers" in text


def test_write_results_replaces_same_eval(tmp_path):
    import pyarrow as pa
    from deltalake import DeltaTable

    table = pa.table({"eval_id": ["a", "a"], "task_id": ["t1", "t2"], "passed": [True, False]})
    lake = str(tmp_path / "lake")
    write_results(table, lake_root=lake, eval_id="a", lineage_json='{"job": "evaluation"}')
    write_results(table, lake_root=lake, eval_id="a", lineage_json='{"job": "evaluation"}')
    other = pa.table({"eval_id": ["b"], "task_id": ["t1"], "passed": [True]})
    write_results(other, lake_root=lake, eval_id="b", lineage_json='{"job": "evaluation"}')
    rows = DeltaTable(f"{lake}/eval_results").to_pyarrow_table().to_pylist()
    assert sorted((r["eval_id"], r["task_id"]) for r in rows) == [("a", "t1"), ("a", "t2"), ("b", "t1")]


# ------------------------------------------------------------------------------------------------ end to end
def _tiny_checkpoint(run_dir: Path) -> Path:
    """A random 1-layer LlamaForCausalLM with a small byte-level BPE tokenizer, saved like HFExport does."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [t.canonical_solution for t in load_benchmark("humaneval")[:40]]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    out = run_dir / "hf"
    hf_tok.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_debug_model_end_to_end_scores_land_in_mlflow_and_table(tmp_path):
    import mlflow
    from deltalake import DeltaTable

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("codemill")
    run_id = client.create_run(exp_id, run_name="phase1").info.run_id
    run_dir = tmp_path / "run"
    model_dir = _tiny_checkpoint(run_dir)
    # What trainer.callbacks.HFExport writes next to the export.
    (run_dir / "run_info.json").write_text(json.dumps({"hf_export": str(model_dir), "phase": "phase1",
                                                       "global_step": 7, "mlflow_run_id": run_id,
                                                       "mlflow_tracking_uri": uri}))
    cfg = EvalConfig(model=str(model_dir), benchmarks=["humaneval", "mbpp_plus", "evoeval_subtle"], limit=2,
                     lake=str(tmp_path / "lake"), expected_cache=str(tmp_path / "expected"),
                     sandbox=SandboxConfig(timeout_s=5.0, memory_mb=1024, workers=2))
    cfg.engine.args = {"batch_size": 6}
    cfg.generation.max_new_tokens = 8
    out = evaluate(cfg)

    assert out["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    for bench in ("humaneval", "mbpp_plus", "evoeval_subtle", "evoeval"):
        assert run.data.metrics[mlflow_key(f"{bench}/pass@1")] <= 0.5  # a random model: (near) zero
    history = client.get_metric_history(run_id, mlflow_key("humaneval/pass@1"))
    assert [m.step for m in history] == [7]
    rows = DeltaTable(str(tmp_path / "lake" / "eval_results")).to_pyarrow_table().to_pylist()
    assert len(rows) == 6 and {r["benchmark"] for r in rows} == {"humaneval", "mbpp_plus", "evoeval_subtle"}
    assert all(r["eval_id"] == out["eval_id"] and r["phase"] == "phase1" and r["global_step"] == 7 for r in rows)
    assert all(r["status"] in ("passed", "failed", "timeout") for r in rows)
    assert run.data.tags["eval.sandbox_isolation"].startswith("landlock-abi")
    lineage = json.loads(DeltaTable(str(tmp_path / "lake" / "eval_results")).history(1)[0]["userMetadata"])
    assert lineage["extra"]["sandbox_isolation"] == run.data.tags["eval.sandbox_isolation"]


def test_callback_evaluates_the_phase_export_into_its_mlflow_run(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(callback_mod, "evaluate", lambda cfg: seen.setdefault("cfg", cfg))

    class HFExport:  # stands in for trainer.callbacks.HFExport after on_fit_end
        export_path = tmp_path / "run" / "hf"

    barrier = []
    fake = SimpleNamespace(is_global_zero=True, callbacks=[HFExport()],
                           logger=SimpleNamespace(run_id="abc123", _tracking_uri="sqlite:///x.db"),
                           strategy=SimpleNamespace(barrier=lambda: barrier.append(1)))
    cb = EvaluateAtFitEnd(config=str(REPO / "conf" / "eval" / "debug.yaml"), overrides={"limit": 2})
    cb.on_fit_end(fake, None)
    cfg = seen["cfg"]
    assert cfg.model == str(tmp_path / "run" / "hf") and cfg.limit == 2
    assert cfg.mlflow_run_id == "abc123" and cfg.mlflow_tracking_uri == "sqlite:///x.db" and barrier == [1]
    with pytest.raises(RuntimeError, match="HFExport"):
        EvaluateAtFitEnd().on_fit_end(SimpleNamespace(**{**vars(fake), "callbacks": []}), None)
