"""The store's conversation and message API: CRUD, ordering, branches, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mixtral_desk.core.errors import NotFoundError, StoreError
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.store import SCHEMA_VERSION, Message, Store
from mixtral_desk.core.store.ids import id_time, is_valid_id, new_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "conversations.sqlite3") as opened:
        yield opened


def contents(messages: list[Message]) -> list[str]:
    return [message.content for message in messages]


# --- ids ---------------------------------------------------------------------------------------

def test_ids_are_time_sortable_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_valid_id(value) for value in ids[:100])
    assert abs(id_time(ids[0]) - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_ids_from_threads_are_unique() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def make(bucket: list[str]) -> None:
        bucket.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for bucket in results for value in bucket]
    assert len(set(every)) == len(every)
    assert all(bucket == sorted(bucket) for bucket in results)


# --- conversations -----------------------------------------------------------------------------

def test_open_default_path_uses_data_home(data_home: DataPaths) -> None:
    with Store.open() as store:
        assert store.path == data_home.database
        assert store.schema_version == SCHEMA_VERSION
    assert data_home.database.exists()


def test_create_get_update_conversation(store: Store) -> None:
    created = store.create_conversation("Trip", model="mixtral", system_prompt="Be brief.",
                                        settings={"temperature": 0.7, "stop": ["</s>"]})
    fetched = store.get_conversation(created.id)
    assert fetched == created
    assert fetched.settings == {"temperature": 0.7, "stop": ["</s>"]}
    assert not fetched.pinned and not fetched.archived and fetched.active_leaf_id is None

    renamed = store.update_conversation(created.id, title="Lisbon trip", settings={"top_p": 0.9})
    assert renamed.title == "Lisbon trip" and renamed.settings == {"top_p": 0.9}
    assert renamed.model == "mixtral" and renamed.system_prompt == "Be brief."
    assert renamed.updated_at >= created.updated_at

    cleared = store.update_conversation(created.id, title=None, system_prompt=None)
    assert cleared.title is None and cleared.system_prompt is None and cleared.model == "mixtral"


def test_pinning_does_not_move_updated_at(store: Store) -> None:
    created = store.create_conversation("a")
    time.sleep(0.005)
    pinned = store.update_conversation(created.id, pinned=True)
    assert pinned.pinned and pinned.updated_at == created.updated_at


def test_list_orders_pinned_first_then_recent_and_hides_archived(store: Store) -> None:
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    third = store.create_conversation("third")
    time.sleep(0.005)
    store.add_message(first.id, "user", "bump")  # first is now the most recent
    store.update_conversation(third.id, pinned=True)
    store.update_conversation(second.id, archived=True)

    assert [c.title for c in store.list_conversations()] == ["third", "first"]
    assert [c.title for c in store.list_conversations(include_archived=True)] == [
        "third", "first", "second"]
    assert [c.title for c in store.list_conversations(limit=1, offset=1)] == ["first"]
    assert store.count_conversations() == 2
    assert store.count_conversations(include_archived=True) == 3


def test_delete_conversation_removes_its_messages(store: Store) -> None:
    conversation = store.create_conversation("bye")
    message = store.add_message(conversation.id, "user", "hello")
    store.delete_conversation(conversation.id)
    with pytest.raises(NotFoundError):
        store.get_conversation(conversation.id)
    with pytest.raises(NotFoundError):
        store.get_message(message.id)


def test_unknown_ids_raise_not_found_with_a_clear_message(store: Store) -> None:
    with pytest.raises(NotFoundError, match="No conversation with id nope") as caught:
        store.get_conversation("nope")
    assert str(caught.value) == "No conversation with id nope"
    assert isinstance(caught.value, KeyError)
    conversation = store.create_conversation()
    calls: list[Callable[[], object]] = [
        lambda: store.update_conversation("nope", title="x"),
        lambda: store.delete_conversation("nope"),
        lambda: store.add_message("nope", "user", "x"),
        lambda: store.add_message(conversation.id, "user", "x", parent_id="nope"),
        lambda: store.get_message("nope"),
        lambda: store.update_message("nope", content="x"),
        lambda: store.active_branch("nope"),
        lambda: store.siblings("nope"),
        lambda: store.select_branch("nope"),
        lambda: store.export_markdown("nope"),
        lambda: store.export_conversations(["nope"]),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match="nope"):
            call()


def test_bad_role_status_and_foreign_parent_are_rejected(store: Store) -> None:
    one = store.create_conversation()
    other = store.create_conversation()
    message = store.add_message(one.id, "user", "hi")
    with pytest.raises(ValueError, match="role"):
        store.add_message(one.id, "robot", "x")
    with pytest.raises(ValueError, match="status"):
        store.add_message(one.id, "user", "x", status="done")
    with pytest.raises(ValueError, match="status"):
        store.update_message(message.id, status="done")
    with pytest.raises(ValueError, match="another conversation"):
        store.add_message(other.id, "assistant", "x", parent_id=message.id)


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "c.sqlite3")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_conversations()


def test_store_can_be_shared_between_threads(store: Store) -> None:
    conversation = store.create_conversation()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for number in range(50):
                store.add_message(conversation.id, "user", f"message {number}", parent_id=None)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(store.list_messages(conversation.id)) == 200


# --- messages and branches ---------------------------------------------------------------------

def test_messages_chain_onto_the_active_leaf(store: Store) -> None:
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "What is 2+2?")
    answer = store.add_message(conversation.id, "assistant", "4", model="mixtral",
                               stats={"prompt_tokens": 12, "completion_tokens": 1,
                                      "ttft_s": 0.25, "tokens_per_s": 20.5,
                                      "finish_reason": "stop"})
    assert question.parent_id is None and answer.parent_id == question.id
    assert store.get_conversation(conversation.id).active_leaf_id == answer.id
    assert store.active_branch(conversation.id) == [question, answer]
    assert store.get_message(answer.id).stats == answer.stats


def test_add_message_touches_conversation(store: Store) -> None:
    conversation = store.create_conversation()
    time.sleep(0.005)
    store.add_message(conversation.id, "user", "hi")
    assert store.get_conversation(conversation.id).updated_at > conversation.updated_at


def test_streaming_updates(store: Store) -> None:
    conversation = store.create_conversation()
    store.add_message(conversation.id, "user", "Tell me a story")
    reply = store.add_message(conversation.id, "assistant", "", status="streaming")
    for text in ("Once", "Once upon", "Once upon a time"):
        store.update_message(reply.id, content=text)
    assert store.get_message(reply.id).status == "streaming"
    store.update_message(reply.id, status="complete", stats={"finish_reason": "stop"})
    final = store.get_message(reply.id)
    assert (final.content, final.status, final.stats) == (
        "Once upon a time", "complete", {"finish_reason": "stop"})
    assert final.updated_at >= final.created_at


def test_regenerate_creates_siblings_and_select_branch_switches(store: Store) -> None:
    conversation = store.create_conversation()
    question = store.add_message(conversation.id, "user", "Name a colour")
    first = store.add_message(conversation.id, "assistant", "Red")
    second = store.add_message(conversation.id, "assistant", "Blue", parent_id=question.id)

    assert contents(store.siblings(first.id)) == ["Red", "Blue"]
    assert store.siblings(second.id) == store.siblings(first.id)
    assert contents(store.active_branch(conversation.id)) == ["Name a colour", "Blue"]

    assert contents(store.select_branch(first.id)) == ["Name a colour", "Red"]
    assert store.get_conversation(conversation.id).active_leaf_id == first.id
    follow_up = store.add_message(conversation.id, "user", "Why red?")
    assert follow_up.parent_id == first.id
    assert contents(store.active_branch(conversation.id)) == ["Name a colour", "Red", "Why red?"]


def test_select_branch_follows_the_newest_descendants(store: Store) -> None:
    conversation = store.create_conversation()
    u1 = store.add_message(conversation.id, "user", "u1")
    a1 = store.add_message(conversation.id, "assistant", "a1")
    u2 = store.add_message(conversation.id, "user", "u2")
    store.add_message(conversation.id, "assistant", "a2")
    # Edit u2: a sibling with the same parent, with its own subtree.
    edited = store.add_message(conversation.id, "user", "u2 edited", parent_id=a1.id)
    store.add_message(conversation.id, "assistant", "a2 for the edit")
    assert contents(store.active_branch(conversation.id)) == [
        "u1", "a1", "u2 edited", "a2 for the edit"]
    assert contents(store.siblings(u2.id)) == ["u2", "u2 edited"]

    assert contents(store.select_branch(u2.id)) == ["u1", "a1", "u2", "a2"]
    assert contents(store.select_branch(a1.id)) == ["u1", "a1", "u2 edited", "a2 for the edit"]
    assert contents(store.select_branch(edited.id))[-1] == "a2 for the edit"

    # Editing the first message makes a second root.
    root = store.add_message(conversation.id, "user", "u1 edited", parent_id=None)
    assert contents(store.siblings(u1.id)) == ["u1", "u1 edited"]
    assert store.active_branch(conversation.id) == [root]
    assert len(store.list_messages(conversation.id)) == 7
