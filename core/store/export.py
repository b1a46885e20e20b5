"""The JSON export format, its validation, Markdown rendering, and atomic file I/O.

An export is a JSON object::

    {"format": "mixtral-desk-conversations", "version": 1, "exported_at": "...",
     "conversations": [{"id": ..., "title": ..., "created_at": ..., "updated_at": ...,
                        "model": ..., "system_prompt": ..., "settings": {...},
                        "pinned": false, "archived": false, "active_leaf_id": ...,
                        "messages": [{"id": ..., "parent_id": ..., "role": ..., "content": ...,
                                      "status": ..., "created_at": ..., "updated_at": ...,
                                      "model": ..., "stats": {...} | null}, ...]}, ...]}

It holds every message of every branch, so export → import → export gives the same data. Times
are ISO 8601 with milliseconds and a UTC offset. It is standard JSON: a NaN or infinite number
kept in stats by an older version is written as ``null``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, cast

from ..atomic_write import write_atomic
from ..errors import ImportFormatError, UserText
from ..i18n import N_, tr
from ..untrusted_json import (
    MAX_IMPORT_BYTES,
    MAX_MESSAGE_CHARS,
    LimitError,
    check_tree,
    load_limited_json,
)
from .ids import is_valid_id, new_id
from .models import (
    MESSAGE_COLUMNS,
    ROLES,
    STATUSES,
    Conversation,
    Message,
    Role,
    Status,
    datetime_to_ms,
    dump_json,
    finite_json,
)
from .search import cjk_index_text

EXPORT_FORMAT: Final = "mixtral-desk-conversations"
EXPORT_VERSION: Final = 1

EARLIEST_TIME: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_TIME: Final = datetime(9999, 12, 30, tzinfo=timezone.utc)
"""Imported times outside this range are refused: every stored time must convert back to a
date in any time zone (``datetime`` has years 1 to 9999) and sort as milliseconds since 1970."""


def _time(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def conversation_to_dict(conversation: Conversation, messages: list[Message]) -> dict[str, Any]:
    """One conversation and all its messages (every branch, creation order) as JSON data."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "settings": finite_json(conversation.settings),
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "active_leaf_id": conversation.active_leaf_id,
        "messages": [
            {
                "id": message.id,
                "parent_id": message.parent_id,
                "role": message.role,
                "content": message.content,
                "status": message.status,
                "created_at": _time(message.created_at),
                "updated_at": _time(message.updated_at),
                "model": message.model,
                "stats": finite_json(message.stats),
            }
            for message in messages
        ],
    }


def build_export(items: Iterable[tuple[Conversation, list[Message]]]) -> dict[str, Any]:
    """The whole export document for ``items``."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _time(datetime.now(timezone.utc)),
        "conversations": [conversation_to_dict(c, m) for c, m in items],
    }


# --- validation ---------------------------------------------------------------------------------

class _Reader:
    """Typed access to one JSON object that names the offending field in its errors."""

    def __init__(self, data: object, where: str | UserText) -> None:
        if not isinstance(data, dict):
            raise ImportFormatError(N_("Not a Mixtral Desk export: {where} should be an object."),
                                    where=where)
        self.data: dict[str, Any] = data
        self.where = where

    def fail(self, key: str, expected: UserText) -> ImportFormatError:
        if isinstance(self.where, UserText):  # the top level: the key alone names the field
            return ImportFormatError(
                N_("Not a valid Mixtral Desk export: {field} should be {expected}."),
                field=key, expected=expected)
        return ImportFormatError(
            N_("Not a valid Mixtral Desk export: {where}.{key} should be {expected}."),
            where=self.where, key=key, expected=expected)

    def text(self, key: str, *, optional: bool = False, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(key, UserText(N_("text or null")) if optional
                            else UserText(N_("text")))
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key)
        assert value is not None
        if not value:
            raise self.fail(key, UserText(N_("non-empty text")))
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(key, UserText(N_("true or false")))
        return value

    def mapping(self, key: str, *, optional: bool) -> dict[str, Any] | None:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, UserText(N_("an object")))
        return value

    def time(self, key: str) -> datetime:
        value = self.required_text(key)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(key, UserText(N_("an ISO 8601 time"))) from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        try:
            in_range = EARLIEST_TIME <= parsed <= LATEST_TIME
        except OverflowError:  # an offset that moves the time past year 1 or 9999
            in_range = False
        if not in_range:
            raise self.fail(key, UserText(N_("a time between {earliest} and {latest}"),
                                          earliest="1970-01-01", latest="9999-12-29"))
        return parsed

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            raise self.fail(key, UserText(N_("one of {choices}"), choices=", ".join(choices)))
        return cast(str, value)

    def items(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if not isinstance(value, list):
            raise self.fail(key, UserText(N_("a list")))
        return value


def _parse_message(data: object, conversation_id: str, where: str) -> Message:
    reader = _Reader(data, where)
    status = reader.choice("status", STATUSES, "complete")
    return Message(
        id=reader.required_text("id"),
        conversation_id=conversation_id,
        parent_id=reader.text("parent_id", optional=True),
        role=cast(Role, reader.choice("role", ROLES)),
        content=_content(reader),
        # Nothing is generating an imported reply: a reply exported mid-stream is interrupted.
        status=cast(Status, "interrupted" if status == "streaming" else status),
        created_at=reader.time("created_at"),
        updated_at=reader.time("updated_at"),
        model=reader.text("model", optional=True),
        stats=reader.mapping("stats", optional=True),
    )


def _content(reader: _Reader) -> str:
    content = reader.text("content") or ""
    if len(content) > MAX_MESSAGE_CHARS:
        raise reader.fail("content", UserText(N_("at most {limit} characters long"),
                                              limit=f"{MAX_MESSAGE_CHARS:,}"))
    return content


def _check_tree(messages: list[Message], active_leaf_id: str | None, where: str) -> list[Message]:
    """Messages ordered parents-first; raises if ids repeat, parents are missing or loop."""
    by_id: dict[str, Message] = {}
    for message in messages:
        if message.id in by_id:
            raise ImportFormatError(
                N_("Not a valid Mixtral Desk export: {where} repeats message id {id}."),
                where=where, id=message.id)
        by_id[message.id] = message
    ordered: list[Message] = []
    placed: set[str] = set()
    for message in messages:
        chain: list[Message] = []
        seen: set[str] = set()
        current: Message | None = message
        while current is not None and current.id not in placed:
            if current.id in seen:
                raise ImportFormatError(N_("Not a valid Mixtral Desk export: {where} has "
                                           "messages whose parents form a loop."), where=where)
            chain.append(current)
            seen.add(current.id)
            if current.parent_id is None:
                current = None
            elif current.parent_id in by_id:
                current = by_id[current.parent_id]
            else:
                raise ImportFormatError(
                    N_("Not a valid Mixtral Desk export: in {where}, message {id} has parent "
                       "{parent}, which is not in that conversation."),
                    where=where, id=current.id, parent=current.parent_id)
        for item in reversed(chain):
            placed.add(item.id)
            ordered.append(item)
    if active_leaf_id is not None and active_leaf_id not in by_id:
        raise ImportFormatError(N_("Not a valid Mixtral Desk export: {where}.active_leaf_id "
                                   "names a message that is not in that conversation."),
                                where=where)
    return ordered


def parse_export(data: object) -> list[tuple[Conversation, list[Message]]]:
    """Validate an export document; return its conversations with messages parents-first.

    Raises:
        ImportFormatError: ``data`` is not a Mixtral Desk export, is from a newer version, or a
            field is missing or of the wrong type (the message names the field).
    """
    try:
        check_tree(data)
    except LimitError as error:
        raise _limit_error(error) from None
    root = _Reader(data, UserText(N_("the file")))
    if root.data.get("format") != EXPORT_FORMAT:
        raise ImportFormatError(
            N_('Not a Mixtral Desk export (expected "format": "{format}").'), format=EXPORT_FORMAT)
    version = root.data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise root.fail("version", UserText(N_("a whole number")))
    if version > EXPORT_VERSION:
        raise ImportFormatError(
            N_("This export was made by a newer Mixtral Desk (format version {version}; this "
               "version reads up to {newest}). Update Mixtral Desk to import it."),
            version=version, newest=EXPORT_VERSION)
    result: list[tuple[Conversation, list[Message]]] = []
    for index, item in enumerate(root.items("conversations")):
        where = f"conversations[{index}]"
        reader = _Reader(item, where)
        conversation_id = reader.required_text("id")
        messages = [
            _parse_message(message, conversation_id, f"{where}.messages[{number}]")
            for number, message in enumerate(reader.items("messages"))
        ]
        conversation = Conversation(
            id=conversation_id,
            title=reader.text("title", optional=True),
            created_at=reader.time("created_at"),
            updated_at=reader.time("updated_at"),
            model=reader.text("model", optional=True),
            system_prompt=reader.text("system_prompt", optional=True),
            settings=reader.mapping("settings", optional=False) or {},
            pinned=reader.flag("pinned"),
            archived=reader.flag("archived"),
            active_leaf_id=reader.text("active_leaf_id", optional=True),
        )
        result.append((conversation, _check_tree(messages, conversation.active_leaf_id, where)))
    return result


def _limit_error(error: LimitError, path: Path | str | None = None) -> ImportFormatError:
    if path is not None and not error.field:
        return ImportFormatError(N_("{path} is not a Mixtral Desk export: it {problem}."),
                                 path=str(path), problem=error.problem)
    return ImportFormatError(N_("Not a valid Mixtral Desk export: {field} {problem}."),
                             field=error.field or UserText(N_("the file")), problem=error.problem)


# --- writing an import into the database ------------------------------------------------------

def insert_conversation(conn: sqlite3.Connection, conversation: Conversation,
                    messages: list[Message]) -> str:
    """Insert a parsed conversation (messages parents-first); return its id here.

    Keeps the ids unless one is taken or not ours; then the conversation and all its messages
    get fresh ids (see :meth:`Store.import_conversations`).

    Raises:
        sqlite3.Error: the database cannot be written.
    """
    ids = [conversation.id] + [message.id for message in messages]
    taken = not all(is_valid_id(value) for value in ids) or any(
        conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (value,)).fetchone()
        for table, value in [("conversations", conversation.id)]
        + [("messages", message.id) for message in messages]
    )
    mapping = {value: value for value in ids}
    if taken:
        mapping[conversation.id] = new_id()
        for message in sorted(messages, key=lambda m: (m.created_at, m.id)):
            mapping[message.id] = new_id()
    conversation_id = mapping[conversation.id]
    leaf = conversation.active_leaf_id
    conn.execute(
        "INSERT INTO conversations (id, title, title_cjk, created_at, updated_at, model, "
        "system_prompt, settings, pinned, archived, active_leaf_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, conversation.title, cjk_index_text(conversation.title),
         datetime_to_ms(conversation.created_at), datetime_to_ms(conversation.updated_at),
         conversation.model, conversation.system_prompt, dump_json(conversation.settings),
         int(conversation.pinned), int(conversation.archived),
         None if leaf is None else mapping[leaf]),
    )
    conn.executemany(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}, search_cjk) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (mapping[m.id], conversation_id,
             None if m.parent_id is None else mapping[m.parent_id], m.role, m.content,
             m.status, datetime_to_ms(m.created_at), datetime_to_ms(m.updated_at), m.model,
             dump_json(m.stats), cjk_index_text(m.content))
            for m in messages
        ],
    )
    return conversation_id


# --- Markdown -------------------------------------------------------------------------------------

#: How roles and message states are named to a reader (Markdown exports, the CLI's ``show``).
ROLE_TITLES: Final = {"system": N_("System"), "user": N_("User"), "assistant": N_("Assistant")}
STATUS_NAMES: Final = {"complete": N_("complete"), "streaming": N_("streaming"),
                       "interrupted": N_("interrupted"), "error": N_("error")}


def to_markdown(conversation: Conversation, branch: list[Message]) -> str:
    """The conversation's active branch as a readable Markdown document (in the current
    language)."""
    lines = ["# " + (conversation.title or tr("Untitled conversation")), ""]
    facts = [tr("Created {time} UTC", time=format(conversation.created_at, "%Y-%m-%d %H:%M"))]
    if conversation.model:
        facts.append(tr("model {model}", model=conversation.model))
    lines += ["*" + " · ".join(facts) + "*", ""]
    if conversation.system_prompt:
        lines += ["## " + tr("System prompt"), "", conversation.system_prompt.strip(), ""]
    for message in branch:
        heading = tr(ROLE_TITLES[message.role])
        if message.role == "assistant" and message.model and message.model != conversation.model:
            heading = tr("{role} ({model})", role=heading, model=message.model)
        lines += [f"## {heading}", "", message.content.strip()]
        if message.status != "complete":
            lines += ["", f"*({tr(STATUS_NAMES[message.status])})*"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- files ----------------------------------------------------------------------------------------

def write_export(path: Path | str, data: dict[str, Any]) -> None:
    """Write ``data`` as UTF-8 JSON to ``path`` atomically (a temporary file, then a rename).

    The file is readable by its owner only: it holds the user's conversations.

    Raises:
        OSError: the file cannot be written (permissions, full disk); ``path`` is unchanged.
    """
    write_atomic(Path(path), json.dumps(data, ensure_ascii=False, indent=1) + "\n", private=True)


def read_export(path: Path | str) -> dict[str, Any]:
    """Read an export file written by :func:`write_export` (validated later, on import), under
    the limits of :mod:`mixtral_desk.core.untrusted_json` (at most
    :data:`~mixtral_desk.core.untrusted_json.MAX_IMPORT_BYTES`).

    Raises:
        ImportFormatError: the file is too large, not UTF-8 JSON, breaks a limit (naming the
            field) or is not a JSON object.
        OSError: the file cannot be read.
    """
    with Path(path).open("rb") as file:
        raw = file.read(MAX_IMPORT_BYTES + 1)
    try:
        data = load_limited_json(raw, max_bytes=MAX_IMPORT_BYTES)
    except LimitError as error:
        raise _limit_error(error, path) from None
    except json.JSONDecodeError as error:
        raise ImportFormatError(N_("{path} is not a Mixtral Desk export (not JSON: {error})."),
                                path=str(path), error=str(error)) from error
    if not isinstance(data, dict):
        raise ImportFormatError(N_("{path} is not a Mixtral Desk export (not a JSON object)."),
                                path=str(path))
    return data
