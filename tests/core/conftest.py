"""Fixtures for the core tests: ``store``, a conversation store in a fresh SQLite file (modules
that need another kind of store define their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "conversations.sqlite3") as opened:
        yield opened
