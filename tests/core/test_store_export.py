"""Export, import (round trip, id collisions, bad input), Markdown, export files."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from mixtral_desk.core.errors import ImportFormatError
from mixtral_desk.core.store import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    Store,
    read_export,
    write_export,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "conversations.sqlite3") as opened:
        yield opened


def fill(store: Store) -> list[str]:
    """Two conversations with branches, stats, settings, CJK, a pinned and an archived one."""
    first = store.create_conversation("Colours 颜色", model="mixtral-8x7b",
                                      system_prompt="You are terse.",
                                      settings={"temperature": 0.2, "stop": ["\n\n"]})
    question = store.add_message(first.id, "user", "Name a colour")
    red = store.add_message(first.id, "assistant", "Red", model="mixtral-8x7b",
                            stats={"prompt_tokens": 10, "completion_tokens": 1,
                                   "ttft_s": 0.31, "tokens_per_s": 18.2, "finish_reason": "stop"})
    store.add_message(first.id, "assistant", "Blue", parent_id=question.id, status="error")
    store.select_branch(red.id)
    store.add_message(first.id, "user", "Why?")
    store.update_conversation(first.id, pinned=True)
    second = store.create_conversation(None)
    store.add_message(second.id, "system", "Old system message")
    store.add_message(second.id, "user", "鲁迅为什么打周树人", status="interrupted")
    store.update_conversation(second.id, archived=True)
    return [first.id, second.id]


def without_time(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    del data["exported_at"]
    return data


def test_export_shape(store: Store) -> None:
    ids = fill(store)
    data = store.export_conversations()
    assert data["format"] == EXPORT_FORMAT and data["version"] == EXPORT_VERSION
    assert [c["id"] for c in data["conversations"]] == ids
    assert json.loads(json.dumps(data)) == data  # JSON-able
    first = data["conversations"][0]
    assert len(first["messages"]) == 4 and first["pinned"] is True
    assert first["settings"] == {"temperature": 0.2, "stop": ["\n\n"]}
    assert store.export_conversations([ids[1]])["conversations"][0]["id"] == ids[1]


def test_round_trip_into_a_fresh_database_is_lossless(store: Store, tmp_path: Path) -> None:
    fill(store)
    exported = store.export_conversations()
    with Store.open(tmp_path / "fresh.sqlite3") as fresh:
        imported = fresh.import_conversations(exported)
        assert imported == [c["id"] for c in exported["conversations"]]
        again = fresh.export_conversations()
        assert without_time(again) == without_time(exported)
        for conversation_id in imported:
            assert fresh.get_conversation(conversation_id) == store.get_conversation(
                conversation_id)
            assert fresh.active_branch(conversation_id) == store.active_branch(conversation_id)
        assert [h.message_id for h in fresh.search("周树人")] == [
            h.message_id for h in store.search("周树人")]
        assert fresh.list_conversations(include_archived=True) == store.list_conversations(
            include_archived=True)


def test_round_trip_through_a_file(store: Store, tmp_path: Path) -> None:
    fill(store)
    path = tmp_path / "export.json"
    write_export(path, store.export_conversations())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.json")]
    with Store.open(tmp_path / "fresh.sqlite3") as fresh:
        fresh.import_conversations(read_export(path))
        assert without_time(fresh.export_conversations()) == without_time(read_export(path))


def test_importing_existing_ids_makes_a_copy_with_new_ids(store: Store) -> None:
    ids = fill(store)
    exported = store.export_conversations()
    copies = store.import_conversations(exported)
    assert len(copies) == 2 and not set(copies) & set(ids)
    assert store.count_conversations(include_archived=True) == 4
    for original, duplicate in zip(ids, copies, strict=True):
        before = store.export_conversations([original])["conversations"][0]
        after = store.export_conversations([duplicate])["conversations"][0]
        # Same data, new ids, same tree shape and active branch.
        strip = ("id", "parent_id", "active_leaf_id")
        assert {k: v for k, v in after.items() if k not in (*strip, "messages")} == {
            k: v for k, v in before.items() if k not in (*strip, "messages")}
        assert [{k: v for k, v in m.items() if k not in strip} for m in after["messages"]] == [
            {k: v for k, v in m.items() if k not in strip} for m in before["messages"]]
        position = {m["id"]: i for i, m in enumerate(after["messages"])}
        old_position = {m["id"]: i for i, m in enumerate(before["messages"])}
        assert [position.get(m["parent_id"]) for m in after["messages"]] == [
            old_position.get(m["parent_id"]) for m in before["messages"]]
        assert [m.content for m in store.active_branch(duplicate)] == [
            m.content for m in store.active_branch(original)]
        assert {m.id for m in store.active_branch(duplicate)}.isdisjoint(
            m.id for m in store.active_branch(original))


def test_import_of_streaming_message_marks_it_interrupted(store: Store, tmp_path: Path) -> None:
    conversation = store.create_conversation()
    reply = store.add_message(conversation.id, "assistant", "half", status="streaming")
    exported = store.export_conversations()
    with Store.open(tmp_path / "fresh.sqlite3") as fresh:
        fresh.import_conversations(exported)
        assert fresh.get_message(reply.id).status == "interrupted"


def valid_export(store: Store) -> dict[str, Any]:
    fill(store)
    data: dict[str, Any] = store.export_conversations()
    return data


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d.update(format="something-else"), "Not a Mixtral Desk export"),
    (lambda d: d.update(version=EXPORT_VERSION + 1), "newer Mixtral Desk"),
    (lambda d: d.update(version="1"), "version"),
    (lambda d: d.update(conversations={}), "conversations"),
    (lambda d: d["conversations"].append("nope"), r"conversations\[2\]"),
    (lambda d: d["conversations"][0].pop("id"), r"conversations\[0\]\.id"),
    (lambda d: d["conversations"][0].update(created_at="yesterday"), "created_at"),
    (lambda d: d["conversations"][0].update(pinned="yes"), "pinned"),
    (lambda d: d["conversations"][0].update(settings=[1]), "settings"),
    (lambda d: d["conversations"][0]["messages"][0].update(role="robot"),
     r"messages\[0\]\.role"),
    (lambda d: d["conversations"][0]["messages"][1].update(content=None), "content"),
    (lambda d: d["conversations"][0]["messages"][1].update(parent_id="01XXXXXXXXXXXXXXXXXXXXXXXX"),
     "not in that conversation"),
    (lambda d: d["conversations"][0]["messages"][0].update(
        parent_id=d["conversations"][0]["messages"][1]["id"]), "loop"),
    (lambda d: d["conversations"][0]["messages"].append(d["conversations"][0]["messages"][0]),
     "repeats"),
    (lambda d: d["conversations"][0].update(active_leaf_id="elsewhere"), "active_leaf_id"),
])
def test_bad_imports_are_refused_and_import_nothing(store: Store, tmp_path: Path, change: Any,
                                                    match: str) -> None:
    data = valid_export(store)
    change(data)
    with Store.open(tmp_path / "fresh.sqlite3") as fresh:
        with pytest.raises(ImportFormatError, match=match):
            fresh.import_conversations(data)
        assert fresh.count_conversations(include_archived=True) == 0


def test_not_an_object_is_refused(store: Store) -> None:
    with pytest.raises(ImportFormatError):
        store.import_conversations(cast(Any, []))


def test_foreign_ids_are_replaced(store: Store, tmp_path: Path) -> None:
    data = {"format": EXPORT_FORMAT, "version": 1, "conversations": [{
        "id": "chat-1", "title": "Hand made", "created_at": "2024-01-01T10:00:00Z",
        "updated_at": "2024-01-01T10:05:00Z",
        "messages": [
            {"id": "m1", "role": "user", "content": "hi", "created_at": "2024-01-01T10:00:00Z",
             "updated_at": "2024-01-01T10:00:00Z"},
            {"id": "m2", "parent_id": "m1", "role": "assistant", "content": "hello",
             "created_at": "2024-01-01T10:01:00Z", "updated_at": "2024-01-01T10:01:00Z"},
        ],
        "active_leaf_id": "m2",
    }]}
    [conversation_id] = store.import_conversations(data)
    assert conversation_id != "chat-1"
    assert [m.content for m in store.active_branch(conversation_id)] == ["hi", "hello"]
    assert store.get_conversation(conversation_id).created_at.year == 2024


def test_read_export_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("not json", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="not JSON"):
        read_export(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="object"):
        read_export(path)


def test_markdown_shows_the_active_branch(store: Store) -> None:
    first_id, second_id = fill(store)
    text = store.export_markdown(first_id)
    assert text.startswith("# Colours 颜色\n")
    assert "model mixtral-8x7b" in text
    assert "## System prompt\n\nYou are terse." in text
    assert "## User\n\nName a colour" in text
    assert "## Assistant\n\nRed" in text
    assert "## User\n\nWhy?" in text
    assert "Blue" not in text  # another branch
    assert text.index("Name a colour") < text.index("Red") < text.index("Why?")
    untitled = store.export_markdown(second_id)
    assert untitled.startswith("# Untitled conversation")
    assert "## System\n\nOld system message" in untitled
    assert "*(interrupted)*" in untitled
