"""Local models: import (link or copy), list, delete, and GGUF files found in the HF cache."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from mixtral_desk.core.downloads import local
from mixtral_desk.core.downloads.errors import LocalModelNotFoundError
from mixtral_desk.core.downloads.jobs import JobStore
from mixtral_desk.core.downloads.local import (
    delete_local_model,
    import_model,
    list_local_models,
    scan_hf_cache,
)
from mixtral_desk.core.downloads.storage import join_pieces
from mixtral_desk.core.errors import GGUFError
from mixtral_desk.core.paths import DataPaths
from tests.hub_server import LoopbackHub


def test_linked_import_is_listed_and_delete_keeps_the_users_file(
        tiny_model: Path, data_home: DataPaths) -> None:
    model = import_model(tiny_model, data_home.models_dir)
    assert model.source == "linked" and model.path == tiny_model.resolve()
    assert [m.name for m in list_local_models(data_home.models_dir)] == [model.name]

    delete_local_model(data_home.models_dir, model.name)
    assert tiny_model.exists()
    assert list_local_models(data_home.models_dir) == []


def test_copied_import_is_a_real_copy(tiny_model: Path, data_home: DataPaths) -> None:
    model = import_model(tiny_model, data_home.models_dir, copy=True)
    assert model.source == "copied"
    assert model.path.parent.parent == data_home.models_dir
    assert model.path.read_bytes() == tiny_model.read_bytes()
    assert not list(model.path.parent.glob("*.part"))
    again = import_model(tiny_model, data_home.models_dir, copy=True)
    assert again.name != model.name  # a second import gets its own name
    delete_local_model(data_home.models_dir, model.name)
    assert not model.path.exists() and tiny_model.exists()


def test_an_interrupted_copy_leaves_no_partial_file(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed copy of a big model removes its ``.part`` when it fails (disk full, Ctrl-C)."""
    folder = tmp_path / "copy"
    folder.mkdir()
    import shutil

    real_copyfile = shutil.copyfile

    def copy_then_fail(source: Path, target: Path) -> None:
        real_copyfile(source, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        local._copy_atomic(tiny_model, folder / "model.gguf")
    assert list(folder.iterdir()) == []


def test_a_failed_join_of_old_pieces_keeps_the_pieces_only(tmp_path: Path) -> None:
    folder = tmp_path / "pieces"
    folder.mkdir()
    (folder / "old.gguf.part1of2").write_bytes(b"GGUF" + bytes(10))  # part 2 is missing
    with pytest.raises(FileNotFoundError):
        join_pieces(folder, ["old.gguf.part1of2", "old.gguf.part2of2"])
    assert [p.name for p in folder.iterdir()] == ["old.gguf.part1of2"]


def test_import_refuses_what_is_not_a_model(tmp_path: Path, data_home: DataPaths) -> None:
    page = tmp_path / "page.gguf"
    page.write_text("<html>not a model</html>")
    with pytest.raises(GGUFError):
        import_model(page, data_home.models_dir)
    assert list_local_models(data_home.models_dir) == []


def test_partial_and_unverified_files_are_never_listed(data_home: DataPaths) -> None:
    folder = data_home.models_dir / "owner--model"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(b"GGUF" + bytes(100))
    (folder / "stray.gguf").write_bytes(b"GGUF" + bytes(100))  # no manifest names it
    assert list_local_models(data_home.models_dir) == []
    with pytest.raises(LocalModelNotFoundError):
        delete_local_model(data_home.models_dir, "owner--model")


def test_gguf_models_in_the_hf_cache_are_found(tiny_model: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_hub_download

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hf-cache"
    with LoopbackHub() as hub:
        hub.add_repo("owner/tiny", {"tiny.gguf": tiny_model.read_bytes(), "README.md": b"hi"})
        hf_hub_download("owner/tiny", "tiny.gguf", cache_dir=cache, endpoint=hub.url,
                        token=False)
        hf_hub_download("owner/tiny", "README.md", cache_dir=cache, endpoint=hub.url,
                        token=False)
    [found] = scan_hf_cache(cache)
    assert found.source == "hf-cache" and found.repo_id == "owner/tiny"
    assert found.path.name == "tiny.gguf" and found.size == tiny_model.stat().st_size
    assert scan_hf_cache(tmp_path / "nothing-here") == []


def test_job_store_survives_reopening_and_refuses_newer_schema(data_home: DataPaths) -> None:
    path = data_home.downloads_database
    store = JobStore(path)
    job = store.create(model_id="m", repo_id="o/m", revision=None, requested=["m.gguf"],
                       dest_dir=data_home.models_dir / "m", endpoint="http://127.0.0.1:1")
    store.close()
    reopened = JobStore(path)
    assert reopened.get(job.id[:3]).requested == ["m.gguf"]
    reopened._db.execute("PRAGMA user_version=99")
    reopened.close()
    with pytest.raises(Exception, match="newer Mixtral Desk"):
        JobStore(path)
