"""Models on this machine: downloaded, imported (linked in place or copied), or in the HF cache.

Each model folder under the models folder (``models_dir / <name>``) holds the model file(s) and a
small manifest ``model.json`` written once the files verified (or were imported). Only files named
in a manifest are listed, so partial data (``*.part``) and files that failed verification are
never offered as models. A linked import keeps the user's file where it is; its manifest points
at it and deleting the model never deletes the user's file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic_write import write_atomic
from ..errors import DeskError, GGUFError
from ..gguf.model_file import inspect_model, split_part_paths
from ..i18n import N_
from .errors import LocalModelNotFoundError

MANIFEST = "model.json"
Source = Literal["download", "linked", "copied", "hf-cache"]


@dataclass(frozen=True)
class LocalModel:
    """A model the app can load. ``path`` is the file to open (part 1 of a split model)."""

    name: str
    path: Path
    files: tuple[Path, ...]
    size: int
    source: Source
    repo_id: str | None = None
    commit: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "files": [str(f) for f in self.files],
                "size_bytes": self.size, "source": self.source, "repo": self.repo_id,
                "commit": self.commit}


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a model folder; ``{}`` when missing or unreadable."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    """Write the manifest atomically. Raises OSError (e.g. disk full)."""
    write_atomic(folder / MANIFEST, json.dumps(data, indent=2))


def record_download(folder: Path, *, primary: str, files: list[str], repo_id: str, commit: str,
                    sha256: list[str | None], endpoint: str) -> None:
    """Add a verified download to the folder's manifest (a folder may hold several quants)."""
    manifest = read_manifest(folder)
    models = [m for m in manifest.get("models", []) if m.get("primary") != primary]
    models.append({"primary": primary, "files": files, "source": "download", "repo": repo_id,
                   "commit": commit, "sha256": sha256, "endpoint": endpoint})
    write_manifest(folder, {"version": 1, "models": models})


def list_local_models(models_dir: Path) -> list[LocalModel]:
    """Every complete model under ``models_dir``, by folder name. Never raises for a bad folder."""
    found: list[LocalModel] = []
    if not models_dir.is_dir():
        return found
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        models = read_manifest(folder).get("models", [])
        for entry in models if isinstance(models, list) else []:
            model = _from_manifest(folder, entry, many=len(models) > 1)
            if model is not None:
                found.append(model)
    return found


def _from_manifest(folder: Path, entry: dict[str, Any], many: bool) -> LocalModel | None:
    try:
        source = entry.get("source", "download")
        if source == "linked":
            files = [Path(f) for f in entry["files"]]
        else:
            files = [folder / f for f in entry["files"]]
        if not files or not all(f.is_file() for f in files):
            return None
        size = sum(f.stat().st_size for f in files)
        primary = Path(entry["primary"])
        path = primary if primary.is_absolute() else folder / primary
        name = f"{folder.name}/{path.name}" if many else folder.name
        return LocalModel(name, path, tuple(files), size, source, entry.get("repo"),
                          entry.get("commit"))
    except (OSError, KeyError, TypeError, ValueError):
        return None


def find_local_model(models_dir: Path, name: str) -> LocalModel:
    """The local model called ``name`` (a folder name, ``folder/file``, or a file path).

    Raises:
        LocalModelNotFoundError: nothing matches.
    """
    for model in list_local_models(models_dir):
        if name in (model.name, model.path.name, str(model.path)):
            return model
    raise LocalModelNotFoundError(N_("No local model {name!r} (see `mixtral-desk local`)."),
                                  name=name)


def import_model(path: Path, models_dir: Path, *, copy: bool = False) -> LocalModel:
    """Make an existing .gguf (all parts of a split one) a local model: linked in place or copied.

    The file is inspected first, as for ``inspect``; a copy is written as ``*.part`` and renamed
    when complete, so a failed copy is never listed.

    Raises:
        ModelFileNotFoundError, GGUFError: the file is missing or not a usable GGUF model.
        DeskError: a model of that name exists already, or the copy failed (e.g. disk full).
    """
    inspect_model(path)
    parts = [p.resolve() for p in split_part_paths(path)]
    stem = parts[0].name.removesuffix(".gguf")
    folder = models_dir / _free_name(models_dir, stem)
    if not copy:
        write_manifest(folder, {"version": 1, "models": [{
            "primary": str(parts[0]), "files": [str(p) for p in parts], "source": "linked"}]})
        return find_local_model(models_dir, folder.name)
    folder.mkdir(parents=True)
    try:
        for part in parts:
            target = folder / part.name
            _copy_atomic(part, target)
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise DeskError(N_("Cannot copy {path} into {folder}: {reason}"), path=path,
                        folder=models_dir, reason=error.strerror or error) from error
    write_manifest(folder, {"version": 1, "models": [{
        "primary": parts[0].name, "files": [p.name for p in parts], "source": "copied"}]})
    return find_local_model(models_dir, folder.name)


def _free_name(models_dir: Path, stem: str) -> str:
    name, n = stem, 2
    while (models_dir / name).exists():
        name, n = f"{stem}-{n}", n + 1
    return name


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy a (big) model file as ``<target>.part``, streamed, then rename it to ``target``.

    Not :func:`~mixtral_desk.core.atomic_write.write_atomic`, which holds the data in memory.

    Raises:
        OSError: the copy failed (e.g. disk full); the partial file is removed.
    """
    partial = target.with_name(target.name + ".part")
    try:
        shutil.copyfile(source, partial)
        partial.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def delete_local_model(models_dir: Path, name: str) -> LocalModel:
    """Delete a model: its files (never a linked user's file), partial data and manifest entry.

    Raises:
        LocalModelNotFoundError: no such model.
        OSError: a file cannot be removed.
    """
    model = find_local_model(models_dir, name)
    folder = models_dir / model.name.split("/")[0]
    manifest = read_manifest(folder)
    keep = [m for m in manifest.get("models", []) if _primary_path(folder, m) != model.path]
    if model.source != "linked":
        for file in model.files:
            for leftover in (file, file.with_name(file.name + ".part"),
                             file.with_name(file.name + ".part.json")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
    if keep:
        write_manifest(folder, {"version": 1, "models": keep})
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return model


def _primary_path(folder: Path, entry: dict[str, Any]) -> Path:
    primary = Path(str(entry.get("primary", "")))
    return primary if primary.is_absolute() else folder / primary


def scan_hf_cache(cache_dir: Path | None = None) -> list[LocalModel]:
    """GGUF models already in the Hugging Face cache (``scan_cache_dir``), to offer for import.

    Never raises: a missing or unreadable cache gives an empty list.
    """
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir)
    except (OSError, ValueError, DeskError, Exception):  # CacheNotFound and friends
        return []
    found: list[LocalModel] = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            ggufs = sorted((f for f in revision.files if f.file_name.lower().endswith(".gguf")),
                           key=lambda f: f.file_name)
            for file in ggufs:
                path = Path(file.file_path)
                if not _is_first_part(path):
                    continue
                parts = _cache_parts(path)
                found.append(LocalModel(
                    f"{repo.repo_id}/{path.name}", path, parts,
                    sum(p.stat().st_size for p in parts if p.exists()), "hf-cache",
                    repo.repo_id, revision.commit_hash))
    return found


def _is_first_part(path: Path) -> bool:
    try:
        parts = split_part_paths(path)
    except (GGUFError, OSError):
        return True
    return not parts or parts[0].name == path.name


def _cache_parts(path: Path) -> tuple[Path, ...]:
    try:
        return tuple(split_part_paths(path)) or (path,)
    except (GGUFError, OSError):
        return (path,)


def models_to_offer(models_dir: Path, extra: Iterable[Path] = ()) -> list[LocalModel]:
    """The models a front end offers to load, by name: the complete models of ``models_dir``
    (:func:`list_local_models`; unverified ``*.gguf`` files are never offered) and the ``extra``
    files the user opened from elsewhere, where they still exist. Reads the disk; never raises.
    """
    found = {model.path: model for model in list_local_models(models_dir)}
    for path in extra:
        try:
            if path not in found and path.is_file():
                found[path] = LocalModel(name=path.stem, path=path, files=(path,),
                                         size=path.stat().st_size, source="linked")
        except OSError:
            continue
    return sorted(found.values(), key=lambda model: model.name.lower())
