"""How a reply's figures are worded where the CLI and the window show them alike.

One rule, one place: the prompt's size and the part of it that came from the prompt cache (the
live KV state or a restored one, ``ReplyStats.cached_tokens``) read the same after ``chat`` as
under a reply in the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .i18n import ntr


def prompt_figure(prompt_tokens: int, cached_tokens: int) -> str:
    """"prompt 2,431 tokens, 2,400 from cache" in the current language when some of the prompt
    was not evaluated again; "" when none was (nothing worth saying)."""
    if cached_tokens <= 0 or prompt_tokens <= 0:
        return ""
    tokens, cached = f"{prompt_tokens:,}", f"{min(cached_tokens, prompt_tokens):,}"
    return ntr("prompt {tokens} token, {cached} from cache",
               "prompt {tokens} tokens, {cached} from cache", prompt_tokens, tokens=tokens,
               cached=cached)


def stored_prompt_figure(stats: Mapping[str, Any] | None) -> str:
    """:func:`prompt_figure` of a reply's stored statistics (a message's ``stats``); "" when
    they lack the figures (an older reply, a failed one)."""
    if not stats:
        return ""
    prompt, cached = stats.get("prompt_tokens"), stats.get("cached_tokens")
    if not isinstance(prompt, int) or not isinstance(cached, int):
        return ""
    return prompt_figure(prompt, cached)
