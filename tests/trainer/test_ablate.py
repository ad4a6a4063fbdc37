"""Proxy-model ablations (trainer/ablate): budget checks, shared prefixes, resume, the contamination refusal, bits per
byte, and a whole 2-variant, 1-seed ablation on the tiny byte-level shards of tests/fixtures/train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from codemill.config import ConfigError, load_config
from tests.fixtures.train.helpers import VOCAB_SIZE, write_shards
from trainer.ablate import bpb
from trainer.ablate import run as ablate
from trainer.ablate.config import AblationConfig, DatasetSpec
from trainer.ablate.stats import paired_delta, spearman


def byte_tokenizer(out_dir: Path):
    """A tokenizer whose ids are the UTF-8 byte values (the fixture shards' encoding; id 256 = end of text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # GPT-2's printable stand-ins for bytes (what byte-level pre-tokenization emits).
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    vocab = {chars[b]: b for b in range(256)}
    vocab.update({"<|endoftext|>": 256, "<|file_sep|>": 257, "<|repo_name|>": 258, "<|pad|>": 259})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    return tok


def ablation_yaml(tmp_path: Path, **over) -> Path:
    shards = write_shards(tmp_path / "shards", seq_len=64, train_sequences=96, val_sequences=8, repeat=2,
                          phases=("phase1", "phase2"))
    byte_tokenizer(shards / "tokenizer")
    cfg = {
        "name": "tiny", "lake": str(tmp_path / "lake"), "shards_root": str(shards), "out": str(tmp_path / "out"),
        "seeds": [1], "budget_tokens": 4096, "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "proxy": {"config": "conf/train/debug-phase1.yaml", "batch_size": 4,
                  "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2,
                            "num_kv_heads": 2}},
        "schedules": [{"name": "p1", "schedule": "cosine", "lr": 5e-3, "min_lr": 5e-4, "warmup_steps": 2},
                      {"name": "p2", "schedule": "linear", "lr": 5e-3, "min_lr": 0.0, "warmup_steps": 2}],
        "datasets": [{"name": "p1", "phase": "phase1"}, {"name": "p2", "phase": "phase2"}],
        "variants": [
            {"name": "p1_only", "stages": [{"data": "p1", "tokens": 2048, "schedule": "p1"},
                                           {"data": "p1", "tokens": 2048, "schedule": "p2"}]},
            {"name": "p1_p2", "stages": [{"data": "p1", "tokens": 2048, "schedule": "p1"},
                                         {"data": "p2", "tokens": 2048, "schedule": "p2"}]}],
        "comparisons": [{"name": "p2_vs_p1", "variant": "p1_p2", "baseline": "p1_only"}],
        # MBPP is not in the fixture shards (they are HumanEval); 32-byte n-grams for the byte-level tokenizer.
        "eval": {"benchmarks": ["mbpp"], "limit": 4, "ngram": 32},
    }
    for key, value in over.items():
        cfg[key] = value
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_variant_ablation_shares_the_prefix_records_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow artifacts and the default mlruns folder stay in the test's folder
    path = ablation_yaml(tmp_path)
    out = ablate.main(["--config", str(path)])

    # phase 1's first stage is trained once for both variants
    assert (out["trainings"], out["trainings_without_sharing"], out["trained_this_run"]) == (3, 4, 3)
    runs = sorted(p.parent.name for p in (tmp_path / "out" / "runs" / "seed1").glob("*/done.json"))
    assert len(runs) == 3 and sum(r.startswith("0-p1-") for r in runs) == 1
    for done in (tmp_path / "out" / "runs" / "seed1").glob("*/done.json"):
        info = json.loads(done.read_text())
        assert info["tokens"] == 2048 and info["steps"] == 8
        assert not (done.parent / "checkpoints").exists()

    for variant in ("p1_only", "p1_p2"):
        per = out["variants"][variant]["mbpp"]
        assert per["n"] == 1 and 0.5 < per["mean"] < 8.5  # a byte-level model: at most log2(260) bits per byte
    delta = out["comparisons"]["p2_vs_p1"]["mbpp"]
    assert delta["delta"] == pytest.approx(out["variants"]["p1_p2"]["mbpp"]["mean"]
                                           - out["variants"]["p1_only"]["mbpp"]["mean"])
    assert math.isnan(delta["ci95"][0])  # one seed: no interval

    from deltalake import DeltaTable

    rows = DeltaTable(str(tmp_path / "lake" / "ablations")).to_pyarrow_table().to_pylist()
    assert sorted((r["variant"], r["benchmark"]) for r in rows) == [("p1_only", "mbpp"), ("p1_p2", "mbpp")]
    assert all(r["tokens_trained"] == r["budget_tokens"] == 4096 and r["problems"] == 4 for r in rows)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("codemill-ablate")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{out['mlflow_parent_run']}'")
    kinds = sorted(r.data.tags.get("ablate.kind", "stage") for r in children)
    assert kinds == ["stage"] * 3 + ["variant"] * 2
    variant_run = next(r for r in children if r.data.tags.get("ablate.variant") == "p1_p2")
    assert variant_run.data.metrics["bpb/mbpp"] == pytest.approx(out["variants"]["p1_p2"]["mbpp"]["mean"])

    # Re-running trains nothing, re-evaluates nothing and replaces (not appends) the table rows.
    again = ablate.main(["--config", str(path)])
    assert again["trained_this_run"] == 0
    assert again["variants"] == out["variants"]
    assert len(DeltaTable(str(tmp_path / "lake" / "ablations")).to_pyarrow_table()) == 2


def test_an_unequal_budget_is_refused_naming_the_variant(tmp_path):
    path = ablation_yaml(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["variants"][1]["stages"][1]["tokens"] = 1024
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"variants\.1\.stages: p1_p2 trains 3,072 tokens, the budget is 4,096"):
        load_config(AblationConfig, path)


def test_stage_tokens_must_be_whole_steps_and_fit_the_repeats(tmp_path):
    path = ablation_yaml(tmp_path, budget_tokens=4096 + 100)
    cfg = yaml.safe_load(path.read_text())
    cfg["variants"] = [{"name": "big", "stages": [{"data": "p2", "tokens": 4196, "schedule": "p2"}]}]
    cfg["comparisons"] = []
    path.write_text(yaml.safe_dump(cfg))
    c = load_config(AblationConfig, path)
    with pytest.raises(ConfigError, match="not a whole number of optimizer steps"):
        ablate.make_plan(c, ablate.manifests(c))
    cfg["budget_tokens"] = 256 * 60  # 60 steps; phase2 holds 96 / 4 = 24 batches x 2 repeats = 48
    cfg["variants"][0]["stages"][0]["tokens"] = 256 * 60
    path.write_text(yaml.safe_dump(cfg))
    c = load_config(AblationConfig, path)
    with pytest.raises(ConfigError, match="dataset p2 holds 24 steps x 2 repeats"):
        ablate.make_plan(c, ablate.manifests(c))


def test_an_interrupted_stage_resumes_from_its_checkpoint(tmp_path):
    c = load_config(AblationConfig, ablation_yaml(tmp_path))
    plan = ablate.make_plan(c, ablate.manifests(c))
    first, second = plan.chains[("p1_p2", 1)]
    stage = plan.stages[second]
    ds = c.datasets[1]
    fresh = ablate.stage_args(c, stage, ds, parent_export="prev/hf", mlflow_parent=None, resume=None)
    assert "--init_from" in fresh and "--ckpt_path" not in fresh
    resumed = ablate.stage_args(c, stage, ds, parent_export="prev/hf", mlflow_parent=None, resume="x/last.ckpt")
    assert "--ckpt_path" in resumed and "--init_from" not in resumed
    assert resumed[resumed.index("--trainer.max_steps") + 1] == "8"
    assert plan.stages[first].parent is None and stage.parent == first
    text = ablate.print_budget(c, plan, ablate.manifests(c))
    assert "p1_p2                         4,096" in text and "dataset p2" in text and "passes per stage [0.33]" in text


def test_the_budget_shows_each_selection_against_its_control_and_warns_when_unmatched(tmp_path):
    c = load_config(AblationConfig, ablation_yaml(tmp_path))
    c.datasets = [DatasetSpec(name="sel", phase="phase2", annotator="a", control="ctl"),
                  DatasetSpec(name="ctl", phase="phase2"), DatasetSpec(name="p1", phase="phase1")]
    mans = {"sel": {"tokens_per_language": {"python": 30_000, "java": 18_000},
                    "splits": {"train": {"tokens": 47_000}}},
            "ctl": {"tokens_per_language": {"python": 29_500, "java": 17_900},
                    "splits": {"train": {"tokens": 46_500}}}, "p1": {}}
    (ctl,) = ablate.control_tokens(c, mans)
    assert (ctl["selection_tokens"], ctl["control_tokens"]) == (48_000, 47_400)
    assert ctl["ratio"] == pytest.approx(47_400 / 48_000)
    assert ctl["train_ratio"] == pytest.approx(46_500 / 47_000)
    assert ctl["per_language"] == {"java": [18_000, 17_900], "python": [30_000, 29_500]}
    plan = ablate.Plan({}, {}, 256, 64)
    c.variants, c.datasets = [], c.datasets[:2]  # the stage lines are tested above; here the control line
    text = ablate.print_budget(c, plan, mans)
    assert "control ctl of sel: 47,400 vs 48,000 tokens (ratio 0.988" in text and "WARNING" not in text
    assert "train splits 46,500 vs 47,000 (ratio 0.989)" in text
    mans["ctl"]["splits"]["train"]["tokens"] = 40_000  # a large validation document on one side
    assert "WARNING: the train splits" in ablate.print_budget(c, plan, mans)
    mans["ctl"]["tokens_per_language"]["python"] = 60_000  # one big file too many: the old defect
    assert "WARNING: not token-matched" in ablate.print_budget(c, plan, mans)


def test_a_benchmark_copied_into_the_training_shards_is_refused(tmp_path):
    # The fixture shards are HumanEval's prompts and solutions as bytes: HumanEval must be refused, MBPP not.
    c = load_config(AblationConfig, ablation_yaml(tmp_path, eval={"benchmarks": ["humaneval", "mbpp"],
                                                                  "limit": 40, "ngram": 32}))
    tok = bpb.load_tokenizer(str(Path(c.shards_root) / "tokenizer"))
    problems = ablate.load_eval_problems(c)
    with pytest.raises(bpb.ContaminatedBenchmark, match=r"humaneval: \d+ problems") as err:
        ablate.check_contamination(c, ablate.manifests(c), problems, tok)
    assert "mbpp" not in str(err.value)
    clean = [p for p in problems if p.benchmark == "mbpp"]
    assert ablate.check_contamination(c, ablate.manifests(c), clean, tok)["p1"] > 0


def test_bits_per_byte_scores_each_solution_token_once_with_bounded_context(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512))
    problem = bpb.Problem("humaneval", "t/0", "def f(x):\n    \"\"\"doc\"\"\"\n", "    return x * 2  # twice\n",
                          ("humaneval",))
    ids = tok.encode(problem.prompt + problem.solution, add_special_tokens=False).ids
    n_prompt = len(tok.encode(problem.prompt, add_special_tokens=False).ids)
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    direct = -sum(float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids))) / math.log(2)
    full = bpb.bits_per_byte(model, tok, [problem], seq_len=256)["humaneval"]
    assert full["bits"] == pytest.approx(direct, rel=1e-5)
    assert full["bpb"] == pytest.approx(direct / len(problem.solution.encode()), rel=1e-5)
    # A short context: every target is still scored exactly once, each block seeing at most seq_len tokens.
    windows = bpb._windows(n_prompt, len(ids), 8)
    targets = [t for _, first, end in windows for t in range(first, end)]
    assert targets == list(range(n_prompt, len(ids)))
    assert all(end - 1 - start <= 8 and first - start >= 4 for start, first, end in windows if start > 0)
    short = bpb.bits_per_byte(model, tok, [problem], seq_len=8)["humaneval"]
    assert short["bytes"] == full["bytes"] and short["bits"] != pytest.approx(full["bits"], rel=1e-6)


def test_ngram_hashes_find_copies_only():
    a = np.arange(100)
    grams = np.unique(bpb.ngram_hashes(a, 8))
    assert len(grams) == 93
    assert np.isin(bpb.ngram_hashes(a[10:40], 8), grams).all()
    assert not np.isin(bpb.ngram_hashes(a[::-1].copy(), 8), grams).any()
    rng = np.random.default_rng(0)
    train = np.unique(rng.integers(0, 2**63, 5000, dtype=np.uint64))
    probe = np.concatenate([train[rng.integers(0, len(train), 50)], rng.integers(0, 2**63, 50, dtype=np.uint64),
                            np.array([0, 2**64 - 1], dtype=np.uint64)])
    assert (bpb.in_sorted(probe, train) == np.isin(probe, train)).all() and bpb.in_sorted(probe, train)[:50].all()
    assert not bpb.in_sorted(probe, np.empty(0, dtype=np.uint64)).any()


def test_paired_delta_interval_and_spearman():
    d = paired_delta([1.0, 2.0, 3.0], [0.5, 1.0, 2.5])  # differences 0.5, 1.0, 0.5
    assert d["delta"] == pytest.approx(2 / 3)
    half = 4.302652729911275 * math.sqrt(1 / 12) / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert d["ci95"] == pytest.approx([2 / 3 - half, 2 / 3 + half])
    assert d["ci95"][0] < 0  # three seeds do not resolve it; four would (t(0.975, 3) * sd / 2 = 0.46 < 2/3)
    assert d["seeds_to_resolve"] == 4
    assert spearman([1, 2, 3, 4], [10, 20, 30, 25])["rho"] == pytest.approx(0.8)


@pytest.mark.parametrize("min_parameters, runs", [(10**9, False), (0, True)])
def test_pass_at_1_runs_only_for_a_large_enough_proxy(tmp_path, monkeypatch, min_parameters, runs):
    import torch

    c = load_config(AblationConfig, ablation_yaml(tmp_path, eval={"benchmarks": ["mbpp"], "limit": 2, "ngram": 32,
                                                                  "pass_at_1": {"min_parameters": min_parameters}}))
    torch.manual_seed(0)
    model = torch.nn.Module()

    def forward(input_ids):  # uniform over the vocabulary: exactly log2(260) bits per token
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, VOCAB_SIZE)})()

    model.forward = forward
    model.weight = torch.nn.Parameter(torch.zeros(10))
    monkeypatch.setattr(bpb, "load_model", lambda path: model)
    seen = []

    def fake_evaluate(ecfg):
        seen.append((ecfg.model, ecfg.lake))
        return {"metrics": {"mbpp/pass@1": 0.25, "mbpp/n_tasks": 2.0}}

    monkeypatch.setattr(ablate, "evaluate", fake_evaluate)
    hf = tmp_path / "run" / "hf"
    hf.mkdir(parents=True)
    tok = bpb.load_tokenizer(str(Path(c.shards_root) / "tokenizer"))
    out = ablate.evaluate_model(c, str(hf), ablate.load_eval_problems(c), tok, 64, "d")
    assert out["parameters"] == 10
    assert out["bpb"]["mbpp"]["bits"] == pytest.approx(
        math.log2(VOCAB_SIZE) * sum(len(tok.encode(p.solution).ids) for p in ablate.load_eval_problems(c)))
    assert (out["pass_at_1"] == {"mbpp": 0.25}) is runs and bool(seen) is runs
    if runs:
        assert seen == [(str(hf), c.lake)]
    assert (tmp_path / "run" / "bpb-d.json").is_file()  # cached next to the model
