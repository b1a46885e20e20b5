"""Markdown → the HTML subset Qt's rich text understands, with Pygments-highlighted code blocks.

markdown-it-py parses (CommonMark plus tables and strikethrough; raw HTML is escaped, never
rendered); Pygments colours fenced code with inline styles, since QTextDocument ignores CSS
classes. Each code block gets a "Copy" link ``copy:<n>``; :func:`render` returns the code blocks'
sources so the view can put the n-th on the clipboard.

Colours and the fixed-pitch font come in a :class:`Style` that the view derives from its palette
(light or dark); a named font family is always followed by the generic ``monospace``, so that
characters the named font lacks (Chinese, …) still render. The words in the HTML ("Copy") are in
the current language: render again after a language switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from mixtral_desk.core.i18n import tr

CODE_BACKGROUND = "#f6f8fa"
CODE_BACKGROUND_DARK = "#1e1f22"


@dataclass(frozen=True)
class Style:
    """How rendered messages look: colours (``#rrggbb``) and the fixed-pitch font family.

    ``dark`` picks the Pygments colour scheme of highlighted code.
    """

    code_background: str = CODE_BACKGROUND
    inline_background: str = "#eff1f3"
    muted: str = "#888888"  # a code block's language
    border: str = "#c8ccd0"  # table cells
    mono_family: str = "monospace"
    dark: bool = False

    def mono_css(self) -> str:
        """The CSS font-family of code: the named family, then the generic one."""
        family = self.mono_family.replace("'", "").replace(";", "").strip()
        if not family or family.lower() == "monospace":
            return "monospace"
        return f"'{family}', monospace"


LIGHT = Style()
DARK = Style(code_background=CODE_BACKGROUND_DARK, inline_background=CODE_BACKGROUND_DARK,
             muted="#9aa0a6", border="#4a4d52", dark=True)


@dataclass(frozen=True)
class Rendered:
    """One message rendered: the HTML body and the source text of each code block, in order."""

    html: str
    code_blocks: tuple[str, ...]


@lru_cache(maxsize=2)
def _formatter(dark: bool) -> HtmlFormatter[str]:
    return HtmlFormatter(noclasses=True, nowrap=True, style="monokai" if dark else "default")


def _highlight(code: str, language: str, dark: bool) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return escape(code)
    return str(highlight(code, lexer, _formatter(dark)))


def _code_block(code: str, language: str, index: int, style: Style) -> str:
    label = escape(language) if language else escape(tr("code"))
    body = _highlight(code.rstrip("\n"), language, style.dark)
    copy = escape(tr("Copy"))
    return (
        f'<table width="100%" cellspacing="0" cellpadding="6" '
        f'style="background-color:{style.code_background}; margin-top:6px; margin-bottom:6px;">'
        f'<tr><td><span style="color:{style.muted}; font-size:small;">{label}</span>'
        f'&nbsp;&nbsp;<a href="copy:{index}" style="font-size:small;">{copy}</a></td></tr>'
        f'<tr><td><pre style="margin:0; font-family:{style.mono_css()};">{body}</pre></td></tr>'
        '</table>'
    )


class _Renderer:
    def __init__(self) -> None:
        self.md = MarkdownIt("commonmark", {"html": False, "breaks": True})
        self.md.enable(["table", "strikethrough"])
        self.md.add_render_rule("fence", self._fence)
        self.md.add_render_rule("code_block", self._fence)

    def _fence(self, tokens: Sequence[Token], idx: int, options: Any,
               env: dict[str, Any]) -> str:
        token = tokens[idx]
        language = token.info.strip().split(" ")[0] if token.info else ""
        blocks: list[str] = env.setdefault("code_blocks", [])
        blocks.append(token.content)
        return _code_block(token.content, language, len(blocks) - 1, env.get("style", LIGHT))

    def render(self, text: str, style: Style) -> Rendered:
        env: dict[str, Any] = {"code_blocks": [], "style": style}
        html = self.md.render(text, env)
        # Qt's rich text has no stylesheet for these; give them what a reader expects.
        html = html.replace("<code>", f'<span style="font-family:{style.mono_css()}; '
                                      f'background-color:{style.inline_background};">')
        html = html.replace("</code>", "</span>")
        html = html.replace("<table>", '<table border="1" cellspacing="0" cellpadding="5" '
                                       f'style="border-color:{style.border}; border-style:solid; '
                                       'margin-top:4px; margin-bottom:4px;">')
        return Rendered(html=html, code_blocks=tuple(env["code_blocks"]))


@lru_cache(maxsize=1)
def _renderer() -> _Renderer:
    return _Renderer()


def render(text: str, *, dark: bool = False, style: Style | None = None) -> Rendered:
    """Render a message's Markdown (complete or still streaming) to Qt rich text.

    ``style``: colours and fonts (the view derives them from its palette); without one, the
    built-in light style, or the dark one when ``dark``.
    """
    return _renderer().render(text, style if style is not None else DARK if dark else LIGHT)


def plain(text: str) -> Rendered:
    """A user's message: shown as typed (escaped, line breaks kept), not as Markdown."""
    return Rendered(html="<p>" + escape(text).replace("\n", "<br>") + "</p>", code_blocks=())
