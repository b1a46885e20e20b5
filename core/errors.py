"""Typed errors that the CLI and the GUI can word kindly.

Every error a user can cause or meet (a bad file, a missing model, a full disk, a database from a
newer version) is a :class:`DeskError`. Its ``str()`` is one complete sentence fit to show a person;
the CLI prints it on one line and exits non-zero, the GUI shows it in a notification. Anything that
is not a ``DeskError`` is a bug and gets a traceback in the log.

Each class also inherits the builtin it resembles, so callers that only know Python's own
exceptions (``except FileNotFoundError``) still catch it.
"""

from __future__ import annotations

from pathlib import Path


class DeskError(Exception):
    """Base of every error a user may see; ``str(error)`` is the message to show."""


# --- files and models --------------------------------------------------------------------------

class ModelFileNotFoundError(DeskError, FileNotFoundError):
    """Raised when a model path does not exist or is not a file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"Model file not found: {self.path}")

    def __str__(self) -> str:
        return f"Model file not found: {self.path}"


class GGUFError(DeskError, ValueError):
    """Raised when a file is not a usable GGUF model; names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CatalogError(DeskError, ValueError):
    """Raised when models.toml is malformed; names the file, the entry and the field."""


class SettingsError(DeskError, ValueError):
    """Raised when the settings file cannot be read or is from a newer version."""


# --- engine ------------------------------------------------------------------------------------

class EngineError(DeskError, RuntimeError):
    """Base of the errors of the engine process and its host."""


class ModelLoadError(EngineError):
    """Raised when llama.cpp refuses to load a model (the message says why, where known)."""


class GPUOffloadUnavailableError(EngineError):
    """Raised when GPU layers are requested from a llama.cpp build that cannot offload."""


class EngineCrashedError(EngineError):
    """Raised when the engine process died (abort, segfault, out-of-memory kill)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class EngineBusyError(EngineError):
    """Raised when a request arrives while the engine is already generating."""


class ContextOverflowError(EngineError):
    """Raised when even the newest message alone does not fit the context window."""


# --- store -------------------------------------------------------------------------------------

class StoreError(DeskError, RuntimeError):
    """Base of the conversation store's errors."""


class NewerSchemaError(StoreError):
    """Raised when the database was written by a newer Mixtral Desk; the file is left untouched."""


class CorruptDatabaseError(StoreError):
    """Raised when the database file is not a readable SQLite database."""


class NotFoundError(DeskError, KeyError):
    """Raised when a conversation, message or catalog entry id does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "Not found"


class SearchQueryError(StoreError, ValueError):
    """Raised when a full-text search query cannot be parsed; says how to fix it."""


class ImportFormatError(StoreError, ValueError):
    """Raised when a file to import is not a Mixtral Desk export."""
