"""CodeLM: the paper's 1.3B architecture, the loss, config errors, and Hugging Face export / init_from loading."""

from __future__ import annotations

import math

import pytest
import torch

from codemill.config import ConfigError
from trainer.export import export_hf, init_source_problem, load_weights, read_state_dict
from trainer.model import CodeLM

DEBUG = dict(vocab_size=260, seq_len=64, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4,
             num_kv_heads=4, max_position_embeddings=128, warmup_steps=2)


def test_defaults_are_the_papers_1_3b():
    model = CodeLM()  # defaults = paper §3.1; the weights are only built by configure_model
    cfg = model.llama_config()
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (2048, 5632, 24)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (16, 16, 64000)
    assert cfg.max_position_embeddings == 8192 and cfg.tie_word_embeddings
    assert cfg.rope_parameters["rope_type"] == "default"
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    assert 1.3e9 < params < 1.5e9  # 1.42B with the 64000 x 2048 tied embedding


def test_loss_at_init_is_near_uniform_and_flops_formula():
    torch.manual_seed(0)
    model = CodeLM(**DEBUG)
    model.configure_model()
    batch = torch.randint(0, 260, (2, 65))
    assert model(batch[:, :-1]).shape == (2, 64, 260)  # (B, T, V)
    assert abs(model._loss(batch).item() - math.log(260)) < 0.1
    n = model.num_parameters()
    assert model.flops_per_token() == 6 * n + 12 * 2 * 64 * 64


def test_config_errors_are_collected(tmp_path):
    with pytest.raises(ConfigError) as err:
        CodeLM(**{**DEBUG, "num_heads": 3, "seq_len": 256, "lr": -1.0, "init_from": str(tmp_path)})
    keys = [p.split(":")[0] for p in err.value.problems]
    assert keys == ["model.lr", "model.min_lr", "model.num_heads", "model.num_kv_heads",
                    "model.max_position_embeddings", "model.init_from"]


def test_hf_export_round_trip_and_init_from(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = CodeLM(**DEBUG)
    model.configure_model()
    out = export_hf(model.model, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors"}
    assert init_source_problem(str(out)) == []
    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    x = torch.randint(0, 260, (1, 16))
    torch.testing.assert_close(loaded(input_ids=x).logits, model(x))

    fresh = CodeLM(**{**DEBUG, "init_from": str(out)})
    fresh.configure_model()  # loads the export into new weights
    torch.testing.assert_close(fresh(x), model(x))

    # A Lightning checkpoint works as a source too (keys prefixed with `model.`).
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.model.state_dict().items()}}, ckpt)
    assert read_state_dict(str(ckpt)).keys() == model.model.state_dict().keys()

    other = CodeLM(**{**DEBUG, "hidden_size": 32, "intermediate_size": 64})
    other.configure_model()
    with pytest.raises((ValueError, RuntimeError)):
        load_weights(other.model, str(out))
