"""One chat turn through the real engine process and a real SQLite store."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core import chat
from mixtral_desk.core.engine import EngineHost, LoadOptions, SamplingOptions
from mixtral_desk.core.errors import EngineCrashedError
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.store import Store

GREEDY = SamplingOptions(temperature=0.0, max_tokens=16)


@pytest.fixture
def store(data_home: DataPaths) -> Iterator[Store]:
    with Store.open(data_home.database) as opened:
        yield opened


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[EngineHost]:
    with EngineHost() as host:
        host.load(LoadOptions(model_path=tiny_model, n_ctx=4096))
        yield host


def ensure_loaded(engine: EngineHost, model: Path) -> None:
    """Reload after a test that killed the engine on purpose."""
    if not engine.is_alive or engine.model_info is None:
        engine.load(LoadOptions(model_path=model, n_ctx=4096))


def test_send_stores_both_messages_and_the_streamed_text(
    store: Store, engine: EngineHost, tiny_model: Path
) -> None:
    ensure_loaded(engine, tiny_model)
    conversation = store.create_conversation("t", system_prompt="Answer briefly.")
    streamed: list[str] = []
    result = chat.send(store, engine, conversation.id, "Hello", GREEDY, on_token=streamed.append)

    branch = store.active_branch(conversation.id)
    assert [m.role for m in branch] == ["user", "assistant"]
    assert branch[0].content == "Hello"
    assert branch[1].id == result.reply.id
    assert branch[1].content == "".join(streamed) != ""
    assert branch[1].status == "complete"
    assert result.stats is not None
    assert branch[1].stats is not None
    assert branch[1].stats["completion_tokens"] == result.stats.completion_tokens > 0


def test_the_reply_is_saved_while_it_streams(
    store: Store, engine: EngineHost, tiny_model: Path, data_home: DataPaths
) -> None:
    ensure_loaded(engine, tiny_model)
    conversation = store.create_conversation("stream")
    seen_from_outside: list[tuple[str, str]] = []
    count = 0

    def slow_reader(text: str) -> None:
        nonlocal count
        count += 1
        time.sleep(0.01)  # a slow consumer: ~1 s for 100 tokens
        if count == 100:
            with Store.open(data_home.database) as other:
                [_, reply] = other.active_branch(conversation.id)
                seen_from_outside.append((reply.status, reply.content))

    sampling = SamplingOptions(temperature=0.8, max_tokens=120, ignore_eos=True, seed=3)
    chat.send(store, engine, conversation.id, "Tell a story", sampling, on_token=slow_reader)
    [(status, content)] = seen_from_outside
    assert status == "streaming"
    assert content, "nothing was saved during the first second of streaming"


def test_a_crash_mid_reply_keeps_the_partial_reply_marked_interrupted(
    store: Store, engine: EngineHost, tiny_model: Path
) -> None:
    ensure_loaded(engine, tiny_model)
    conversation = store.create_conversation("crash")
    received: list[str] = []

    def kill_after_five(text: str) -> None:
        received.append(text)
        if len(received) == 5 and engine.pid is not None:
            os.kill(engine.pid, signal.SIGKILL)

    sampling = SamplingOptions(temperature=0.8, max_tokens=2000, ignore_eos=True, seed=1)
    with pytest.raises(EngineCrashedError):
        chat.send(store, engine, conversation.id, "Go on", sampling, on_token=kill_after_five)

    [user, reply] = store.active_branch(conversation.id)
    assert user.content == "Go on"
    assert reply.status == "interrupted"
    assert reply.content == "".join(received)
    assert len(received) >= 5

    ensure_loaded(engine, tiny_model)  # the host survived and a new engine works
    result = chat.continue_reply(store, engine, reply.id, GREEDY)
    assert result.reply.id == reply.id
    assert result.reply.content.startswith(reply.content)
    assert len(result.reply.content) > len(reply.content)
    assert result.reply.status == "complete"


def test_stop_marks_the_reply_interrupted(
    store: Store, engine: EngineHost, tiny_model: Path
) -> None:
    ensure_loaded(engine, tiny_model)
    conversation = store.create_conversation("stop")
    count = 0

    def stop_after_three(text: str) -> None:
        nonlocal count
        count += 1
        if count == 3:
            engine.stop()

    sampling = SamplingOptions(temperature=0.8, max_tokens=2000, ignore_eos=True, seed=2)
    result = chat.send(store, engine, conversation.id, "Hi", sampling, on_token=stop_after_three)
    assert result.interrupted
    assert result.stats is not None and result.stats.finish_reason == "cancelled"
    assert store.get_message(result.reply.id).status == "interrupted"


def test_regenerate_makes_a_branch_and_the_history_follows_it(
    store: Store, engine: EngineHost, tiny_model: Path
) -> None:
    ensure_loaded(engine, tiny_model)
    conversation = store.create_conversation("branches")
    first = chat.send(store, engine, conversation.id, "Question", GREEDY)
    second = chat.regenerate(store, engine, conversation.id,
                             SamplingOptions(temperature=1.0, max_tokens=8, seed=7))
    assert [m.id for m in store.siblings(second.reply.id)] == [first.reply.id, second.reply.id]
    assert store.active_branch(conversation.id)[-1].id == second.reply.id

    store.select_branch(first.reply.id)
    history = chat.history_for(store, conversation.id)
    assert [m.content for m in history] == ["Question", first.reply.content]


def test_regenerate_needs_a_user_message(store: Store, engine: EngineHost) -> None:
    conversation = store.create_conversation("empty")
    with pytest.raises(ValueError, match="no message to answer"):
        chat.regenerate(store, engine, conversation.id, GREEDY)
