"""Untrusted input is refused at the door, naming the field, and nothing is written: the corpus
of tests/untrusted_corpus.py replayed against the import reader, the settings readers, search,
the CLI's numbers and the API server; plus the bounds (search time, request size, token budget)
and the leftovers (NaN stats, one migration backup per version; the broken chat template is
tested in test_engine.py)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mixtral_desk.core.early_settings import EarlySettings, read_early_settings
from mixtral_desk.core.engine.events import ChatMessage
from mixtral_desk.core.engine.history_fit import (
    MAX_CHARS_PER_TOKEN,
    check_token_budget,
    drop_unfittable,
    must_fit_chars,
)
from mixtral_desk.core.errors import (
    ContextOverflowError,
    ImportFormatError,
    MessageError,
    SearchQueryError,
    SettingsError,
    StoreError,
)
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.server import ApiServer
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.store import Store, read_export
from mixtral_desk.core.store.backups import list_backups
from mixtral_desk.core.untrusted_json import MAX_REQUEST_BYTES
from tests.core.test_server_errors import DONE, FakeEngine
from tests.core.test_store_migrations import make_v1_database
from tests.untrusted_corpus import (
    CLI_LIMIT_REFUSALS,
    IMPORT_REFUSALS,
    IMPORT_TEXT_REFUSALS,
    SEARCH_ODDITIES,
    SEARCH_REFUSALS,
    SETTINGS_REFUSALS,
    refused_export,
    valid_export,
)


def assert_everything_usable(store: Store) -> None:
    """Every stored conversation can be listed, shown, exported and deleted."""
    listed = store.list_conversations(limit=1000, include_archived=True)
    for conversation in listed:
        store.active_branch(conversation.id)
        store.export_markdown(conversation.id)
    json.dumps(store.export_conversations(), allow_nan=False)
    for conversation in listed:
        store.delete_conversation(conversation.id)
    assert store.list_conversations(limit=1000, include_archived=True) == []


# --- imports ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(IMPORT_REFUSALS))
def test_import_refuses_each_corpus_case_naming_the_field(store: Store, name: str) -> None:
    with pytest.raises(ImportFormatError) as caught:
        store.import_conversations(refused_export(name))
    assert IMPORT_REFUSALS[name][1] in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert store.list_conversations(limit=10, include_archived=True) == []  # nothing written


@pytest.mark.parametrize("name", sorted(IMPORT_TEXT_REFUSALS))
def test_an_export_file_python_cannot_parse_is_refused(tmp_path: Path, name: str) -> None:
    text, word = IMPORT_TEXT_REFUSALS[name]
    path = tmp_path / "hostile.json"
    path.write_bytes(text)
    with pytest.raises(ImportFormatError, match=word):
        read_export(path)


def test_the_boundary_times_import_and_stay_usable(store: Store) -> None:
    document = valid_export()
    document["conversations"][0]["created_at"] = "1970-01-01T00:00:00+00:00"
    document["conversations"][0]["updated_at"] = "9999-12-29T23:59:59+00:00"
    [conversation_id] = store.import_conversations(document)
    assert store.get_conversation(conversation_id).updated_at.year == 9999
    assert_everything_usable(store)


def test_the_cli_imports_a_hostile_file_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(refused_export("year 0 after the offset")), encoding="utf-8")
    result = cli("conversations", "import", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "created_at" in result.stderr
    listed = cli("conversations", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


# --- settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SETTINGS_REFUSALS))
def test_a_hostile_settings_file_is_refused_and_the_early_reader_uses_defaults(
        tmp_path: Path, name: str) -> None:
    text, word = SETTINGS_REFUSALS[name]
    path = tmp_path / "settings.json"
    path.write_bytes(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert word in str(caught.value) and str(path) in str(caught.value)
    assert read_early_settings(path) == EarlySettings()
    assert path.read_bytes() == text  # never rewritten


def test_the_cli_starts_with_a_hostile_settings_file(data_home: DataPaths) -> None:
    settings_file = data_home.settings_file
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    settings_file.write_bytes(SETTINGS_REFUSALS["100,000 nested brackets"][0])
    result = cli("--help")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    result = cli("cache")
    assert "Traceback" not in result.stderr
    assert "nested deeper than" in result.stderr


# --- search -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SEARCH_REFUSALS))
def test_a_query_beyond_the_limits_is_refused(store: Store, name: str) -> None:
    with pytest.raises(SearchQueryError):
        store.search(SEARCH_REFUSALS[name])


@pytest.mark.parametrize("query", SEARCH_ODDITIES)
def test_odd_queries_run(store: Store, query: str) -> None:
    conversation = store.create_conversation("odd")
    store.add_message(conversation.id, "user", "x OR y AND NEAR col 🙂 鲁迅")
    assert isinstance(store.search(query), list)


@pytest.mark.slow
def test_a_common_word_in_a_4_mb_message_is_found_in_under_half_a_second(store: Store) -> None:
    text = ("lorem ipsum dolor sit amet " * 160_000)[:4_000_000] + " pineapple"
    conversation = store.create_conversation("long")
    store.add_message(conversation.id, "user", text)
    store.create_conversation("dolor sit amet " * 70_000)  # a 1 MB title
    for query in ("lorem", '"sit amet"', "ipsum*", "pineapple", "dolor"):
        started = time.perf_counter()
        hits = store.search(query)
        assert time.perf_counter() - started < 0.5, query
        assert hits and all("«" in hit.snippet and len(hit.snippet) < 200 for hit in hits)


# --- CLI numbers --------------------------------------------------------------------------------

def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANGUAGE": "en"})


@pytest.mark.parametrize("limit", CLI_LIMIT_REFUSALS[:3])
def test_an_absurd_limit_is_a_usage_error(limit: str) -> None:
    result = cli("conversations", "list", f"--limit={limit}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--limit" in result.stderr and "is not a whole number from 1 to" in result.stderr


def test_undecodable_bytes_in_a_prompt_are_a_clean_error(tmp_path: Path) -> None:
    result = cli("complete", "--model", tmp_path / "never-loaded.gguf",
                 "--prompt", os.fsdecode(b"caf\xe9"))  # Latin-1 bytes in a UTF-8 terminal
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not valid Unicode" in result.stderr


# --- the API server -----------------------------------------------------------------------------

@pytest.fixture
def api() -> Iterator[str]:
    server = ApiServer(FakeEngine([DONE]), "fake", port=0)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def post(url: str, content: bytes, **headers: str) -> httpx2.Response:
    return httpx2.post(url + "/chat/completions", content=content, timeout=30,
                       headers={"content-type": "application/json", **headers})


def test_a_body_over_the_limit_is_a_413(api: str) -> None:
    response = post(api, b" " * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_streamed_body_over_the_limit_is_a_413(api: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_REQUEST_BYTES // 65_536 + 2):
            yield b" " * 65_536
    response = httpx2.post(api + "/chat/completions", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("body", "param"), [
    (b'{"messages": [{"role": "system", "content": "Be brief."}]}', "messages"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),
    (b'{"messages": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", None),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": ' + b"9" * 5_000 + b"}",
     None),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}', None),
])
def test_a_bad_body_is_a_400_naming_the_field(api: str, body: bytes, param: str | None) -> None:
    response = post(api, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_message_over_the_size_limit_is_a_400(api: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 1_000_001}]}).encode()
    response = post(api, body)
    assert response.status_code == 400 and "1,000,000" in response.json()["error"]["message"]


# --- tokenization budget ------------------------------------------------------------------------

def test_old_turns_that_cannot_fit_are_dropped_before_tokenizing() -> None:
    huge = "x" * (256 * MAX_CHARS_PER_TOKEN)
    history = [ChatMessage("system", "Be brief."),
               ChatMessage("user", huge), ChatMessage("assistant", huge),
               ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"),
               ChatMessage("user", "And now?")]
    kept, dropped = drop_unfittable(history, 256)
    assert dropped == 2
    assert [m.content for m in kept] == ["Be brief.", "Hi", "Hello", "And now?"]
    assert drop_unfittable(history[3:], 256) == (history[3:], 0)  # what fits stays whole


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing() -> None:
    history = [ChatMessage("system", "s" * 10), ChatMessage("user", "old " * 100_000),
               ChatMessage("assistant", "ok"), ChatMessage("user", "new")]
    assert must_fit_chars(history) == 10 + 3  # old turns can be cut
    check_token_budget(must_fit_chars(history), 256)
    with pytest.raises(ContextOverflowError, match="cannot fit in 256 tokens"):
        check_token_budget(256 * MAX_CHARS_PER_TOKEN + 1, 256)


# --- leftovers ----------------------------------------------------------------------------------

def test_nan_in_stats_is_stored_and_exported_as_null(store: Store) -> None:
    conversation = store.create_conversation("rates")
    store.add_message(conversation.id, "assistant", "Hi",
                      stats={"tokens_per_s": math.nan, "ttft_s": math.inf, "n": [math.nan]})
    text = json.dumps(store.export_conversations(), allow_nan=False)
    assert json.loads(text)["conversations"][0]["messages"][0]["stats"] == {
        "tokens_per_s": None, "ttft_s": None, "n": [None]}


def test_failed_migrations_leave_one_backup_per_version(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    make_v1_database(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages_fts (x)")  # the next migration cannot create its own
    conn.commit()
    conn.close()
    for _ in range(3):
        with pytest.raises(StoreError, match="A copy of the database from before is at"):
            Store.open(path)
    assert [b.before_version for b in list_backups(path)] == [1]


def test_the_session_refuses_a_message_over_the_limit_before_anything(store: Store) -> None:
    from mixtral_desk.core.session import Session
    from mixtral_desk.core.settings import Settings

    with Session(Settings()) as session:
        with pytest.raises(MessageError, match="1,000,000"):
            session.send(store, None, "x" * 1_000_001)
        with pytest.raises(MessageError, match="surrogate"):
            session.send(store, None, "bytes from argv: \udcff")
    assert store.list_conversations(limit=10, include_archived=True) == []


# --- hub.json and catalog overrides -------------------------------------------------------------

@pytest.mark.parametrize("name", ["100,000 nested brackets", "a byte that is not UTF-8",
                                  "a lone surrogate"])
def test_a_hostile_hub_json_gives_the_defaults(data_home: DataPaths, name: str) -> None:
    from mixtral_desk.core.session.hub_settings import HubSettings, load_hub_settings

    data_home.hub_settings_file.parent.mkdir(parents=True, exist_ok=True)
    data_home.hub_settings_file.write_bytes(SETTINGS_REFUSALS[name][0])
    assert load_hub_settings(data_home) == HubSettings()


@pytest.mark.parametrize(("text", "word"), [
    ("schema_version = 1\n[[models]]\nid = " + "[" * 5_000 + "]" * 5_000, "TOML"),
    ("schema_version = " + "9" * 5_000 + "\n", "TOML"),
    ("schema_version = 1\nx = 123456789012345678901\n", "digits"),
    ("# " + "x" * 2_000_000 + "\n", "bytes"),
])
def test_a_hostile_catalog_override_is_a_catalog_error(text: str, word: str) -> None:
    from mixtral_desk.core.catalog import parse_catalog
    from mixtral_desk.core.errors import CatalogError

    with pytest.raises(CatalogError, match=word):
        parse_catalog(text, "override.toml")
