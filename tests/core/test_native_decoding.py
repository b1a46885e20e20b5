"""The engine's own decoding loop (llama.cpp's native sampler chain) gives the replies
``llama_cpp.Llama.generate`` gives: greedy identical, and a seed reproduces the same draw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mixtral_desk.core.engine import (
    EngineHost,
    LoadOptions,
    ReplyStats,
    SamplingOptions,
)
from tests.engine_replies import collect

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama-cpp-python is not installed")
PROMPT = "Monday, Tuesday, Wednesday,"
N_CTX = 512


def engine_text(host: EngineHost, sampling: SamplingOptions) -> tuple[str, ReplyStats]:
    return collect(host.complete(PROMPT, sampling))


def llama_cpp_text(model: Path, sampling: SamplingOptions, seed: int) -> str:
    """The same completion through ``Llama.generate`` in this process."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(model), n_ctx=N_CTX, n_threads=2, seed=seed,
                            verbose=False)
    try:
        tokens = llama.tokenize(PROMPT.encode(), add_bos=True, special=False)
        out = []
        for token in llama.generate(tokens, top_k=sampling.top_k, top_p=sampling.top_p,
                                    min_p=sampling.min_p, temp=sampling.temperature,
                                    repeat_penalty=sampling.repeat_penalty):
            out.append(token)
            if len(out) >= (sampling.max_tokens or 0):
                break
        return llama.detokenize(out).decode("utf-8", errors="replace")
    finally:
        llama.close()


def same_replies(model: Path, tmp_path: Path) -> None:
    greedy = SamplingOptions(temperature=0.0, max_tokens=24, ignore_eos=True)
    seeded = SamplingOptions(temperature=0.9, max_tokens=24, ignore_eos=True, seed=1234)
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(LoadOptions(model_path=model, n_threads=2, n_ctx=N_CTX, seed=1234))
        text, stats = engine_text(host, greedy)
        assert stats.completion_tokens == 24
        assert text == llama_cpp_text(model, greedy, 1234)
        first, _ = engine_text(host, seeded)
        again, stats = engine_text(host, seeded)
        assert first == again and stats.cached_tokens > 0  # same draw, from the live prefix
        assert first == llama_cpp_text(model, seeded, 1234)
        other, _ = engine_text(host, seeded.model_copy(update={"seed": 99}))
        assert other != first


def test_the_native_loop_replies_like_llama_generate_tiny(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    same_replies(tiny_model, tmp_path)


@pytest.mark.slow
def test_the_native_loop_replies_like_llama_generate_gemma(gemma_model: Path,
                                                            tmp_path: Path) -> None:
    same_replies(gemma_model, tmp_path)
