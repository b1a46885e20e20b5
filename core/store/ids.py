"""Time-sortable ids for conversations and messages.

An id is a ULID: 26 characters of Crockford base32 that encode a 48-bit Unix time in milliseconds
followed by 80 random bits. Ids sort (as plain strings) in creation order, so ``ORDER BY id`` is
creation order. Within one process they are strictly monotonic: two ids made in the same
millisecond differ by one in their random part, and a clock that steps back does not make an id
smaller than the previous one. A forked child starts a fresh sequence, so parent and child never
hand out the same id.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import datetime, timezone

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_LENGTH = 26
_RANDOM_BITS = 80
_RANDOM_LIMIT = 1 << _RANDOM_BITS
_DECODE = {char: value for value, char in enumerate(ALPHABET)}


class _Generator:
    """Holds the last id's parts so that the next one is larger."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = -1
        self.last_random = 0

    def reset(self) -> None:
        self.last_ms = -1
        self.last_random = 0

    def next(self) -> int:
        with self.lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self.last_ms:
                self.last_ms = now_ms
                self.last_random = secrets.randbits(_RANDOM_BITS)
            else:
                self.last_random += 1
                if self.last_random >= _RANDOM_LIMIT:  # 2**80 ids in one ms: borrow the next ms
                    self.last_ms += 1
                    self.last_random = secrets.randbits(_RANDOM_BITS - 1)
            return (self.last_ms << _RANDOM_BITS) | self.last_random


_generator = _Generator()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_generator.reset)


def _encode(value: int) -> str:
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """A new id, larger than every id this process made before."""
    return _encode(_generator.next())


def is_valid_id(value: object) -> bool:
    """Whether ``value`` looks like an id made by :func:`new_id` (26 Crockford characters)."""
    return (
        isinstance(value, str)
        and len(value) == ID_LENGTH
        and value[0] in "01234567"
        and all(char in _DECODE for char in value)
    )


def id_time(value: str) -> datetime:
    """The creation time encoded in an id, as an aware UTC datetime.

    Raises:
        ValueError: ``value`` is not an id made by :func:`new_id`.
    """
    if not is_valid_id(value):
        raise ValueError(f"Not a valid id: {value!r}")
    number = 0
    for char in value[:10]:
        number = (number << 5) | _DECODE[char]
    return datetime.fromtimestamp(number / 1000, tz=timezone.utc)
