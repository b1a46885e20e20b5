"""The window with a Mixtral file from before April 2024: refused, Convert, and it loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.gguf.merge_experts import merged_path
from mixtral_desk.core.gguf.synthetic import TINY, write_synthetic_model
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.main_window import MainWindow

from .desktop_helpers import LOAD_TIMEOUT_MS, shoot


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    folder = tmp_path / "old-models"
    folder.mkdir()
    return write_synthetic_model(folder / "old-mixtral.gguf", TINY, per_expert=True)


def refuse(qtbot: QtBot, window: MainWindow, path: Path) -> None:
    with qtbot.waitSignal(window.session.load_failed, timeout=LOAD_TIMEOUT_MS):
        window.load_model(path)


@pytest.mark.allow_log("mixtral_desk.desktop", "one tensor per expert")
def test_convert_turns_the_refusal_into_a_loaded_model(window: MainWindow, qtbot: QtBot,
                                                       old_file: Path) -> None:
    refuse(qtbot, window, old_file)
    notice = window.notifications.current
    assert notice is not None and notice.level == "error"
    assert "one tensor per expert" in notice.text and "This is a bug" not in notice.text
    assert [action.label for action in notice.actions] == ["Convert"]
    shoot(window, "convert-old-mixtral-en")
    # The settings read at start-up apply their language: switch only after that.
    qtbot.waitUntil(lambda: window._settings_read, timeout=LOAD_TIMEOUT_MS)
    apply_language("zh_CN")
    try:
        refuse(qtbot, window, old_file)
        chinese = window.notifications.current
        assert chinese is not None and "每个专家" in chinese.text
        assert [action.label for action in chinese.actions] == ["转换"]
        shoot(window, "convert-old-mixtral-zh")
    finally:
        apply_language("en")
    with qtbot.waitSignal(window.session.model_loaded, timeout=LOAD_TIMEOUT_MS) as loaded:
        notice.actions[0].run()
    assert Path(loaded.args[0].path) == merged_path(old_file)
    assert window.picker.selected() == merged_path(old_file)
    texts = [item.text for item in window.notifications.history]
    assert any(text.startswith("Converted old-mixtral.gguf into") for text in texts)
    assert old_file.exists()  # the original is kept
    # The second time, the earlier conversion is loaded at once.
    with qtbot.waitSignal(window.session.model_loaded, timeout=LOAD_TIMEOUT_MS):
        window.expert_merge.convert(old_file)
    assert any("was converted before; loading old-mixtral.merged-experts.gguf" in item.text
               for item in window.notifications.history)


def test_stop_leaves_nothing_and_says_so(window: MainWindow, qtbot: QtBot, tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    # About 50 MB: Stop, pressed right after Convert, lands long before the copy could end.
    big = write_synthetic_model(folder / "old-big.gguf", replace(TINY, n_ff=8192), per_expert=True)
    window.expert_merge.convert(big)
    notice = window.notifications.current
    assert notice is not None and notice.text == "Converting old-big.gguf…"
    assert [action.label for action in notice.actions] == ["Stop"]
    notice.actions[0].run()
    qtbot.waitUntil(lambda: not window.expert_merge.running, timeout=LOAD_TIMEOUT_MS)
    assert window.notifications.current is not None
    assert window.notifications.current.text == "The conversion was stopped; nothing was written."
    assert sorted(p.name for p in folder.iterdir()) == ["old-big.gguf"]
