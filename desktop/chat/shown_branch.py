"""What the chat view shows of a conversation: its active branch, read from the store in one go
(on the store thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixtral_desk.core.store import Conversation, Message, Store

if TYPE_CHECKING:
    from mixtral_desk.core.chat import TurnResult


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
    def of(cls, message: Message, sibling_ids: tuple[str, ...]) -> MessageItem:
        """The item of ``message`` among its alternatives (ids, oldest first)."""
        ids = sibling_ids or (message.id,)
        return cls(id=message.id, role=message.role, content=message.content,
                   status=message.status, model=message.model, stats=message.stats,
                   siblings=ids, index=ids.index(message.id) if message.id in ids else 0)


@dataclass(frozen=True)
class ShownBranch:
    """A conversation and its active branch, root first."""

    conversation: Conversation
    items: tuple[MessageItem, ...]


def read_shown_branch(store: Store, conversation_id: str) -> ShownBranch:
    """The conversation's active branch with sibling counts (runs on the store thread).

    Raises:
        NotFoundError: the conversation does not exist.
    """
    conversation = store.get_conversation(conversation_id)
    branch = store.active_branch(conversation_id)
    items = tuple(MessageItem.of(m, tuple(s.id for s in store.siblings(m.id)))
                  for m in branch if m.role != "system")
    return ShownBranch(conversation, items)


def items_of_turn(result: TurnResult) -> tuple[MessageItem | None, MessageItem]:
    """The shown items of a finished turn's user message (``None`` at the root) and reply."""
    question = (MessageItem.of(result.question, result.question_siblings)
                if result.question is not None else None)
    return question, MessageItem.of(result.reply, result.reply_siblings)
