"""What the chat view shows of a conversation, read from the store in one go (on its thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixtral_desk.core.store import Conversation, Message, Store


@dataclass(frozen=True)
class MessageItem:
    """One shown message and where it sits among its alternatives (``index`` of ``siblings``)."""

    id: str
    role: str
    content: str
    status: str
    model: str | None
    stats: dict[str, Any] | None
    siblings: tuple[str, ...]
    index: int

    @classmethod
    def of(cls, message: Message, siblings: list[Message]) -> MessageItem:
        ids = tuple(s.id for s in siblings) or (message.id,)
        return cls(id=message.id, role=message.role, content=message.content,
                   status=message.status, model=message.model, stats=message.stats,
                   siblings=ids, index=ids.index(message.id) if message.id in ids else 0)


@dataclass(frozen=True)
class Thread:
    """A conversation and its active branch, root first."""

    conversation: Conversation
    items: tuple[MessageItem, ...]


def read_thread(store: Store, conversation_id: str) -> Thread:
    """The conversation's active branch with sibling counts (runs on the store thread).

    Raises:
        NotFoundError: the conversation does not exist.
    """
    conversation = store.get_conversation(conversation_id)
    branch = store.active_branch(conversation_id)
    items = tuple(MessageItem.of(m, store.siblings(m.id)) for m in branch if m.role != "system")
    return Thread(conversation, items)
