"""Engine failures as API errors; an event loop that never waits on the engine (fake engines)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import httpx2
import openai
import pytest

from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    ReplyStats,
    SamplingOptions,
    TokenEvent,
)
from mixtral_desk.core.engine.interface import ReplyEvent
from mixtral_desk.core.errors import ContextOverflowError, EngineCrashedError
from mixtral_desk.core.server import ApiServer


class FakeStream(Iterator[ReplyEvent]):
    def __init__(self, script: list[ReplyEvent | Exception], gate: threading.Event | None
                 ) -> None:
        self.script = script
        self.gate = gate

    def __next__(self) -> ReplyEvent:
        if self.gate is not None:
            self.gate.wait(10)  # a slow engine: blocks until the test opens the gate
        if not self.script:
            raise StopIteration
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.script = []


class FakeEngine:
    """Satisfies ChatEngine; plays a script per reply."""

    def __init__(self, script: list[ReplyEvent | Exception]) -> None:
        self.script = script
        self.gate: threading.Event | None = None
        self.stops = 0

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> FakeStream:
        return FakeStream(list(self.script), self.gate)

    def complete(self, prompt: str, sampling: SamplingOptions) -> FakeStream:
        return FakeStream(list(self.script), self.gate)

    def stop(self) -> None:
        self.stops += 1

    def close(self) -> None:
        pass


DONE = DoneEvent(ReplyStats(prompt_tokens=3, completion_tokens=2, time_to_first_token_s=0.1,
                            decode_tokens_per_s=10.0, total_seconds=0.2, finish_reason="stop"))
HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


def serve(engine: FakeEngine) -> ApiServer:
    server = ApiServer(engine, "fake", port=0)
    server.start()
    return server


def test_a_prompt_that_does_not_fit_is_a_400() -> None:
    server = serve(FakeEngine([ContextOverflowError("The message does not fit.")]))
    try:
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            for stream in (False, True):
                with pytest.raises(openai.BadRequestError) as caught:
                    client.chat.completions.create(model="fake", messages=HELLO,
                                                   stream=stream)
                assert caught.value.code == "context_length_exceeded"
    finally:
        server.stop()


def test_an_engine_crash_mid_stream_ends_the_stream_with_an_error_event() -> None:
    crash = EngineCrashedError("The engine process crashed (signal SIGABRT).")
    server = serve(FakeEngine([TokenEvent("Hel"), TokenEvent("lo"), crash]))
    try:
        with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
            texts: list[str] = []
            with pytest.raises(openai.APIError, match="crashed"):
                for chunk in client.chat.completions.create(model="fake", messages=HELLO,
                                                            stream=True):
                    texts.extend(c.delta.content or "" for c in chunk.choices)
            assert "".join(texts) == "Hello"
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="fake", messages=HELLO)
    finally:
        server.stop()


def test_the_event_loop_never_waits_on_the_engine() -> None:
    engine = FakeEngine([TokenEvent("a"), DONE])
    engine.gate = threading.Event()  # every token blocks until the gate opens
    server = serve(engine)
    try:
        answers: list[str] = []

        def ask() -> None:
            with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
                answer = client.chat.completions.create(model="fake", messages=HELLO)
                answers.append(answer.choices[0].message.content or "")

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for asker in askers:
            asker.start()
        deadline = time.monotonic() + 5
        while server.api.replies.queue.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.api.replies.queue.waiting == 2  # one generating, two queued
        started = time.perf_counter()
        assert httpx2.get(server.base_url + "/models").status_code == 200
        assert time.perf_counter() - started < 1.0  # answered while the engine is blocked
        engine.gate.set()
        for asker in askers:
            asker.join(10)
        assert answers == ["a", "a", "a"]
    finally:
        server.stop()
