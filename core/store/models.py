"""The store's value types: conversations, messages, search hits, and the argument sentinels.

All three records are frozen dataclasses made fresh from the database on every call; their dict
fields (``settings``, ``stats``) are private copies, so changing them changes nothing stored.
Times are aware UTC datetimes with millisecond precision.

Rows are read tolerantly: a value that only an outside edit or a damaged file can produce (bad
JSON in ``settings`` or ``stats``, a time out of range, an unknown role or status) is logged as
damage and read as a default (``{}``/``None``, the epoch, ``user``, ``error``), so one bad row
never hides a whole history.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, Literal

ROLES: Final = ("system", "user", "assistant")
STATUSES: Final = ("complete", "streaming", "interrupted", "error")

Role = Literal["system", "user", "assistant"]
Status = Literal["complete", "streaming", "interrupted", "error"]


class Unset(enum.Enum):
    """Type of :data:`UNSET`: "this argument was not given" (``None`` may be a real value)."""

    UNSET = "unset"


class ActiveLeaf(enum.Enum):
    """Type of :data:`ACTIVE_LEAF`: "attach the new message to the conversation's active leaf"."""

    ACTIVE_LEAF = "active-leaf"


UNSET: Final = Unset.UNSET
ACTIVE_LEAF: Final = ActiveLeaf.ACTIVE_LEAF


EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
log = logging.getLogger(__name__)


def _damage(what: str, value: object) -> None:
    """Note a stored value that only an outside edit or a damaged file can produce."""
    log.warning("Damaged row in the conversation database: %s %.80r; read as a default", what,
                value)


def ms_to_datetime(value: int) -> datetime:
    """Milliseconds since the Unix epoch (as stored) → aware UTC datetime.

    A value no datetime can hold (out of range, not a number) is damage: it reads as the epoch.
    """
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        _damage("time", value)
        return EPOCH


def _json_dict(text: object, default: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored settings/stats JSON object; damaged text (or not an object) gives ``default``."""
    if text is None or text == "":
        return default
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        _damage("JSON", text)
        return default
    return value


def _known(value: object, known: tuple[str, ...], default: str) -> Any:
    if value in known:
        return value
    _damage("value", value)
    return default


def datetime_to_ms(value: datetime) -> int:
    """Aware datetime → milliseconds since the Unix epoch (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(value.timestamp() * 1000)


@dataclass(frozen=True)
class Conversation:
    """One conversation: its metadata and which branch of its message tree is shown.

    ``updated_at`` moves when a message is added or the title, model, system prompt or settings
    change; pinning and archiving leave it alone. ``active_leaf_id`` is ``None`` while the
    conversation has no messages.
    """

    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    model: str | None
    system_prompt: str | None
    settings: dict[str, Any]
    pinned: bool
    archived: bool
    active_leaf_id: str | None


@dataclass(frozen=True)
class Message:
    """One message, a node of its conversation's tree (``parent_id`` is ``None`` for a root).

    ``stats`` holds generation figures for assistant replies, for example ``prompt_tokens``,
    ``completion_tokens``, ``ttft_s``, ``tokens_per_s`` and ``finish_reason``.
    """

    id: str
    conversation_id: str
    parent_id: str | None
    role: Role
    content: str
    status: Status
    created_at: datetime
    updated_at: datetime
    model: str | None
    stats: dict[str, Any] | None


@dataclass(frozen=True)
class SearchHit:
    """One full-text search result.

    A hit in a conversation's title has ``message_id`` and ``role`` ``None``. ``snippet`` is a
    short excerpt with each match wrapped in ``«`` and ``»`` (see :data:`SNIPPET_OPEN`).
    ``rank`` is FTS5's bm25 score: lower (more negative) is a better match; hits come best first.
    """

    conversation_id: str
    conversation_title: str | None
    message_id: str | None
    role: Role | None
    snippet: str
    rank: float


SNIPPET_OPEN: Final = "«"
SNIPPET_CLOSE: Final = "»"
SNIPPET_ELLIPSIS: Final = "…"


# --- rows ---------------------------------------------------------------------------------------

CONVERSATION_COLUMNS = (
    "id, title, created_at, updated_at, model, system_prompt, settings, pinned, archived, "
    "active_leaf_id"
)
MESSAGE_COLUMNS = (
    "id, conversation_id, parent_id, role, content, status, created_at, updated_at, model, stats"
)


def dump_json(value: dict[str, Any] | None) -> str | None:
    """Standard JSON text for a settings/stats dict: a NaN or infinite number (a rate measured
    over zero seconds) is stored as ``null``, so exports stay standard JSON.

    Raises TypeError if it is not JSON-serialisable.
    """
    if value is None:
        return None
    return json.dumps(finite_json(value), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float (at any depth) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def conversation_from_row(row: Sequence[Any]) -> Conversation:
    """A :class:`Conversation` from a row of :data:`CONVERSATION_COLUMNS`."""
    return Conversation(
        id=row[0],
        title=row[1],
        created_at=ms_to_datetime(row[2]),
        updated_at=ms_to_datetime(row[3]),
        model=row[4],
        system_prompt=row[5],
        settings=_json_dict(row[6], {}) or {},
        pinned=bool(row[7]),
        archived=bool(row[8]),
        active_leaf_id=row[9],
    )


def message_from_row(row: Sequence[Any]) -> Message:
    """A :class:`Message` from a row of :data:`MESSAGE_COLUMNS`."""
    return Message(
        id=row[0],
        conversation_id=row[1],
        parent_id=row[2],
        role=_known(row[3], ROLES, "user"),
        content=row[4] if isinstance(row[4], str) else str(row[4] or ""),
        status=_known(row[5], STATUSES, "error"),
        created_at=ms_to_datetime(row[6]),
        updated_at=ms_to_datetime(row[7]),
        model=row[8],
        stats=_json_dict(row[9], None),
    )
