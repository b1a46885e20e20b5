"""``conversations list | show | search | export | import | delete`` over the store."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixtral_desk.core.cli.output import print_json, print_table
from mixtral_desk.core.errors import DeskError, ImportFormatError
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.store import Store


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``conversations`` and its sub-commands to the CLI."""
    parser = commands.add_parser("conversations", help="list, search, export and import chats")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="newest conversations first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--archived", action="store_true", help="include archived ones")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_command)

    show = actions.add_parser("show", help="the messages of the active branch")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_command)

    search = actions.add_parser("search", help="full-text search over messages and titles")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=search_command)

    export = actions.add_parser("export", help="export one or all conversations")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    export.add_argument("--format", choices=("json", "md"), default="json")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.set_defaults(handler=export_command)

    importing = actions.add_parser("import", help="import a JSON export")
    importing.add_argument("file", type=Path)
    importing.set_defaults(handler=import_command)

    delete = actions.add_parser("delete", help="delete a conversation")
    delete.add_argument("id")
    delete.set_defaults(handler=delete_command)


def _open() -> Store:
    return Store.open(data_paths().ensure().database)


def _jsonable(value: Any) -> Any:
    return asdict(value)


def list_command(args: argparse.Namespace) -> int:
    """Print the newest conversations (pinned first)."""
    with _open() as store:
        conversations = store.list_conversations(limit=args.limit,
                                                 include_archived=args.archived)
    if args.json:
        print_json([_jsonable(c) for c in conversations])
        return 0
    print_table(
        [[c.id, str(c.updated_at)[:19], ("* " if c.pinned else "") + (c.title or "(untitled)")]
         for c in conversations],
        ["ID", "UPDATED", "TITLE"],
    )
    return 0


def show_command(args: argparse.Namespace) -> int:
    """Print one conversation's active branch."""
    with _open() as store:
        conversation = store.get_conversation(args.id)
        branch = store.active_branch(args.id)
    if args.json:
        print_json({"conversation": _jsonable(conversation),
                    "messages": [_jsonable(m) for m in branch]})
        return 0
    print(f"# {conversation.title or '(untitled)'}")
    if conversation.system_prompt:
        print(f"\n[system] {conversation.system_prompt}")
    for message in branch:
        marker = "" if message.status == "complete" else f" ({message.status})"
        print(f"\n[{message.role}{marker}] {message.content}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    """Print ranked search hits with snippets."""
    with _open() as store:
        hits = store.search(args.query, limit=args.limit)
    if args.json:
        print_json([_jsonable(h) for h in hits])
        return 0
    if not hits:
        print(f"No messages or titles match {args.query!r}.", file=sys.stderr)
        return 0
    for hit in hits:
        print(f"{hit.conversation_id}  {hit.conversation_title or '(untitled)'}")
        print(f"    {hit.snippet}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Write a JSON (lossless, re-importable) or Markdown export."""
    with _open() as store:
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
        raise DeskError(f"Cannot write {args.output}: {error.strerror}") from error
    print(f"Exported to {args.output}", file=sys.stderr)
    return 0


def import_command(args: argparse.Namespace) -> int:
    """Import conversations from a JSON export."""
    try:
        data = json.loads(args.file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DeskError(f"No such file: {args.file}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DeskError(f"Cannot read {args.file}: {error}") from error
    except json.JSONDecodeError as error:
        raise ImportFormatError(f"{args.file} is not JSON (line {error.lineno}:"
                                f" {error.msg}).") from error
    with _open() as store:
        ids = store.import_conversations(data)
    print(f"Imported {len(ids)} conversation(s).", file=sys.stderr)
    for conversation_id in ids:
        print(conversation_id)
    return 0


def delete_command(args: argparse.Namespace) -> int:
    """Delete one conversation and its messages."""
    with _open() as store:
        conversation = store.get_conversation(args.id)
        store.delete_conversation(args.id)
    print(f"Deleted {conversation.title or args.id!r}.", file=sys.stderr)
    return 0
