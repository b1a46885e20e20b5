"""Fit a conversation into the context window by leaving out its oldest turns (history fitting;
the automatic context *length* is :mod:`mixtral_desk.core.context_size`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from ..errors import ContextOverflowError
from ..i18n import N_
from .events import ChatMessage

MIN_REPLY_TOKENS = 256


def reply_reserve(max_tokens: int | None, n_ctx: int) -> int:
    """Tokens kept free for the reply.

    ``max_tokens`` when given, else ``max(256, n_ctx // 4)``; never more than half the context, so
    a large ``max_tokens`` does not push every turn out (the reply then ends with
    ``finish_reason="length"`` when the context is full).
    """
    wanted = max_tokens if max_tokens is not None else max(MIN_REPLY_TOKENS, n_ctx // 4)
    return max(1, min(wanted, n_ctx // 2))


def fit_messages(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    n_ctx: int,
    reserve: int,
) -> tuple[list[ChatMessage], int]:
    """Keep the system messages and the newest turns whose prompt plus ``reserve`` fits ``n_ctx``.

    Turns are dropped from the oldest, a user turn with the replies after it at a time, so the kept
    part still starts with a user turn (templates that insist on alternation stay happy).
    ``count_tokens`` measures a candidate conversation's formatted prompt.

    Returns:
        The kept messages and how many were dropped.

    Raises:
        ValueError: ``messages`` has no user or assistant turn.
        ContextOverflowError: even the system prompt and the last user turn (with what follows it)
            do not fit; the message gives the numbers.
    """
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    if not turns:
        raise ValueError("the conversation has no user or assistant message")
    budget = n_ctx - reserve

    def fits(start: int) -> tuple[bool, int]:
        size = count_tokens([*system, *turns[start:]])
        return size <= budget, size

    ok, size = fits(0)
    if ok:
        return [*system, *turns], 0
    starts = [i for i, m in enumerate(turns) if m.role == "user" and i > 0]
    last_start = starts[-1] if starts else 0
    ok, last_size = fits(last_start) if last_start else (False, size)
    if not ok:
        raise ContextOverflowError(
            N_("The message is too long for the context window: the prompt needs {prompt} "
               "tokens and {reserve} more are kept for the reply, but the context holds "
               "{context}. Shorten the message or load the model with a larger context."),
            prompt=last_size, reserve=reserve, context=n_ctx)
    # Binary search for the earliest start that fits (sizes shrink as the start moves later).
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(starts[mid])[0]:
            hi = mid
        else:
            lo = mid + 1
    start = starts[lo]
    return [*system, *turns[start:]], start


MAX_CHARS_PER_TOKEN: Final = 32
"""No token of a model this app loads spells more characters than this (llama.cpp vocabularies
top out around 16; byte-level ones have 1), so a text longer than ``n_ctx`` times this cannot
fit the context, and is refused before it is tokenized: tokenizing cannot be cancelled, and a
10 MB prompt kept a byte-vocabulary model's tokenizer busy for over 11 CPU-minutes."""


def must_fit_chars(messages: Sequence[ChatMessage]) -> int:
    """The characters of what must fit the context whatever is cut: the system messages and
    everything from the last user turn on (see :func:`fit_messages`)."""
    system = sum(len(m.content) for m in messages if m.role == "system")
    turns = [m for m in messages if m.role != "system"]
    starts = [i for i, m in enumerate(turns) if m.role == "user"]
    return system + sum(len(m.content) for m in turns[starts[-1] if starts else 0:])


def check_token_budget(chars: int, n_ctx: int) -> None:
    """Refuse, before tokenizing, a text of ``chars`` characters that cannot fit ``n_ctx``.

    Raises:
        ContextOverflowError: ``chars`` is over ``n_ctx`` × :data:`MAX_CHARS_PER_TOKEN`.
    """
    if chars > n_ctx * MAX_CHARS_PER_TOKEN:
        raise ContextOverflowError(
            N_("The message is too long for the context window: {chars} characters cannot fit "
               "in {context} tokens. Shorten the message or load the model with a larger "
               "context."), chars=f"{chars:,}", context=n_ctx)


def drop_unfittable(messages: Sequence[ChatMessage], n_ctx: int
                    ) -> tuple[list[ChatMessage], int]:
    """``messages`` without the oldest turns that cannot fit ``n_ctx`` whatever else is cut,
    judged by characters alone, before anything is tokenized; and how many turns that drops.

    The kept part starts at a user turn and is the longest such ending whose characters are at
    most ``n_ctx`` × :data:`MAX_CHARS_PER_TOKEN`; every turn left out would have been cut by
    :func:`fit_messages` too (a longer ending has more tokens than the context holds). So a
    request of many huge old messages costs no more to tokenize than one that fits. Raises
    nothing (an ending that is too long on its own is :func:`check_token_budget`'s refusal).
    """
    budget = n_ctx * MAX_CHARS_PER_TOKEN
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    size = sum(len(m.content) for m in system) + sum(len(m.content) for m in turns)
    start = 0
    for index, message in enumerate(turns):
        if size <= budget:
            break
        size -= len(message.content)
        if index + 1 < len(turns) and turns[index + 1].role == "user":
            start = index + 1
    if start == 0:
        return list(messages), 0
    return [*system, *turns[start:]], start
