"""Where Mixtral Desk keeps its files.

Every path the app writes comes from here. By default they are platformdirs' per-user folders;
when the environment variable ``MIXTRAL_DESK_HOME`` is set, everything lives under that one folder
instead (tests and portable installs use this).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

HOME_ENV = "MIXTRAL_DESK_HOME"
APP_NAME = "mixtral-desk"


INSTANCE_LOCK_NAME = "instance.lock"


def window_process(lock: Path) -> int | None:
    """The process id of a running window holding ``lock`` (see :attr:`DataPaths.instance_lock`),
    or ``None`` when no live process holds it. Raises nothing."""
    import psutil

    try:
        pid = int(lock.read_text(encoding="ascii", errors="replace").split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and psutil.pid_exists(pid) else None


@dataclass(frozen=True)
class DataPaths:
    """The folders and files of one Mixtral Desk installation."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @property
    def models_dir(self) -> Path:
        """Downloaded and imported models."""
        return self.data_dir / "models"

    @property
    def database(self) -> Path:
        """The SQLite conversation store."""
        return self.data_dir / "conversations.sqlite3"

    @property
    def settings_file(self) -> Path:
        """The user's settings (JSON, written by pydantic)."""
        return self.config_dir / "settings.json"

    @property
    def hub_settings_file(self) -> Path:
        """The Hugging Face Hub endpoint (mirror) and token (JSON, owner-only)."""
        return self.config_dir / "hub.json"

    @property
    def remote_keys_file(self) -> Path:
        """API keys saved for remote engines, URL → key (JSON, owner-only)."""
        return self.config_dir / "remote-keys.json"

    @property
    def instance_lock(self) -> Path:
        """The lock file the running window holds on this data folder (Qt's ``QLockFile``: the
        holder's process id on its first line)."""
        return self.data_dir / INSTANCE_LOCK_NAME

    @property
    def downloads_database(self) -> Path:
        """The download jobs (SQLite, WAL)."""
        return self.data_dir / "downloads.sqlite3"

    @property
    def engine_log(self) -> Path:
        """llama.cpp's own log lines, written by the engine process."""
        return self.log_dir / "engine.log"

    @property
    def app_log(self) -> Path:
        """The application's rotating log."""
        return self.log_dir / "mixtral-desk.log"

    def ensure(self) -> DataPaths:
        """Create every folder that does not exist yet and return ``self``.

        Raises:
            OSError: a folder cannot be created (permissions, read-only or full disk).
        """
        for folder in (self.config_dir, self.data_dir, self.cache_dir, self.log_dir,
                       self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def data_paths() -> DataPaths:
    """The paths for this process, honouring ``MIXTRAL_DESK_HOME``; nothing is created."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser().resolve()
        return DataPaths(
            config_dir=root / "config",
            data_dir=root / "data",
            cache_dir=root / "cache",
            log_dir=root / "logs",
        )
    return DataPaths(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        log_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
    )
