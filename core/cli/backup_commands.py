"""``conversations backups | backup | restore | check``, and how every command opens the store.

:func:`open_store` is the CLI's one way to open the conversation database: a damaged one is set
aside and salvaged first (core/store/recovery.py) and the report goes to stderr; closing it takes
a backup when one is due and something changed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mixtral_desk.core.cli.output import print_json, print_table
from mixtral_desk.core.errors import CorruptDatabaseError, DeskError, StoreError
from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.paths import data_paths, window_process
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.store import Store
from mixtral_desk.core.store import backups as store_backups
from mixtral_desk.core.store.recovery import open_or_recover, recover, restore


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the backup sub-commands to ``conversations``."""
    listing = actions.add_parser("backups", help=tr("list the automatic backups, newest first"))
    listing.add_argument("--json", action="store_true", help=tr("print JSON"))
    listing.set_defaults(handler=backups_command)

    backup = actions.add_parser("backup", help=tr("back the conversations up now"))
    backup.set_defaults(handler=backup_command)

    restoring = actions.add_parser("restore", help=tr("replace the conversations with a backup "
                                                      "(the current file is kept aside)"))
    restoring.add_argument("backup", help=tr("a backup's file name (see backups) or path"))
    restoring.set_defaults(handler=restore_command)

    check = actions.add_parser("check", help=tr("check the conversation database; salvage it "
                                                "if it is damaged"))
    check.set_defaults(handler=check_command)


def _database() -> Path:
    return data_paths().ensure().database


def _budget_bytes() -> int:
    return load_settings().backups.budget_mb * 1_000_000


@contextmanager
def open_store(*, check: bool = True) -> Iterator[Store]:
    """The conversation store, salvaged first if damaged; backed up on close when due.

    ``check``: run ``PRAGMA quick_check`` first (seconds on a million messages), salvaging on
    damage. Commands that only read pass ``False``: damage that the open itself sees is still
    salvaged, damage met while reading is salvaged then (the command stops with a typed error
    saying to run it again), and the first write runs the check.

    While the window holds the data folder, nothing is salvaged from here (the window does it).

    Raises:
        StoreError: damage was met while the command read (after salvaging it); or as
            :func:`~mixtral_desk.core.store.recovery.open_or_recover`.
        CorruptDatabaseError: the file is damaged and the window has it open.
    """
    path = _database()
    # While the window has the file open it salvages it itself: never move it from under it.
    window_open = window_process(data_paths().instance_lock) is not None
    if window_open:
        store, report = Store.open(path), None
    else:
        store, report = open_or_recover(path, check=check)
    if report is not None:
        print(str(report.message()), file=sys.stderr)
    try:
        yield store
    except CorruptDatabaseError:
        if window_open:
            raise
        # Damage met while reading (the open did not see it): salvage now, as the check would.
        store.close()
        print(str(recover(path).message()), file=sys.stderr)
        raise StoreError(N_("The command stopped at the damage. The salvaged database is in "
                            "place: run the command again.")) from None
    finally:
        changed = store.changes > 0
        store.close()
        if changed and store_backups.is_due(path, load_settings().backups.interval_minutes):
            try:
                store_backups.take_backup(path, budget_bytes=_budget_bytes())
            except StoreError as error:
                print(str(error), file=sys.stderr)


def backups_command(args: argparse.Namespace) -> int:
    """List the backups."""
    found = store_backups.list_backups(_database())
    if args.json:
        print_json([{"path": str(b.path), "taken_at": b.taken_at.isoformat(), "size": b.size,
                     "before_version": b.before_version} for b in found])
        return 0
    if not found:
        print(tr("No backups yet."), file=sys.stderr)
        return 0
    print_table([[b.taken_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
                  f"{b.size / 1e6:.1f} MB", b.path.name] for b in found],
                [tr("TAKEN"), tr("SIZE"), tr("FILE")])
    return 0


def backup_command(args: argparse.Namespace) -> int:
    """Back up now."""
    path = _database()
    if not path.is_file():
        raise StoreError(N_("There is no conversation database at {path} to back up yet."),
                         path=str(path))
    taken = store_backups.take_backup(path, budget_bytes=_budget_bytes())
    print(tr("Backed up to {path}", path=str(taken.path)), file=sys.stderr)
    return 0


def restore_command(args: argparse.Namespace) -> int:
    """Put a backup in place of the conversation database."""
    path = _database()
    chosen = Path(args.backup).expanduser()
    if not chosen.is_file():
        chosen = store_backups.backups_folder(path) / args.backup
    if not chosen.is_file():
        raise DeskError(N_("No backup named {name}; `mixtral-desk conversations backups` lists "
                           "them."), name=args.backup)
    if (pid := window_process(data_paths().instance_lock)) is not None:
        raise DeskError(N_("The Mixtral Desk window (process {pid}) has the conversations open; "
                           "close it first, or restore from the window (Restore from a "
                           "backup…)."), pid=pid)
    kept = restore(path, chosen)
    if kept is None:
        print(tr("Restored {backup}.", backup=str(chosen)), file=sys.stderr)
    else:
        print(tr("Restored {backup}; the conversations from before are kept at {path}.",
                 backup=str(chosen), path=str(kept)), file=sys.stderr)
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Check the database with counts; salvage it when damaged (exit 1: damage was found).

    Raises:
        DeskError: the window has the data folder open (it checks and salvages on its own).
    """
    path = _database()
    if (pid := window_process(data_paths().instance_lock)) is not None:
        raise DeskError(N_("The Mixtral Desk window (process {pid}) has the conversations open "
                           "and checks them itself; close it to check from here."), pid=pid)
    store, report = open_or_recover(path, check=False)
    if report is None:
        problems = store.check()
        if problems:
            store.close()
            report = recover(path)
            store = Store.open(path)
    with store:
        conversations = store.count_conversations(include_archived=True)
        messages = store.count_messages()
    if report is not None:
        print(str(report.message()), file=sys.stderr)
    else:
        print(tr("The conversation database is sound: {conversations} conversations, "
                 "{messages} messages, {backups} backups.", conversations=conversations,
                 messages=messages, backups=len(store_backups.list_backups(path))))
    return 0 if report is None else 1
