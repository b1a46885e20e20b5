"""Warm on open: opening a conversation gets its prompt into the engine in the background
(restored from the prompt cache or evaluated), any later request stops that at once, and warming
never changes a reply."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mixtral_desk.core.engine import (
    ChatMessage,
    EngineHost,
    LoadOptions,
    ReplyStats,
    SamplingOptions,
)
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.session import LoadChoice, Session
from mixtral_desk.core.settings import LoadDefaults, Settings
from mixtral_desk.core.store import Store
from tests.engine_replies import chat_reply

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama-cpp-python is not installed")
GREEDY = SamplingOptions(temperature=0.0, max_tokens=8, ignore_eos=True)
HISTORY = [
    ChatMessage("system", "You are a careful guide."),
    ChatMessage("user", "Describe the old harbour, the boats and the lighthouse. " * 8),
    ChatMessage("assistant", "The harbour is small and quiet; the boats are painted blue. " * 4),
]


def reply(host: EngineHost, messages: Sequence[ChatMessage]) -> tuple[str, ReplyStats]:
    return chat_reply(host, messages, GREEDY)


def wait_for_log(log: Path, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the engine log")


def test_a_warmed_conversation_starts_its_next_turn_from_the_evaluated_history(
        tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    question = [*HISTORY, ChatMessage("user", "And the lighthouse keeper?")]
    with EngineHost(log) as plain:
        plain.load(LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=2048))
        expected, cold = reply(plain, question)
    assert cold.cached_tokens == 0
    options = LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=2048,
                          prompt_cache_dir=tmp_path / "pc")
    with EngineHost(log) as host:
        host.load(options)
        assert host.warm(HISTORY, GREEDY, cache_tag="conversation-1")
        wait_for_log(log, "warm-up: 0 tokens reused")
        text, stats = reply(host, question)
    assert text == expected  # warming changes nothing in the reply
    assert stats.cached_tokens > 0.8 * stats.prompt_tokens
    with EngineHost(log) as restarted:  # after a restart the warm-up restores from disk
        restarted.load(options)
        assert restarted.warm(HISTORY, GREEDY)
        content = wait_for_log(log, "restored")
        assert "from disk" in content
        text, stats = reply(restarted, question)
    assert text == expected and stats.cached_tokens > 0.8 * stats.prompt_tokens


def test_nothing_to_warm_without_a_model_or_messages(tiny_model: Path, tmp_path: Path) -> None:
    with EngineHost(tmp_path / "engine.log") as host:
        assert not host.warm(HISTORY, GREEDY)  # no model
        host.load(LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=512))
        assert not host.warm([], GREEDY)
        too_long = [ChatMessage("user", "word " * 2000)]
        assert host.warm(too_long, GREEDY)  # accepted, skipped in the engine, no error
        wait_for_log(tmp_path / "engine.log", "warm-up skipped")
        assert reply(host, [ChatMessage("user", "Hi")])[1].completion_tokens == 8


@pytest.mark.slow
def test_a_request_stops_the_warm_up_at_once_and_keeps_what_it_evaluated(
        gemma_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    long_history = [ChatMessage("user", "Tell me about the sea and its tides. " * 200),
                    ChatMessage("assistant", "The sea rises and falls twice a day.")]
    other = [ChatMessage("user", "Monday, Tuesday, Wednesday,")]
    with EngineHost(log) as host:
        host.load(LoadOptions(model_path=gemma_model, n_threads=2, n_ctx=4096, n_batch=256,
                              n_ubatch=256, prompt_cache_dir=tmp_path / "pc"))
        expected, _ = reply(host, other)
        host.load(LoadOptions(model_path=gemma_model, n_threads=2, n_ctx=4096, n_batch=256,
                              n_ubatch=256, prompt_cache_dir=tmp_path / "pc"))
        assert host.warm(long_history, GREEDY)
        time.sleep(0.5)  # the warm-up is evaluating (about 2,000 tokens take seconds here)
        started = time.monotonic()
        text, stats = reply(host, other)  # another conversation's turn stops it
        waited = time.monotonic() - started
        assert text == expected
        content = wait_for_log(log, "(stopped by the next request)")
        assert "warm-up:" in content
        # Going back: what the warm-up evaluated before it stopped is reused (from the cache).
        _, back = reply(host, [*long_history, ChatMessage("user", "And the moon?")])
    assert back.cached_tokens > 0
    assert waited < stats.total_seconds + 2.0  # the turn did not wait for the whole warm-up


@pytest.fixture
def store(data_home: DataPaths) -> Iterator[Store]:
    with Store.open(data_home.database) as opened:
        yield opened


def test_the_session_warms_a_conversation_of_the_local_model(tiny_model: Path, store: Store,
                                                             data_home: DataPaths) -> None:
    settings = Settings(load=LoadDefaults(n_ctx=2048, idle_unload_minutes=0))
    with Session(settings) as session:
        empty = session.start_conversation(store)
        assert not session.warm(store, empty.id)  # no model yet
        session.load(LoadChoice(tiny_model))
        assert not session.warm(store, empty.id)  # nothing to warm
        first = session.send(store, None, "Describe the harbour. " * 40,
                             overrides={"max_tokens": 4})
        session.send(store, None, "Something else entirely. " * 40, overrides={"max_tokens": 4})
        assert session.warm(store, first.conversation.id)
        again = session.send(store, first.conversation.id, "More, please.",
                             overrides={"max_tokens": 4})
    assert again.stats is not None
    assert again.stats.cached_tokens > 0.8 * again.stats.prompt_tokens
