"""The "Serve API" toggle: the loaded model over the local OpenAI-compatible API, on 127.0.0.1.

Ports are chosen by the system (port 0), never fixed; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.desktop.bridge.session_bridge import SERVER_BUSY
from mixtral_desk.desktop.errors import Notice
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.desktop_helpers import START_TIMEOUT_MS, send, serve, use_port


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None and port > 0
    return port


def assert_closed(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    """An HTTP client that ignores proxy settings (everything here is on 127.0.0.1)."""
    with httpx2.Client(timeout=30, trust_env=False) as http:
        yield http


def test_toggle_serves_the_loaded_model_and_stops(chat_window: MainWindow, qtbot: QtBot,
                                                   client: httpx2.Client) -> None:
    window = chat_window
    assert window.serve_button.isEnabled() and not window.serve_button.isChecked()
    assert "mixtral-desk serve --host 0.0.0.0 --api-key KEY" in window.serve_button.toolTip()

    url = serve(qtbot, window)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    port = port_of(url)
    assert window.status.api_label.text() == f"API: {url}"
    assert not window.status.api_label.isHidden()

    models = client.get(f"{url}/models")
    assert models.status_code == 200, models.text
    assert [model["id"] for model in models.json()["data"]] == ["tiny-moe"]
    reply = client.post(f"{url}/chat/completions", json={
        "model": "tiny-moe", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Hello"}]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert 0 < body["usage"]["completion_tokens"] <= 4

    with qtbot.waitSignal(window.server.stopped, timeout=START_TIMEOUT_MS):
        window.serve_button.click()
    assert not window.serve_button.isChecked() and window.serve_button.isEnabled()
    assert window.status.api_label.isHidden()
    assert not window.server.is_running
    assert_closed(port)


@pytest.mark.allow_log("mixtral_desk.desktop", "The API server is answering a request")
def test_gui_send_waits_while_the_server_answers(chat_window: MainWindow,
                                                 qtbot: QtBot) -> None:
    window = chat_window
    serve(qtbot, window)
    server = window.session.session.server
    assert server is not None
    queue = server.api.replies.queue
    notices: list[Notice] = []
    window.sink.notice.connect(notices.append)
    send_button = window.chat_page.view.send_button
    composer = window.chat_page.view.composer
    # Take the engine's turn as an API request does (deterministic, unlike a race with a reply
    # that the tiny model finishes in a blink).
    asyncio.run(queue.acquire())
    try:
        qtbot.waitUntil(lambda: not send_button.isEnabled(), timeout=5000)
        assert send_button.toolTip() == SERVER_BUSY
        composer.setPlainText("Me too")
        QTest.keyClick(composer, Qt.Key.Key_Return)  # Enter still submits with Send disabled
        assert notices and notices[-1].level == "warning"
        assert notices[-1].text.startswith(SERVER_BUSY)
        assert composer.toPlainText() == "Me too"  # not sent, and not lost
        assert not window.session.busy
    finally:
        queue.release()
    qtbot.waitUntil(send_button.isEnabled, timeout=5000)
    assert send_button.toolTip() == "" and not window.session.serving_busy
    send(qtbot, window, "Me too")  # now the GUI gets the engine
    last = window.chat_page.view.views[-1].item
    assert last is not None and last.status == "complete"
    with qtbot.waitSignal(window.server.stopped, timeout=START_TIMEOUT_MS):
        window.serve_button.click()


def test_unloading_or_closing_stops_the_server(chat_window: MainWindow, qtbot: QtBot) -> None:
    window = chat_window
    port = port_of(serve(qtbot, window))
    with qtbot.waitSignal(window.server.stopped, timeout=START_TIMEOUT_MS), \
            qtbot.waitSignal(window.session.model_unloaded, timeout=START_TIMEOUT_MS):
        window.picker.load_button.click()  # "Unload"
    assert not window.serve_button.isEnabled() and not window.serve_button.isChecked()
    assert window.status.api_label.isHidden()
    assert_closed(port)

    with qtbot.waitSignal(window.session.model_loaded, timeout=60_000):
        window.picker.load_button.click()  # "Load" again
    port = port_of(serve(qtbot, window))
    window.close()
    assert not window.server.is_running
    assert_closed(port)


@pytest.mark.allow_log("mixtral_desk.desktop", "another program uses this port")
def test_a_taken_port_is_reported_and_unchecks_the_toggle(chat_window: MainWindow,
                                                          qtbot: QtBot) -> None:
    window = chat_window
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        use_port(window, port)
        notices: list[Notice] = []
        window.sink.notice.connect(notices.append)
        with qtbot.waitSignal(window.server.failed, timeout=START_TIMEOUT_MS) as blocker:
            window.serve_button.click()
    assert f"127.0.0.1:{port}" in str(blocker.args[0])
    errors = [notice for notice in notices if notice.level == "error"]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0].text
    assert window.notifications.current is not None
    assert window.notifications.current.level == "error"
    assert not window.serve_button.isChecked() and window.serve_button.isEnabled()
    assert window.status.api_label.isHidden() and not window.server.is_running
