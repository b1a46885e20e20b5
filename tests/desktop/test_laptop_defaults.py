"""The window's laptop defaults: idle unload, the automatic context, the first-run
recommendation and the mirror offered to Chinese-speaking systems."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.context_size import ContextReason
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.session.hub_settings import HUB_MIRROR
from mixtral_desk.desktop import i18n as desktop_i18n
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.desktop_helpers import load_model, send, serve, use_sampling


def shown(window: MainWindow) -> str:
    """The text of the notice on screen ("" when none)."""
    notice = window.notifications.current
    return notice.text if notice is not None else ""


def test_an_idle_model_is_unloaded_and_says_so(window: MainWindow, qtbot: QtBot,
                                               tiny_model: Path) -> None:
    load_model(qtbot, window, tiny_model)
    assert window.idle.active  # counting from the load (30 minutes by default)
    window.idle.set_interval_ms(300)
    with qtbot.waitSignal(window.session.model_unloaded, timeout=10_000), \
            qtbot.waitSignal(window.idle.unloaded, timeout=10_000) as unloaded:
        pass
    assert unloaded.args == [tiny_model.stem]
    assert window.session.model_info is None
    assert window.picker.state == "empty"
    assert "to give its memory back" in shown(window)


def test_sending_after_an_idle_unload_loads_the_model_again(window: MainWindow, qtbot: QtBot,
                                                             tiny_model: Path) -> None:
    use_sampling(window, max_tokens=4, temperature=0.0)
    load_model(qtbot, window, tiny_model)
    window.idle.set_interval_ms(200)
    qtbot.waitUntil(lambda: window.session.model_info is None, timeout=10_000)
    with qtbot.waitSignal(window.session.model_loaded, timeout=60_000):
        send(qtbot, window, "Hello again")
    assert window.session.model_info is not None
    assert window.chat_page.view.composer.toPlainText() == ""  # sent, not left waiting
    store = window.store.store
    assert store is not None
    assert any(m.content == "Hello again"
               for m in store.active_branch(window.chat_page.current or ""))


def test_the_api_server_keeps_the_model_loaded(window: MainWindow, qtbot: QtBot,
                                               tiny_model: Path) -> None:
    load_model(qtbot, window, tiny_model)
    serve(qtbot, window)
    window.idle.set_interval_ms(100)
    qtbot.wait(600)
    assert window.session.model_info is not None
    assert not window.idle.active  # no countdown while the model is served
    with qtbot.waitSignal(window.server.stopped, timeout=10_000):
        window.serve_button.click()
    assert window.idle.active  # served no more: it counts again
    with qtbot.waitSignal(window.idle.unloaded, timeout=10_000):
        pass
    assert window.session.model_info is None


def test_the_context_defaults_to_what_fits(window: MainWindow, qtbot: QtBot,
                                           tiny_model: Path) -> None:
    assert window.settings.load.n_ctx is None
    load_model(qtbot, window, tiny_model)
    info = window.session.model_info
    assert info is not None
    # The tiny model is trained on 4096 tokens, and this machine has room for all of them.
    assert info.n_ctx == inspect_model(tiny_model).context_length
    report = window.session.load_report
    assert report is not None and report.context is not None
    assert report.context.reason is ContextReason.TRAINED
    # The notice says the length and why: one sentence from core, as the CLI prints it.
    assert f"Loaded {tiny_model.name} in " in shown(window)
    assert f"s; {report.context.text()}." in shown(window)
    assert "context 4,096 tokens: the model's training length, which leaves " in shown(window)
    assert window.settings.load.gpu_layers_auto  # the default: planned, 0 layers on this CPU
    assert report.plan is not None and report.plan.n_gpu_layers == 0


def test_first_run_recommends_a_catalog_entry(window: MainWindow, qtbot: QtBot) -> None:
    welcome = window.welcome
    assert window.pages.currentWidget() is welcome
    qtbot.waitUntil(lambda: welcome._recommendation_known, timeout=10_000)
    assert "Recommended for this machine" in welcome.recommendation.text()
    assert welcome.download_button.isVisibleTo(window)
    assert not welcome.mirror.isVisibleTo(window)  # this test's system speaks English


def test_a_chinese_system_is_offered_the_hub_mirror(make_window: object, qtbot: QtBot,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desktop_i18n, "system_locale_name", lambda: "zh_CN")
    window: MainWindow = make_window()  # type: ignore[operator]
    welcome = window.welcome
    qtbot.waitUntil(lambda: welcome.mirror.isVisibleTo(window), timeout=10_000)
    assert not welcome.mirror.isChecked()
    hub_file = window.paths.hub_settings_file
    welcome.mirror.setChecked(True)
    qtbot.waitUntil(hub_file.exists, timeout=5000)
    assert json.loads(hub_file.read_text(encoding="utf-8"))["endpoint"] == HUB_MIRROR
    welcome.mirror.setChecked(False)
    qtbot.waitUntil(lambda: json.loads(hub_file.read_text(encoding="utf-8"))["endpoint"] == "",
                    timeout=5000)


@pytest.mark.allow_log("mixtral_desk.desktop", "No model is loaded yet")
def test_sending_with_no_model_at_all_says_how_to_get_one(window: MainWindow) -> None:
    page = window.chat_page
    window.pages.setCurrentWidget(page)
    page.view.composer.setPlainText("Hello?")
    page.send("Hello?")
    assert "No model is loaded yet" in shown(window)
    assert window.pages.currentWidget() is window.models_page  # where models come from
    assert page.view.composer.toPlainText() == "Hello?"  # nothing is lost


def test_the_offline_flag_outlasts_the_setting(make_window: object, qtbot: QtBot) -> None:
    """``mixtral-desk --offline`` stays offline when the settings (Offline mode off) are read."""
    from mixtral_desk.core import network

    network.force_offline()
    window: MainWindow = make_window()  # type: ignore[operator]
    assert window.settings.network.offline is False
    assert network.is_offline()
    assert window.status.network == "offline"


@pytest.mark.allow_log("mixtral_desk.desktop", "Offline mode is on")
def test_the_recommended_download_starts_from_the_first_run_screen(
        window: MainWindow, qtbot: QtBot) -> None:
    """One click goes to the Models page and downloads the pick (here Offline mode is on, as in
    every test, so the page says so instead of connecting)."""
    welcome = window.welcome
    qtbot.waitUntil(lambda: welcome._recommendation_known, timeout=10_000)
    QTest.mouseClick(welcome.download_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.models_page
    assert "Offline mode is on" in shown(window)


def test_a_send_that_finds_the_model_gone_loads_it_and_sends(chat_window: MainWindow,
                                                             qtbot: QtBot,
                                                             tiny_model: Path) -> None:
    """The model goes (an idle unload) between the click and the turn: nothing is lost."""
    window, page = chat_window, chat_window.chat_page
    gate = threading.Event()
    window.session.run(lambda _: gate.wait(10))  # hold the engine thread
    window.models.unload()  # queued behind the gate: the window still sees the model
    page.view.composer.setPlainText("Still there?")
    QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
    with qtbot.waitSignal(window.session.model_loaded, timeout=60_000):
        gate.set()
    store = window.store.store
    assert store is not None
    qtbot.waitUntil(lambda: page.current is not None and [
        (m.role, m.content, m.status) for m in store.active_branch(page.current or "")][:1]
        == [("user", "Still there?", "complete")], timeout=30_000)
    qtbot.waitUntil(lambda: not window.session.busy and page.view.views[-1].item is not None,
                    timeout=30_000)
    assert [v.role for v in page.view.views] == ["user", "assistant"]  # no ghost bubbles
    assert page.typed_text() == ""
