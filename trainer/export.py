"""Hugging Face export of trained weights, and loading earlier weights to start a phase (`model.init_from`).

The export folder (`<run_dir>/hf`) holds `config.json`, `model.safetensors`, `generation_config.json` and, when the
shards name one, the tokenizer: `transformers.AutoModelForCausalLM.from_pretrained(dir)` and `vllm.LLM(dir)` load it.

Folders and checkpoints may be on an object store (`s3://bucket/runs/phase1/hf`, `s3a://...`): an export is written
locally and uploaded (`publish_folder`, `config.json` last), an `init_from` source is read from a local copy
(`local_source`), both through `codemill.storage` with the AWS_* environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from codemill import storage


@contextlib.contextmanager
def local_source(path: str) -> Iterator[str]:
    """A local path for an `init_from` source: itself when local; for a URI, a folder's cached local copy
    (`storage.local_copy`, reused while the objects are unchanged) or a `.ckpt` file downloaded for the duration."""
    if storage.is_local(path):
        yield path
    elif storage.isfile(path):
        with tempfile.TemporaryDirectory(prefix="codemill-ckpt-") as tmp:
            local = os.path.join(tmp, path.rsplit("/", 1)[-1])
            fs, inner = storage.filesystem(path)
            with fs.open_input_stream(inner) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
            yield local
    else:
        yield storage.local_copy(path)


def _remote_source_problem(path: str) -> list[str]:
    if storage.isfile(path):
        return [] if path.endswith(".ckpt") else [f"model.init_from: {path} is not a .ckpt file"]
    names = storage.listdir(path)
    if "config.json" in names or "checkpoint" in names or "latest" in names:
        return []
    return [f"model.init_from: {path} is neither a Hugging Face export folder (config.json + safetensors) "
            f"nor a Lightning .ckpt file / DeepSpeed checkpoint folder"]


def init_source_problem(path: str) -> list[str]:
    """Problems with an `init_from` source: it must be an HF export folder or a Lightning/DeepSpeed checkpoint
    (local or on an object store)."""
    if not storage.is_local(path):
        try:
            return _remote_source_problem(path)
        except OSError as exc:
            return [f"model.init_from: cannot read {path}: {exc}"]
    p = Path(path)
    if p.is_dir() and ((p / "config.json").is_file() or (p / "checkpoint").is_dir() or (p / "latest").is_file()):
        return []
    if p.is_file() and p.suffix == ".ckpt":
        return []
    return [f"model.init_from: {path} is neither a Hugging Face export folder (config.json + safetensors) "
            f"nor a Lightning .ckpt file / DeepSpeed checkpoint folder"]


def read_state_dict(path: str) -> dict:
    """The model's weights (keys as in `LlamaForCausalLM.state_dict()`) from an export or a training checkpoint
    (local or on an object store)."""
    with local_source(path) as local:
        return _read_state_dict(local, path)


def _read_state_dict(local: str, path: str) -> dict:
    """`read_state_dict` on a local copy (`path`: the source as configured, for messages)."""
    import torch

    p = Path(local)
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


def export_hf(model, out_dir: str | Path, *, tokenizer_dir: str | Path | None = None,
              state_dict=None) -> Path | str:
    """Writes `model` (a `LlamaForCausalLM`) as safetensors + config, plus the tokenizer files when given; replaces
    an earlier export. Returns the local folder, or the URI of an object-store folder."""
    target = str(out_dir)
    if not storage.is_local(target):
        with tempfile.TemporaryDirectory(prefix="codemill-hf-") as tmp:
            export_hf(model, tmp, tokenizer_dir=tokenizer_dir, state_dict=state_dict)
            publish_folder(tmp, target)
        return storage.absolute(target)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True, state_dict=state_dict)
    if tokenizer_dir is not None:
        src = str(tokenizer_dir)
        if not storage.is_local(src):  # the shards' tokenizer on the store: its cached local copy
            src = storage.local_copy(src) if storage.isdir(src) else ""
        if src and Path(src).is_dir():
            for f in Path(src).iterdir():
                if f.is_file() and f.name != ".complete":  # the cache's marker is no tokenizer file
                    shutil.copy2(f, out / f.name)
    return out


def publish_folder(local_dir: str | Path, uri: str) -> list[str]:
    """Replaces the object-store folder `uri` with the files of `local_dir`; `config.json` goes last, so a reader
    that checks for it (`init_source_problem`, `from_pretrained`) never takes a half-uploaded folder for complete."""
    storage.delete_dir(uri)
    names = sorted(os.path.relpath(os.path.join(d, f), local_dir).replace(os.sep, "/")
                   for d, _, files in os.walk(local_dir) for f in files)
    for rel in sorted(names, key=lambda n: (n == "config.json", n)):
        with open(os.path.join(local_dir, *rel.split("/")), "rb") as fh:
            storage.write_bytes(storage.join(uri, rel), fh.read())
    return names
