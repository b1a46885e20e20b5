"""Helpers shared by the desktop tests (import them as tests.desktop.desktop_helpers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from mixtral_desk.core import i18n
from mixtral_desk.core.settings import ServerSettings
from mixtral_desk.desktop.main_window import MainWindow

LOAD_TIMEOUT_MS = 60_000
REPLY_TIMEOUT_MS = 30_000
START_TIMEOUT_MS = 15_000


def use_sampling(window: MainWindow, **values: object) -> None:
    """Set the window's default sampling for this session (not saved)."""
    settings = window.settings
    sampling = settings.sampling.model_copy(update=values)
    window.settings = settings.model_copy(update={"sampling": sampling})


def load_model(qtbot: QtBot, window: MainWindow, path: Path) -> None:
    """Load ``path`` in the window and wait until it is loaded."""
    with qtbot.waitSignal(window.session.model_loaded, timeout=LOAD_TIMEOUT_MS):
        window.load_model(path)


def use_port(window: MainWindow, port: int) -> None:
    """Serve on ``port`` in this session (not saved)."""
    window.settings = window.settings.model_copy(
        update={"server": ServerSettings(api_port=port)})


def serve(qtbot: QtBot, window: MainWindow) -> str:
    """Check the Serve API toggle (on a free port); wait for the server; return its base URL."""
    use_port(window, 0)
    with qtbot.waitSignal(window.server.started, timeout=START_TIMEOUT_MS) as blocker:
        window.serve_button.click()
    url = str(blocker.args[0])
    assert window.serve_button.isChecked() and window.serve_button.isEnabled()
    return url


def send(qtbot: QtBot, window: MainWindow, text: str) -> None:
    """Type ``text`` and press Enter in the composer; wait for the reply to end and be shown."""
    page = window.chat_page
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS), \
            qtbot.waitSignal(page.turn_finished, timeout=REPLY_TIMEOUT_MS):
        page.view.composer.setPlainText(text)
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)


def shoot(widget: QWidget, name: str) -> Path | None:
    """Save a PNG of ``widget`` into ``$MIXTRAL_DESK_SCREENSHOTS`` when that is set."""
    folder = os.environ.get("MIXTRAL_DESK_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    QApplication.processEvents()  # pending layout and show events, so the picture is current
    path.parent.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path


def use_mini_catalog(folder: Path, monkeypatch: pytest.MonkeyPatch,
                     messages: dict[str | tuple[str, str], str]) -> None:
    """Compile ``messages`` as the zh_CN catalog under ``folder`` and use that folder as the
    catalogs' home for this test (switch with ``apply_language("zh_CN")``); a plural's source is
    a (singular, plural) pair."""
    catalog = Catalog(locale="zh_CN")
    for source, translation in messages.items():
        catalog.add(source, translation if isinstance(source, str) else (translation,))
    target = folder / "zh_CN" / "LC_MESSAGES" / f"{i18n.DOMAIN}.mo"
    target.parent.mkdir(parents=True)
    with target.open("wb") as handle:
        write_mo(handle, catalog)
    monkeypatch.setattr(i18n, "LOCALE_DIR", folder)


_FILL_CACHE = """
import json, sys
from mixtral_desk.core.engine.prompt_cache import PromptCache, cache_key, conversation_tag
from mixtral_desk.core.session.loading import prompt_cache_dir
cache = PromptCache(cache_key("model", {"kv_type": "f16"}, "test"), prompt_cache_dir(),
                    disk_bytes=1 << 30)
for n, conversation_id in enumerate(json.loads(sys.argv[1])):
    cache.put([n + 1, n + 2, n + 3], bytes([n + 1]) * 1000, tag=conversation_tag(conversation_id))
assert cache.flush(timeout=10)
"""


def fill_prompt_cache(conversation_ids: list[str]) -> None:
    """One real prompt cache entry (3 tokens, 1000 bytes of state) per conversation id in the
    test's data home, written by ``PromptCache.put`` in a process of its own (its writer thread
    lives as long as its process)."""
    subprocess.run([sys.executable, "-c", _FILL_CACHE, json.dumps(conversation_ids)],
                   check=True, timeout=60)
