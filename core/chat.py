"""One chat turn: history from the store → engine → a streamed reply saved as it grows.

This is the short path every message travels, whoever drives it (the CLI, the GUI's bridge, the
API server)::

    user text ─► Store.add_message ─► active branch as ChatMessages ─► EngineHost.chat
                      ▲                                                   │ tokens
                      └──── Store.update_message every ≤ 0.5 s ◄──────────┘

The reply is written to the store while it streams (status ``streaming``), so a crash or a kill
loses at most the last half second; when the engine stops early (stop, crash) the reply is kept and
marked ``interrupted``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    ReplyStats,
    SamplingOptions,
    TokenEvent,
)
from mixtral_desk.core.engine.prompt_cache import conversation_tag
from mixtral_desk.core.errors import EngineError
from mixtral_desk.core.store import ACTIVE_LEAF, UNSET, Conversation, Message

if TYPE_CHECKING:
    from mixtral_desk.core.engine.interface import ChatEngine
    from mixtral_desk.core.store.models import ActiveLeaf, Unset

SAVE_INTERVAL_S = 0.5

TokenCallback = Callable[[str], None]


class ChatStore(Protocol):
    """The part of :class:`~mixtral_desk.core.store.Store` a turn uses.

    A :class:`Store` satisfies it as it is; the desktop passes a proxy that runs each call on its
    store thread, so that one thread owns the database.
    """

    def get_conversation(self, conversation_id: str) -> Conversation: ...

    def create_conversation(self, title: str | None = None, *, model: str | None = None,
                            system_prompt: str | None = None,
                            settings: dict[str, Any] | None = None) -> Conversation: ...

    def update_conversation(self, conversation_id: str, *,
                            title: str | Unset | None = UNSET) -> Conversation: ...

    def add_message(self, conversation_id: str, role: str, content: str, *,
                    parent_id: str | ActiveLeaf | None = ACTIVE_LEAF, status: str = "complete",
                    model: str | None = None,
                    stats: dict[str, Any] | None = None) -> Message: ...

    def update_message(self, message_id: str, *, content: str | None = None,
                       status: str | None = None,
                       stats: dict[str, Any] | None = None) -> None: ...

    def get_message(self, message_id: str) -> Message: ...

    def active_branch(self, conversation_id: str) -> list[Message]: ...

    def siblings(self, message_id: str) -> list[Message]: ...


@dataclass(frozen=True)
class TurnResult:
    """What one turn produced: the stored reply and the engine's figures for it.

    Also what a view needs to show the end of the turn without reading the conversation again:
    the conversation as it is now (title, time), the user message the reply answers
    (``question``; ``None`` for a reply at the root) and the ids of each one's alternatives,
    itself included, oldest first (``reply_siblings``, ``question_siblings``).
    """

    reply: Message
    stats: ReplyStats | None
    interrupted: bool
    conversation: Conversation
    question: Message | None = None
    reply_siblings: tuple[str, ...] = ()
    question_siblings: tuple[str, ...] = ()


def history_for(
    store: ChatStore, conversation_id: str, leaf_id: str | None = None
) -> list[ChatMessage]:
    """The conversation as the engine sees it: system prompt, then the branch up to ``leaf_id``.

    Messages that failed (status ``error``) and empty replies are left out.

    Raises:
        NotFoundError: the conversation or the message does not exist.
    """
    conversation = store.get_conversation(conversation_id)
    branch = store.active_branch(conversation_id)
    if leaf_id is not None:
        ids = [m.id for m in branch]
        branch = branch[: ids.index(leaf_id) + 1] if leaf_id in ids else _path_to(store, leaf_id)
    messages: list[ChatMessage] = []
    if conversation.system_prompt:
        messages.append(ChatMessage(role="system", content=conversation.system_prompt))
    for message in branch:
        if message.status == "error" or not message.content:
            continue
        if message.role in ("user", "assistant", "system"):
            messages.append(ChatMessage(role=message.role, content=message.content))
    return messages


def _path_to(store: ChatStore, message_id: str) -> list[Message]:
    path: list[Message] = []
    current: str | None = message_id
    while current is not None:
        message = store.get_message(current)
        path.append(message)
        current = message.parent_id
    return path[::-1]


def send(
    store: ChatStore,
    engine: ChatEngine,
    conversation_id: str,
    text: str,
    sampling: SamplingOptions,
    *,
    on_token: TokenCallback | None = None,
    model_name: str | None = None,
) -> TurnResult:
    """Add the user's message to the active branch and stream the assistant's reply.

    Raises:
        NotFoundError: the conversation does not exist.
        EngineError: the engine failed or died; the partial reply is stored as ``interrupted``.
    """
    store.add_message(conversation_id, "user", text)
    return reply(store, engine, conversation_id, sampling, on_token=on_token,
                 model_name=model_name)


def regenerate(
    store: ChatStore,
    engine: ChatEngine,
    conversation_id: str,
    sampling: SamplingOptions,
    *,
    on_token: TokenCallback | None = None,
    model_name: str | None = None,
) -> TurnResult:
    """Write a new reply to the last user message as a sibling of the current one (a branch).

    Raises:
        NotFoundError: the conversation does not exist.
        ValueError: the conversation has no user message to answer.
        EngineError: as for :func:`send`.
    """
    branch = store.active_branch(conversation_id)
    users = [m for m in branch if m.role == "user"]
    if not users:
        raise ValueError("This conversation has no message to answer yet.")
    return reply(store, engine, conversation_id, sampling, on_token=on_token,
                 model_name=model_name, parent_id=users[-1].id)


def reply(
    store: ChatStore,
    engine: ChatEngine,
    conversation_id: str,
    sampling: SamplingOptions,
    *,
    on_token: TokenCallback | None = None,
    model_name: str | None = None,
    parent_id: str | None = None,
) -> TurnResult:
    """Stream an assistant reply to the branch ending at ``parent_id`` (default: the active leaf).

    Raises:
        NotFoundError: the conversation or parent message does not exist.
        EngineError: as for :func:`send`.
    """
    history = history_for(store, conversation_id, parent_id)
    if parent_id is None:
        answer = store.add_message(conversation_id, "assistant", "", status="streaming",
                                   model=model_name)
    else:
        answer = store.add_message(conversation_id, "assistant", "", parent_id=parent_id,
                                   status="streaming", model=model_name)
    stream = engine.chat(history, sampling, cache_tag=conversation_tag(conversation_id))
    return _stream_into(store, answer, stream, on_token)


def edit_and_resend(
    store: ChatStore,
    engine: ChatEngine,
    message_id: str,
    text: str,
    sampling: SamplingOptions,
    *,
    on_token: TokenCallback | None = None,
    model_name: str | None = None,
) -> TurnResult:
    """Add ``text`` as a new version of user message ``message_id`` (a sibling: a new branch from
    its parent) and stream the reply to it.

    Raises:
        NotFoundError: the message does not exist.
        ValueError: the message is not a user message.
        EngineError: as for :func:`send`.
    """
    edited = store.get_message(message_id)
    if edited.role != "user":
        raise ValueError("Only a user message can be edited and sent again.")
    store.add_message(edited.conversation_id, "user", text, parent_id=edited.parent_id)
    return reply(store, engine, edited.conversation_id, sampling, on_token=on_token,
                 model_name=model_name)


def continue_reply(
    store: ChatStore,
    engine: ChatEngine,
    message_id: str,
    sampling: SamplingOptions,
    *,
    on_token: TokenCallback | None = None,
) -> TurnResult:
    """Continue an interrupted assistant reply in place, appending to its text.

    Raises:
        NotFoundError: the message does not exist.
        ValueError: the message is not an interrupted assistant reply.
        EngineError: as for :func:`send`.
    """
    message = store.get_message(message_id)
    if message.role != "assistant" or message.status != "interrupted":
        raise ValueError("Only an interrupted assistant reply can be continued.")
    history = history_for(store, message.conversation_id, message.id)
    store.update_message(message.id, status="streaming")
    stream = engine.chat(history, sampling, cache_tag=conversation_tag(message.conversation_id))
    return _stream_into(store, message, stream, on_token,
                        prefix=message.content)


def _stream_into(
    store: ChatStore,
    answer: Message,
    events: Iterator[TokenEvent | DoneEvent],
    on_token: TokenCallback | None,
    prefix: str = "",
) -> TurnResult:
    parts: list[str] = [prefix]
    stats: ReplyStats | None = None
    last_save = time.monotonic()
    try:
        for event in events:
            if isinstance(event, TokenEvent):
                parts.append(event.text)
                if on_token is not None:
                    on_token(event.text)
                now = time.monotonic()
                if now - last_save >= SAVE_INTERVAL_S:
                    store.update_message(answer.id, content="".join(parts))
                    last_save = now
            else:
                stats = event.stats
    except (EngineError, KeyboardInterrupt) as error:
        store.update_message(answer.id, content="".join(parts), status="interrupted",
                             stats={"error": str(error)})
        raise
    interrupted = stats is None or stats.finish_reason == "cancelled"
    store.update_message(
        answer.id,
        content="".join(parts),
        status="interrupted" if interrupted else "complete",
        stats=asdict(stats) if stats is not None else None,
    )
    return _result(store, answer.id, stats, interrupted)


def _result(store: ChatStore, reply_id: str, stats: ReplyStats | None,
            interrupted: bool) -> TurnResult:
    reply = store.get_message(reply_id)
    question = store.get_message(reply.parent_id) if reply.parent_id is not None else None
    return TurnResult(
        reply=reply, stats=stats, interrupted=interrupted,
        conversation=store.get_conversation(reply.conversation_id),
        question=question,
        reply_siblings=tuple(m.id for m in store.siblings(reply.id)),
        question_siblings=(tuple(m.id for m in store.siblings(question.id))
                           if question is not None else ()))
