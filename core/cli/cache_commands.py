"""``cache`` and ``cache clear``: the prompt cache's folder, what it holds and its budget.

Both work without an engine. Clearing while the window has a model loaded is safe: the engine
replaces files atomically, and it keeps the states it holds in RAM until it unloads.
"""

from __future__ import annotations

import argparse

from mixtral_desk.core.cli.output import print_json
from mixtral_desk.core.gguf.model_file import aligned_lines
from mixtral_desk.core.i18n import ntr, tr
from mixtral_desk.core.session.cache_folder import CacheReport, cache_report, clear_cache
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.units import format_bytes


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cache`` and ``cache clear`` to the CLI."""
    cache = commands.add_parser(
        "cache", help=tr("the prompt cache: its folder, size and budget; cache clear empties it"),
        description=tr("The prompt cache keeps the processed prompt of each conversation on "
                       "disk, so that going back to a conversation answers sooner. Without an "
                       "action: where it is, what it holds and its disk budget."))
    cache.add_argument("--json", action="store_true", help=tr("print JSON"))
    cache.set_defaults(handler=cache_command)
    actions = cache.add_subparsers(dest="action", metavar="ACTION")
    clear = actions.add_parser(
        "clear", help=tr("remove every saved state of every model (a loaded model keeps its copies "
                         "in RAM until it is unloaded)"),
        description=tr("Remove every saved state of every model from the prompt cache folder. "
                       "Safe while the window runs (files are replaced atomically), but a loaded "
                       "model keeps the states it holds in RAM until it is unloaded. The next "
                       "reply in an old conversation evaluates its prompt again."))
    clear.set_defaults(handler=clear_command)


def report_rows(report: CacheReport) -> list[tuple[str, str]]:
    """What the folder holds and its budget, as (label, value) rows (``cache``, ``doctor``)."""
    tokens = f"{report.tokens:,}"
    return [
        (tr("holds"), ntr("{count} saved state ({size}, {tokens} tokens)",
                          "{count} saved states ({size}, {tokens} tokens)", report.entries,
                          size=format_bytes(report.bytes), tokens=tokens)),
        (tr("models"), str(report.models)),
        (tr("budget"), report.budget.text()),
    ]


def cache_command(args: argparse.Namespace) -> int:
    """Print the prompt cache's folder, what it holds and its budget.

    Raises:
        SettingsError: the settings file cannot be read.
        CacheFolderError: the folder cannot be read.
    """
    report = cache_report(load_settings().load)
    if args.json:
        print_json(report.to_json_dict())
        return 0
    rows = [(tr("folder"), str(report.folder)), *report_rows(report)]
    print(tr("Prompt cache:"))
    for line in aligned_lines(rows):
        print(f"  {line}")
    return 0


def clear_command(args: argparse.Namespace) -> int:
    """Remove every entry from the prompt cache folder and say what that freed.

    Raises:
        CacheFolderError: the folder cannot be read.
    """
    from mixtral_desk.core.session.loading import prompt_cache_dir

    folder = prompt_cache_dir()
    freed = clear_cache(folder)
    print(tr("Cleared the prompt cache ({path}): {size} freed.", path=str(folder),
             size=format_bytes(freed)))
    return 0
