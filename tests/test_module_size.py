"""Small modules: one over 500 lines says why in its docstring ("Why one module …")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 500


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("desktop/**/*.py")]):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "Why one module" not in docstring:
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, "split these, or say why in the docstring: " + ", ".join(unexplained)
