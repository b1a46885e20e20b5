"""The API server shares the engine's prompt cache: a client that resends a long history after
another conversation gets it from the cache, with the reply a full recompute gives, and says so
in ``usage.prompt_tokens_details.cached_tokens`` (which the remote engine reads back)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from mixtral_desk.core.engine import ChatMessage, DoneEvent, EngineHost, LoadOptions
from mixtral_desk.core.engine.options import SamplingOptions
from mixtral_desk.core.remote import RemoteEngine
from mixtral_desk.core.server import ApiServer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama-cpp-python is not installed")
STORY = "Tell me about the harbour, its boats and the lighthouse keeper. " * 10
OTHER = "Explain the tides to a child, slowly and with examples. " * 10
GREEDY = {"temperature": 0.0, "max_tokens": 12, "extra_body": {"ignore_eos": True}}


def history(first: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": STORY}, {"role": "assistant", "content": first},
            {"role": "user", "content": "And then?"}]


def ask(client: openai.OpenAI, messages: list[ChatCompletionMessageParam]
        ) -> tuple[str, int, int]:
    answer = client.chat.completions.create(model="tiny", messages=messages,
                                            **GREEDY)  # type: ignore[call-overload]
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return (answer.choices[0].message.content or "", usage.prompt_tokens,
            usage.prompt_tokens_details.cached_tokens or 0)


def test_the_api_server_serves_long_histories_from_the_prompt_cache(tiny_model: Path,
                                                                     tmp_path: Path) -> None:
    plain = LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=2048)
    cached = plain.model_copy(update={"prompt_cache_dir": tmp_path / "pc"})
    with EngineHost() as engine, ApiServer(engine, "tiny", port=0) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0) as client:
        engine.load(plain)
        first, _, _ = ask(client, [{"role": "user", "content": STORY}])
        engine.load(plain)  # an empty context: the full recompute
        expected, _, none = ask(client, history(first))
        assert none == 0
        engine.load(cached)
        ask(client, history(first))
        ask(client, [{"role": "user", "content": OTHER}])  # another client's conversation
        text, prompt, reused = ask(client, history(first))
        assert text == expected
        assert reused == prompt - 1  # all but the last token, from the cache

        remote = RemoteEngine(server.base_url, "tiny")
        try:
            messages = [ChatMessage("user", STORY), ChatMessage("assistant", first),
                        ChatMessage("user", "And then?")]
            events = list(remote.chat(messages, SamplingOptions(temperature=0.0, max_tokens=4)))
        finally:
            remote.close()
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert done.stats.cached_tokens == done.stats.prompt_tokens - 1
