"""Property-based fuzzing (Hypothesis) of every reader of outside data: the import reader, the
settings readers, the search query parser, the API request schemas and the CLI's numbers.

The property for each: no traceback (only the reader's typed refusal), no hang (a deadline per
example), nothing written on refusal, and the store still lists, shows, exports and deletes
everything afterwards. Example counts are kept small (the "desk" profile below) so the suite
stays fast on two cores; ``HYPOTHESIS_PROFILE=thorough`` runs many more. No example database is
kept (the corpus of tests/untrusted_corpus.py is the memory of past finds: add new ones there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixtral_desk.core.cli.numbers import finite_number, whole_number
from mixtral_desk.core.early_settings import EarlySettings, read_early_settings
from mixtral_desk.core.errors import ImportFormatError, SearchQueryError, SettingsError
from mixtral_desk.core.server import ApiServer
from mixtral_desk.core.settings import Settings, load_settings
from mixtral_desk.core.store import Store, read_export
from mixtral_desk.core.untrusted_json import LimitError, load_limited_json
from tests.core.test_server_errors import DONE, FakeEngine
from tests.core.test_untrusted_input import assert_everything_usable
from tests.untrusted_corpus import SEARCH_ODDITIES, valid_export

settings.register_profile("desk", max_examples=25, deadline=timedelta(seconds=2),
                          database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", max_examples=1000, deadline=timedelta(seconds=5),
                          database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "desk"))

#: Any JSON value, with the texts Python's parser allows but stores cannot (lone surrogates),
#: floats it allows but JSON does not (NaN, infinities) and integers of any size.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(alphabet=st.characters(codec=None), max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

#: JSON-like texts: real JSON of those values, mangled by a few bytes, or any bytes at all.
json_texts = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=3_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


def _export_with(path: list[str | int], value: Any) -> dict[str, Any]:
    document: Any = valid_export()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return dict(document)


_FIELDS: list[list[str | int]] = [
    ["version"], ["conversations"], ["conversations", 0, "id"], ["conversations", 0, "title"],
    ["conversations", 0, "created_at"], ["conversations", 0, "settings"],
    ["conversations", 0, "pinned"], ["conversations", 0, "active_leaf_id"],
    ["conversations", 0, "messages"], ["conversations", 0, "messages", 1, "parent_id"],
    ["conversations", 0, "messages", 1, "content"], ["conversations", 0, "messages", 1, "role"],
    ["conversations", 0, "messages", 1, "stats"], ["conversations", 0, "messages", 1, "status"],
    ["conversations", 0, "messages", 0, "updated_at"],
]

times = st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())

#: A valid export with one field replaced by anything (times: by any time in any zone).
mutated_exports = st.one_of(
    st.tuples(st.sampled_from(_FIELDS), json_values).map(lambda pair: _export_with(*pair)),
    st.tuples(st.sampled_from([f for f in _FIELDS if str(f[-1]).endswith("_at")]), times
              ).map(lambda pair: _export_with(*pair)),
)


# --- the import reader --------------------------------------------------------------------------

@given(document=mutated_exports)
def test_an_import_is_refused_whole_or_stays_usable(store: Store, document: dict[str, Any]
                                                    ) -> None:
    try:
        text = json.dumps(document).encode("utf-8", "surrogatepass")
    except ValueError:  # a value JSON cannot hold (NaN with allow_nan is fine; this is cycles)
        return
    before = store.list_conversations(limit=100, include_archived=True)
    try:
        store.import_conversations(load_limited_json(text, max_bytes=len(text)))
    except (ImportFormatError, LimitError):
        assert store.list_conversations(limit=100, include_archived=True) == before
    assert_everything_usable(store)


@given(text=json_texts)
def test_the_export_file_reader_refuses_cleanly(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "import.json"
    path.write_bytes(text)
    try:
        data = read_export(path)
    except ImportFormatError:
        return
    assert isinstance(data, dict)


# --- the settings readers -----------------------------------------------------------------------

settings_documents = st.one_of(
    json_texts,
    st.dictionaries(st.sampled_from(["schema_version", "load", "sampling", "server", "interface",
                                     "network", "last_model"]),
                    json_values, max_size=4).map(lambda value: json.dumps(value).encode(
                        "utf-8", "surrogatepass")),
)


@given(text=settings_documents)
def test_settings_readers_refuse_cleanly_and_write_nothing(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(text)
    early = read_early_settings(path)  # raises nothing, whatever the file
    assert isinstance(early, EarlySettings)
    try:
        loaded = load_settings(path)
    except SettingsError as error:
        assert str(path) in str(error)
    else:
        assert isinstance(loaded, Settings)
    assert path.read_bytes() == text


# --- the search query parser --------------------------------------------------------------------

@given(query=st.one_of(st.text(alphabet=st.characters(codec=None), max_size=60),
                       st.sampled_from(SEARCH_ODDITIES),
                       st.lists(st.sampled_from([*SEARCH_ODDITIES, "a", "鲁迅"]), max_size=8
                                ).map(" ".join)))
def test_any_query_is_answered_or_refused(store: Store, query: str) -> None:
    if not store.list_conversations(limit=1):
        conversation = store.create_conversation("Fuzz 鲁迅")
        store.add_message(conversation.id, "user", 'a "quoted" OR NEAR(x) col:y 鲁迅 🙂 *')
    try:
        hits = store.search(query)
        typed = store.search(query, as_you_type=True)
    except SearchQueryError:
        return
    assert isinstance(hits, list) and isinstance(typed, list)


# --- the API request schemas --------------------------------------------------------------------

_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", ""])
chat_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": st.lists(st.fixed_dictionaries({"role": _roles, "content": json_values}),
                              max_size=3)},
        optional={"max_tokens": json_values, "temperature": json_values, "stop": json_values,
                  "seed": json_values, "n": json_values, "stream": st.just(False)}),
)


def test_any_api_body_is_answered_or_refused_with_a_4xx() -> None:
    server = ApiServer(FakeEngine([DONE]), "fake", port=0)
    server.start()
    try:
        with httpx2.Client(base_url=server.base_url, timeout=10) as client:
            @given(body=st.one_of(chat_bodies.map(
                lambda value: json.dumps(value).encode("utf-8", "surrogatepass")), json_texts))
            @settings(deadline=timedelta(seconds=5))
            def ask(body: bytes) -> None:
                response = client.post("/chat/completions", content=body,
                                       headers={"content-type": "application/json"})
                assert response.status_code in (200, 400, 413), response.text
                if response.status_code != 200:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            ask()
    finally:
        server.stop()


# --- CLI numeric arguments ----------------------------------------------------------------------

@given(text=st.one_of(st.text(max_size=30), st.integers().map(str),
                      st.floats().map(str), st.sampled_from(["1" * 5_000, "٣", "+5", " 7 "])))
def test_numeric_arguments_parse_in_range_or_are_usage_errors(text: str) -> None:
    limit, temperature = whole_number(1, 1_000_000), finite_number(0.0, 10.0)
    try:
        assert 1 <= limit(text) <= 1_000_000
    except argparse.ArgumentTypeError as error:
        assert repr(text[:40]) in str(error)
    try:
        value = temperature(text)
    except argparse.ArgumentTypeError:
        return
    assert math.isfinite(value) and 0.0 <= value <= 10.0
