"""Context shift: the rule on token lists, then the engine on real llama-cpp-python: once a chat
outgrows the context, later turns cut the oldest turns out of the KV cache instead of evaluating
the window again, from the live context and from a cached state, and a real model still answers
correctly after the cut."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest

from mixtral_desk.core.engine import (
    ChatMessage,
    EngineHost,
    LoadOptions,
    ReplyStats,
    SamplingOptions,
)
from mixtral_desk.core.engine.context_shift import (
    PLAIN,
    Layout,
    needed_layout,
    plan_reuse,
    removed_digest,
)
from tests.engine_replies import chat_reply

# --- the rule ----------------------------------------------------------------------------------

SYSTEM = [1, 2, 3]
T1, T2, T3, T4 = [10, 11, 12, 13], [20, 21, 22], [30, 31, 32, 33], [40, 41]


def test_the_needed_layout_cuts_right_after_the_shared_start() -> None:
    full = SYSTEM + T1 + T2 + T3
    layout = needed_layout(full, SYSTEM + T2 + T3)
    assert (layout.keep, layout.removed) == (3, 4)
    assert layout.digest == removed_digest(T1)
    assert layout.apply(full) == SYSTEM + T2 + T3
    assert needed_layout(full, full) == PLAIN


def test_a_template_that_merges_the_system_prompt_keeps_the_tail_of_the_full_prompt() -> None:
    # The fitted prompt starts its first turn with other tokens (8 instead of 20): the layout
    # keeps the full prompt's own tokens there, as long as the fitted prompt.
    full = SYSTEM + T1 + T2 + T3
    fitted = [*SYSTEM, 8, *T2[1:], *T3]
    layout = needed_layout(full, fitted)
    assert layout.apply(full) == SYSTEM + T2 + T3
    assert len(layout.apply(full)) == len(fitted)


def test_a_live_sequence_that_holds_the_whole_window_is_shifted_not_evaluated() -> None:
    held = SYSTEM + T1 + T2 + T3 + [7]  # what the previous reply left (prompt + reply)
    full = SYSTEM + T1 + T2 + T3 + T4
    needed = Layout.of(full, 3, 4)
    plan = plan_reuse(held, PLAIN, full, needed, can_shift=True)
    assert plan.shift == (3, 4)
    assert plan.prompt == SYSTEM + T2 + T3 + T4
    assert plan.prefix == len(SYSTEM + T2 + T3)
    # Without shifting, only the system prompt is kept.
    plain = plan_reuse(held, PLAIN, full, needed, can_shift=False)
    assert (plain.shift, plain.prefix, plain.prompt) == (None, 3, SYSTEM + T2 + T3 + T4)


def test_a_shifted_sequence_serves_the_next_turns_and_shifts_further() -> None:
    full = SYSTEM + T1 + T2 + T3 + T4
    layout = Layout.of(full, 3, 4)
    held = layout.apply(full)
    nxt = [*full, 50, 51]
    same = plan_reuse(held, layout, nxt, PLAIN, can_shift=True)  # still fits: no more cutting
    assert (same.shift, same.layout, same.prefix) == (None, layout, len(held))
    assert same.prompt == [*held, 50, 51]
    more = plan_reuse(held, layout, nxt, Layout.of(nxt, 3, 7), can_shift=True)
    assert more.shift == (3, 3)  # T2 goes too
    assert more.prompt == SYSTEM + T3 + T4 + [50, 51]
    assert more.prefix == len(SYSTEM + T3 + T4)


def test_a_shifted_state_of_other_removed_turns_is_used_only_up_to_its_kept_start() -> None:
    full = SYSTEM + T1 + T2 + T3
    layout = Layout.of(full, 3, 4)
    held = layout.apply(full)
    edited = [*SYSTEM, 10, 11, 99, 13, *T2, *T3]  # the cut-out turn was edited
    plan = plan_reuse(held, layout, edited, Layout.of(edited, 3, 4), can_shift=True)
    assert plan.shift is None and plan.prefix == 3


# --- the engine --------------------------------------------------------------------------------

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed")
REPLY = SamplingOptions(temperature=0.0, max_tokens=16, ignore_eos=True)


def reply(host: EngineHost, messages: Sequence[ChatMessage],
          sampling: SamplingOptions = REPLY) -> tuple[str, ReplyStats]:
    return chat_reply(host, messages, sampling)


def evaluated(stats: ReplyStats) -> int:
    return stats.prompt_tokens - stats.cached_tokens


def grow_until_full(host: EngineHost, messages: list[ChatMessage], turn: str,
                    extra_turns: int) -> tuple[ReplyStats, list[ReplyStats]]:
    """Add turns until older ones are left out, then ``extra_turns`` more; the stats of the last
    turn before that, and of the turns after."""
    before: ReplyStats | None = None
    after: list[ReplyStats] = []
    for n in range(200):
        messages.append(ChatMessage("user", turn.format(n=n)))
        text, stats = reply(host, messages)
        messages.append(ChatMessage("assistant", text or "ok"))
        if not stats.dropped_messages:
            before = stats
        else:
            after.append(stats)
            if len(after) > extra_turns:
                assert before is not None
                return before, after
    raise AssertionError("the conversation never outgrew the context")


@needs_llama
@pytest.mark.parametrize("cache", [True, False], ids=["with-cache", "live-only"])
def test_turns_after_the_context_is_full_do_not_evaluate_the_window(
        tiny_model: Path, tmp_path: Path, cache: bool) -> None:
    options = LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=512,
                          prompt_cache_dir=tmp_path / "pc" if cache else None)
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options)
        messages = [ChatMessage("system", "You are a patient assistant.")]
        before, after = grow_until_full(host, messages, "Turn {n}: more about the harbour.", 5)
        assert before.cached_tokens > 300
        for later in after[1:]:
            # About as before the context was full (the new user turn and the previous reply;
            # their lengths vary), far from the whole window.
            assert evaluated(later) <= 2 * evaluated(before), (before, later)
            assert later.prompt_tokens + REPLY.max_tokens <= 512  # type: ignore[operator]
            assert later.dropped_messages >= after[0].dropped_messages
    log = (tmp_path / "engine.log").read_text()
    assert "context shift: removed" in log


@needs_llama
def test_a_shifted_conversation_comes_back_from_the_cache_after_a_restart(
        tiny_model: Path, tmp_path: Path) -> None:
    options = LoadOptions(model_path=tiny_model, n_threads=2, n_ctx=512,
                          prompt_cache_dir=tmp_path / "pc", prompt_cache_disk_bytes=1 << 30)
    messages = [ChatMessage("system", "You are a patient assistant.")]
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options)
        before, _ = grow_until_full(host, messages, "Turn {n}: and the lighthouse?", 2)
    messages.append(ChatMessage("user", "One more question about the boats."))
    with EngineHost(tmp_path / "engine.log") as fresh:
        fresh.load(options)
        _, stats = reply(fresh, messages)
    assert stats.dropped_messages > 0
    assert evaluated(stats) <= 2 * evaluated(before), (before, stats)


@needs_llama
@pytest.mark.slow
def test_gemma_still_answers_correctly_after_a_shift(gemma_model: Path, tmp_path: Path) -> None:
    options = LoadOptions(model_path=gemma_model, n_threads=2, n_ctx=512,
                          prompt_cache_dir=tmp_path / "pc")
    short = SamplingOptions(temperature=0.0, max_tokens=12)
    colours = ["Red.", "Orange.", "Yellow.", "Green.", "Blue.", "Indigo.", "Violet."]
    messages = [ChatMessage("system", "Answer each question in a few words.")]
    turns: list[ReplyStats] = []
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options)
        while len([s for s in turns if s.dropped_messages]) < 3:
            n = len(turns)
            messages.append(ChatMessage("user", f"Question {n}: name colour {n % 7 + 1} of the "
                                                "rainbow."))
            turns.append(reply(host, messages, short)[1])
            messages.append(ChatMessage("assistant", colours[n % 7]))
            assert n < 100, "the conversation never outgrew the context"
        messages.append(ChatMessage("user", "What is the capital of France?"))
        text, after = reply(host, messages, short)
    before = [s for s in turns if not s.dropped_messages][-1]
    assert after.dropped_messages > 0
    assert evaluated(after) <= 2 * evaluated(before) + 8, (before, after)
    assert "Paris" in text
    assert "context shift: removed" in (tmp_path / "engine.log").read_text()
