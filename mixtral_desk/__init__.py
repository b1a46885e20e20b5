"""Mixtral Desk: run Mixtral-8x7B-Instruct and other GGUF models on your own machine, offline.

The distribution installs three packages: this small root (version and entry point),
``mixtral_desk.core`` (everything a CLI, a test or a server can drive; no Qt) and
``mixtral_desk.desktop`` (the PySide6 window over the core).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mixtral-desk")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
