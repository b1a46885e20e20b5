"""One rule, one place: the same use case through the CLI and through the window stores the same
result, because both front ends call the same core session."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from mixtral_desk.core.session import title_from
from mixtral_desk.desktop.main_window import MainWindow
from tests.core.test_cli import cli
from tests.desktop.desktop_helpers import load_model, send

PROMPT = "Summarise the plot of a very long novel in one sentence, please\nThanks!"
SYSTEM = "Answer briefly, like a telegram."
#: The conversation's own sampling: greedy, exactly five tokens.
SAMPLING = {"temperature": 0.0, "max_tokens": 5, "ignore_eos": True}


def test_cli_and_window_store_the_same_turn(window: MainWindow, qtbot: QtBot,
                                            tiny_model: Path) -> None:
    store = window.store.store
    assert store is not None
    by_cli, by_window = (store.create_conversation(None, system_prompt=SYSTEM,
                                                   settings={"sampling": SAMPLING})
                         for _ in range(2))

    result = cli("chat", "--model", tiny_model, "--conversation", by_cli.id, "--prompt", PROMPT)
    assert result.returncode == 0, result.stderr

    load_model(qtbot, window, tiny_model)
    page = window.chat_page
    with qtbot.waitSignal(page.branch_shown, timeout=5000):
        page.open(by_window.id)
    send(qtbot, window, PROMPT)

    stored = {}
    for conversation in (by_cli, by_window):
        now = store.get_conversation(conversation.id)
        question, reply = store.active_branch(conversation.id)
        assert question.content == PROMPT and reply.status == "complete"
        assert reply.stats is not None
        stored[conversation.id] = (now.title, now.system_prompt, now.settings, reply.model,
                                   reply.content, reply.stats["completion_tokens"])
    assert stored[by_cli.id] == stored[by_window.id]
    title, system_prompt, _, model, content, tokens = stored[by_cli.id]
    assert (title, system_prompt, model, tokens) == (title_from(PROMPT), SYSTEM, "tiny-moe", 5)
    assert content  # the same five greedy tokens, after the same system prompt
