"""Translated user-visible text: English source strings, a Simplified Chinese (zh_CN) catalog.

One gettext catalog serves the CLI and the desktop app. Its source is
``core/locale/<language>/LC_MESSAGES/mixtral_desk.po`` (text, reviewed like code); the build
(``setup.py``'s ``build_py``, run by ``pip install`` and the packaged build) compiles it to the
``.mo`` file read here. Compiled catalogs are never committed.

Mark text with :func:`tr` (or :func:`ntr` for counts) where it is shown, and with :func:`N_` where a
constant is defined and translated later. Values go in as named placeholders —
``tr("Deleted {name}", name=title)`` — never by concatenation, so that a translation can put them
where its grammar wants them.

The language is process-wide: :func:`set_language` switches it (the desktop app then re-renders its
widgets). Without a compiled catalog the text stays English and a warning is logged once.
"""

from __future__ import annotations

import gettext
import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

DOMAIN: Final = "mixtral_desk"
LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"
SOURCE_LANGUAGE: Final = "en"
#: Language codes the interface comes in, with their names written in that language.
LANGUAGES: Final = {"en": "English", "zh_CN": "简体中文"}
#: The language setting's value meaning "follow the system locale".
SYSTEM: Final = "system"

_translations: gettext.NullTranslations = gettext.NullTranslations()
_language: str = SOURCE_LANGUAGE


def normalize_language(tag: str | None) -> str:
    """The supported language closest to a locale tag (``zh_CN.UTF-8``, ``zh-Hans-CN``, ``en_GB``).

    Every Chinese tag maps to Simplified Chinese (the only Chinese catalog); anything else that is
    not supported maps to English.
    """
    if not tag:
        return SOURCE_LANGUAGE
    base = tag.split(".")[0].split("@")[0].replace("-", "_").lower()
    if base == "zh" or base.startswith("zh_"):
        return "zh_CN"
    return SOURCE_LANGUAGE


def system_language() -> str:
    """The language the environment asks for (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
    ``LANG``)."""
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        for tag in value.split(":"):
            if tag and tag not in ("C", "POSIX"):
                return normalize_language(tag)
    return SOURCE_LANGUAGE


def resolve_language(setting: str | None, system_tag: str | None = None) -> str:
    """The language to show for a setting value: a language code, or ``"system"``/``None``.

    ``system_tag`` is the platform's own locale name where the caller knows it better than the
    environment does (the desktop app passes Qt's, which reads macOS and Windows preferences).
    """
    if setting in LANGUAGES:
        return setting
    if system_tag:
        return normalize_language(system_tag)
    return system_language()


def catalog_path(language: str) -> Path:
    """Where the compiled catalog of ``language`` lives (it may not exist)."""
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.mo"


def set_language(language: str) -> str:
    """Translate from now on into ``language`` (a key of :data:`LANGUAGES`); returns the language
    in use.

    A language whose compiled catalog is missing (a source checkout that was never built) falls back
    to English with a logged warning, so that the caller can still say which language is shown.
    """
    global _translations, _language
    if language not in LANGUAGES or language == SOURCE_LANGUAGE:
        _translations, _language = gettext.NullTranslations(), SOURCE_LANGUAGE
        return _language
    path = catalog_path(language)
    try:
        with path.open("rb") as handle:
            _translations = gettext.GNUTranslations(handle)
    except OSError:
        log.warning("No compiled %s catalog at %s (build the package to compile it); "
                    "showing English", language, path)
        _translations, _language = gettext.NullTranslations(), SOURCE_LANGUAGE
        return _language
    _language = language
    return _language


def current_language() -> str:
    """The language text is translated into now."""
    return _language


def tr(message: str, /, **values: object) -> str:
    """``message`` in the current language, ``{name}`` placeholders filled from ``values``.

    Without ``values`` the text is returned as is (braces in it need no escaping).
    """
    text = _translations.gettext(message)
    return text.format(**values) if values else text


def ntr(singular: str, plural: str, count: int, /, **values: object) -> str:
    """The form of ``singular``/``plural`` for ``count``, ``{count}`` and ``values`` filled."""
    return _translations.ngettext(singular, plural, count).format(count=count, **values)


def N_(message: str) -> str:  # noqa: N802 (the conventional gettext marker name)
    """Mark ``message`` for translation without translating it now (see :func:`tr`)."""
    return message
