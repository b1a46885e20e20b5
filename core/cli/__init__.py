"""The ``mixtral-desk`` command line: stable commands that other tools and tests drive.

Exit codes: 0 on success, 1 for an error the user can fix (one clear line on stderr, no
traceback), 2 for a usage error, 130 when interrupted. Anything else is a bug and is reported with
a traceback and written to the log.

Messages come in the interface language of the settings file (``interface.language``; "system"
follows ``LANGUAGE``/``LC_ALL``/``LC_MESSAGES``/``LANG``). ``--json`` output is never translated.
``--offline`` (or ``network.offline`` in the settings file) turns every network path off.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from mixtral_desk import __version__
from mixtral_desk.core import i18n, network
from mixtral_desk.core.cli import (
    cache_commands,
    chat_commands,
    conversation_commands,
    convert_commands,
    download_commands,
    hub_commands,
    info_commands,
    plan_commands,
    serve_commands,
)
from mixtral_desk.core.early_settings import read_early_settings
from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import data_paths

log = logging.getLogger("mixtral_desk")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered (help texts in the current
    language, so set the language first)."""
    parser = argparse.ArgumentParser(
        prog="mixtral-desk",
        description=tr("Run Mixtral and other GGUF models on your own machine, offline."),
    )
    parser.add_argument("--version", action="version", version=f"mixtral-desk {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help=tr("check this installation headless in a temporary folder, "
                                "then exit"))
    parser.add_argument("--offline", action="store_true",
                        help=tr("use no network at all (downloads and remote headers refuse "
                                "to start)"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info_commands.register(commands)
    chat_commands.register(commands)
    conversation_commands.register(commands)
    download_commands.register(commands)
    hub_commands.register(commands)
    plan_commands.register(commands)
    serve_commands.register(commands)
    cache_commands.register(commands)
    convert_commands.register(commands)
    return parser


def _self_test(args: argparse.Namespace) -> int:
    from mixtral_desk.core.cli.self_test import run_self_test

    return run_self_test()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    early = read_early_settings(data_paths().settings_file)
    offline = early.offline
    i18n.set_language(i18n.resolve_language(early.language))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.offline or offline:
        network.force_offline()
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if args.self_test:
        handler = _self_test
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except DeskError as error:
        print(tr("mixtral-desk: error: {message}", message=error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n" + tr("mixtral-desk: interrupted"), file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mixtral-desk conversations list | head`
        return 0
