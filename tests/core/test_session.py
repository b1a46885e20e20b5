"""The session layer: its rules (load options, titles, sampling, idle unload) and its use cases
through the real engine process and a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mixtral_desk.core.engine import SamplingOptions
from mixtral_desk.core.errors import ModelFileNotFoundError, NotFoundError, SettingsError
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.session import (
    HubSettings,
    LoadChoice,
    NoModelError,
    Session,
    load_hub_settings,
    load_options,
    sampling_for,
    save_hub_settings,
    title_from,
)
from mixtral_desk.core.session.loading import prompt_cache_dir
from mixtral_desk.core.settings import LoadDefaults, Settings
from mixtral_desk.core.store import Conversation, Store
from tests.cache_files import files_of

SHORT = SamplingOptions(temperature=0.0, max_tokens=6, ignore_eos=True, seed=1)


def test_a_load_choice_wins_over_the_settings() -> None:
    defaults = LoadDefaults(n_gpu_layers=5, n_cpu_moe=3, n_threads=7, kv_type="q8_0",
                            flash_attn=True)
    choice = LoadChoice(Path("m.gguf"))
    options = load_options(defaults, choice, n_ctx=4096)
    assert (options.n_gpu_layers, options.n_cpu_moe, options.n_threads) == (5, 3, 7)
    assert options.kv_type == "q8_0" and options.n_ctx == 4096
    given = LoadChoice(Path("m.gguf"), gpu_layers=0, cpu_moe=1, n_threads=2)
    options = load_options(defaults, given, n_ctx=512)
    assert (options.n_gpu_layers, options.n_cpu_moe, options.n_threads) == (0, 1, 2)
    assert not given.automatic(LoadDefaults(gpu_layers_auto=True))  # a number is manual
    assert LoadChoice(Path("m.gguf"), gpu_layers="auto").automatic(defaults)
    assert LoadChoice(Path("m.gguf")).automatic(LoadDefaults(gpu_layers_auto=True))


def test_load_settings_that_cannot_work_together_are_a_known_error() -> None:
    defaults = LoadDefaults(kv_type="q8_0", flash_attn=False)
    with pytest.raises(SettingsError, match="cannot be used: kv_type 'q8_0' needs flash_attn"):
        load_options(defaults, LoadChoice(Path("m.gguf")), n_ctx=4096)


def test_titles_come_from_the_first_line() -> None:
    assert title_from("  \n Where do pineapples grow?\nAnd why?") == "Where do pineapples grow?"
    long = title_from("word " * 30)
    assert long is not None and len(long) == 48 and long.endswith("…")
    assert title_from(" \n ") is None


def test_conversation_sampling_overrides_the_defaults() -> None:
    defaults = SamplingOptions(temperature=0.7)
    assert sampling_for(defaults, {}) is defaults
    merged = sampling_for(defaults, {"sampling": {"temperature": 0.1, "max_tokens": 5}})
    assert (merged.temperature, merged.max_tokens, merged.top_p) == (0.1, 5, defaults.top_p)
    assert sampling_for(defaults, {"sampling": {"temperature": -3}}) is defaults
    assert sampling_for(defaults, {"sampling": "hot"}) is defaults


def test_hub_settings_round_trip_privately(data_home: DataPaths) -> None:
    assert load_hub_settings(data_home) == HubSettings()
    save_hub_settings(HubSettings(endpoint="http://127.0.0.1:9/", token="hf_x"), data_home)
    assert data_home.hub_settings_file.stat().st_mode & 0o777 == 0o600
    loaded = load_hub_settings(data_home)
    assert loaded == HubSettings(endpoint="http://127.0.0.1:9", token="hf_x")
    data_home.hub_settings_file.write_text("[" * 100_000, encoding="utf-8")
    assert load_hub_settings(data_home) == HubSettings()  # a damaged file: enter it again


@pytest.fixture
def store(data_home: DataPaths) -> Iterator[Store]:
    with Store.open(data_home.database) as opened:
        yield opened


@pytest.fixture(scope="module")
def session(tiny_model: Path) -> Iterator[Session]:
    settings = Settings(load=LoadDefaults(n_ctx=1024, idle_unload_minutes=0), sampling=SHORT)
    with Session(settings) as opened:
        opened.load(LoadChoice(tiny_model))
        yield opened


def test_send_starts_a_titled_conversation_with_its_system_prompt(
        session: Session, store: Store) -> None:
    created: list[Conversation] = []
    tokens: list[str] = []
    result = session.send(store, None, "Plan a trip\nto Lisbon", on_token=tokens.append,
                          system_prompt="Be brief.", on_conversation=created.append)
    conversation = store.get_conversation(result.conversation.id)
    assert [c.id for c in created] == [conversation.id]
    assert (conversation.title, conversation.system_prompt) == ("Plan a trip", "Be brief.")
    assert conversation.model == "tiny-moe" == result.reply.model
    assert result.reply.content == "".join(tokens) and result.stats is not None
    assert result.stats.completion_tokens == 6
    assert result.question is not None and result.question.content == "Plan a trip\nto Lisbon"
    assert result.reply_siblings == (result.reply.id,)


def test_an_untitled_conversation_takes_its_first_message(session: Session,
                                                          store: Store) -> None:
    conversation = session.start_conversation(store)
    assert conversation.title is None
    result = session.send(store, conversation.id, "Hello there")
    assert result.conversation.title == "Hello there"
    session.send(store, conversation.id, "Second message")
    assert store.get_conversation(conversation.id).title == "Hello there"


def test_conversation_and_command_line_sampling_apply(session: Session, store: Store) -> None:
    conversation = store.create_conversation(None, settings={"sampling": {"max_tokens": 3}})
    result = session.send(store, conversation.id, "Count")
    assert result.stats is not None and result.stats.completion_tokens == 3
    result = session.send(store, conversation.id, "Again", overrides={"max_tokens": 2,
                                                                      "seed": None})
    assert result.stats is not None and result.stats.completion_tokens == 2


def test_regenerate_and_edit_make_branches(session: Session, store: Store) -> None:
    first = session.send(store, None, "Tell me a joke")
    conversation_id = first.conversation.id
    again = session.regenerate(store, conversation_id)
    assert again.reply_siblings == (first.reply.id, again.reply.id)
    assert first.question is not None
    edited = session.edit_and_resend(store, first.question.id, "Tell me a story")
    assert edited.question is not None and edited.question.content == "Tell me a story"
    assert edited.question_siblings == (first.question.id, edited.question.id)
    assert store.active_branch(conversation_id)[0].content == "Tell me a story"
    with pytest.raises(ValueError, match="user message"):
        session.edit_and_resend(store, edited.reply.id, "No")


def test_no_model_no_turn(store: Store, tiny_model: Path) -> None:
    with Session(Settings()) as fresh:
        with pytest.raises(NoModelError, match="No model is loaded"):
            fresh.send(store, None, "Hello")
        with pytest.raises(NoModelError):
            fresh.reload()
        with pytest.raises(ModelFileNotFoundError):
            fresh.load(LoadChoice(tiny_model.with_name("missing.gguf")))
        assert fresh.model_info is None
    with pytest.raises(NotFoundError):
        store.get_conversation("nope")


def test_idle_unload_waits_for_the_server_and_the_time(tiny_model: Path) -> None:
    settings = Settings(load=LoadDefaults(n_ctx=512, idle_unload_minutes=0))
    with Session(settings) as idle:
        unloaded: list[None] = []
        idle.model_unloaded.connect(unloaded.append)
        idle.load(LoadChoice(tiny_model))
        assert idle.idle_deadline() is None  # 0 minutes: never
        assert idle.unload_if_idle(idle_seconds=3600) is None  # not yet
        server = idle.serve(port=0)
        assert httpx2.get(server.url + "/health", timeout=5).status_code == 200
        assert idle.idle_deadline(0.01) is None  # served: in use
        time.sleep(0.05)
        assert idle.unload_if_idle(0.01) is None and idle.model_info is not None
        assert idle.stop_serving() and not idle.stop_serving()
        time.sleep(0.05)
        assert idle.unload_if_idle(0.01) == "tiny-moe"
        assert idle.model_info is None and unloaded == [None]


def test_a_load_that_cannot_start_keeps_the_model_of_now(tiny_model: Path,
                                                         tmp_path: Path) -> None:
    with Session(Settings(load=LoadDefaults(n_ctx=512))) as keeping:
        keeping.load(LoadChoice(tiny_model))
        server = keeping.serve(port=0)
        with pytest.raises(ModelFileNotFoundError):
            keeping.load(LoadChoice(tmp_path / "missing.gguf"))
        assert keeping.model_info is not None and keeping.server is server
        keeping.settings = Settings(load=LoadDefaults(n_ctx=512, kv_type="q8_0"))
        with pytest.raises(SettingsError):
            keeping.reload()
        assert keeping.model_info is not None and keeping.server is server
        assert keeping.stop_serving()


def test_deleting_a_conversation_forgets_its_states_in_the_engine(tiny_model: Path,
                                                                  store: Store) -> None:
    """Its files go at once; the engine drops its copies in RAM, so the same first message in a
    new conversation starts from nothing of it (only the template's start, shared by every
    chat); the other conversation's states stay."""
    settings = Settings(load=LoadDefaults(n_ctx=1024, idle_unload_minutes=0), sampling=SHORT)
    with Session(settings) as session:
        session.load(LoadChoice(tiny_model))
        doomed = session.send(store, None, "Tell me about zeppelins").conversation.id
        kept = session.send(store, None, "What is a kettle?").conversation.id
        folder = prompt_cache_dir()
        deadline = time.monotonic() + 10
        while not (files_of(folder, doomed) and files_of(folder, kept)):
            assert time.monotonic() < deadline, "the engine saved no states"
            time.sleep(0.05)

        assert session.delete_conversation(store, doomed) >= 1
        assert files_of(folder, doomed) == [] and files_of(folder, kept)
        with pytest.raises(NotFoundError):
            store.get_conversation(doomed)
        again = session.send(store, None, "Tell me about zeppelins")
        assert again.stats is not None
        assert again.stats.cached_tokens < again.stats.prompt_tokens // 2
        with pytest.raises(NotFoundError):
            session.delete_conversation(store, doomed)
    assert files_of(folder, kept)

