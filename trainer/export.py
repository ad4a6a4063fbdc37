"""Hugging Face export of trained weights, and loading earlier weights to start a phase (`model.init_from`).

The export folder (`<run_dir>/hf`) holds `config.json`, `model.safetensors`, `generation_config.json` and, when the
shards name one, the tokenizer: `transformers.AutoModelForCausalLM.from_pretrained(dir)` and `vllm.LLM(dir)` load it.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def init_source_problem(path: str) -> list[str]:
    """Problems with an `init_from` source: it must be an HF export folder or a Lightning/DeepSpeed checkpoint."""
    p = Path(path)
    if p.is_dir() and ((p / "config.json").is_file() or (p / "checkpoint").is_dir() or (p / "latest").is_file()):
        return []
    if p.is_file() and p.suffix == ".ckpt":
        return []
    return [f"model.init_from: {path} is neither a Hugging Face export folder (config.json + safetensors) "
            f"nor a Lightning .ckpt file / DeepSpeed checkpoint folder"]


def read_state_dict(path: str) -> dict:
    """The model's weights (keys as in `LlamaForCausalLM.state_dict()`) from an export or a training checkpoint."""
    import torch

    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        from safetensors.torch import load_file

        state = {}
        for shard in sorted(p.glob("*.safetensors")):
            state.update(load_file(str(shard)))
        if not state:
            raise FileNotFoundError(f"model.init_from: no *.safetensors in {path}")
        return state
    if p.is_dir():  # DeepSpeed checkpoint folder written by Lightning's DeepSpeedStrategy
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=False)["state_dict"]
    # LightningModule keys are prefixed with the attribute name (`model.`), possibly under DeepSpeed's `module.`.
    prefix = "model."
    out = {}
    for key, value in state.items():
        key = key.removeprefix("_forward_module.").removeprefix("module.")
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out


def load_weights(model, path: str) -> None:
    """Copies weights into `model` in place; shapes and names must match exactly (tied lm_head may be absent)."""
    state = read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"model.init_from: {path} does not match the configured model: "
                         f"missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")


def export_hf(model, out_dir: str | Path, *, tokenizer_dir: str | Path | None = None, state_dict=None) -> Path:
    """Writes `model` (a `LlamaForCausalLM`) as safetensors + config, plus the tokenizer files when given."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True, state_dict=state_dict)
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    return out
