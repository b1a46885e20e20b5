"""Numeric command-line arguments with limits: ``type=whole_number(1, 1_000_000)``.

argparse's plain ``type=int`` accepts ``100000000000000000000000`` (which then overflows SQLite
with a traceback) and ``type=float`` accepts ``nan`` and ``inf``. These types refuse anything
outside the range, with argparse's usual one-line usage error naming the option.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.untrusted_json import MAX_INT_DIGITS


def whole_number(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``minimum`` to ``maximum``.

    The returned function raises ``argparse.ArgumentTypeError`` for anything else.
    """
    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-")
        value: int | None = None
        if digits.isdigit() and digits.isascii() and len(digits) <= MAX_INT_DIGITS:
            value = int(text)
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(tr(
                "{text} is not a whole number from {minimum} to {maximum}",
                text=repr(text[:40]), minimum=minimum, maximum=maximum))
        return value
    parse.__name__ = "whole number"  # what argparse names the type in its own messages
    return parse


def finite_number(minimum: float, maximum: float) -> Callable[[str], float]:
    """An argparse ``type`` for a number (decimals allowed) from ``minimum`` to ``maximum``.

    The returned function raises ``argparse.ArgumentTypeError`` for anything else (``nan``,
    ``inf``, text).
    """
    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 64 else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(tr(
                "{text} is not a number from {minimum} to {maximum}",
                text=repr(text[:40]), minimum=minimum, maximum=maximum))
        return value
    parse.__name__ = "number"
    return parse
