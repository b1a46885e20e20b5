"""The rules of a conversation that every front end shares: its title, its sampling, and what
deleting it removes.

A conversation gets its title from the first line of its first message (shortened); until then it
has none, and each reader shows "New chat" in its own language. Its settings may override the
app's default sampling (the window's conversation dialog writes them; ``chat --conversation``
and the window both apply them). Deleting it also removes the prompt cache states made from its
text (:func:`delete_conversation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from mixtral_desk.core.engine.options import SamplingOptions

from .cache_folder import forget_conversation

if TYPE_CHECKING:
    from mixtral_desk.core.engine import EngineHost
    from mixtral_desk.core.store import Store

#: The longest title, in characters (an ellipsis ends a shortened one).
TITLE_CHARS: Final = 48
#: Where a conversation's ``settings`` keep its sampling overrides.
SAMPLING_KEY: Final = "sampling"


def title_from(text: str) -> str | None:
    """A conversation title from its first message: the first non-blank line, shortened to
    :data:`TITLE_CHARS` characters; ``None`` for a blank message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


def sampling_overrides(conversation_settings: dict[str, Any]) -> dict[str, Any]:
    """The conversation's sampling overrides (empty when it has none or they are not a dict)."""
    overrides = conversation_settings.get(SAMPLING_KEY)
    return dict(overrides) if isinstance(overrides, dict) else {}


def sampling_for(defaults: SamplingOptions,
                 conversation_settings: dict[str, Any]) -> SamplingOptions:
    """The app's default sampling with this conversation's overrides applied.

    Overrides that are not valid sampling options (a hand-edited database, an older export) are
    ignored as a whole: the defaults are used. Raises nothing.
    """
    overrides = sampling_overrides(conversation_settings)
    if not overrides:
        return defaults
    try:
        return SamplingOptions.model_validate({**defaults.model_dump(), **overrides})
    except ValueError:
        return defaults


def delete_conversation(store: Store, conversation_id: str, *,
                        engine: EngineHost | None = None) -> int:
    """Delete a conversation with its messages, then the prompt cache states made from it: its
    files in the cache folder, and through ``engine`` (the local engine, when one runs) its copies
    in RAM (after the reply it may be writing). Returns the number of cache files removed here.

    Runs where the store's SQL runs (the window's store thread); the file work is small and the
    engine is only sent a message.

    Raises:
        NotFoundError: no conversation has this id (nothing is removed).
    """
    store.delete_conversation(conversation_id)
    return forget_conversation(conversation_id, engine)
