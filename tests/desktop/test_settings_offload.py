"""GPU layers "Automatic" and "Expert layers kept in RAM (MoE)" in the Settings page and at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.settings import Settings, load_settings
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.conftest import WindowFactory
from tests.desktop.desktop_helpers import load_model, send, shoot, use_sampling
from tests.mixtral_header import with_value


def use_load(window: MainWindow, **values: object) -> None:
    """Set the window's load settings for this session (not saved)."""
    settings = window.settings
    window.settings = settings.model_copy(
        update={"load": settings.load.model_copy(update=values)})


def test_offload_settings_are_saved_and_read_back(make_window: WindowFactory, qtbot: QtBot,
                                                  data_home: DataPaths) -> None:
    first = make_window()
    first.show_settings()
    page = first.settings_page
    assert page.gpu_auto.isChecked() and page.cpu_moe.value() == 0  # the default
    assert not page.gpu_slider.isEnabled() and not page.cpu_moe.isEnabled()
    QTest.mouseClick(page.gpu_auto, Qt.MouseButton.LeftButton)
    assert not page.gpu_auto.isChecked()
    assert page.gpu_slider.isEnabled() and page.cpu_moe.isEnabled()
    page.cpu_moe.setValue(2)
    QTest.mouseClick(page.gpu_auto, Qt.MouseButton.LeftButton)
    assert page.gpu_auto.isChecked()
    assert not page.gpu_slider.isEnabled() and not page.cpu_moe.isEnabled()
    assert "planned at each load" in page.gpu_note.text()
    shoot(first, "settings-offload")
    with qtbot.waitSignal(first.settings_saved, timeout=5000):
        QTest.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    saved = load_settings(data_home.settings_file).load
    assert saved.gpu_layers_auto is True and saved.n_cpu_moe == 2
    first.close()

    second = make_window()
    assert second.settings.load.gpu_layers_auto and second.settings.load.n_cpu_moe == 2
    second.show_settings()
    page = second.settings_page
    assert page.gpu_auto.isChecked() and page.cpu_moe.value() == 2
    assert not page.gpu_slider.isEnabled() and not page.cpu_moe.isEnabled()
    page.gpu_auto.setChecked(False)
    assert page.gpu_slider.isEnabled() and page.cpu_moe.isEnabled()
    assert page.settings().load.gpu_layers_auto is False
    with qtbot.waitSignal(second.settings_saved, timeout=5000):
        QTest.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    second.close()
    # Automatic off with 0 GPU layers, chosen: it stays so (the file says version 2).
    assert load_settings(data_home.settings_file).load.gpu_layers_auto is False
    assert make_window().settings_page.gpu_auto.isChecked() is False


def test_a_version_1_settings_file_with_its_defaults_opens_with_automatic_gpu_layers(
        make_window: WindowFactory, data_home: DataPaths) -> None:
    old = Settings().model_dump(mode="json")
    old["schema_version"] = 1
    old["load"]["gpu_layers_auto"] = False  # version 1's default, never changed
    data_home.settings_file.write_text(json.dumps(old), encoding="utf-8")
    window = make_window()
    assert window.settings.load.gpu_layers_auto is True
    assert window.settings_page.gpu_auto.isChecked()
    assert not window.settings_page.gpu_slider.isEnabled()


def test_expert_layers_in_ram_keep_six_expert_tensors_and_chat_works(
        window: MainWindow, qtbot: QtBot, tiny_model: Path) -> None:
    use_sampling(window, temperature=0.0, max_tokens=8, ignore_eos=True, seed=1)
    use_load(window, gpu_layers_auto=False, n_cpu_moe=2, n_ctx=256)
    load_model(qtbot, window, tiny_model)
    info = window.session.model_info
    assert info is not None and info.overridden_tensors == 6
    report = window.session.load_report
    assert report is not None and report.n_cpu_moe == 2
    assert window.status.layers_label.text().endswith(
        "0/3 layers on GPU, experts of 2 layers in RAM")
    send(qtbot, window, "Hello")
    reply = window.chat_page.view.views[-1]
    assert reply.text.strip()


def test_automatic_gpu_layers_tell_the_plan(window: MainWindow, qtbot: QtBot,
                                            tiny_model: Path) -> None:
    use_load(window, gpu_layers_auto=True, n_cpu_moe=2, n_ctx=256)
    load_model(qtbot, window, tiny_model)
    report = window.session.load_report
    assert report is not None and report.plan is not None
    assert report.plan.verdict == "cpu" and report.warnings == ()
    info = window.session.model_info
    assert info is not None and info.overridden_tensors == 0  # the plan, not the manual 2
    texts = [notice.text for notice in window.notifications.history]
    assert any(text.startswith("Automatic GPU layers: plan: all 3 layers on the CPU")
               for text in texts), texts
    shown = window.notifications.current
    assert shown is not None and shown.level == "info"
    assert "Loaded tiny-moe.gguf" in shown.text
    assert report.plan.explanation in shown.text
    assert window.status.layers_label.text().endswith("0/3 layers on GPU")


@pytest.mark.allow_log("mixtral_desk.desktop", "These load settings cannot be used")
def test_load_settings_that_cannot_work_keep_the_loaded_model(window: MainWindow, qtbot: QtBot,
                                                              tiny_model: Path) -> None:
    use_load(window, n_ctx=256)
    load_model(qtbot, window, tiny_model)
    use_load(window, kv_type="q8_0", flash_attn=False)  # llama.cpp needs flash attention here
    with qtbot.waitSignal(window.session.load_failed, timeout=10_000):
        window.models.reload()
    shown = window.notifications.current
    assert shown is not None and shown.level == "error"  # a known problem, not "a bug"
    assert "This is a bug" not in shown.text
    assert "These load settings cannot be used: kv_type 'q8_0' needs flash_attn" in shown.text
    assert window.session.model_info is not None  # the model of before is still there …
    assert window.picker.state == "loaded" and window.serve_button.isEnabled()  # … and usable
    use_sampling(window, temperature=0.0, max_tokens=4, ignore_eos=True)
    send(qtbot, window, "Still working?")
    assert window.chat_page.view.views[-1].item is not None


@pytest.mark.allow_log("mixtral_desk.desktop", "llama.block_count")
def test_a_header_with_impossible_layers_is_refused_and_the_model_stays(
        window: MainWindow, qtbot: QtBot, tiny_model: Path, tmp_path: Path) -> None:
    """10**8 layers in a file with tensors for 2: once a planner hang, now a known problem shown
    at once, with automatic GPU layers and the automatic context."""
    use_load(window, n_ctx=256)
    load_model(qtbot, window, tiny_model)
    use_load(window, gpu_layers_auto=True, n_ctx=None)
    broken = with_value(tiny_model, tmp_path / "broken.gguf", "llama.block_count", 10**8)
    with qtbot.waitSignal(window.session.load_failed, timeout=10_000):
        window.load_model(broken)
    shown = window.notifications.current
    assert shown is not None and shown.level == "error"
    assert "This is a bug" not in shown.text
    assert "the header says 100000000 layers (llama.block_count) but the file has tensors for " \
           "2" in shown.text
    info = window.session.model_info
    assert info is not None and info.path == str(tiny_model)  # the model of before stays
