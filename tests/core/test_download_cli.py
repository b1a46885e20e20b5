"""The download CLI end to end, as separate processes against the loopback Hub.

Includes ``kill -9`` of a downloading process: the next run continues from the bytes on disk
(the server's log shows the resumed request started there) and the file verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixtral_desk.core.cli import main
from mixtral_desk.core.paths import DataPaths
from tests.hub_server import LoopbackHub, make_bytes

MB = 1_000_000
DATA = make_bytes(4 * MB, seed=7)
SHA = hashlib.sha256(DATA).hexdigest()
NAME = "tiny-Q4_K_M.gguf"


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    with LoopbackHub() as server:
        server.add_repo("owner/tiny", {NAME: DATA})
        server.add_repo("meta/gated", {"gated.gguf": DATA[:1000]}, gated=True)
        yield server


@pytest.fixture
def env(tmp_path: Path, data_home: DataPaths) -> dict[str, str]:
    """The environment of the CLI processes: our data home, online, no stored token."""
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    environment.update(HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home"),
                       HF_HUB_DISABLE_XET="1", PYTHONUNBUFFERED="1")
    return environment


def command(hub: LoopbackHub, *args: str) -> list[str]:
    return [sys.executable, "-m", "mixtral_desk", *args]


def download_args(hub: LoopbackHub) -> list[str]:
    return ["download", "--repo", "owner/tiny", "--file", NAME, "--endpoint", hub.url]


def run(hub: LoopbackHub, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(hub, *args), env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


def here(*args: str) -> tuple[int, str, str]:
    """Run a CLI command in this process (fast: for the commands that need no network)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def jobs() -> list[dict[str, Any]]:
    code, out, err = here("downloads", "list", "--json")
    assert code == 0, err
    data: list[dict[str, Any]] = json.loads(out)
    return data


def wait_for_bytes(part: Path, at_least: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= at_least):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)


def test_download_prints_the_path_last_then_local_and_delete(
        hub: LoopbackHub, env: dict[str, str], data_home: DataPaths) -> None:
    result = run(hub, env, *download_args(hub))
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == data_home.models_dir / "owner--tiny" / NAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    [job] = jobs()
    assert job["state"] == "completed" and job["done_bytes"] == len(DATA)

    code, out, _ = here("local", "--json")
    assert [m["path"] for m in json.loads(out)] == [str(path)]
    code, out, err = here("delete", "owner--tiny")
    assert code == 0, err
    assert not path.exists()
    assert json.loads(here("local", "--json")[1]) == []


def test_kill_9_then_the_same_command_resumes_from_the_bytes_on_disk(
        hub: LoopbackHub, env: dict[str, str], data_home: DataPaths) -> None:
    hub.throttle_bps = 2 * MB
    part = data_home.models_dir / "owner--tiny" / f"{NAME}.part"
    process = subprocess.Popen(command(hub, *download_args(hub)), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for_bytes(part, MB, process)
        process.kill()  # SIGKILL: no cleanup at all
    finally:
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    on_disk = part.stat().st_size
    assert MB <= on_disk < len(DATA)
    [job] = jobs()
    assert job["state"] == "interrupted"

    hub.throttle_bps = None
    result = run(hub, env, *download_args(hub))
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    gets = hub.gets(NAME)
    assert [g.range_start for g in gets] == [None, on_disk]  # not from zero
    [again] = jobs()
    assert again["id"] == job["id"] and again["state"] == "completed"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_pauses_and_downloads_resume_continues(
        hub: LoopbackHub, env: dict[str, str], data_home: DataPaths, signum: int) -> None:
    hub.throttle_bps = 2 * MB
    part = data_home.models_dir / "owner--tiny" / f"{NAME}.part"
    process = subprocess.Popen(command(hub, *download_args(hub)), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for_bytes(part, 300_000, process)
        process.send_signal(signum)
    finally:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert out == ""  # no path: it did not finish
    [job] = jobs()
    assert job["state"] == "paused"
    kept = part.stat().st_size

    hub.throttle_bps = None
    result = run(hub, env, "downloads", "resume", job["id"][:4])
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]).read_bytes() == DATA
    assert hub.gets(NAME)[-1].range_start == kept


def test_pause_from_another_process(hub: LoopbackHub, env: dict[str, str],
                                    data_home: DataPaths) -> None:
    hub.throttle_bps = 300_000
    part = data_home.models_dir / "owner--tiny" / f"{NAME}.part"
    process = subprocess.Popen(command(hub, *download_args(hub)), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    try:
        wait_for_bytes(part, 100_000, process)
        [job] = jobs()
        assert job["state"] == "running"
        code, out, err = here("downloads", "pause", job["id"], "--json")
        assert code == 0, err
        assert json.loads(out)["state"] == "paused"
    finally:
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "paused" in err
    code, out, err = here("downloads", "cancel", job["id"])
    assert code == 0, err
    assert not part.exists()
    assert jobs()[0]["state"] == "cancelled"


def test_gated_repo_error_is_one_clear_line(hub: LoopbackHub, env: dict[str, str]) -> None:
    result = run(hub, env, "download", "--repo", "meta/gated", "--file", "gated.gguf",
                 "--endpoint", hub.url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "gated model" in result.stderr and f"{hub.url}/meta/gated" in result.stderr
    assert result.stdout == ""


def test_download_usage_errors() -> None:
    assert here("download")[0] == 2
    assert here("download", "--repo", "owner/tiny")[0] == 2
    code, _, err = here("download", "no-such-model")
    assert code == 1 and "No model 'no-such-model'" in err
