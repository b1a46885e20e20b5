"""``conversations list | show | search | export | import | delete`` over the store (the
backup sub-commands are in core/cli/backup_commands.py)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixtral_desk.core.cli import backup_commands
from mixtral_desk.core.cli.backup_commands import open_store
from mixtral_desk.core.cli.numbers import whole_number
from mixtral_desk.core.cli.output import print_json, print_table
from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import N_, ntr, tr
from mixtral_desk.core.session.conversations import delete_conversation
from mixtral_desk.core.store import Store
from mixtral_desk.core.store.export import STATUS_NAMES, read_export

#: The most conversations or hits one command lists.
MAX_LISTED = 1_000_000


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``conversations`` and its sub-commands to the CLI."""
    parser = commands.add_parser("conversations",
                                 help=tr("list, search, export and import chats"))
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    json_help = tr("print JSON")

    listing = actions.add_parser("list", help=tr("newest conversations first"))
    listing.add_argument("--limit", type=whole_number(1, MAX_LISTED), default=50,
                         help=tr("how many to list (default: {count})", count=50))
    listing.add_argument("--archived", action="store_true", help=tr("include archived ones"))
    listing.add_argument("--json", action="store_true", help=json_help)
    listing.set_defaults(handler=list_command)

    show = actions.add_parser("show", help=tr("the messages of the active branch"))
    show.add_argument("id", help=tr("the conversation's id"))
    show.add_argument("--json", action="store_true", help=json_help)
    show.set_defaults(handler=show_command)

    search = actions.add_parser("search", help=tr("full-text search over messages and titles"))
    search.add_argument("query", help=tr("words to find; put special characters in double "
                                         "quotes"))
    search.add_argument("--limit", type=whole_number(1, MAX_LISTED), default=20,
                        help=tr("how many hits to show (default: {count})", count=20))
    search.add_argument("--json", action="store_true", help=json_help)
    search.set_defaults(handler=search_command)

    export = actions.add_parser("export", help=tr("export one or all conversations"))
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help=tr("the conversation's id"))
    target.add_argument("--all", action="store_true", help=tr("export every conversation"))
    export.add_argument("--format", choices=("json", "md"), default="json",
                        help=tr("json (complete, can be imported again) or md (Markdown, to "
                                "read)"))
    export.add_argument("-o", "--output", type=Path, help=tr("file to write (default: stdout)"))
    export.set_defaults(handler=export_command)

    importing = actions.add_parser("import", help=tr("import a JSON export"))
    importing.add_argument("file", type=Path, help=tr("a file written by export --format json"))
    importing.set_defaults(handler=import_command)

    delete = actions.add_parser("delete", help=tr("delete a conversation and its saved prompt "
                                                  "cache states"))
    delete.add_argument("id", help=tr("the conversation's id"))
    delete.set_defaults(handler=delete_command)

    backup_commands.register(actions)


UNTITLED = N_("(untitled)")
#: Message roles as ``show`` labels them.
ROLE_LABELS = {"system": N_("system"), "user": N_("user"), "assistant": N_("assistant")}


def _open(*, check: bool = True) -> AbstractContextManager[Store]:
    """The store; ``check=False`` for commands that only read (see :func:`open_store`)."""
    return open_store(check=check)


def _jsonable(value: Any) -> Any:
    return asdict(value)


def list_command(args: argparse.Namespace) -> int:
    """Print the newest conversations (pinned first)."""
    with _open(check=False) as store:
        conversations = store.list_conversations(limit=args.limit,
                                                 include_archived=args.archived)
    if args.json:
        print_json([_jsonable(c) for c in conversations])
        return 0
    print_table(
        [[c.id, str(c.updated_at)[:19], ("* " if c.pinned else "") + (c.title or tr(UNTITLED))]
         for c in conversations],
        [tr("ID"), tr("UPDATED"), tr("TITLE")],
    )
    return 0


def show_command(args: argparse.Namespace) -> int:
    """Print one conversation's active branch."""
    with _open(check=False) as store:
        conversation = store.get_conversation(args.id)
        branch = store.active_branch(args.id)
    if args.json:
        print_json({"conversation": _jsonable(conversation),
                    "messages": [_jsonable(m) for m in branch]})
        return 0
    print(f"# {conversation.title or tr(UNTITLED)}")
    if conversation.system_prompt:
        print(f"\n[{tr(ROLE_LABELS['system'])}] {conversation.system_prompt}")
    for message in branch:
        role = tr(ROLE_LABELS[message.role])
        label = role if message.status == "complete" else tr(
            "{role} ({status})", role=role, status=tr(STATUS_NAMES[message.status]))
        print(f"\n[{label}] {message.content}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    """Print ranked search hits with snippets."""
    with _open(check=False) as store:
        hits = store.search(args.query, limit=args.limit)
    if args.json:
        print_json([_jsonable(h) for h in hits])
        return 0
    if not hits:
        print(tr("No messages or titles match {query}.", query=repr(args.query)),
              file=sys.stderr)
        return 0
    for hit in hits:
        print(f"{hit.conversation_id}  {hit.conversation_title or tr(UNTITLED)}")
        print(f"    {hit.snippet}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Write a JSON (lossless, re-importable) or Markdown export."""
    with _open(check=False) as store:
        if args.format == "json":
            ids = None if args.all else [args.id]
            text = json.dumps(store.export_conversations(ids), indent=2, ensure_ascii=False)
        else:
            ids = [c.id for c in store.list_conversations(limit=1_000_000,
                                                          include_archived=True)] \
                if args.all else [args.id]
            text = "\n\n---\n\n".join(store.export_markdown(i) for i in ids)
    if args.output is None:
        print(text)
        return 0
    try:
        args.output.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        raise DeskError(N_("Cannot write {path}: {error}"), path=str(args.output),
                        error=str(error.strerror)) from error
    print(tr("Exported to {path}", path=str(args.output)), file=sys.stderr)
    return 0


def import_command(args: argparse.Namespace) -> int:
    """Import conversations from a JSON export."""
    try:
        data = read_export(args.file)
    except FileNotFoundError as error:
        raise DeskError(N_("No such file: {path}"), path=str(args.file)) from error
    except OSError as error:
        raise DeskError(N_("Cannot read {path}: {error}"), path=str(args.file),
                        error=str(error.strerror or error)) from error
    with _open() as store:
        ids = store.import_conversations(data)
    print(ntr("Imported {count} conversation.", "Imported {count} conversations.", len(ids)),
          file=sys.stderr)
    for conversation_id in ids:
        print(conversation_id)
    return 0


def delete_command(args: argparse.Namespace) -> int:
    """Delete one conversation, its messages and its prompt cache states (a window's engine keeps
    its copies in RAM until it unloads: this process cannot reach it)."""
    with _open() as store:
        conversation = store.get_conversation(args.id)
        delete_conversation(store, args.id)
    print(tr("Deleted {name}.", name=repr(conversation.title or args.id)), file=sys.stderr)
    return 0
