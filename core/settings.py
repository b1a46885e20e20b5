"""The user's settings: a pydantic model with a schema version, saved as JSON in the config folder.

A settings file that is malformed or was written by a newer Mixtral Desk is never overwritten: it
raises :class:`SettingsError` naming the file and the problem, and the caller decides (the GUI
offers to reset it, after keeping a copy).

An older file is upgraded as it is read, by the ordered functions of :data:`MIGRATIONS` (one per
schema version); the file itself changes only when the settings are next saved. A file without a
``schema_version`` counts as version 1 (every version writes it).

Schema versions:

1. The first.
2. "Automatic" GPU layers became the default (it plans 0 GPU layers on a CPU-only build, so it
   costs nothing there). Version 1 wrote every value, so a file still holding version 1's
   defaults — 0 GPU layers, Automatic off, no expert layers in RAM — is taken as never changed
   and moves to Automatic; any other GPU choice stays. (A user who chose exactly those values
   under version 1 cannot be told apart; from version 2 on, such a choice is kept.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from mixtral_desk.core.atomic_write import write_atomic
from mixtral_desk.core.engine.options import SamplingOptions
from mixtral_desk.core.errors import SettingsError, UserText
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.store.backups import DEFAULT_BUDGET_MB, DEFAULT_INTERVAL_MINUTES
from mixtral_desk.core.untrusted_json import MAX_SETTINGS_BYTES, LimitError, load_limited_json

SCHEMA_VERSION = 2


class LoadDefaults(BaseModel):
    """How models are loaded unless a command or conversation says otherwise."""

    #: GPU layers when :attr:`gpu_layers_auto` is off (-1: all).
    n_gpu_layers: int = Field(default=0, ge=-1)
    #: Plan GPU layers and expert placement for this machine at each load (``n_gpu_layers`` and
    #: ``n_cpu_moe`` are then ignored). The default since settings version 2.
    gpu_layers_auto: bool = True
    #: Layers, counted from the first, whose expert tensors stay in RAM (MoE models).
    n_cpu_moe: int = Field(default=0, ge=0)
    #: Context length in tokens; ``None``: chosen at each load for this machine and model — 8k,
    #: longer when memory is plentiful, shorter when it is tight (see
    #: :mod:`mixtral_desk.core.context_size`).
    n_ctx: int | None = Field(default=None, ge=256, le=1_048_576)
    n_threads: int | None = Field(default=None, ge=1, le=1024)
    n_batch: int = Field(default=512, ge=1)
    flash_attn: bool = False
    kv_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    #: The prompt cache's disk budget in GiB (saved conversation states, so that going back to a
    #: conversation does not evaluate it again); ``None``: min(8 GiB, 10 % of the free disk
    #: space); 0: no prompt cache.
    prompt_cache_gib: float | None = Field(default=None, ge=0, le=1024)
    #: Unload a model nobody has used for this many minutes, giving its memory back (0: never).
    idle_unload_minutes: int = Field(default=30, ge=0, le=10_080)


class ServerSettings(BaseModel):
    """The local OpenAI-compatible API server the GUI's "Serve API" toggle starts."""

    #: The port it listens on (on 127.0.0.1); 0 picks a free one.
    api_port: int = Field(default=8080, ge=0, le=65535)


class InterfaceSettings(BaseModel):
    """How the desktop app looks and which language it speaks."""

    #: ``"system"`` follows the system locale; else a key of
    #: :data:`mixtral_desk.core.i18n.LANGUAGES`.
    language: Literal["system", "en", "zh_CN"] = "system"
    #: ``"system"`` follows the system's light or dark appearance.
    theme: Literal["system", "light", "dark"] = "system"


class NetworkSettings(BaseModel):
    """What may use the network. Chatting, searching and exporting never do."""

    #: Offline mode: no network at all (downloads, Hub search and remote headers say they need it).
    offline: bool = False


class BackupSettings(BaseModel):
    """Automatic backups of the conversation database (see core/store/backups.py)."""

    #: Back up every this many minutes of use when something changed (0: only on close).
    interval_minutes: int = Field(default=DEFAULT_INTERVAL_MINUTES, ge=0, le=10_080)
    #: The most disk space the rotated backups may take together, in MB (the newest is kept).
    budget_mb: int = Field(default=DEFAULT_BUDGET_MB, ge=1)


class Settings(BaseModel):
    """Everything the user can set; unknown keys from hand edits are rejected."""

    model_config = {"extra": "forbid"}

    schema_version: int = SCHEMA_VERSION
    load: LoadDefaults = Field(default_factory=LoadDefaults)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    server: ServerSettings = Field(default_factory=ServerSettings)
    interface: InterfaceSettings = Field(default_factory=InterfaceSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    backups: BackupSettings = Field(default_factory=BackupSettings)
    last_model: str | None = None


def _automatic_gpu_layers(raw: dict[str, Any]) -> dict[str, Any]:
    """1 → 2: version 1's untouched GPU defaults become "Automatic" (see the module's doc).

    Version 1's default (Automatic off) is written out where the file leaves it out, so that
    the new default does not replace a choice of GPU layers made before Automatic existed.
    """
    load = raw.get("load")
    if load is None:
        load = raw["load"] = {}
    if isinstance(load, dict):
        untouched = load.get("gpu_layers_auto", False) is False \
            and load.get("n_gpu_layers", 0) == 0 and load.get("n_cpu_moe", 0) == 0
        load["gpu_layers_auto"] = True if untouched else load.get("gpu_layers_auto", False)
    return raw


#: ``MIGRATIONS[v - 1]`` upgrades the raw JSON of schema version ``v`` to ``v + 1``; they run in
#: order. Each gets a dict and may find anything in it (the file was edited by hand, perhaps):
#: what it does not understand it leaves for validation to report.
MIGRATIONS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (_automatic_gpu_layers,)


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` settings JSON of any older schema version upgraded to :data:`SCHEMA_VERSION` (a
    missing version counts as 1; a version that is not a whole number is left for validation to
    refuse). Raises nothing."""
    found = raw.get("schema_version", 1)
    if not isinstance(found, int) or isinstance(found, bool) or found >= SCHEMA_VERSION:
        return raw
    for upgrade in MIGRATIONS[max(found, 1) - 1:]:
        raw = upgrade(raw)
    return {**raw, "schema_version": SCHEMA_VERSION}


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings file; a missing file gives the defaults.

    Raises:
        SettingsError: the file is unreadable, not JSON, has an invalid value, or was written by a
            newer version. The message names the file and the field.
    """
    path = path or data_paths().settings_file
    try:
        with path.open("rb") as file:
            text = file.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        return Settings()
    except OSError as error:
        raise SettingsError(N_("Cannot read the settings file {path}: {problem}"), path=path,
                            problem=error.strerror) from error
    try:
        raw = load_limited_json(text, max_bytes=MAX_SETTINGS_BYTES)
    except LimitError as error:
        if not error.field:
            raise SettingsError(N_("The settings file {path} cannot be used: it {problem}."),
                                path=path, problem=error.problem) from None
        raise SettingsError(N_("The settings file {path} cannot be used: {field} {problem}."),
                            path=path, field=error.field, problem=error.problem) from None
    except json.JSONDecodeError as error:
        raise SettingsError(N_("The settings file {path} is not valid JSON (line {line}, column "
                               "{column}: {problem})."), path=path, line=error.lineno,
                            column=error.colno, problem=error.msg) from error
    if not isinstance(raw, dict):
        raise SettingsError(N_("The settings file {path} does not hold a JSON object."),
                            path=path)
    found = raw.get("schema_version", 1)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise SettingsError(N_("The settings file {path} has an invalid value for "
                               "schema_version: {problem}."), path=path,
                            problem=UserText(N_("it should be a whole number such as 2")))
    if found > SCHEMA_VERSION:
        raise SettingsError(N_("The settings file {path} was written by a newer Mixtral Desk "
                               "(settings version {found}; this version knows {known})."),
                            path=path, found=found, known=SCHEMA_VERSION)
    unknown = _unknown_keys(raw)
    if unknown:
        raise SettingsError(N_("The settings file {path} has a setting this version does not "
                               "know: {field}. Remove it, or use the Mixtral Desk that wrote "
                               "it."), path=path, field=unknown)
    try:
        return Settings.model_validate(migrate(raw))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise SettingsError(N_("The settings file {path} has an invalid value for {field}: "
                               "{problem}."), path=path, field=field,
                            problem=first["msg"]) from error


def _unknown_keys(raw: dict[str, Any]) -> str | None:
    """The first key of a section (``load.n_gpu_layerz``) that no setting has, or ``None``.

    Pydantic would drop such a key silently and the next save would lose it, so it is refused
    instead (top-level keys are refused by ``extra="forbid"``).
    """
    for name, field in Settings.model_fields.items():
        section, model = raw.get(name), field.annotation
        if isinstance(section, dict) and isinstance(model, type) and issubclass(model, BaseModel):
            for key in section:
                if key not in model.model_fields:
                    return f"{name}.{key}"
    return None


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write the settings atomically (a crash leaves the old file or the new one, never half).

    Raises:
        SettingsError: the file cannot be written (permissions, full disk).
    """
    path = path or data_paths().settings_file
    try:
        write_atomic(path, settings.model_dump_json(indent=2))
    except OSError as error:
        raise SettingsError(N_("Cannot save the settings to {path}: {problem}"), path=path,
                            problem=error.strerror) from error
