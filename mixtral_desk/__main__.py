"""Entry point for ``mixtral-desk`` and ``python -m mixtral_desk``.

With no arguments (or ``gui``, optionally with ``--offline``) it opens the desktop window; any
other command goes to the
Qt-free command line in :mod:`mixtral_desk.core.cli`, which works where Qt is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import sys

#: Arguments that open the window (anything else is a CLI command).
WINDOW_ARGUMENTS = frozenset({"gui", "--exit-after-paint", "--offline"})


def main(argv: list[str] | None = None) -> int:
    """Open the window, or run one CLI command; returns the exit code."""
    multiprocessing.freeze_support()  # the engine process is spawned; frozen apps need this
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("gui", "--exit-after-paint") or set(args) <= WINDOW_ARGUMENTS:
        return _open_window()
    from mixtral_desk.core.cli import main as cli_main

    return cli_main(args)


def _open_window() -> int:
    if importlib.util.find_spec("mixtral_desk.desktop.app") is None:
        from mixtral_desk.core.cli import build_parser

        print("The desktop window is not part of this build yet; the command line is:\n")
        build_parser().print_help()
        return 0
    app = importlib.import_module("mixtral_desk.desktop.app")
    return int(app.main())


if __name__ == "__main__":
    sys.exit(main())
