"""The Hub tab as a browser, driven offscreen against the loopback Hub: search → results → a
repository's quants with fit verdicts read from remote headers (Mixtral-shaped sparse files) →
Download → the job in Downloads; English and Chinese screenshots; Offline mode hides it."""

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
from mixtral_desk.core.planner import simulated_machine
from mixtral_desk.core.session import HubSettings
from mixtral_desk.core.units import GiB
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.models.page import HUB_TAB, ModelsPage
from tests.desktop.desktop_helpers import shoot
from tests.hub_server import LoopbackHub, RemoteFile, make_bytes

REPO = "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"
Q4 = "mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf"
Q2 = "mixtral-8x7b-instruct-v0.1.Q2_K.gguf"
SMALL = make_bytes(300_000, seed=5)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, online: None,
        mixtral_headers: dict[str, Path]) -> Iterator[LoopbackHub]:
    monkeypatch.setattr(network, "_offline_override", False)  # whatever the settings say
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with LoopbackHub() as server:
        server.add_repo(REPO, {
            Q4: RemoteFile(path=mixtral_headers["Q4_K_M"], sha256="4" * 64),
            Q2: RemoteFile(path=mixtral_headers["Q2_K"], sha256="2" * 64),
            "mmproj-mixtral-f16.gguf": RemoteFile(sparse_size=600_000_000, sha256="6" * 64),
            "small.Q8_0.gguf": SMALL}, downloads=412_000, likes=640, licence="apache-2.0",
            gguf={"total": 46_702_792_704, "architecture": "llama"})
        server.add_repo("mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF",
                        {"m.Q4_K_M.gguf": RemoteFile(sparse_size=26_000_000_000, sha256="7" * 64)},
                        downloads=9_800, likes=12, gguf={"total": 46_702_792_704,
                                                         "architecture": "llama"})
        server.add_repo("mistralai/Mixtral-Gated-GGUF",
                        {"g.Q4_0.gguf": RemoteFile(sparse_size=26_000_000_000, sha256="7" * 64)},
                        gated=True, licence="other", downloads=50)
        yield server
        huggingface_hub.close_session()


def hub_page(window: MainWindow, qtbot: QtBot, hub: LoopbackHub) -> ModelsPage:
    page = window.models_page
    window.show_models()
    with qtbot.waitSignal(page.downloads.jobs_listed, timeout=10_000):
        page.save_hub(HubSettings(endpoint=hub.url))
    page.hub.machine = simulated_machine(ram=64 * GiB, vram=24 * GiB, gpu_name="RTX 4090")
    page.tabs.setCurrentIndex(HUB_TAB)
    window.resize(1200, 800)
    return page


def search(qtbot: QtBot, page: ModelsPage, text: str) -> None:
    tab = page.hub_tab
    tab.query.setText(text)
    with qtbot.waitSignal(page.hub.searched, timeout=10_000):
        QTest.mouseClick(tab.search_button, Qt.MouseButton.LeftButton)


def open_first(qtbot: QtBot, page: ModelsPage) -> None:
    holder = page.hub_tab.results.cellWidget(0, 7)
    assert holder is not None
    with qtbot.waitSignal(page.hub.repo_loaded, timeout=10_000):
        QTest.mouseClick(holder.findChildren(QPushButton)[0], Qt.MouseButton.LeftButton)


def verdict_cells(page: ModelsPage) -> dict[str, str]:
    table = page.hub_tab.quants
    return {name.text(): verdict.text() for row in range(table.rowCount())
            if (name := table.item(row, 0)) is not None
            and (verdict := table.item(row, 4)) is not None}


def test_search_open_verdicts_download(window: MainWindow, qtbot: QtBot, hub: LoopbackHub,
                                       tmp_path: Path) -> None:
    page = hub_page(window, qtbot, hub)
    tab = page.hub_tab
    search(qtbot, page, "mixtral")
    names = [item.text() for r in range(tab.results.rowCount())
             if (item := tab.results.item(r, 0)) is not None]
    assert names == [REPO, "mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF",
                     "mistralai/Mixtral-Gated-GGUF"]
    assert tab.results.item(0, 1).text() == "412.0k"  # type: ignore[union-attr]
    assert tab.results.item(0, 5).text() == "46.7B"  # type: ignore[union-attr]
    shoot(window, "hub-results-en")
    open_first(qtbot, page)
    qtbot.waitUntil(lambda: "experts in RAM" in verdict_cells(page).get(Q4, ""), timeout=20_000)
    qtbot.waitUntil(lambda: "header not readable" in verdict_cells(page).get("small.Q8_0.gguf",
                                                                             ""),
                    timeout=20_000)
    qtbot.waitUntil(lambda: "tok/s" in verdict_cells(page).get(Q2, ""), timeout=20_000)
    cells = verdict_cells(page)
    assert cells["mmproj-mixtral-f16.gguf"] == "vision projector, not a model"
    assert "apache-2.0" in tab.repo_title.text()
    qtbot.waitUntil(lambda: not page.hub.busy, timeout=10_000)
    shoot(window, "hub-repo-en")

    # Back and again: the header cache answers, no request reaches the Hub's CDN.
    def header_reads() -> int:
        return len([r for r in hub.log if r.server == "cdn" and r.filename in (Q2, Q4)])

    cdn_before = header_reads()
    QTest.mouseClick(tab.back_button, Qt.MouseButton.LeftButton)
    open_first(qtbot, page)
    qtbot.waitUntil(lambda: "experts in RAM" in verdict_cells(page).get(Q4, ""), timeout=20_000)
    assert header_reads() == cdn_before
    assert page.hub.cache is not None and page.hub.cache.hits >= 2

    # Download a quant: the job appears in Downloads.
    row = next(r for r in range(tab.quants.rowCount())
               if tab.quants.item(r, 0).text() == "small.Q8_0.gguf")  # type: ignore[union-attr]
    holder = tab.quants.cellWidget(row, 5)
    assert holder is not None
    with qtbot.waitSignal(page.models_changed, timeout=30_000):
        QTest.mouseClick(holder.findChildren(QPushButton)[0], Qt.MouseButton.LeftButton)
        assert page.tabs.currentIndex() == 1
    qtbot.waitUntil(lambda: any(r.state.text() == "Done" for r in page.rows.values()),
                    timeout=10_000)
    assert len(page.rows) == 1


def test_gated_repo_and_chinese_screenshots(window: MainWindow, qtbot: QtBot,
                                            hub: LoopbackHub) -> None:
    page = hub_page(window, qtbot, hub)
    tab = page.hub_tab
    tab.query.setText("mistralai/Mixtral-Gated-GGUF")
    with qtbot.waitSignal(page.hub.repo_loaded, timeout=10_000):
        QTest.keyClick(tab.query, Qt.Key.Key_Return)
    assert f'href="{hub.url}/mistralai/Mixtral-Gated-GGUF"' in tab.repo_title.text()
    assert "accept the licence" in tab.repo_title.text()
    shoot(window, "hub-gated-en")
    apply_language("zh_CN")
    try:
        search(qtbot, page, "mixtral")
        assert tab.search_button.text() == "搜索"
        shoot(window, "hub-results-zh")
        open_first(qtbot, page)
        qtbot.waitUntil(lambda: "tok/s" in verdict_cells(page).get(Q4, ""), timeout=20_000)
        assert "GPU" in verdict_cells(page)[Q4] and "专家" in verdict_cells(page)[Q4]
        qtbot.waitUntil(lambda: not page.hub.busy, timeout=10_000)
        shoot(window, "hub-repo-zh")
    finally:
        apply_language("en")


def test_bad_paste_and_offline_mode(window: MainWindow, qtbot: QtBot, hub: LoopbackHub) -> None:
    page = hub_page(window, qtbot, hub)
    tab = page.hub_tab
    tab.query.setText("org/repo:Q4 K")
    QTest.keyClick(tab.query, Qt.Key.Key_Return)
    assert "owner/name:QUANT" in tab.status.text() and tab.status.isVisibleTo(window)
    before = len(hub.log)
    settings = window.settings
    offline = settings.model_copy(update={"network": settings.network.model_copy(
        update={"offline": True})})
    with qtbot.waitSignal(window.settings_saved, timeout=5000):
        window.save_settings(offline)
    assert not tab.browser.isVisibleTo(window) and tab.offline_label.isVisibleTo(window)
    assert "Offline mode is on" in tab.offline_label.text()
    assert page.token.isVisibleTo(window)  # the Hub settings stay editable
    tab.query.setText("mixtral")
    tab.search()
    shoot(window, "hub-offline-en")
    assert len(hub.log) == before


def test_more_results_adds_the_next_page(window: MainWindow, qtbot: QtBot,
                                         hub: LoopbackHub) -> None:
    for i in range(23):
        hub.add_repo(f"many/Extra-{i:02d}-GGUF", {"e.Q4_0.gguf": b"x"}, downloads=1000 - i)
    page = hub_page(window, qtbot, hub)
    tab = page.hub_tab
    search(qtbot, page, "extra")
    assert tab.results.rowCount() == 20 and tab.more_button.isVisibleTo(window)
    with qtbot.waitSignal(page.hub.searched, timeout=10_000):
        QTest.mouseClick(tab.more_button, Qt.MouseButton.LeftButton)
    names = [tab.results.item(r, 0).text()  # type: ignore[union-attr]
             for r in range(tab.results.rowCount())]
    assert names == [f"many/Extra-{i:02d}-GGUF" for i in range(23)]
    assert not tab.more_button.isVisibleTo(window)


def test_stop_drops_the_verdicts_under_way(window: MainWindow, qtbot: QtBot,
                                           hub: LoopbackHub) -> None:
    page = hub_page(window, qtbot, hub)
    tab = page.hub_tab
    tab.query.setText(REPO)
    hub.latency_s = 0.3  # every request, header reads included, takes a while
    with qtbot.waitSignal(page.hub.repo_loaded, timeout=10_000):
        QTest.keyClick(tab.query, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: tab.stop_button.isVisibleTo(window), timeout=5000)
    assert "reading header…" in verdict_cells(page)[Q4]
    QTest.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    assert tab.status.text() == "Stopped."
    assert not any("reading header" in text for text in verdict_cells(page).values())
    qtbot.waitUntil(lambda: not page.hub.busy, timeout=10_000)
    assert not tab.stop_button.isVisibleTo(window)
    assert not any("tok/s" in text for text in verdict_cells(page).values())
