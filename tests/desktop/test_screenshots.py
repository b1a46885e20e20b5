"""PNGs of the main states for people to look at ($MIXTRAL_DESK_SCREENSHOTS), and their checks."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.signals import emit
from tests.desktop.desktop_helpers import shoot

CODE_REPLY = """Here is a function that reverses a string:

```python
def reverse(text: str) -> str:
    \"\"\"Return the text backwards.\"\"\"
    return text[::-1]
```

It uses **slicing** with a step of `-1`. A quick check:

| input | output |
|-------|--------|
| `"abc"` | `"cba"` |
"""


def test_screenshot_empty_first_run(window: MainWindow) -> None:
    assert window.pages.currentWidget() is window.welcome
    shoot(window, "first-run")


def test_screenshot_chat_with_code_block(window: MainWindow, qtbot: QtBot) -> None:
    store = window.store.store
    assert store is not None
    conversation = store.create_conversation("Reverse a string in Python")
    store.add_message(conversation.id, "user", "How do I reverse a string in Python?")
    store.add_message(conversation.id, "assistant", CODE_REPLY, model="mixtral-8x7b-instruct",
                      stats={"completion_tokens": 64, "decode_tokens_per_s": 21.4})
    other = store.create_conversation("Packing list for a weekend hike")
    store.add_message(other.id, "user", "What should I pack?")
    pinned = store.create_conversation("Notes on llama.cpp flags")
    store.update_conversation(pinned.id, pinned=True)
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)  # as after any change: the sidebar lists them again
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 3)
    window.show_chat()
    assert window.pages.currentWidget() is window.chat_page
    with qtbot.waitSignal(window.chat_page.branch_shown, timeout=5000):
        window.chat_page.open(conversation.id)
    reply = window.chat_page.view.views[-1]
    assert reply.body.toPlainText().count("def reverse") == 1
    assert "Copy" in reply.body.toHtml()
    reply._copy_code(0)
    from PySide6.QtGui import QGuiApplication
    assert QGuiApplication.clipboard().text().startswith("def reverse(text: str)")
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 3)
    window.notifications.dismiss()
    shoot(window, "chat-code-block")


def test_screenshot_settings(window: MainWindow) -> None:
    window.show_settings()
    page = window.settings_page
    assert page.gpu_label.text() == "0 (CPU only)"
    shoot(window, "settings")
