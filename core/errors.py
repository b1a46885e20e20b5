"""Typed errors that the CLI and the GUI can word kindly.

Every error a user can cause or meet (a bad file, a missing model, a full disk, a database from a
newer version) is a :class:`DeskError`. Its ``str()`` is one complete sentence fit to show a person;
the CLI prints it on one line and exits non-zero, the GUI shows it in a notification. Anything that
is not a ``DeskError`` is a bug and gets a traceback in the log.

Messages are translatable: raise with an ``N_()``-marked text and its values as named
placeholders, ``NotFoundError(N_("No conversation with id {id}"), id=conversation_id)``. The text
is translated each time it is shown (``str(error)``), in the language of that moment, and
:attr:`DeskError.english` gives the English text (for logs, and for the API server's answers,
which programs read). A message that is already a finished string (llama.cpp's words, a message
translated elsewhere) passes through unchanged.

Each class also inherits the builtin it resembles, so callers that only know Python's own
exceptions (``except FileNotFoundError``) still catch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .i18n import N_, tr


class UserText:
    """A message to show later: an ``N_()``-marked text and the values of its placeholders.

    ``str()`` translates it into the current language; :meth:`english` gives the source text.
    A value may itself be a :class:`UserText` (a whole sentence placed into a template), rendered
    in the same language; a :class:`DeskError` given as a value stands for its message (so its
    English stays English), and any other exception for its text, taken now (so the message
    stays picklable). Without values the text is used as is (braces need no escaping).
    """

    def __init__(self, text: str, /, **values: object) -> None:
        self.text = text
        self.values = {name: _message_value(value) for name, value in values.items()}

    def __str__(self) -> str:
        if not self.values:
            return tr(self.text)
        return tr(self.text, **{name: str(value) if isinstance(value, UserText) else value
                                for name, value in self.values.items()})

    def english(self) -> str:
        """The message in English (the source language)."""
        if not self.values:
            return self.text
        return self.text.format(**{name: value.english() if isinstance(value, UserText) else value
                                   for name, value in self.values.items()})

    def __repr__(self) -> str:
        return f"UserText({self.english()!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, UserText) and other.text == self.text
                and other.values == self.values)

    def __hash__(self) -> int:
        return hash(self.text)

    def to_data(self) -> dict[str, Any]:
        """The message as JSON-ready data, to store and translate later (:meth:`from_data`).

        Numbers, text, booleans and None are kept; a nested :class:`UserText` becomes data in
        turn; any other value is kept as its text.
        """
        return {"text": self.text, "values": {
            name: value.to_data() if isinstance(value, UserText)
            else value if value is None or isinstance(value, str | int | float) else str(value)
            for name, value in self.values.items()}}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> UserText:
        """The message :meth:`to_data` stored.

        Raises:
            ValueError: ``data`` is not such a message.
        """
        text, values = data.get("text"), data.get("values", {})
        if not isinstance(text, str) or not isinstance(values, dict):
            raise ValueError("not a stored message")
        return cls(text, **{str(name): cls.from_data(value) if isinstance(value, dict) else value
                            for name, value in values.items()})


def _message_value(value: object) -> object:
    """A placeholder's value as a message keeps it (see :class:`UserText`)."""
    if isinstance(value, DeskError):
        message: UserText | None = value.__dict__.get("user_message")
        return message if message is not None else value.english
    if isinstance(value, BaseException):
        return str(value) or type(value).__name__
    return value


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python


def _restore(cls: type[DeskError], args: tuple[Any, ...], state: dict[str, Any]) -> DeskError:
    # Allocate with the builtin exception the class is laid out as: ``cls.__new__`` may find
    # RuntimeError's first for a class that is also an OSError, which refuses to build one.
    base: type = cls
    while base.__flags__ & _HEAP_TYPE and base.__base__ is not None:
        base = base.__base__
    error: DeskError = base.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class DeskError(Exception):
    """Base of every error a user may see; ``str(error)`` is the message to show.

    ``message``: an ``N_()``-marked text whose ``{placeholders}`` ``values`` fill, a
    :class:`UserText`, or a finished string. ``args[0]`` is the English text.
    """

    def __init__(self, message: str | UserText = "", /, **values: object) -> None:
        self.user_message = (message if isinstance(message, UserText)
                             else UserText(message, **values))
        super().__init__(self.user_message.english())

    def __str__(self) -> str:
        message: UserText | None = self.__dict__.get("user_message")
        if message is None:  # built without __init__ (e.g. by a subclass that skips it)
            return str(self.args[0]) if self.args else ""
        return str(message)

    @property
    def english(self) -> str:
        """The message in English, whatever the current language."""
        message: UserText | None = self.__dict__.get("user_message")
        if message is None:
            return str(self.args[0]) if self.args else ""
        return message.english()

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than ``args``; rebuild from the state.
        return _restore, (type(self), self.args, dict(self.__dict__))


# --- files and models --------------------------------------------------------------------------

class ModelFileNotFoundError(DeskError, FileNotFoundError):
    """Raised when a model path does not exist or is not a file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(N_("Model file not found: {path}"), path=str(self.path))


class GGUFError(DeskError, ValueError):
    """Raised when a file is not a usable GGUF model; names the file and the problem.

    ``problem``: an ``N_()``-marked text (a predicate about the file: "is a LoRA adapter, …")
    whose placeholders ``values`` fill, or a :class:`UserText`.
    """

    def __init__(self, path: Path | str, problem: str | UserText, /, **values: object) -> None:
        self.path = Path(path)
        problem_message = problem if isinstance(problem, UserText) else UserText(problem, **values)
        self.problem = problem_message.english()
        super().__init__(UserText(N_("{path}: {problem}"), path=str(self.path),
                                 problem=problem_message))


class GGUFMetadataError(GGUFError):
    """Raised when a model's header gives a value that no model can have, or one its own tensors
    contradict (``llama.block_count`` 4294967295 in a file with tensors for 2 layers); ``key``
    names the metadata key, and the message gives the key and both values.

    Raised while the header is inspected, before any memory is planned or allocated from it.
    """

    def __init__(self, path: Path | str, key: str, problem: str | UserText, /,
                 **values: object) -> None:
        self.key = key
        super().__init__(path, problem, **values)


class PerExpertModelError(GGUFError):
    """Raised before loading a Mixtral file converted before April 2024, which stores one tensor
    per expert (``blk.N.ffn_gate.E.weight``): the llama.cpp of llama-cpp-python no longer loads
    that layout. The message says how to convert it (``mixtral-desk merge-experts``) or to
    download a newer conversion."""

    def __init__(self, path: Path | str, size: str) -> None:
        super().__init__(path, N_(
            "stores one tensor per expert (a Mixtral conversion made before April 2024), a layout "
            "that this llama.cpp no longer loads. Convert it once with “mixtral-desk "
            "merge-experts {path}” (it writes a new {size} file beside it and keeps this one), "
            "or download a newer conversion"), path=str(path), size=size)


class CatalogError(DeskError, ValueError):
    """Raised when models.toml is malformed; names the file, the entry and the field."""


class SettingsError(DeskError, ValueError):
    """Raised when the settings file cannot be read or is from a newer version."""


class MessageError(DeskError, ValueError):
    """Raised when a message to send or paste is refused: longer than the largest message the app
    takes (:data:`~mixtral_desk.core.untrusted_json.MAX_MESSAGE_CHARS`; the message gives both
    lengths), or not valid text (a lone surrogate, as undecodable bytes in a command line give)."""


class SamplingError(DeskError, ValueError):
    """Raised when a sampling value given for one reply (``--temperature``, ``--seed`` …) is out
    of range; names the value and the range."""


# --- engine ------------------------------------------------------------------------------------

class EngineError(DeskError, RuntimeError):
    """Base of the errors of the engine process and its host."""


class ModelLoadError(EngineError):
    """Raised when llama.cpp refuses to load a model (the message says why, where known)."""


class GPUOffloadUnavailableError(EngineError):
    """Raised when GPU layers are requested from a llama.cpp build that cannot offload."""


class EngineCrashedError(EngineError):
    """Raised when the engine process died (abort, segfault, out-of-memory kill)."""

    def __init__(self, message: str | UserText, /, exit_code: int | None = None,
                 **values: object) -> None:
        self.exit_code = exit_code
        super().__init__(message, **values)


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


NOT_FOUND = N_("Not found")


class NotFoundError(DeskError, KeyError):
    """Raised when a conversation, message or catalog entry id does not exist."""

    def __init__(self, message: str | UserText = NOT_FOUND, /, **values: object) -> None:
        super().__init__(message, **values)  # DeskError's __str__: KeyError's would quote it


class SearchQueryError(StoreError, ValueError):
    """Raised when a full-text search query cannot be parsed; says how to fix it."""


class ImportFormatError(StoreError, ValueError):
    """Raised when a file to import is not a Mixtral Desk export."""
