"""The Models page: the catalog, a download from the loopback Hub, then chatting with the model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QPushButton
from pytestqt.qtbot import QtBot

from mixtral_desk.core import network
from mixtral_desk.core.downloads.events import JobProgress
from mixtral_desk.core.session import HubSettings
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.models.page import ModelsPage
from tests.desktop.conftest import WindowFactory
from tests.desktop.desktop_helpers import send, shoot, use_sampling
from tests.hub_server import LoopbackHub

REPO = "owner/tiny-moe-GGUF"
FILE = "tiny-moe-Q8_0.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path, online: None
        ) -> Iterator[LoopbackHub]:
    """A loopback Hub serving the tiny model slowly enough to see progress; offline off."""
    monkeypatch.setattr(network, "_offline_override", False)  # whatever the settings say
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with LoopbackHub(throttle_bps=tiny_model.stat().st_size) as server:
        server.add_repo(REPO, {FILE: tiny_model.read_bytes()})
        yield server
        # The client's pooled keep-alive connections hold server threads open: close them.
        huggingface_hub.close_session()


def catalog_for(path: Path, size: int, file: str = FILE) -> Path:
    """A one-entry models.toml pointing at the loopback repo."""
    path.write_text(f"""schema_version = 1

[[models]]
id = "tiny-moe-q8_0"
name = "Tiny MoE (test model)"
family = "tiny-moe"
repo_id = "{REPO}"
files = ["{file}"]
quant = "Q8_0"
size_bytes = {size}
memory_bytes = {size * 2}
default_context = 512
trained_context = 512
license = "Apache-2.0"
architecture = "llama"
parameters = 1000000
layers = 2
recommended = true
""", encoding="utf-8")
    return path


def test_catalog_lists_the_packaged_models(window: MainWindow, qtbot: QtBot,
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    page = window.models_page
    with qtbot.waitSignal(page.catalog.catalog_shown, timeout=10_000) as blocker:
        window.show_models()
    assert blocker.args[0] == page.catalog.table.rowCount() > 3
    names = [item.text() for r in range(page.catalog.table.rowCount())
             if (item := page.catalog.table.item(r, 0)) is not None]
    assert any("Mixtral 8x7B Instruct" in n for n in names)
    fits = {item.text() for r in range(page.catalog.table.rowCount())
            if (item := page.catalog.table.item(r, 3)) is not None}
    assert fits <= {"✔ Fits the GPU", "✔ Runs on the CPU", "◐ Tight", "✖ Too large"}
    shoot(window, "models-catalog")


def download_button(page: ModelsPage) -> QPushButton:
    widget = page.catalog.table.cellWidget(0, 4)
    assert widget is not None
    return widget.findChildren(QPushButton)[0]


def ready_page(window: MainWindow, qtbot: QtBot, hub: LoopbackHub, catalog: Path) -> ModelsPage:
    """The Models page on a catalog file, its downloads going to the loopback Hub."""
    window.catalog_path = catalog
    page = window.models_page
    with qtbot.waitSignal(page.catalog.catalog_shown, timeout=10_000):
        window.show_models()
    with qtbot.waitSignal(page.downloads.jobs_listed, timeout=10_000):
        page.save_hub(HubSettings(endpoint=hub.url))
    return page


@pytest.mark.allow_log("mixtral_desk.desktop", "is not in owner/tiny-moe-GGUF")
def test_download_pause_resume_then_failure_and_retry(
        window: MainWindow, qtbot: QtBot, hub: LoopbackHub, tmp_path: Path,
        tiny_model: Path) -> None:
    page = ready_page(window, qtbot, hub, catalog_for(tmp_path / "models.toml",
                                                      tiny_model.stat().st_size))
    progress: list[JobProgress] = []
    page.downloads.progress.connect(progress.append)
    QTest.mouseClick(download_button(page), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(p.done > 0 for p in progress), timeout=15_000)
    row = next(iter(page.rows.values()))
    QTest.mouseClick(row.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row.state.text() == "Paused", timeout=10_000)
    assert not row.resume_button.isHidden() and row.pause_button.isHidden()
    assert 0 < row.bar.value() < 1000  # the bytes stay
    with qtbot.waitSignal(page.models_changed, timeout=30_000):
        QTest.mouseClick(row.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row.state.text() == "Done", timeout=10_000)

    # A file the Hub does not have: the job fails with the reason; Retry after it appears.
    missing = "tiny-moe-Q4_0.gguf"
    with qtbot.waitSignal(page.catalog.catalog_shown, timeout=10_000):
        page.catalog.catalog_path = catalog_for(tmp_path / "other.toml", tiny_model.stat().st_size,
                                         missing)
        page.catalog.refresh()
    QTest.mouseClick(download_button(page), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(r.state.text() == "Failed" for r in page.rows.values()),
                    timeout=15_000)
    failed = next(r for r in page.rows.values() if r.state.text() == "Failed")
    assert missing in failed.detail.text() and failed.resume_button.text() == "Retry"
    shoot(window, "models-download-failed")
    hub.add_repo(REPO, {FILE: tiny_model.read_bytes(), missing: tiny_model.read_bytes()})
    with qtbot.waitSignal(page.models_changed, timeout=30_000):
        QTest.mouseClick(failed.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: failed.state.text() == "Done", timeout=10_000)


def test_import_and_delete_a_local_model(window: MainWindow, qtbot: QtBot, tiny_model: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    page = window.models_page
    with qtbot.waitSignal(page.local.local_shown, timeout=10_000) as shown:
        window.show_models()
    assert shown.args == [0]
    with qtbot.waitSignal(page.local.local_shown, timeout=10_000) as shown, \
            qtbot.waitSignal(window.models_listed, timeout=10_000):
        page.local.import_file(tiny_model)
    assert shown.args == [1]
    item = page.local.table.item(0, 0)
    assert item is not None and item.text() == "tiny-moe"
    assert "1 model" in page.local.usage.text()
    assert window.picker.combo.count() == 1
    model = page.local.models[0]
    with qtbot.waitSignal(page.local.local_shown, timeout=10_000) as shown:
        page.local.delete(model)
    assert shown.args == [0] and tiny_model.exists()  # a linked import keeps the user's file


def test_download_through_the_models_page_then_chat(
        make_window: WindowFactory, qtbot: QtBot, hub: LoopbackHub, tmp_path: Path,
        tiny_model: Path) -> None:
    window = make_window()
    page = ready_page(window, qtbot, hub, catalog_for(tmp_path / "models.toml",
                                                      tiny_model.stat().st_size))
    progress: list[JobProgress] = []
    page.downloads.progress.connect(progress.append)
    with qtbot.waitSignal(page.models_changed, timeout=30_000):
        QTest.mouseClick(download_button(page), Qt.MouseButton.LeftButton)
        assert page.tabs.currentIndex() == 1
        qtbot.waitUntil(lambda: any(0 < p.done < (p.total or 0) and p.speed_bps > 0
                                    for p in progress), timeout=15_000)
        row = next(iter(page.rows.values()))
        assert "%" in row.detail.text() and 0 < row.bar.value() < 1000
        assert not row.pause_button.isHidden()
        shoot(window, "models-download-in-progress")
    qtbot.waitUntil(lambda: row.state.text() == "Done", timeout=10_000)
    assert row.bar.value() == 1000 and not row.load_button.isHidden()
    qtbot.waitUntil(lambda: page.local.table.rowCount() == 1, timeout=10_000)

    # Load it from the finished download and chat with it.
    use_sampling(window, temperature=0.0, max_tokens=8, ignore_eos=True)
    with qtbot.waitSignal(window.session.model_loaded, timeout=60_000):
        QTest.mouseClick(row.load_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.chat_page
    assert window.session.model_info is not None
    assert Path(window.session.model_info.path).name == FILE
    send(qtbot, window, "Hello, downloaded model")
    assert window.chat_page.view.views[-1].item is not None
    assert window.chat_page.view.views[-1].item.status == "complete"


def test_turning_offline_mode_on_pauses_running_downloads(
        window: MainWindow, qtbot: QtBot, hub: LoopbackHub, tmp_path: Path,
        tiny_model: Path) -> None:
    page = ready_page(window, qtbot, hub, catalog_for(tmp_path / "models.toml",
                                                      tiny_model.stat().st_size))
    progress: list[JobProgress] = []
    page.downloads.progress.connect(progress.append)
    QTest.mouseClick(download_button(page), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(p.done > 0 for p in progress), timeout=15_000)
    settings = window.settings
    offline = settings.model_copy(update={"network": settings.network.model_copy(
        update={"offline": True})})
    with qtbot.waitSignal(window.settings_saved, timeout=5000):
        window.save_settings(offline)
    row = next(iter(page.rows.values()))
    qtbot.waitUntil(lambda: row.state.text() == "Paused", timeout=10_000)
    assert 0 < row.bar.value() < 1000  # the bytes stay
    assert page.offline_note.isVisibleTo(window) and not download_button(page).isEnabled()
    assert window.status.network == "offline"
