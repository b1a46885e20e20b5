"""Collect an engine reply's text and figures (tests of the engine, the cache and the shift)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    EngineHost,
    ReplyEvent,
    ReplyStats,
    SamplingOptions,
    TokenEvent,
)


def collect(events: Iterable[ReplyEvent]) -> tuple[str, ReplyStats]:
    """The text of a reply's token events and the stats of its done event."""
    text = []
    for event in events:
        if isinstance(event, TokenEvent):
            text.append(event.text)
        else:
            assert isinstance(event, DoneEvent)
            return "".join(text), event.stats
    raise AssertionError("the reply ended without a DoneEvent")


def chat_reply(host: EngineHost, messages: Sequence[ChatMessage],
               sampling: SamplingOptions) -> tuple[str, ReplyStats]:
    """A whole chat reply: its text and its stats."""
    return collect(host.chat(messages, sampling))
