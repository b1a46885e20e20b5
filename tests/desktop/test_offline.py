"""The desktop app with every outbound connection blocked and ``HF_ENDPOINT`` at a loopback
tripwire that counts connections:
starting, loading a model, chatting, searching, exporting and opening the Models page open no
connection, in this process (the socket guard) or in the engine process (the guard through
``sitecustomize``, logging to a file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from pytestqt.qtbot import QtBot

from mixtral_desk.core import network
from tests.desktop.conftest import WindowFactory
from tests.desktop.desktop_helpers import load_model, send, use_sampling
from tests.net_guard import (
    GUARD_PATH,
    LOG_ENV,
    NetGuard,
    Tripwire,
    format_attempts,
    guarded_pids,
    read_log,
)


def test_app_works_with_the_network_blocked(make_window: WindowFactory, qtbot: QtBot,
                                            tiny_model: Path, tmp_path: Path, hub_site: Tripwire,
                                            online: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "engine-attempts.jsonl"
    # Offline mode off (the point is that nothing *tries*), the Hub at a tripwire, and the engine
    # process (multiprocessing "spawn" inherits the environment) guarded too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", hub_site.url)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(GUARD_PATH), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    monkeypatch.setenv(LOG_ENV, str(log))

    with NetGuard() as guard:
        window = make_window()
        use_sampling(window, temperature=0.0, max_tokens=8, ignore_eos=True, seed=1)
        load_model(qtbot, window, tiny_model)
        send(qtbot, window, "Tell me about zeppelins")

        sidebar = window.chat_page.sidebar
        with qtbot.waitSignal(sidebar.search_results, timeout=10_000) as found:
            sidebar.search_box.setText("zeppelins")
        assert found.args[0] >= 1

        exported: dict[str, Any] = {}
        conversation_id = window.chat_page.current
        assert conversation_id is not None
        window.store.call(lambda s: s.export_conversations(), lambda r: exported.update(all=r))
        window.store.call(lambda s: s.export_markdown(conversation_id),
                          lambda r: exported.update(md=r))
        qtbot.waitUntil(lambda: len(exported) == 2, timeout=10_000)
        assert "zeppelins" in exported["md"]

        page = window.models_page
        with qtbot.waitSignal(page.catalog.catalog_shown, timeout=15_000), \
                qtbot.waitSignal(page.local.local_shown, timeout=15_000):
            window.show_models()
        qtbot.wait(500)  # the download manager starts and lists its (no) jobs

        window.models.unload()
        qtbot.waitUntil(lambda: window.session.model_info is None, timeout=15_000)
        assert not network.is_offline()  # the point is that nothing *tries*
        attempts = list(guard.attempts)

    assert attempts == [], format_attempts(attempts)
    assert hub_site.connections == 0, "something tried the Hub"
    assert read_log(log) == [], format_attempts(read_log(log))
    assert guarded_pids(log), "the engine process did not run guarded"
