"""Installs the test socket guard (tests/net_guard.py) in every Python process started with this
folder on PYTHONPATH and ``MIXTRAL_DESK_NET_GUARD_LOG`` set (see ``net_guard.guarded_env``).

Loaded by the interpreter at start-up, before the program; it imports only the standard library.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

if os.environ.get("MIXTRAL_DESK_NET_GUARD_LOG"):
    _path = Path(__file__).resolve().parent.parent.parent / "net_guard.py"
    _spec = importlib.util.spec_from_file_location("mixtral_desk_test_net_guard", _path)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_spec.name] = _module
        _spec.loader.exec_module(_module)
        _module.install_from_env()
