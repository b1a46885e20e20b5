"""The composer refuses a paste over the message size limit and keeps what was typed."""

from __future__ import annotations

from PySide6.QtCore import QMimeData
from pytestqt.qtbot import QtBot

from mixtral_desk.core.errors import MessageError
from mixtral_desk.core.untrusted_json import MAX_MESSAGE_CHARS
from mixtral_desk.desktop.chat.composer import Composer


def paste(composer: Composer, text: str) -> None:
    data = QMimeData()
    data.setText(text)
    composer.insertFromMimeData(data)


def test_a_paste_over_the_limit_is_refused_whole(qtbot: QtBot) -> None:
    composer = Composer()
    qtbot.addWidget(composer)
    composer.setPlainText("Summarise this:")
    with qtbot.waitSignal(composer.refused, timeout=2000) as refused:
        paste(composer, "x" * MAX_MESSAGE_CHARS)
    assert isinstance(refused.args[0], MessageError)
    assert "1,000,000" in str(refused.args[0])
    assert composer.toPlainText() == "Summarise this:"


def test_a_paste_within_the_limit_goes_in(qtbot: QtBot) -> None:
    composer = Composer()
    qtbot.addWidget(composer)
    with qtbot.assertNotEmitted(composer.refused):
        paste(composer, "short text")
    assert composer.toPlainText() == "short text"
