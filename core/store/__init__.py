"""The conversation store: SQLite with migrations, branching messages, FTS5 search, export.

Open it with :meth:`Store.open` (the default path is ``data_paths().database``)::

    with Store.open() as store:
        conversation = store.create_conversation("Trip plans", model="mixtral-8x7b")
        question = store.add_message(conversation.id, "user", "Where should we go?")
        reply = store.add_message(conversation.id, "assistant", "", status="streaming")
        store.update_message(reply.id, content="Lisbon", status="complete")
"""

from .export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    read_export,
    write_export,
)
from .ids import new_id
from .migrations import SCHEMA_VERSION
from .models import (
    ACTIVE_LEAF,
    ROLES,
    SNIPPET_CLOSE,
    SNIPPET_OPEN,
    STATUSES,
    UNSET,
    Conversation,
    Message,
    Role,
    SearchHit,
    Status,
)
from .store import Store

__all__ = [
    "ACTIVE_LEAF",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ROLES",
    "SCHEMA_VERSION",
    "SNIPPET_CLOSE",
    "SNIPPET_OPEN",
    "STATUSES",
    "UNSET",
    "Conversation",
    "Message",
    "Role",
    "SearchHit",
    "Status",
    "Store",
    "new_id",
    "read_export",
    "write_export",
]
