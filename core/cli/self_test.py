"""``mixtral-desk --self-test``: prove that an installation (or a frozen bundle) works, headless.

In a temporary data folder it writes a tiny GGUF model, inspects it, loads it in the engine
process, generates a few tokens through a stored conversation, reads the conversation back and
reports the llama.cpp backend. It touches none of the user's data and needs no network.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mixtral_desk import __version__
from mixtral_desk.core import chat
from mixtral_desk.core.engine import EngineHost, LoadOptions, SamplingOptions
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.gguf.synthetic import write_synthetic_model
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import HOME_ENV, data_paths
from mixtral_desk.core.store import Store

T = TypeVar("T")


def _step(name: str, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    print("  " + tr("ok  {step} ({seconds} s)", step=name,
                    seconds=format(time.perf_counter() - started, ".2f")), flush=True)
    return result


def run_self_test() -> int:
    """Run every step, printing one line each; 0 when all passed.

    Raises:
        DeskError: a step failed in a way a user can act on (the CLI prints it on one line).
    """
    print(tr("Mixtral Desk {version} self-test (Python {python})", version=__version__,
             python=sys.version.split()[0]))
    previous = os.environ.get(HOME_ENV)
    with tempfile.TemporaryDirectory(prefix="mixtral-desk-self-test-") as home:
        os.environ[HOME_ENV] = home
        try:
            _run_steps(Path(home))
        finally:
            if previous is None:
                os.environ.pop(HOME_ENV, None)
            else:
                os.environ[HOME_ENV] = previous
    print(tr("self-test passed"))
    return 0


def _run_steps(home: Path) -> None:
    paths = data_paths().ensure()
    model = _step(tr("write a tiny Mixtral-shaped GGUF"),
                  lambda: write_synthetic_model(home / "self-test.gguf"))
    facts = _step(tr("inspect it"), lambda: inspect_model(model))
    assert facts.expert_count > 0
    with EngineHost() as engine, Store.open(paths.database) as store:
        info = _step(tr("load it in the engine process"),
                     lambda: engine.load(LoadOptions(model_path=model, n_ctx=512)))
        conversation = store.create_conversation("self-test")
        sampling = SamplingOptions(temperature=0.0, max_tokens=8)
        result = _step(tr("generate a reply and store it"),
                       lambda: chat.send(store, engine, conversation.id, "Hello", sampling))
        stored = _step(tr("read the conversation back"),
                       lambda: store.active_branch(conversation.id))
        if [m.content for m in stored] != ["Hello", result.reply.content]:
            raise RuntimeError("the stored conversation differs from what was generated")
        backend = info.backend
    tokens = result.stats.completion_tokens if result.stats else 0
    print("  " + tr("backend: {backends}; GPU offload: {offload}; {count} tokens generated",
                    backends=", ".join(backend.backends),
                    offload=tr("yes") if backend.gpu_offload else tr("no"), count=tokens))
