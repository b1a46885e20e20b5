"""The download manager against the loopback Hub: real HTTP on 127.0.0.1, real files.

Faults (drop, reset, stall, 500, 429, wrong bytes, ignored Range), split models, pause/resume,
cancel, the queue, and the free-space checks (a real small tmpfs when this machine lets us mount
one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from mixtral_desk.core.catalog import CatalogEntry
from mixtral_desk.core.downloads.errors import (
    DiskFullError,
    DownloadError,
    InsufficientSpaceError,
    VerificationError,
)
from mixtral_desk.core.downloads.events import (
    DownloadEvent,
    JobNotice,
    JobProgress,
    JobStateChanged,
)
from mixtral_desk.core.downloads.local import list_local_models
from mixtral_desk.core.downloads.manager import DownloadManager
from mixtral_desk.core.downloads.transfer import RetryPolicy
from mixtral_desk.core.paths import DataPaths
from tests.hub_server import Fault, LoopbackHub, RemoteFile, make_bytes

MB = 1_000_000
FAST = RetryPolicy(max_attempts=6, base_delay=0.02, max_delay=0.2, stall_timeout=1.0)
DATA = make_bytes(3 * MB, seed=1)
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "model-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    """A running loopback Hub with repo ``owner/model`` holding one 3 MB file; offline off."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with LoopbackHub() as server:
        server.add_repo("owner/model", {NAME: DATA})
        yield server


class Recorder:
    """Collects events (they arrive on worker threads)."""

    def __init__(self) -> None:
        self.events: list[DownloadEvent] = []

    def __call__(self, event: DownloadEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


def make_manager(hub: LoopbackHub, data_home: DataPaths, recorder: Recorder | None = None,
                 **kwargs: object) -> DownloadManager:
    options: dict[str, Any] = {"endpoint": hub.url, "use_stored_token": False, "space_margin": 0,
                     "policy": FAST, "progress_interval": 0.05, "paths": data_home,
                     "on_event": recorder}
    options.update(kwargs)
    return DownloadManager(**options)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_is_verified_named_and_listed(hub: LoopbackHub, data_home: DataPaths) -> None:
    recorder = Recorder()
    manager = make_manager(hub, data_home, recorder)
    job = manager.add_repo("owner/model", [NAME])
    path = manager.run(job.id)

    assert path == data_home.models_dir / "owner--model" / NAME
    assert sha256_of(path) == SHA
    assert not list(path.parent.glob("*.part*"))
    done = manager.get(job.id)
    assert done.state == "completed" and done.done == done.total == len(DATA)
    assert [m.path for m in list_local_models(data_home.models_dir)] == [path]
    states = [e.state for e in recorder.of(JobStateChanged)]
    assert states == ["running", "completed"]
    assert recorder.of(JobStateChanged)[-1].path == path
    assert manager.store.path == data_home.downloads_database
    # Same command again: the existing, finished model is reused.
    again = manager.add_repo("owner/model", [NAME])
    assert again.id != job.id
    assert manager.run(again.id) == path


def test_faults_are_retried_and_resume_from_bytes_on_disk(hub: LoopbackHub,
                                                           data_home: DataPaths) -> None:
    hub.inject(NAME, Fault("drop", after=1 * MB), Fault("reset", after=300_000),
               Fault("status", status=500), Fault("status", status=503),
               Fault("status", status=429, retry_after=0), Fault("ignore_range"))
    recorder = Recorder()
    manager = make_manager(hub, data_home, recorder)
    path = manager.run(manager.add_repo("owner/model", [NAME]).id)

    assert sha256_of(path) == SHA
    gets = hub.gets(NAME)
    assert [g.status for g in gets] == [200, 206, 500, 503, 429, 200]
    assert gets[1].range_start == 1 * MB  # the dropped body resumed where the disk ended
    notices = [e.notice for e in recorder.of(JobNotice)]
    assert [n.kind for n in notices] == ["retrying"] * 5 + ["restarted"]
    resolves = [r for r in hub.log if r.server == "hub" and "/resolve/" in r.path]
    assert len(resolves) >= len(gets)  # the URL is asked for again before each connection


def test_stall_is_reported_and_reconnected(hub: LoopbackHub, data_home: DataPaths) -> None:
    hub.inject(NAME, Fault("stall", after=500_000, seconds=30))
    recorder = Recorder()
    manager = make_manager(hub, data_home, recorder)
    started = time.monotonic()
    path = manager.run(manager.add_repo("owner/model", [NAME]).id)

    assert time.monotonic() - started < 10
    assert sha256_of(path) == SHA
    assert any(e.stalled for e in recorder.of(JobProgress))
    assert [e.notice.kind for e in recorder.of(JobNotice)] == ["stalled"]
    assert hub.gets(NAME)[1].range_start == 500_000


def test_wrong_bytes_fail_verification_and_are_never_listed(hub: LoopbackHub,
                                                            data_home: DataPaths) -> None:
    hub.inject(NAME, Fault("corrupt", after=2 * MB + 17))
    manager = make_manager(hub, data_home)
    job = manager.add_repo("owner/model", [NAME])
    with pytest.raises(VerificationError, match="corrupt") as caught:
        manager.run(job.id)

    assert isinstance(caught.value, ValueError)
    failed = manager.get(job.id)
    assert failed.state == "failed" and "sha256" in str(failed.error)
    folder = data_home.models_dir / "owner--model"
    assert not list(folder.glob("*"))  # no final name, no partial data
    assert list_local_models(data_home.models_dir) == []
    # The offered fresh download works.
    assert sha256_of(manager.run(job.id)) == SHA
    assert hub.gets(NAME)[-1].range_start is None


def test_network_failure_beyond_retries_pauses_and_keeps_bytes(hub: LoopbackHub,
                                                               data_home: DataPaths) -> None:
    hub.inject(NAME, Fault("drop", after=MB), *[Fault("status", status=502)] * 6)
    manager = make_manager(hub, data_home)
    job = manager.add_repo("owner/model", [NAME])
    with pytest.raises(DownloadError, match="keeps failing") as caught:
        manager.run(job.id)
    assert isinstance(caught.value, ConnectionError)
    paused = manager.get(job.id)
    assert paused.state == "paused" and paused.done == MB
    assert sha256_of(manager.run(job.id)) == SHA
    assert hub.gets(NAME)[-1].range_start == MB


def test_split_model_is_one_job_over_all_parts(hub: LoopbackHub, data_home: DataPaths) -> None:
    parts = {f"sub/Big-Q8_0-0000{i}-of-00003.gguf": make_bytes(700_000 + i, seed=i)
             for i in (1, 2, 3)}
    hub.add_repo("owner/split", {**parts, "README.md": b"hello"})
    recorder = Recorder()
    manager = make_manager(hub, data_home, recorder)
    job = manager.add_repo("owner/split", ["sub/Big-Q8_0-00002-of-00003.gguf"])
    path = manager.run(job.id)

    assert path.name == "Big-Q8_0-00001-of-00003.gguf"
    for name, data in parts.items():
        assert (path.parent / Path(name).name).read_bytes() == data
    progress = recorder.of(JobProgress)[-1]
    assert len(progress.files) == 3 and progress.total == sum(map(len, parts.values()))
    [model] = list_local_models(data_home.models_dir)
    assert model.path == path and len(model.files) == 3


def test_old_style_pieces_are_joined(hub: LoopbackHub, data_home: DataPaths) -> None:
    whole = make_bytes(1_500_000, seed=9)
    hub.add_repo("owner/pieces", {"old.gguf.part1of2": whole[:800_000],
                                  "old.gguf.part2of2": whole[800_000:]})
    manager = make_manager(hub, data_home)
    path = manager.run(manager.add_repo("owner/pieces", ["old.gguf"]).id)

    assert path.name == "old.gguf" and path.read_bytes() == whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "old.gguf"]


def test_pause_and_resume_continue_from_the_bytes_on_disk(hub: LoopbackHub,
                                                          data_home: DataPaths) -> None:
    hub.throttle_bps = 3 * MB
    recorder = Recorder()
    manager = make_manager(hub, data_home, recorder)
    job = manager.add_repo("owner/model", [NAME])
    manager.start(job.id)
    part = job.dest_dir / f"{NAME}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 500_000)
    paused = manager.pause(job.id)
    moving = [e for e in recorder.of(JobProgress) if e.speed_bps > 0]
    assert moving and all(e.eta_s is not None and 0 < e.done <= len(DATA) for e in moving)
    assert all(e.total == len(DATA) and e.files[0].total == len(DATA) for e in moving)
    assert MB // 2 < moving[-1].speed_bps < 10 * MB  # the server sends 3 MB/s

    assert paused.state == "paused"
    on_disk = part.stat().st_size
    assert 500_000 < on_disk < len(DATA) and paused.done == on_disk
    hub.throttle_bps = None
    manager.resume(job.id)
    finished = manager.wait(job.id, timeout=10)
    assert finished.state == "completed"
    assert sha256_of(job.dest_dir / NAME) == SHA
    assert hub.gets(NAME)[-1].range_start == on_disk


def test_cancel_removes_partial_data(hub: LoopbackHub, data_home: DataPaths) -> None:
    hub.throttle_bps = 2 * MB
    manager = make_manager(hub, data_home)
    job = manager.add_repo("owner/model", [NAME])
    manager.start(job.id)
    part = job.dest_dir / f"{NAME}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 100_000)
    cancelled = manager.cancel(job.id)

    assert cancelled.state == "cancelled"
    assert not job.dest_dir.exists()
    assert list_local_models(data_home.models_dir) == []


def test_queue_runs_max_parallel_jobs_at_once(hub: LoopbackHub, data_home: DataPaths) -> None:
    hub.throttle_bps = 6 * MB
    hub.add_repo("owner/other", {"other.gguf": make_bytes(MB, seed=3)})
    manager = make_manager(hub, data_home, max_parallel=1)
    first = manager.start(manager.add_repo("owner/model", [NAME]).id)
    second = manager.start(manager.add_repo("owner/other", ["other.gguf"]).id)

    assert manager.get(second.id).state == "queued"
    wait_for(lambda: manager.get(first.id).state == "running")
    assert manager.get(second.id).state == "queued"
    assert manager.wait(second.id, timeout=10).state == "completed"
    assert manager.get(first.id).state == "completed"


def test_refuses_to_start_without_enough_free_space(hub: LoopbackHub,
                                                    data_home: DataPaths) -> None:
    free = shutil.disk_usage(data_home.data_dir).free
    huge = RemoteFile(sparse_size=free * 2, sha256="0" * 64)
    hub.add_repo("owner/huge", {"huge.gguf": huge})
    manager = make_manager(hub, data_home, space_margin=1024**3)
    job = manager.add_repo("owner/huge", ["huge.gguf"])
    with pytest.raises(InsufficientSpaceError, match="Not enough disk space") as caught:
        manager.run(job.id)

    assert isinstance(caught.value, OSError)
    assert manager.get(job.id).state == "failed"
    assert hub.gets("huge.gguf") == []
    assert not (job.dest_dir / "huge.gguf.part").exists()


def test_disk_filling_up_mid_download_pauses_cleanly(hub: LoopbackHub, data_home: DataPaths,
                                                     small_disk: Path) -> None:
    hub.throttle_bps = 3 * MB
    manager = make_manager(hub, data_home, models_dir=small_disk)
    job = manager.add_repo("owner/model", [NAME])
    manager.start(job.id)
    part = job.dest_dir / f"{NAME}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 300_000)
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # another program fills the disk
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    stopped = manager.wait(job.id, timeout=15)

    assert stopped.state == "paused"
    assert "disk is full" in str(stopped.error)
    assert not (job.dest_dir / NAME).exists()
    assert list_local_models(small_disk) == []
    kept = part.stat().st_size
    assert DATA.startswith(part.read_bytes())  # only whole, correct bytes stay
    filler.unlink()
    hub.throttle_bps = None
    assert sha256_of(manager.run(job.id)) == SHA
    assert hub.gets(NAME)[-1].range_start == kept


def test_too_small_disk_is_refused_up_front(hub: LoopbackHub, data_home: DataPaths,
                                            small_disk: Path) -> None:
    hub.add_repo("owner/big", {"big.gguf": RemoteFile(sparse_size=5 * MB, sha256="1" * 64)})
    manager = make_manager(hub, data_home, models_dir=small_disk)
    with pytest.raises(InsufficientSpaceError, match=r"only .* free"):
        manager.run(manager.add_repo("owner/big", ["big.gguf"]).id)
    assert list(small_disk.iterdir()) == []


def test_disk_full_error_is_an_oserror() -> None:
    assert issubclass(DiskFullError, OSError) and issubclass(DiskFullError, DownloadError)


def test_catalog_entry_lands_where_the_catalog_looks(hub: LoopbackHub,
                                                     data_home: DataPaths) -> None:
    entry = CatalogEntry.model_validate({
        "id": "tiny-test-q4_k_m", "name": "Tiny (Q4_K_M)", "family": "tiny",
        "repo_id": "owner/model", "files": [NAME], "quant": "Q4_K_M", "size_bytes": len(DATA),
        "memory_bytes": 10 * MB, "default_context": 512, "trained_context": 512,
        "license": "MIT", "architecture": "llama", "parameters": 1000, "layers": 2})
    manager = make_manager(hub, data_home)
    assert not entry.is_downloaded(data_home.models_dir)
    path = manager.run(manager.add_catalog(entry).id)

    assert path == entry.local_paths(data_home.models_dir)[0]
    assert entry.is_downloaded(data_home.models_dir)
    assert [m.name for m in list_local_models(data_home.models_dir)] == [entry.id]
