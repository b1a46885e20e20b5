"""Markdown → the HTML subset Qt's rich text understands, with Pygments-highlighted code blocks.

markdown-it-py parses (CommonMark plus tables and strikethrough; raw HTML is escaped, never
rendered); Pygments colours fenced code with inline styles, since QTextDocument ignores CSS
classes. Each code block gets a "Copy" link ``copy:<n>``; :func:`render` returns the code blocks'
sources so the view can put the n-th on the clipboard.
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

CODE_BACKGROUND = "#f6f8fa"
CODE_BACKGROUND_DARK = "#1e1f22"


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


def _code_block(code: str, language: str, index: int, dark: bool) -> str:
    background = CODE_BACKGROUND_DARK if dark else CODE_BACKGROUND
    label = escape(language) if language else "code"
    body = _highlight(code.rstrip("\n"), language, dark)
    return (
        f'<table width="100%" cellspacing="0" cellpadding="6" '
        f'style="background-color:{background}; margin-top:6px; margin-bottom:6px;">'
        f'<tr><td><span style="color:#888888; font-size:small;">{label}</span>'
        f'&nbsp;&nbsp;<a href="copy:{index}" style="font-size:small;">Copy</a></td></tr>'
        f'<tr><td><pre style="margin:0; font-family:monospace;">{body}</pre></td></tr></table>'
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
        return _code_block(token.content, language, len(blocks) - 1, bool(env.get("dark")))

    def render(self, text: str, dark: bool) -> Rendered:
        env: dict[str, Any] = {"code_blocks": [], "dark": dark}
        html = self.md.render(text, env)
        # Qt's rich text has no stylesheet for these; give them what a reader expects.
        inline = CODE_BACKGROUND_DARK if dark else "#eff1f3"
        html = html.replace("<code>", f'<span style="font-family:monospace; '
                                      f'background-color:{inline};">')
        html = html.replace("</code>", "</span>")
        html = html.replace("<table>", '<table border="1" cellspacing="0" cellpadding="5" '
                                       'style="border-color:#c8ccd0; border-style:solid; '
                                       'margin-top:4px; margin-bottom:4px;">')
        return Rendered(html=html, code_blocks=tuple(env["code_blocks"]))


@lru_cache(maxsize=1)
def _renderer() -> _Renderer:
    return _Renderer()


def render(text: str, *, dark: bool = False) -> Rendered:
    """Render a message's Markdown (complete or still streaming) to Qt rich text."""
    return _renderer().render(text, dark)


def plain(text: str) -> Rendered:
    """A user's message: shown as typed (escaped, line breaks kept), not as Markdown."""
    return Rendered(html="<p>" + escape(text).replace("\n", "<br>") + "</p>", code_blocks=())
