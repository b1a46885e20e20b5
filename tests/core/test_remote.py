"""RemoteEngine against our own server as the remote: chat turns stored like local ones."""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core import chat
from mixtral_desk.core.cli import main
from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    EngineHost,
    LoadOptions,
    SamplingOptions,
    TokenEvent,
)
from mixtral_desk.core.errors import EngineBusyError, EngineError
from mixtral_desk.core.paths import DataPaths, data_paths
from mixtral_desk.core.remote import (
    RemoteAuthError,
    RemoteConnectionError,
    RemoteEngine,
    key_file,
    normalize_base_url,
    save_key,
    stored_key,
)
from mixtral_desk.core.server import ApiServer
from mixtral_desk.core.store import Store

KEY = "remote-test-key"
MODEL = "tiny-remote"
GREEDY = SamplingOptions(temperature=0.0, max_tokens=12)
# ~40 s of generation on the tiny model: "freed promptly" below means within a fraction of that,
# with room for a machine busy with other work
LONG = SamplingOptions(temperature=0.8, max_tokens=4000, ignore_eos=True, seed=1)
PROMPTLY_S = 8.0
FREE_S = 2.0  # from the stop to the server's engine being free (~0.1 s when idle)


@pytest.fixture(scope="module")
def local(tiny_model: Path) -> Iterator[EngineHost]:
    with EngineHost() as host:
        host.load(LoadOptions(model_path=tiny_model, n_ctx=4096))
        list(host.chat([ChatMessage("user", "Hi")], GREEDY))  # warm up: timings below are relative
        yield host


@pytest.fixture(scope="module")
def server(local: EngineHost) -> Iterator[ApiServer]:
    with ApiServer(local, MODEL, port=0, api_key=KEY) as running:
        yield running


@pytest.fixture
def remote(server: ApiServer) -> Iterator[RemoteEngine]:
    with RemoteEngine(server.url, MODEL, KEY) as engine:  # "/v1" is added
        yield engine


@pytest.fixture
def store(data_home: DataPaths) -> Iterator[Store]:
    with Store.open(data_home.database) as opened:
        yield opened


def test_a_chat_turn_through_the_remote_is_streamed_and_stored(
    remote: RemoteEngine, store: Store
) -> None:
    assert remote.list_models() == [MODEL]
    conversation = store.create_conversation("remote", model=MODEL, system_prompt="Be brief.")
    streamed: list[str] = []
    result = chat.send(store, remote, conversation.id, "Hello", GREEDY,
                       on_token=streamed.append, model_name=MODEL)
    assert len(streamed) > 1
    [user, reply] = store.active_branch(conversation.id)
    assert (user.content, reply.content) == ("Hello", "".join(streamed))
    assert reply.status == "complete" and not result.interrupted
    assert reply.model == MODEL
    stats = result.stats
    assert stats is not None
    assert stats.prompt_tokens > 0
    assert stats.completion_tokens == 12 and stats.finish_reason == "length"
    assert 0 < stats.time_to_first_token_s < stats.total_seconds
    assert stats.decode_tokens_per_s > 0
    assert reply.stats is not None and reply.stats["completion_tokens"] == 12


def test_remote_and_local_give_the_same_greedy_reply(
    remote: RemoteEngine, local: EngineHost
) -> None:
    messages = [ChatMessage("user", "Hi there")]
    remote_text = "".join(e.text for e in remote.chat(messages, GREEDY)
                          if isinstance(e, TokenEvent))
    local_text = "".join(e.text for e in local.chat(messages, GREEDY)
                         if isinstance(e, TokenEvent))
    assert remote_text == local_text != ""


def test_raw_completion_through_the_remote(remote: RemoteEngine) -> None:
    events = list(remote.complete("Once upon a time", SamplingOptions(max_tokens=5)))
    assert all(isinstance(e, TokenEvent) for e in events[:-1])
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.stats.completion_tokens == 5


def _free_within(server: ApiServer, limit_s: float) -> float:
    """Seconds until the server's engine is free (no request holds or waits for it)."""
    started = time.perf_counter()
    queue = server.api.replies.queue
    while (queue.busy or queue.waiting) and time.perf_counter() - started < limit_s:
        time.sleep(0.005)
    return time.perf_counter() - started


# Stopping closes the client's connection mid-stream; asyncio may log the server's last writes to
# it (as in the test below), depending on timing.
@pytest.mark.allow_log("asyncio", "socket.send() raised exception")
def test_stop_keeps_the_reply_as_interrupted_and_frees_the_server(
    remote: RemoteEngine, store: Store, server: ApiServer
) -> None:
    conversation = store.create_conversation("stop me")
    tokens = 0
    stop_at = 0.0

    def on_token(text: str) -> None:
        nonlocal tokens, stop_at
        tokens += 1
        if tokens == 10:
            stop_at = time.perf_counter()
            threading.Thread(target=remote.stop).start()  # like the GUI's Stop button

    result = chat.send(store, remote, conversation.id, "Tell a long story", LONG,
                       on_token=on_token)
    stopped_after = time.perf_counter() - stop_at
    assert result.interrupted
    assert result.stats is not None and result.stats.finish_reason == "cancelled"
    [_, reply] = store.active_branch(conversation.id)
    assert reply.status == "interrupted" and reply.content
    assert stopped_after < PROMPTLY_S
    # the server saw the connection close and stopped: the engine is free for the next reply
    assert _free_within(server, PROMPTLY_S) < FREE_S
    again = chat.send(store, remote, conversation.id, "Short one", GREEDY)
    assert not again.interrupted


@pytest.mark.allow_log("asyncio", "socket.send() raised exception")
def test_one_reply_at_a_time_and_close_frees_the_engine(
    remote: RemoteEngine, server: ApiServer
) -> None:
    stream = remote.chat([ChatMessage("user", "Hi")], LONG)
    assert isinstance(next(stream), TokenEvent)
    with pytest.raises(EngineBusyError):
        remote.chat([ChatMessage("user", "Hi")], GREEDY)
    stream.close()
    assert list(stream) == []
    assert _free_within(server, PROMPTLY_S) < FREE_S
    events = list(remote.chat([ChatMessage("user", "Hi")], GREEDY))
    assert isinstance(events[-1], DoneEvent)


def test_a_wrong_key_fails_the_turn_and_keeps_it_as_interrupted(
    server: ApiServer, store: Store
) -> None:
    conversation = store.create_conversation("bad key")
    with RemoteEngine(server.base_url, MODEL, "wrong") as engine, \
            pytest.raises(RemoteAuthError, match="401"):
        chat.send(store, engine, conversation.id, "Hello", GREEDY)
    [_, reply] = store.active_branch(conversation.id)
    assert reply.status == "interrupted"


def test_an_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RemoteEngine(f"http://127.0.0.1:{port}", MODEL) as engine:
        with pytest.raises(RemoteConnectionError, match="Cannot reach"):
            list(engine.chat([ChatMessage("user", "Hi")], GREEDY))
        assert isinstance(RemoteConnectionError("x"), EngineError)
        with pytest.raises(RemoteConnectionError):
            engine.list_models()


def test_base_urls_are_normalized() -> None:
    assert normalize_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalize_base_url("http://localhost:8080/") == "http://localhost:8080/v1"
    assert normalize_base_url("https://127.0.0.1/v1/") == "https://127.0.0.1/v1"
    assert normalize_base_url("https://localhost/openai/v1") == "https://localhost/openai/v1"
    with pytest.raises(ValueError, match="http"):
        normalize_base_url("ftp://h")


def test_keys_are_kept_per_url_in_a_private_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIXTRAL_DESK_REMOTE_KEY", raising=False)
    assert stored_key("http://127.0.0.1:8000") is None
    save_key("http://127.0.0.1:8000", "k1")
    assert stored_key("http://127.0.0.1:8000/v1") == "k1"
    assert key_file() == data_paths().remote_keys_file
    assert stat.S_IMODE(key_file().stat().st_mode) == 0o600
    monkeypatch.setenv("MIXTRAL_DESK_REMOTE_KEY", "from-env")
    assert stored_key("http://localhost:1") == "from-env"
    save_key("http://127.0.0.1:8000", None)
    assert stored_key("http://127.0.0.1:8000") == "from-env"


def test_chat_remote_on_the_command_line(
    server: ApiServer, data_home: DataPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chat", "--remote", server.url, "--remote-key", KEY, "--save-remote-key",
                 "--prompt", "Hello", "--max-tokens", "5", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() and "5 tokens" in err
    with Store.open(data_home.database) as store:
        [conversation] = store.list_conversations()
        assert conversation.model == MODEL  # the server's first model
        [_, reply] = store.active_branch(conversation.id)
        assert reply.status == "complete" and reply.content == out.rstrip("\n")
    # the key was saved for the URL: no --remote-key needed now
    assert main(["chat", "--remote", server.base_url, "--prompt", "Hi", "--max-tokens", "2"]) == 0


def test_chat_needs_a_model_or_a_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--prompt", "Hi"]) == 1
    assert "--model PATH" in capsys.readouterr().err
    assert main(["chat", "--model", "x.gguf", "--remote", "http://127.0.0.1:9"]) == 1
    assert "either" in capsys.readouterr().err
