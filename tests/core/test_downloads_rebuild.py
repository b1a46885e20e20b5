"""A damaged download list is set aside and rebuilt from the files on disk: no finished model
is lost, and partial bytes are resumed."""

from __future__ import annotations

import hashlib

import pytest

from mixtral_desk.core.downloads.local import list_local_models
from mixtral_desk.core.paths import DataPaths
from tests.core.test_download_manager import (
    DATA,
    MB,
    NAME,
    SHA,
    hub,  # noqa: F401 - the fixture
    make_manager,
    sha256_of,
    wait_for,
)
from tests.core.test_store_damage import overwrite_page
from tests.hub_server import LoopbackHub

OTHER = "other-Q4_K_M.gguf"


@pytest.mark.allow_log("mixtral_desk.core", "damaged")
@pytest.mark.parametrize("damage", ["garbage", "header zeroed", "folder"])
def test_damaged_download_list_is_rebuilt_from_the_files(hub: LoopbackHub,  # noqa: F811
                                                         data_home: DataPaths,
                                                         damage: str) -> None:
    hub.add_repo("owner/other", {OTHER: DATA})
    manager = make_manager(hub, data_home)
    finished = manager.add_repo("owner/model", [NAME])
    manager.start(finished.id)
    assert manager.wait(finished.id, timeout=10).state == "completed"
    hub.throttle_bps = 3 * MB
    partial = manager.add_repo("owner/other", [OTHER])
    manager.start(partial.id)
    part = partial.dest_dir / f"{OTHER}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 500_000)
    manager.pause(partial.id)
    on_disk = part.stat().st_size
    manager.close()
    manager.store.close()

    path = data_home.downloads_database
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    if damage == "garbage":
        overwrite_page(path, 1)
    elif damage == "header zeroed":
        with path.open("r+b") as file:
            file.write(bytes(100))
    else:
        path.unlink()
        path.mkdir()
    damaged = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    hub.throttle_bps = None
    again = make_manager(hub, data_home)
    try:
        kept = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".damaged-")
                and not p.name.endswith(("-wal", "-shm"))]
        assert len(kept) == 1
        if damaged is not None:
            assert hashlib.sha256(kept[0].read_bytes()).hexdigest() == damaged
        assert [m.path.name for m in list_local_models(data_home.models_dir)] == [NAME]
        jobs = again.jobs()
        assert [(j.repo_id, j.requested, j.state) for j in jobs] == [
            ("owner/other", [OTHER], "paused")]
        again.resume(jobs[0].id)
        assert again.wait(jobs[0].id, timeout=10).state == "completed"
        assert sha256_of(jobs[0].dest_dir / OTHER) == SHA
        assert hub.gets(OTHER)[-1].range_start == on_disk  # the bytes on disk were kept
    finally:
        again.close()
        again.store.close()
