"""A process killed mid-reply: the reply so far survives and is marked interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mixtral_desk.core.store import Store

CHILD = textwrap.dedent("""
    import os, signal, sys
    from mixtral_desk.core.store import Store

    store = Store.open(sys.argv[1])
    conversation = store.create_conversation("Crash test")
    store.add_message(conversation.id, "user", "Tell me a long story")
    reply = store.add_message(conversation.id, "assistant", "", status="streaming")
    text = ""
    for word in ["Once", "upon", "a", "time", "there", "was", "a", "dragon"]:
        text = (text + " " + word).strip()
        store.update_message(reply.id, content=text)
    print(conversation.id, reply.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_reopen_after_kill_keeps_content_and_marks_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    conversation_id, reply_id = child.stdout.split()

    with Store.open(path) as store:
        assert store.recovered_on_open == 1
        reply = store.get_message(reply_id)
        assert reply.content == "Once upon a time there was a dragon"
        assert reply.status == "interrupted"
        assert [m.id for m in store.active_branch(conversation_id)][-1] == reply_id
        assert [h.message_id for h in store.search("dragon")] == [reply_id]
        assert store.recover_interrupted() == 0


def test_a_reply_that_a_live_process_streams_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    with Store.open(path) as writer:
        conversation = writer.create_conversation("Live")
        reply = writer.add_message(conversation.id, "assistant", "so far", status="streaming")
        with Store.open(path) as reader:  # e.g. the CLI while the GUI streams
            assert reader.recovered_on_open == 0
            assert reader.get_message(reply.id).status == "streaming"
        writer.update_message(reply.id, content="so far, and more", status="complete")
        assert writer.get_message(reply.id).status == "complete"
