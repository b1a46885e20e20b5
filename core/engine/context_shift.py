"""Context shift: keep a full chat's KV cache by cutting its oldest turns out of it, not by
evaluating the window again.

When a conversation outgrows the context, :func:`~.history_fit.fit_messages` leaves out its oldest
turns. Formatting what is left gives a new prompt whose tokens differ from the evaluated ones right
after the system prompt, so a plain prefix match would evaluate the whole window again, every turn
from then on. Instead, the engine works on the **full** conversation's tokens ``F`` (every turn
formatted) and describes what the KV cache holds with a :class:`Layout`: the first ``keep`` tokens
of ``F`` (the system prompt and the template's preamble), then ``F`` from ``keep + removed`` on. A
turn that needs more room removes more tokens after ``keep`` from the KV cache and shifts the rest
down (llama.cpp's ``llama_memory_seq_rm`` and ``llama_memory_seq_add``, where
``llama_memory_can_shift`` allows it); nothing is evaluated again.

``removed`` is chosen so that the KV cache is as long as the prompt of the fitted turns (``len(F)``
minus the fitted prompt's length), and ``keep`` is where the two prompts' tokens part. With a
template that repeats the same header before every turn (ChatML, Llama 3, Gemma) the result is
exactly the fitted prompt; with one that merges the system prompt into the first user turn
(Mistral, Mixtral) it differs from it by the few tokens where that turn starts.

A layout also names the removed tokens by a digest, so that a cached state is reused for a
conversation only if the turns cut out of it were the same. Everything here is pure Python on
token lists; :mod:`.worker` does the KV operations.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def removed_digest(tokens: Sequence[int]) -> str:
    """The digest that names a run of removed tokens ("" for none)."""
    if not tokens:
        return ""
    return hashlib.sha256(array("i", tokens).tobytes()).hexdigest()[:32]


@dataclass(frozen=True)
class Layout:
    """What a sequence holds of the full prompt ``F``: ``F[:keep] + F[keep + removed:]``.

    ``removed`` 0 means all of ``F`` (``keep`` is then meaningless and 0). ``digest`` names
    ``F[keep:keep + removed]`` (:func:`removed_digest`).
    """

    keep: int = 0
    removed: int = 0
    digest: str = ""

    @classmethod
    def of(cls, full: Sequence[int], keep: int, removed: int) -> Layout:
        """The layout that removes ``removed`` tokens of ``full`` after its first ``keep``."""
        if removed <= 0:
            return cls()
        return cls(keep, removed, removed_digest(full[keep:keep + removed]))

    def apply(self, full: Sequence[int]) -> list[int]:
        """The tokens this layout makes of ``full``."""
        if self.removed <= 0:
            return list(full)
        return [*full[:self.keep], *full[self.keep + self.removed:]]

    def matches(self, full: Sequence[int], held: Sequence[int]) -> bool:
        """Whether a sequence holding ``held`` in this layout came from a prompt that agrees with
        ``full`` on the kept start and the removed tokens."""
        if self.removed <= 0:
            return True
        end = self.keep + self.removed
        return (len(full) >= end and list(held[:self.keep]) == list(full[:self.keep])
                and removed_digest(full[self.keep:end]) == self.digest)


def needed_layout(full: Sequence[int], fitted: Sequence[int]) -> Layout:
    """The layout that makes ``full`` (every turn) as long as ``fitted`` (the prompt of the turns
    that fit), removing tokens right after the point where the two part."""
    removed = len(full) - len(fitted)
    if removed <= 0:
        return Layout()
    keep = common_prefix(full, fitted)
    return Layout.of(full, min(keep, len(full) - removed), removed)


PLAIN = Layout()  #: a sequence holding all of its prompt


@dataclass(frozen=True)
class Reuse:
    """How to turn a sequence that holds some tokens into one holding ``prompt``.

    First, when ``shift`` is set, remove ``shift[1]`` tokens at position ``shift[0]`` and move the
    rest down; then keep the first ``prefix`` tokens and evaluate ``prompt[prefix:]``.
    ``layout`` is the result's layout.
    """

    prompt: list[int]
    layout: Layout
    prefix: int
    shift: tuple[int, int] | None = None


def plan_reuse(held: Sequence[int] | None, held_layout: Layout, full: Sequence[int],
               needed: Layout, can_shift: bool) -> Reuse:
    """How much of a sequence holding ``held`` (in ``held_layout``) serves the full prompt
    ``full``, which needs at least ``needed`` removed to fit.

    A shifted sequence keeps its ``keep`` (so that later turns shift it further); it is used past
    ``keep`` only when it came from the same removed turns. ``can_shift`` ``False``: nothing is
    shifted, only a plain prefix is reused.
    """
    if not held:
        return Reuse(needed.apply(full), needed, 0)
    if held_layout.removed <= 0:
        shared = common_prefix(held, full)
        if needed.removed <= 0:
            return Reuse(list(full), needed, shared)
        prompt = needed.apply(full)
        if can_shift and shared >= needed.keep + needed.removed:
            return Reuse(prompt, needed, shared - needed.removed, (needed.keep, needed.removed))
        return Reuse(prompt, needed, min(shared, needed.keep))
    keep = held_layout.keep
    if not held_layout.matches(full, held):
        prompt = needed.apply(full)
        return Reuse(prompt, needed, min(common_prefix(held, prompt), keep))
    if needed.removed <= held_layout.removed:
        prompt = held_layout.apply(full)
        return Reuse(prompt, held_layout, common_prefix(held, prompt))
    extra = needed.removed - held_layout.removed
    shared = common_prefix(held, held_layout.apply(full))
    layout = Layout.of(full, keep, needed.removed)
    prompt = layout.apply(full)
    if can_shift and shared >= keep + extra:
        return Reuse(prompt, layout, shared - extra, (keep, extra))
    return Reuse(prompt, layout, min(shared, keep))
