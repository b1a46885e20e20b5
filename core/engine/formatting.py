"""Turn a conversation into prompt text: the model's own Jinja chat template, or a plain fallback.

Chat templates are Jinja programs shipped inside GGUF files (``tokenizer.chat_template``); they
are rendered in jinja2's immutable sandbox with the helpers Hugging Face templates expect
(``raise_exception``, ``strftime_now``, ``tojson``, ``bos_token``/``eos_token``,
``add_generation_prompt``).

Some templates have no system role (Mixtral's raises "Only user and assistant roles are
supported!", others silently drop it). :class:`ChatFormatter` finds out once, by rendering a probe
conversation with a system message: when that raises or the system text does not appear, the
system prompt is merged into the first user turn as ``"{system}\\n\\n{user}"``.

A model without a template gets :data:`FALLBACK_FORMAT`::

    ### System:
    {system}

    ### User:
    {user}

    ### Assistant:
    {assistant}

ending with ``### Assistant:\\n`` for the reply, and :attr:`ChatFormatter.stop` holds
``"### User:"`` so the model does not write the user's next turn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .events import ChatMessage, TemplateSource

FALLBACK_FORMAT = "### System:\n{system}\n\n### User:\n{user}\n\n### Assistant:\n{assistant}\n\n"
_FALLBACK_HEADERS = {"system": "### System:\n", "user": "### User:\n",
                     "assistant": "### Assistant:\n"}
_PROBE_SYSTEM = "\u2063system-probe\u2063"


class TemplateError(ValueError):
    """Raised when a chat template cannot render a conversation (its own ``raise_exception`` or
    a Jinja error); the message is the template's."""


class _TemplateRaisedError(Exception):
    """Raised by a template's ``raise_exception()`` call."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaisedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def merge_system_prompt(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Fold every system message into the first user turn (``"{system}\\n\\n{user}"``).

    Several system messages are joined with blank lines; with no user turn the system text becomes
    a user turn of its own.
    """
    systems = [m.content for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    if not systems:
        return rest
    system = "\n\n".join(systems)
    for i, message in enumerate(rest):
        if message.role == "user":
            rest[i] = ChatMessage("user", f"{system}\n\n{message.content}")
            return rest
    return [ChatMessage("user", system), *rest]


class ChatFormatter:
    """Formats conversations for one model.

    ``template`` ``None`` selects the fallback format. ``bos_token``/``eos_token`` are the texts
    the template may insert. Raises :class:`TemplateError` at construction when the template does
    not compile or cannot render even a single user message.
    """

    def __init__(self, template: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.template = template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled: jinja2.Template | None = None
        #: Why the model's own template was set aside for this fallback (see :attr:`source`).
        self.broken: str | None = None
        self.supports_system = True
        if template is None:
            return
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        try:
            self._compiled = env.from_string(template)
        except jinja2.TemplateError as error:
            raise TemplateError(f"the chat template does not compile: {error}") from error
        self._render([ChatMessage("user", "hi")])  # raises TemplateError when unusable
        try:
            probe = self._render([ChatMessage("system", _PROBE_SYSTEM), ChatMessage("user", "hi")])
        except TemplateError:
            self.supports_system = False
        else:
            self.supports_system = _PROBE_SYSTEM in probe

    @property
    def source(self) -> TemplateSource:
        """``"model"`` for the GGUF's template, ``"fallback"`` for the plain format, ``"broken"``
        for the plain format used because the GGUF's template failed (:attr:`broken` says how)."""
        if self._compiled is not None:
            return "model"
        return "broken" if self.broken is not None else "fallback"

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings the format needs besides the model's end token."""
        return () if self._compiled is not None else ("### User:",)

    @property
    def starts_with_bos(self) -> bool:
        """Whether formatted prompts begin with the BOS text (then do not add another BOS)."""
        return bool(self.bos_token) and self.format([ChatMessage("user", "x")]).startswith(
            self.bos_token)

    def format(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt for ``messages``, ending where the assistant's reply begins.

        When the last message is the assistant's (an interrupted reply to continue), the prompt
        ends with that reply's text, so the model carries on from it instead of starting anew.

        Raises:
            TemplateError: the template rejects the conversation (e.g. roles out of order).
        """
        if len(messages) > 1 and messages[-1].role == "assistant":
            return self.format(messages[:-1]) + messages[-1].content
        if self._compiled is None:
            return _format_fallback(messages)
        if not self.supports_system:
            messages = merge_system_prompt(messages)
        return self._render(messages)

    def _render(self, messages: Sequence[ChatMessage]) -> str:
        assert self._compiled is not None
        try:
            return self._compiled.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                bos_token=self.bos_token, eos_token=self.eos_token,
                add_generation_prompt=True, raise_exception=_raise_exception,
                strftime_now=_strftime_now,
            )
        except _TemplateRaisedError as error:
            raise TemplateError(str(error)) from error
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as error:
            raise TemplateError(f"the chat template failed: {error}") from error


def _format_fallback(messages: Sequence[ChatMessage]) -> str:
    parts = [f"{_FALLBACK_HEADERS[m.role]}{m.content}\n\n" for m in messages]
    return "".join(parts) + _FALLBACK_HEADERS["assistant"]


def split_at_stop(pending: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """Split streamed text into what can be shown now and what must wait.

    Returns ``(emit, keep, hit)``: with a stop string inside ``pending``, ``emit`` is the text
    before the earliest one and ``hit`` is true (the rest is discarded); otherwise ``keep`` is the
    longest tail of ``pending`` that could still grow into a stop string, and ``emit`` the rest.
    """
    if not stops:
        return pending, "", False
    found = [i for i in (pending.find(s) for s in stops) if i >= 0]
    if found:
        return pending[:min(found)], "", True
    keep = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(pending)), keep, -1):
            if pending.endswith(stop[:k]):
                keep = k
                break
    return pending[:len(pending) - keep], pending[len(pending) - keep:], False
