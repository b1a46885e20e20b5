"""The first-run screen's content: the catalog entry that fits this machine best, and the Hub
mirror offered to a Chinese-speaking system."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import DataPaths

from ..bridge.tasks import TaskQueue
from ..errors import ErrorSink
from ..welcome import Welcome

if TYPE_CHECKING:  # pydantic and the planner load after the first paint
    from mixtral_desk.core.recommend import Recommendation


class FirstRunController(QObject):
    """Fills the welcome screen in the background and saves the mirror choice.

    ``catalog_path`` gives the catalog to recommend from (None: the packaged models.toml).

    Signals: none.
    """

    def __init__(self, welcome: Welcome, paths: DataPaths, io: TaskQueue, sink: ErrorSink,
                 catalog_path: Callable[[], Path | None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.welcome, self.paths, self.io, self.sink = welcome, paths, io, sink
        self._catalog_path = catalog_path
        self._prepared = False
        welcome.mirror_chosen.connect(self.use_mirror)

    def prepare(self) -> None:
        """Work out the recommendation and whether to offer the mirror (once)."""
        if self._prepared:
            return
        self._prepared = True
        catalog_path, paths = self._catalog_path(), self.paths

        def work() -> tuple[Recommendation | None, int, bool]:
            from mixtral_desk.core.catalog import load_catalog
            from mixtral_desk.core.hardware import detect_hardware
            from mixtral_desk.core.planner import machine_from_hardware
            from mixtral_desk.core.recommend import recommend
            from mixtral_desk.core.session import load_hub_settings

            hardware = detect_hardware()
            choice = recommend(load_catalog(catalog_path), machine_from_hardware(hardware))
            return choice, hardware.ram_available, load_hub_settings(paths).uses_mirror
        self.io.submit(work, self._prepared_now)

    def _prepared_now(self, result: tuple[Recommendation | None, int, bool]) -> None:
        from mixtral_desk.core import i18n

        from ..i18n import system_locale_name

        choice, ram_available, uses_mirror = result
        self.welcome.show_recommendation(choice, ram_available)
        if "zh_CN" in (i18n.normalize_language(system_locale_name()), i18n.current_language()):
            self.welcome.offer_mirror(uses_mirror)

    def use_mirror(self, on: bool) -> None:
        """Save the Hub endpoint: the mirror (on) or the default (off); the token is kept."""
        from mixtral_desk.core.session.hub_settings import HUB_MIRROR

        paths, endpoint = self.paths, HUB_MIRROR if on else ""

        def save() -> None:
            from dataclasses import replace

            from mixtral_desk.core.session import load_hub_settings, save_hub_settings

            save_hub_settings(replace(load_hub_settings(paths), endpoint=endpoint), paths)
        self.io.submit(save, lambda _: self.sink.inform(
            tr("Downloads will use {endpoint}.", endpoint=endpoint or "huggingface.co"),
            timeout_ms=4000))
