"""Generation engines behind one small interface (docs/CONTRACTS.md "Generation engines").

    from codemill.engines import SamplingConfig, make_engine
    engine = make_engine("transformers", "embedded")            # SmolLM2-135M-Instruct on CPU
    engine = make_engine("vllm", "meta-llama/Llama-3.1-70B-Instruct", tensor_parallel_size=8)
    prompts = [engine.render_chat([{"role": "user", "content": "..."}])]
    gens = engine.generate(prompts, SamplingConfig(temperature=0.8, top_p=0.95, max_new_tokens=1024, seed=0))

- `vllm` (production, GPU): vLLM's offline `LLM.generate` with `SamplingParams`. Engine options are vLLM's own
  `EngineArgs` fields (`tensor_parallel_size`, `dtype`, `max_model_len`, `gpu_memory_utilization`,
  `data_parallel_size`, ...), passed through unchanged and checked against `dataclasses.fields(EngineArgs)`, so
  codemill never re-declares them and a new vLLM option works without a code change here.
- `transformers` (embedded default, CPU): batched `generate` with left padding and the same sampling parameters.

Both take already rendered prompts (`render_chat` applies the model's chat template) and return one `Generation`
per prompt, in order. Heavy imports are deferred into the engines.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from codemill.models import resolve_model

EngineKind = Literal["transformers", "vllm"]
FinishReason = Literal["stop", "length"]


@dataclasses.dataclass
class SamplingConfig:
    """Sampling parameters, identical for every engine. temperature 0 = greedy."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1024
    # Per-request seed (vLLM) / per-batch generator seed (transformers); None = nondeterministic.
    seed: int | None = 0
    stop: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> list[str]:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if any(not s for s in self.stop):
            problems.append("stop: empty stop strings are not allowed")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)


class Engine:
    """Base class: `generate` on rendered prompts; `render_chat` and `count_tokens` with the model's tokenizer."""

    kind: str = ""

    def __init__(self, model: str, revision: str, tokenizer: Any):
        self.model = model
        self.revision = revision
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[Generation]:
        raise NotImplementedError

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's chat template applied to `messages`, ending with the assistant turn's opening."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        """Frees the model (vLLM holds GPU memory and worker processes until shut down)."""


def _check_sampling(sampling: SamplingConfig) -> None:
    problems = sampling.validate()
    if problems:
        raise ValueError("invalid sampling: " + "; ".join(problems))


class TransformersEngine(Engine):
    """Batched generation with transformers: left padding, one `generate` call per batch of `batch_size`."""

    kind = "transformers"

    def __init__(self, model: str, *, batch_size: int = 8, dtype: str = "float32", device: str = "cpu",
                 num_threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer


        path, revision = resolve_model(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Decoder-only batches must be padded on the left so every row's next token follows its own prompt.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        super().__init__(model, revision, tokenizer)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.batch_size = batch_size
        self.device = device
        self.hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        eos = self.hf_model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos_ids.discard(None)

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[Generation]:
        _check_sampling(sampling)
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(list(prompts[start:start + self.batch_size]), sampling))
        return out

    def _generate_batch(self, prompts: list[str], sampling: SamplingConfig) -> list[Generation]:
        import torch

        # Chat templates already carry the BOS/role tokens: add no special tokens (as vLLM does for text prompts
        # whose template starts with them).
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self.eos_ids),
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            seqs = self.hf_model.generate(**enc, **kwargs)  # (B, T_prompt + T_new)
        new = seqs[:, enc["input_ids"].shape[1]:].tolist()  # (B, T_new)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        gens = []
        for row, n_prompt in zip(new, prompt_lens):
            # A finished row is filled with pad tokens up to the batch's longest row; its length ends at its EOS.
            n = len(row)
            finish = "length"
            for i, tok in enumerate(row):
                if tok in self.eos_ids:
                    n, finish = i + 1, "stop"
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            text, hit = _cut_at_stop(text, sampling.stop)
            if hit:
                finish = "stop"
            gens.append(Generation(text, int(n_prompt), n, finish))
        return gens


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncates at the earliest stop string, which is left out of the output (vLLM's default)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def vllm_engine_fields() -> set[str]:
    from vllm.engine.arg_utils import EngineArgs

    return {f.name for f in dataclasses.fields(EngineArgs)}


def check_vllm_engine_args(engine_args: dict[str, Any], fields: set[str]) -> list[str]:
    """Problems with `engine_args` as vLLM `EngineArgs` (unknown keys), each naming the key."""
    return [f"engine_args.{k}: not a vLLM EngineArgs field" for k in sorted(set(engine_args) - fields)]


class VLLMEngine(Engine):
    """vLLM's offline engine. Scale-out: `tensor_parallel_size` / `data_parallel_size` in `engine_args`
    (vLLM's own parallelism), or one engine per Spark GPU executor (docs/synth.md)."""

    kind = "vllm"

    def __init__(self, model: str, **engine_args: Any):
        from vllm import LLM


        problems = check_vllm_engine_args(engine_args, vllm_engine_fields())
        if "model" in engine_args:
            problems.append("engine_args.model: give the model as the engine's model, not an engine argument")
        if problems:
            raise ValueError("; ".join(problems))
        path, revision = resolve_model(model)
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and "enable_chunked_prefill" not in engine_args:
            # vLLM's model runner rewinds a seeded request's own random generator when it discards the token
            # sampled after a partial (chunked) prefill, through a CUDA-only generator call: on CPU (vllm 0.32)
            # that raises "RuntimeError: CPU Generator does not use offset" and kills the engine as soon as a
            # batch's prompts exceed `max_num_batched_tokens`. Without chunked prefill every prompt is prefilled
            # whole, so per-request seeds (`sampling.seed`) keep working.
            engine_args = {**engine_args, "enable_chunked_prefill": False}
        self.llm = LLM(model=path, **engine_args)
        super().__init__(model, engine_args.get("revision") or revision, self.llm.get_tokenizer())

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[Generation]:
        from vllm import SamplingParams

        _check_sampling(sampling)
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        gens = []
        for out in outputs:
            comp = out.outputs[0]
            gens.append(Generation(comp.text, len(out.prompt_token_ids or []), len(comp.token_ids),
                                   "length" if comp.finish_reason == "length" else "stop"))
        return gens

    def close(self) -> None:

        llm = getattr(self, "llm", None)
        if llm is not None:
            with contextlib.suppress(Exception):  # older vLLM versions have no shutdown hook
                llm.llm_engine.engine_core.shutdown()
            self.llm = None


def make_engine(kind: EngineKind, model: str, **engine_args: Any) -> Engine:
    """An engine of `kind` for `model` (a hub id, a local folder, or "embedded" for SmolLM2-135M-Instruct).

    `engine_args` go to the engine unchanged: vLLM `EngineArgs` fields for "vllm"; `batch_size`, `dtype`, `device`,
    `num_threads` for "transformers".
    """
    if kind == "transformers":
        return TransformersEngine(model, **engine_args)
    if kind == "vllm":
        return VLLMEngine(model, **engine_args)
    raise ValueError(f"engine: unknown kind {kind!r}; use 'transformers' or 'vllm'")
