"""write_atomic: the old file or the new one, never half, and no temporary file left behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mixtral_desk.core.atomic_write import write_atomic


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder of its own (``tmp_path`` also holds the test's data home)."""
    path = tmp_path / "here"
    path.mkdir()
    return path


def test_writes_text_and_bytes_creating_the_folder(folder: Path) -> None:
    target = folder / "new" / "folder" / "file.json"
    write_atomic(target, "前 {}\n")
    assert target.read_text(encoding="utf-8") == "前 {}\n"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = folder / "settings.json"
    target.write_text("old", encoding="utf-8")

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as caught:
        write_atomic(target, "new content")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in folder.iterdir()] == ["settings.json"]


def test_an_interrupted_write_leaves_no_temporary_file(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even Ctrl-C (not an OSError) in the middle removes the temporary file."""
    target = folder / "keys.json"

    def interrupted(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "{}", private=True)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_private_files_are_owner_only_and_others_follow_the_umask(folder: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(folder / "token.json", "secret", private=True)
        write_atomic(folder / "plain.json", "public")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((folder / "token.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "plain.json").stat().st_mode) == 0o644


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="POSIX permissions; root writes into read-only folders")
def test_a_read_only_folder_raises_and_keeps_the_old_file(folder: Path) -> None:
    target = folder / "settings.json"
    target.write_text("old", encoding="utf-8")
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            write_atomic(target, "new")
    finally:
        folder.chmod(0o700)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in folder.iterdir()] == ["settings.json"]
