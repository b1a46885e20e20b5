"""Light and dark appearance: follow the system, or the user's choice in Settings.

Qt (6.8+) follows the system's colour scheme by itself where the platform reports one; choosing
Light or Dark asks it for that scheme. Where the platform cannot switch (no platform theme, or an
older Qt), the Fusion style with a palette of our own gives the same result. Widgets colour
themselves from the palette, so they follow either way.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

Role = QPalette.ColorRole

_following_system = False
_setting = "system"


def is_dark(palette: QPalette) -> bool:
    """Whether ``palette`` draws light text on a dark window."""
    return palette.color(Role.Window).lightnessF() < palette.color(Role.WindowText).lightnessF()


def dark_palette() -> QPalette:
    """A dark palette with the usual roles (used where the platform has none)."""
    palette = QPalette()
    colours = {
        Role.Window: "#202124", Role.WindowText: "#e8eaed", Role.Base: "#17181a",
        Role.AlternateBase: "#2a2b2e", Role.ToolTipBase: "#2a2b2e", Role.ToolTipText: "#e8eaed",
        Role.PlaceholderText: "#9aa0a6", Role.Text: "#e8eaed", Role.Button: "#2d2e31",
        Role.ButtonText: "#e8eaed", Role.BrightText: "#ff6b6b", Role.Highlight: "#3d7bd9",
        Role.HighlightedText: "#ffffff", Role.Link: "#8ab4f8", Role.LinkVisited: "#c58af9",
        Role.Light: "#3c3d40", Role.Midlight: "#333437", Role.Mid: "#4a4b4f",
        Role.Dark: "#111214", Role.Shadow: "#000000",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    disabled = QPalette.ColorGroup.Disabled
    for role in (Role.Text, Role.ButtonText, Role.WindowText):
        palette.setColor(disabled, role, QColor("#7f8388"))
    return palette


def system_scheme() -> str:
    """``"dark"`` or ``"light"``: what the system asks for (light when it does not say)."""
    hints = QGuiApplication.styleHints()
    return "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"


def apply_theme(setting: str) -> str:
    """Show the app in the theme ``setting`` names (``"system"``, ``"light"``, ``"dark"``).

    Returns the scheme in effect (``"light"`` or ``"dark"``). With ``"system"``, later changes of
    the system's appearance are followed too.
    """
    global _following_system, _setting
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return "light"
    _setting = setting
    hints = app.styleHints()
    if not _following_system:
        hints.colorSchemeChanged.connect(_system_changed)
        _following_system = True
    if hasattr(hints, "setColorScheme"):  # Qt 6.8+
        hints.setColorScheme({"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(
            setting, Qt.ColorScheme.Unknown))
    wanted = system_scheme() if setting == "system" else setting
    if is_dark(app.palette()) != (wanted == "dark"):  # the platform did not switch: do it here
        app.setStyle("Fusion")
        app.setPalette(dark_palette() if wanted == "dark" else app.style().standardPalette())
    return wanted


def _system_changed(_: Qt.ColorScheme) -> None:
    if _setting == "system":
        apply_theme("system")
