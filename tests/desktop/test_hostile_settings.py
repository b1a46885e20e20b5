"""The window starts with a hostile settings file: it says what is wrong and uses the defaults."""

from __future__ import annotations

import pytest

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.settings import Settings
from tests.desktop.conftest import WindowFactory
from tests.untrusted_corpus import SETTINGS_REFUSALS


@pytest.mark.allow_log("mixtral_desk.desktop", "nested deeper than")
def test_the_window_starts_with_100000_nested_brackets(make_window: WindowFactory,
                                                        data_home: DataPaths) -> None:
    hostile = SETTINGS_REFUSALS["100,000 nested brackets"][0]
    data_home.settings_file.parent.mkdir(parents=True, exist_ok=True)
    data_home.settings_file.write_bytes(hostile)
    window = make_window()
    assert window.settings == Settings()
    assert "is nested deeper than 64 levels" in data_home.app_log.read_text(encoding="utf-8")
    assert data_home.settings_file.read_bytes() == hostile  # left as it is
