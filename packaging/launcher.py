"""The frozen app's entry script (PyInstaller needs a script, not a console-scripts entry point).

``multiprocessing.freeze_support()`` runs first: the engine process is started with ``spawn``,
which in a frozen app re-runs this executable with ``--multiprocessing-fork``; that child must
become the engine worker at once, before anything else is imported.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from mixtral_desk.__main__ import main

    sys.exit(main())
