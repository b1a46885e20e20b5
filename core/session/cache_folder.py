"""The prompt cache's folder as the user sees it: what it holds, its disk budget, clearing it, and
forgetting a deleted conversation's states.

The cache itself (:mod:`mixtral_desk.core.engine.prompt_cache`) lives in the engine process while a
model is loaded; everything here works on the folder without an engine, so the CLI, ``doctor`` and
the window's Settings page can use it whether or not a model is loaded (a file being written by an
engine lands atomically, so clearing the folder meanwhile is safe; the engine's copies in RAM stay
until it unloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mixtral_desk.core.engine.prompt_cache import (
    automatic_disk_budget,
    clear_folder,
    conversation_tag,
    folder_usage,
    forget_tag,
)
from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.units import GiB, format_memory

from .loading import prompt_cache_dir

if TYPE_CHECKING:
    from mixtral_desk.core.engine import EngineHost
    from mixtral_desk.core.settings import LoadDefaults

#: ``"automatic"``: min(8 GiB, 10 % of the free disk); ``"setting"``: ``load.prompt_cache_gib``;
#: ``"off"``: the setting is 0.
BudgetMode = Literal["automatic", "setting", "off"]


class CacheFolderError(DeskError, OSError):
    """Raised when the prompt cache folder exists but cannot be read (not a folder, no
    permission); the message names the folder and the problem."""


@dataclass(frozen=True)
class CacheBudget:
    """The prompt cache's disk budget: ``mode`` and the bytes it allows now (0 when off)."""

    mode: BudgetMode
    bytes: int
    setting_gib: float | None

    def text(self) -> str:
        """The budget in the current language ("off", "4.0 GiB (setting)", …)."""
        if self.mode == "off":
            return tr("off (load.prompt_cache_gib is 0)")
        if self.mode == "setting":
            return tr("{size} (load.prompt_cache_gib)", size=format_memory(self.bytes))
        return tr("{size} (automatic: 10 % of the free disk space, at most 8 GiB)",
                  size=format_memory(self.bytes))

    def to_json_dict(self) -> dict[str, Any]:
        """The budget as JSON-ready data."""
        return {"mode": self.mode, "bytes": self.bytes, "setting_gib": self.setting_gib}


@dataclass(frozen=True)
class CacheReport:
    """What the prompt cache folder holds and may hold: its entries (files), their bytes and
    tokens, how many model keys they belong to, and the budget."""

    folder: Path
    entries: int
    bytes: int
    tokens: int
    models: int
    budget: CacheBudget

    def to_json_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``cache --json``, ``doctor --json``); its keys are
        stable."""
        return {"folder": str(self.folder), "entries": self.entries, "bytes": self.bytes,
                "tokens": self.tokens, "models": self.models,
                "budget": self.budget.to_json_dict()}


def cache_budget(load: LoadDefaults, folder: Path | None = None) -> CacheBudget:
    """The disk budget that ``load.prompt_cache_gib`` gives for ``folder`` (by default the
    prompt cache's folder)."""
    gib = load.prompt_cache_gib
    if gib is None:
        return CacheBudget("automatic", automatic_disk_budget(folder or prompt_cache_dir()), None)
    if gib == 0:
        return CacheBudget("off", 0, 0.0)
    return CacheBudget("setting", int(gib * GiB), gib)


def _check_readable(folder: Path) -> None:
    """Raises:
        CacheFolderError: ``folder`` exists and cannot be listed (a missing one is empty)."""
    try:
        with os.scandir(folder):
            pass
    except FileNotFoundError:
        return
    except OSError as error:
        raise CacheFolderError(N_("Cannot read the prompt cache folder {path}: {problem}"),
                               path=str(folder),
                               problem=error.strerror or str(error)) from error


def cache_report(load: LoadDefaults, folder: Path | None = None) -> CacheReport:
    """What the prompt cache folder (by default :func:`~.loading.prompt_cache_dir`) holds, and
    its budget under ``load``.

    Raises:
        CacheFolderError: the folder cannot be read.
    """
    root = folder or prompt_cache_dir()
    _check_readable(root)
    usage = folder_usage(root)
    return CacheReport(root, usage.files, usage.bytes, usage.tokens, usage.keys,
                       cache_budget(load, root))


def clear_cache(folder: Path | None = None) -> int:
    """Remove every saved state of every model from the prompt cache folder; the bytes freed.

    A loaded model keeps the states it holds in RAM until it unloads, and a state it is writing
    lands afterwards.

    Raises:
        CacheFolderError: the folder cannot be read.
    """
    root = folder or prompt_cache_dir()
    _check_readable(root)
    return clear_folder(root)


def forget_conversation(conversation_id: str, engine: EngineHost | None = None,
                        folder: Path | None = None) -> int:
    """Remove the prompt cache states made from conversation ``conversation_id``: its files in
    the folder now, and, through ``engine`` (a local engine that may hold a model), its copies in
    the engine's RAM and the files it writes after its running reply. The number of files removed
    here. Raises nothing (a folder that cannot be read has nothing to remove)."""
    tag = conversation_tag(conversation_id)
    removed = forget_tag(folder or prompt_cache_dir(), tag)
    if engine is not None:
        engine.forget_cached(tag)
    return removed
