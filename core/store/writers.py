"""Which process writes a streaming reply, and whether it still runs.

A token is ``"<pid>:<process start time>"``: the start time tells a live writer from a new
process that got the same pid after the writer died.
"""

from __future__ import annotations

import os
from functools import cache

import psutil


def writer_token() -> str:
    """This process's token (a forked child gets its own: the cache is keyed by pid)."""
    return _token_for(os.getpid())


@cache
def _started(pid: int) -> float:
    return psutil.Process(pid).create_time()


def _token_for(pid: int) -> str:
    return f"{pid}:{psutil.Process(pid).create_time():.3f}" if pid != os.getpid() \
        else f"{pid}:{_started(pid):.3f}"


def writer_is_alive(token: str | None) -> bool:
    """True while the process that wrote ``token`` still runs; False for None or garbage."""
    if not token:
        return False
    pid_text, _, _ = token.partition(":")
    try:
        return _token_for(int(pid_text)) == token
    except (ValueError, psutil.Error):
        return False
