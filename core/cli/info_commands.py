"""``doctor``, ``models`` and ``inspect``: what this machine, the catalog and a file hold."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mixtral_desk import __version__
from mixtral_desk.core.catalog import fit_hint, load_catalog
from mixtral_desk.core.cli.cache_commands import report_rows
from mixtral_desk.core.cli.output import print_json, print_table
from mixtral_desk.core.engine import probe_backend
from mixtral_desk.core.errors import DeskError, SettingsError
from mixtral_desk.core.gguf.model_file import aligned_lines, inspect_model
from mixtral_desk.core.hardware import detect_hardware
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.session.cache_folder import CacheFolderError, CacheReport, cache_report
from mixtral_desk.core.session.loading import prompt_cache_dir
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.units import format_bytes

_PACKAGES = ("llama-cpp-python", "gguf", "huggingface_hub", "pydantic", "platformdirs",
             "PySide6-Essentials")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the information commands to the CLI."""
    doctor = commands.add_parser("doctor", help=tr("versions, llama.cpp backend, RAM, GPUs, "
                                                   "paths, prompt cache"))
    doctor.add_argument("--json", action="store_true", help=tr("print JSON"))
    doctor.set_defaults(handler=doctor_command)

    models = commands.add_parser("models", help=tr("the model catalog, with local status"))
    models.add_argument("--json", action="store_true", help=tr("print JSON"))
    models.set_defaults(handler=models_command)

    inspect = commands.add_parser("inspect", help=tr("read a GGUF file's header and check it"))
    inspect.add_argument("path", type=Path,
                         help=tr("a .gguf file (the first part of a split model)"))
    inspect.add_argument("--json", action="store_true", help=tr("print JSON"))
    inspect.set_defaults(handler=inspect_command)


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def prompt_cache_state() -> CacheReport | DeskError:
    """What the prompt cache holds, or why that cannot be told (``doctor`` reports, it does not
    fail: the settings file or the folder may be unreadable)."""
    try:
        return cache_report(load_settings().load)
    except (SettingsError, CacheFolderError) as error:
        return error


def doctor_report(cache: CacheReport | DeskError | None = None) -> dict[str, Any]:
    """Everything ``doctor`` shows, as JSON-safe data (``cache``: :func:`prompt_cache_state`,
    worked out here when not given)."""
    paths = data_paths()
    if cache is None:
        cache = prompt_cache_state()
    backend = probe_backend()
    return {
        "mixtral_desk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": _package_versions(),
        "llama_cpp": {
            "backends": list(backend.backends),
            "gpu_offload": backend.gpu_offload,
            "devices": list(backend.devices),
            "system_info": backend.system_info,
        },
        "hardware": detect_hardware().to_json_dict(),
        "paths": {
            "config": str(paths.config_dir),
            "data": str(paths.data_dir),
            "models": str(paths.models_dir),
            "database": str(paths.database),
            "logs": str(paths.log_dir),
            "prompt_cache": str(prompt_cache_dir()),
        },
        # cache --json's object, or the folder and why it cannot be told.
        "prompt_cache": cache.to_json_dict() if isinstance(cache, CacheReport)
        else {"folder": str(prompt_cache_dir()), "error": cache.english},
    }


def doctor_command(args: argparse.Namespace) -> int:
    """Print versions, the llama.cpp backend, hardware, data paths and the prompt cache."""
    cache = prompt_cache_state()
    report = doctor_report(cache)
    if args.json:
        print_json(report)
        return 0
    print(tr("Mixtral Desk {version} on Python {python} ({platform})",
             version=report["mixtral_desk"], python=report["python"],
             platform=report["platform"]))
    missing = tr("not installed")
    for name, installed in report["packages"].items():
        print(f"  {name:<20} {installed or missing}")
    llama = report["llama_cpp"]
    print(tr("llama.cpp backends: {backends}",
             backends=", ".join(llama["backends"]) or tr("none")))
    if llama["gpu_offload"]:
        print("  " + tr("GPU offload: yes ({devices})",
                        devices=", ".join(llama["devices"]) or tr("device list unavailable")))
    else:
        print("  " + tr("GPU offload: no — this llama-cpp-python build runs on the CPU only. "
                        "See the README for CUDA and Metal builds."))
    print(tr("Hardware:"))
    for line in detect_hardware().summary_lines():
        print(f"  {line}")
    print(tr("Data:"))
    labels = {"config": tr("config"), "data": tr("data"), "models": tr("models"),
              "database": tr("database"), "logs": tr("logs"),
              "prompt_cache": tr("prompt cache")}
    for line in aligned_lines([(labels.get(name, name), where)
                               for name, where in report["paths"].items()], min_width=9):
        print(f"  {line}")
    print(tr("Prompt cache:"))
    if isinstance(cache, CacheReport):
        for line in aligned_lines(report_rows(cache)):
            print(f"  {line}")
    else:
        print(f"  {cache}")
    return 0


def models_command(args: argparse.Namespace) -> int:
    """List the catalog with local status and a fit hint for this machine."""
    catalog = load_catalog()
    hardware = detect_hardware()
    models_dir = data_paths().models_dir
    rows: list[dict[str, Any]] = []
    for entry in catalog.entries:
        fit, reason = fit_hint(entry, hardware)
        rows.append({
            "id": entry.id,
            "name": entry.name,
            "quant": entry.quant,
            "size_bytes": entry.total_size,
            "downloaded": entry.is_downloaded(models_dir),
            "fit": fit,
            "fit_reason": reason,
            "repo": entry.repo_id,
            "files": list(entry.files),
        })
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [[r["id"], r["quant"], format_bytes(r["size_bytes"]), r["fit"],
          tr("yes") if r["downloaded"] else "-"] for r in rows],
        [tr("ID"), tr("QUANT"), tr("SIZE"), tr("FIT"), tr("LOCAL")],
    )
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """Print what inspection found in a GGUF file, or the clear error."""
    facts = inspect_model(args.path)
    if args.json:
        print_json(facts.to_json_dict())
        return 0
    for line in facts.summary_lines():
        print(line)
    return 0

