"""The interface language in the desktop app: choosing it, Qt's own strings, re-rendering widgets.

Widgets set every user-visible text in one method and register it with :func:`keep_translated`,
which calls it now and again whenever :func:`apply_language` switches the language at runtime::

    class Welcome(QWidget):
        def __init__(self) -> None:
            ...
            keep_translated(self.retranslate)

        def retranslate(self) -> None:
            self.title.setText(tr("Welcome to Mixtral Desk"))

Text that depends on state (a status line, a progress label) is re-rendered from that state in the
same method. Qt's own widgets (standard dialog buttons, context menus of text fields) are
translated by Qt's bundled ``qtbase`` catalog, installed here beside ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QLibraryInfo, QLocale, QObject, QTranslator, Signal
from PySide6.QtWidgets import QApplication

from mixtral_desk.core import i18n

from .signals import emit

log = logging.getLogger(__name__)


class _LanguageHub(QObject):
    """Tells widgets that the language changed.

    Signals:
        changed(str): the language now in use (a key of ``i18n.LANGUAGES``).
    """

    changed = Signal(str)


_hub: _LanguageHub | None = None
_qt_translator: QTranslator | None = None


def _language_hub() -> _LanguageHub:
    global _hub
    if _hub is None:
        _hub = _LanguageHub()
    return _hub


def keep_translated(retranslate: Callable[[], None]) -> None:
    """Call ``retranslate`` now, and again after every language switch.

    Pass a bound method of a QObject (a widget): the connection ends when that object is deleted.
    """
    retranslate()
    _language_hub().changed.connect(retranslate)


def system_locale_name() -> str:
    """The system's UI locale as Qt sees it (``zh_CN``, ``en_US``); reads macOS/Windows settings."""
    languages = QLocale.system().uiLanguages()
    return languages[0] if languages else QLocale.system().name()


def apply_language(setting: str | None) -> str:
    """Switch the interface to the language ``setting`` names (``"system"``, ``"en"``, ``"zh_CN"``).

    Installs our catalog and Qt's own for that language, then tells every registered widget to
    re-render. Returns the language in use (English when a catalog is missing).
    """
    global _qt_translator
    wanted = i18n.resolve_language(setting, system_locale_name())
    language = i18n.set_language(wanted)
    app = QApplication.instance()
    if app is not None:
        if _qt_translator is not None:
            app.removeTranslator(_qt_translator)
            _qt_translator = None
        if language != i18n.SOURCE_LANGUAGE:
            translator = QTranslator(app)
            folder = QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)
            if translator.load(f"qtbase_{language}", folder):
                app.installTranslator(translator)
                _qt_translator = translator
            else:
                log.info("Qt's own %s catalog is not in %s", language, folder)
    emit(_language_hub().changed, language)
    return language
