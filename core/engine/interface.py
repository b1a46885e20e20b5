"""What every engine offers: the interface a chat turn and the API server drive.

:class:`~mixtral_desk.core.engine.EngineHost` (llama.cpp in the engine process) satisfies
:class:`ChatEngine` as it is, and so does :class:`~mixtral_desk.core.remote.RemoteEngine` (an
OpenAI-compatible server elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from .events import ChatMessage, DoneEvent, TokenEvent
from .options import SamplingOptions

ReplyEvent = TokenEvent | DoneEvent


class ReplyEvents(Protocol):
    """The events of one reply: :class:`TokenEvent`\\ s, then one :class:`DoneEvent`."""

    def __iter__(self) -> Iterator[ReplyEvent]: ...

    def __next__(self) -> ReplyEvent: ...

    def close(self) -> None:
        """Abandon the reply; the engine is free for the next request at once."""


class ChatEngine(Protocol):
    """What a chat turn and the API server need of an engine (local or remote).

    One reply at a time; :meth:`stop` may be called from any thread and ends the running reply
    with ``finish_reason="cancelled"``.
    """

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> ReplyEvents:
        """Start a reply to ``messages``; errors are raised while iterating. ``cache_tag``: the
        conversation the engine's prompt cache files its state under (engines without one ignore
        it)."""
        ...

    def complete(self, prompt: str, sampling: SamplingOptions) -> ReplyEvents:
        """Start a raw continuation of ``prompt``."""
        ...

    def stop(self) -> None:
        """Stop the running reply; a no-op when idle."""

    def close(self) -> None:
        """Release the engine's resources; idempotent."""
