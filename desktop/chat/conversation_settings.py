"""The per-conversation dialog: system prompt and generation settings that override the defaults."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.engine import SamplingOptions
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.session.conversations import (
    SAMPLING_KEY,
    sampling_for,
    sampling_overrides,
)

from ..i18n import keep_translated


class ConversationSettingsDialog(QDialog):
    """Edits one conversation's system prompt and sampling overrides.

    Signals: none (``exec()`` it, then read :meth:`values`).
    """

    def __init__(self, system_prompt: str | None, settings: dict[str, Any],
                 defaults: SamplingOptions, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumWidth(460)
        overrides = sampling_overrides(settings)
        current = sampling_for(defaults, settings)
        layout = QVBoxLayout(self)
        self.prompt_label = QLabel()
        self.prompt_label.setWordWrap(True)
        layout.addWidget(self.prompt_label)
        self.system_prompt = QPlainTextEdit(system_prompt or "")
        self.system_prompt.setTabChangesFocus(True)
        self.prompt_label.setBuddy(self.system_prompt)
        layout.addWidget(self.system_prompt)
        self.custom = QCheckBox()
        self.custom.setChecked(bool(overrides))
        layout.addWidget(self.custom)
        form_widget = QWidget()
        form = QFormLayout(form_widget)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.temperature.setValue(current.temperature)
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, singleStep=0.05)
        self.top_p.setValue(current.top_p)
        self.max_tokens = QSpinBox(minimum=1, maximum=32768)
        self.max_tokens.setValue(current.max_tokens or 1024)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1)
        self.seed.setValue(-1 if current.seed is None else current.seed)
        self.row_labels: dict[str, QLabel] = {}
        for key, field in (("temperature", self.temperature), ("top_p", self.top_p),
                           ("max_tokens", self.max_tokens), ("seed", self.seed)):
            label = QLabel()
            label.setBuddy(field)
            self.row_labels[key] = label
            form.addRow(label, field)
        form_widget.setEnabled(self.custom.isChecked())
        self.custom.toggled.connect(form_widget.setEnabled)
        layout.addWidget(form_widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language (the buttons are Qt's own, translated by Qt)."""
        self.setWindowTitle(tr("Conversation settings"))
        self.prompt_label.setText(tr("&System prompt (instructions the model follows in this "
                                     "chat):"))
        self.system_prompt.setPlaceholderText(
            tr("e.g. You are a concise assistant. Answer in English."))
        self.custom.setText(tr("&Use custom generation settings for this conversation"))
        self.row_labels["temperature"].setText(tr("&Temperature"))
        self.row_labels["top_p"].setText(tr("Top-&p"))
        self.row_labels["max_tokens"].setText(tr("&Max tokens"))
        self.row_labels["seed"].setText(tr("S&eed"))
        self.temperature.setToolTip(tr("Higher is more varied, lower more predictable"))
        self.top_p.setToolTip(tr("Sample only from the most likely tokens that together reach "
                                 "this probability"))
        self.max_tokens.setToolTip(tr("The longest a reply may be, in tokens"))
        self.seed.setSpecialValueText(tr("random"))
        self.seed.setToolTip(tr("The same seed and settings give the same reply"))

    def values(self) -> tuple[str | None, dict[str, Any]]:
        """The system prompt (None when blank) and the conversation's new ``settings`` dict."""
        prompt = self.system_prompt.toPlainText().strip() or None
        if not self.custom.isChecked():
            return prompt, {}
        sampling: dict[str, Any] = {
            "temperature": round(self.temperature.value(), 2),
            "top_p": round(self.top_p.value(), 2),
            "max_tokens": self.max_tokens.value(),
        }
        if self.seed.value() >= 0:
            sampling["seed"] = self.seed.value()
        return prompt, {SAMPLING_KEY: sampling}
