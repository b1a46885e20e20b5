"""Entry point for ``mixtral-desk`` and ``python -m mixtral_desk``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line; see ``mixtral_desk.core.cli`` for the commands."""
    from mixtral_desk.core.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
