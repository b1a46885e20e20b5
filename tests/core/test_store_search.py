"""Full-text search: content and titles, ranking, snippets, index upkeep, odd input, CJK."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core.errors import SearchQueryError
from mixtral_desk.core.store import SNIPPET_CLOSE, SNIPPET_OPEN, Store
from mixtral_desk.core.store.search import cjk_index_text, parse_query


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "conversations.sqlite3") as opened:
        yield opened


def index_is_consistent(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    for table in ("messages_fts", "conversations_fts"):
        conn.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")
    conn.close()


def test_finds_messages_by_content_with_snippet(store: Store) -> None:
    conversation = store.create_conversation("Cooking")
    store.add_message(conversation.id, "user", "How long should I boil an egg?")
    answer = store.add_message(
        conversation.id, "assistant",
        "For a soft egg, about six minutes. " + "Then cool it in cold water. " * 10,
    )
    hits = store.search("minutes")
    assert [(hit.message_id, hit.role, hit.conversation_id) for hit in hits] == [
        (answer.id, "assistant", conversation.id)]
    assert hits[0].conversation_title == "Cooking"
    assert f"{SNIPPET_OPEN}minutes{SNIPPET_CLOSE}" in hits[0].snippet
    assert len(hits[0].snippet.split()) < 25  # a snippet, not the whole message


def test_finds_conversations_by_title(store: Store) -> None:
    conversation = store.create_conversation("Holiday in Lisbon")
    store.add_message(conversation.id, "user", "unrelated text")
    hits = store.search("lisbon")
    assert len(hits) == 1
    assert hits[0].message_id is None and hits[0].role is None
    assert hits[0].conversation_id == conversation.id
    assert hits[0].snippet == f"Holiday in {SNIPPET_OPEN}Lisbon{SNIPPET_CLOSE}"
    store.update_conversation(conversation.id, title="Holiday in Porto")
    assert store.search("lisbon") == []
    assert len(store.search("porto")) == 1


def test_ranking_prefers_denser_matches(store: Store) -> None:
    conversation = store.create_conversation()
    filler = "lorem ipsum dolor sit amet " * 20
    weak = store.add_message(conversation.id, "user", filler + "quantization once")
    strong = store.add_message(conversation.id, "assistant",
                               "quantization: quantization levels and quantization error")
    store.add_message(conversation.id, "user", "nothing relevant")
    hits = store.search("quantization")
    assert [hit.message_id for hit in hits] == [strong.id, weak.id]
    assert hits[0].rank < hits[1].rank


def test_words_are_anded_phrases_prefixes_and_or(store: Store) -> None:
    conversation = store.create_conversation()
    both = store.add_message(conversation.id, "user", "the quick brown fox")
    one = store.add_message(conversation.id, "user", "a quick reply")
    assert [h.message_id for h in store.search("quick fox")] == [both.id]
    assert [h.message_id for h in store.search('"brown fox"')] == [both.id]
    assert store.search('"fox brown"') == []
    assert {h.message_id for h in store.search("qui*")} == {both.id, one.id}
    assert {h.message_id for h in store.search("fox OR reply")} == {both.id, one.id}
    assert store.search("") == [] and store.search("   ") == [] and store.search("((") == []


@pytest.mark.parametrize("query", ['"unbalanced', "AND", "foo(", "NOT", "a:b", "^x", "C++",
                                   "-minus", "NEAR(", "*", '""', "OR OR", "x OR"])
def test_odd_input_is_searched_literally_by_default(store: Store, query: str) -> None:
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user",
                      "unbalanced AND foo(bar) NOT a:b ^x C++ -minus NEAR( x")
    store.search(query)  # never raises


def test_odd_input_finds_the_literal_words(store: Store) -> None:
    conversation = store.create_conversation()
    message = store.add_message(conversation.id, "user", "An unbalanced foo(bar) AND more")
    for query in ('"unbalanced', "foo(", "AND", "foo(bar)"):
        assert [h.message_id for h in store.search(query)] == [message.id], query


@pytest.mark.parametrize("query", ['"unbalanced', "AND", "foo(", "a OR", "nosuchcolumn: x"])
def test_malformed_raw_query_raises_a_friendly_error(store: Store, query: str) -> None:
    with pytest.raises(SearchQueryError, match="double quotes") as caught:
        store.search(query, raw=True)
    assert isinstance(caught.value, ValueError)


def test_raw_query_allows_fts5_syntax(store: Store) -> None:
    conversation = store.create_conversation()
    message = store.add_message(conversation.id, "user", "alpha beta gamma")
    assert [h.message_id for h in store.search("alpha NOT delta", raw=True)] == [message.id]
    assert [h.message_id for h in store.search("NEAR(alpha gamma, 2)", raw=True)] == [message.id]


def test_index_follows_updates_and_deletes(store: Store) -> None:
    conversation = store.create_conversation("Stream")
    reply = store.add_message(conversation.id, "assistant", "", status="streaming")
    for text in ("partial", "partial answer", "final answer"):
        store.update_message(reply.id, content=text)
    store.update_message(reply.id, status="complete")
    assert store.search("partial") == []
    assert [h.message_id for h in store.search("final")] == [reply.id]
    index_is_consistent(store)

    store.delete_conversation(conversation.id)
    assert store.search("final") == [] and store.search("stream") == []
    index_is_consistent(store)


def test_limit(store: Store) -> None:
    conversation = store.create_conversation("needle title")
    for number in range(30):
        store.add_message(conversation.id, "user", f"needle number {number}")
    assert len(store.search("needle")) == 20
    assert len(store.search("needle", limit=5)) == 5
    assert store.search("needle", limit=0) == []


# --- Chinese, Japanese, Korean -----------------------------------------------------------------

def test_cjk_index_text() -> None:
    assert cjk_index_text("plain English") is None
    assert (cjk_index_text("鲁迅为什么打周树人") or "").split() == [
        "鲁迅", "迅为", "为什", "什么", "么打", "打周", "周树", "树人", "人"]
    assert (cjk_index_text("我用Python写代码") or "").split() == [
        "我用", "用", "Python", "写代", "代码", "码"]


def test_chinese_words_are_found_inside_a_run(store: Store) -> None:
    conversation = store.create_conversation()
    message = store.add_message(conversation.id, "user", "鲁迅为什么打周树人")
    other = store.add_message(conversation.id, "user", "周末去公园")
    for query in ("鲁迅", "周树人", "为什么", "鲁迅为什么打周树人", "人", "鲁迅 周树人"):
        assert [h.message_id for h in store.search(query)] == [message.id], query
    assert {h.message_id for h in store.search("周")} == {message.id, other.id}
    assert store.search("树鲁") == []
    assert store.search("鲁迅 公园") == []
    hit = store.search("周树人")[0]
    assert f"{SNIPPET_OPEN}周树人{SNIPPET_CLOSE}" in hit.snippet


def test_mixed_and_japanese_text(store: Store) -> None:
    conversation = store.create_conversation("東京旅行の計画")
    mixed = store.add_message(conversation.id, "user", "我用Python写代码")
    english = store.add_message(conversation.id, "user", "I write Python code")
    assert {h.message_id for h in store.search("python")} == {mixed.id, english.id}
    assert [h.message_id for h in store.search("写代码")] == [mixed.id]
    assert [h.message_id for h in store.search("Python写代码")] == [mixed.id]
    title_hits = store.search("旅行")
    assert [(h.conversation_id, h.message_id) for h in title_hits] == [(conversation.id, None)]
    assert f"{SNIPPET_OPEN}旅行{SNIPPET_CLOSE}" in title_hits[0].snippet


def test_english_ranking_is_unaffected_by_cjk_neighbours(store: Store) -> None:
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "中文 model 说明 " * 5)
    dense = store.add_message(conversation.id, "user", "model model model")
    assert store.search("model")[0].message_id == dense.id


def test_parse_query_needles() -> None:
    parsed = parse_query('foo( "a phrase" OR bar* 鲁迅')
    assert parsed.needles == ("foo", "a phrase", "bar", "鲁迅")
    assert parsed.expression("search_cjk") == (
        '"foo(" "a phrase" OR "bar"* search_cjk : "鲁迅"')


def test_only_the_newest_candidates_are_ranked(store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mixtral_desk.core.store import search

    conversation = store.create_conversation()
    old_dense = store.add_message(conversation.id, "user", "word word word word")
    newer = [store.add_message(conversation.id, "user", "word " + "filler " * 30)
             for _ in range(3)]
    assert store.search("word")[0].message_id == old_dense.id
    monkeypatch.setattr(search, "SEARCH_CANDIDATES", 3)
    assert {h.message_id for h in store.search("word")} == {m.id for m in newer}


def test_as_you_type_makes_every_plain_word_a_prefix(store: Store) -> None:
    conversation = store.create_conversation("Fruit")
    store.add_message(conversation.id, "user", "Where do pineapples grow? In apple orchards?")
    store.add_message(conversation.id, "user", "An exact phrasebook")
    assert store.search("pine appl") == []
    assert [h.message_id is not None for h in store.search("pine appl", as_you_type=True)] == [True]
    assert parse_query("pine OR appl", as_you_type=True).terms == (
        ("pine", True), ("OR", False), ("appl", True))
    assert store.search('"exact phrase"', as_you_type=True) == []  # a phrase stays exact
    assert len(store.search('"exact phrasebook" an', as_you_type=True)) == 1
