"""The command line with every outbound connection blocked (the socket guard in each process, the
engine process included) and ``HF_ENDPOINT`` at a loopback tripwire that counts connections:
chatting with a local model, searching, exporting, listing and planning open no connection; what
needs the Hub says so at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixtral_desk.core.paths import DataPaths
from tests.net_guard import Tripwire, format_attempts, guarded_env, guarded_pids, read_log


@pytest.fixture
def guard_log(tmp_path: Path) -> Path:
    return tmp_path / "attempts.jsonl"


@pytest.fixture
def env(guard_log: Path, tmp_path: Path, data_home: DataPaths,
        hub_site: Tripwire) -> dict[str, str]:
    """Guarded, Offline mode off, the Hub at the tripwire."""
    environment = guarded_env(guard_log)
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        environment.pop(name, None)
    environment.update(HF_ENDPOINT=hub_site.url, HF_HOME=str(tmp_path / "hf-home"),
                       PYTHONUNBUFFERED="1")
    return environment


def cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180, check=False,
                          stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_chat_search_export_open_no_connection(env: dict[str, str], guard_log: Path,
                                               hub_site: Tripwire, tiny_model: Path,
                                               tmp_path: Path) -> None:
    reply = ok(cli(env, "chat", "--model", tiny_model, "--prompt", "Tell me about zeppelins",
                   "--max-tokens", "4", "--temperature", "0", "--seed", "1"))
    assert reply.strip()
    [conversation] = json.loads(ok(cli(env, "conversations", "list", "--json")))
    hits = json.loads(ok(cli(env, "conversations", "search", "zeppelins", "--json")))
    assert hits and hits[0]["conversation_id"] == conversation["id"]
    exported = tmp_path / "all.json"
    ok(cli(env, "conversations", "export", "--all", "--format", "json", "-o", exported))
    assert json.loads(exported.read_text(encoding="utf-8"))
    markdown = ok(cli(env, "conversations", "export", conversation["id"], "--format", "md"))
    assert "Tell me about zeppelins" in markdown
    ok(cli(env, "local"))
    ok(cli(env, "models"))
    ok(cli(env, "plan", "--model", tiny_model, "--vram", "0", "--ram", "8GiB"))
    assert read_log(guard_log) == [], format_attempts(read_log(guard_log))
    assert hub_site.connections == 0
    assert len(guarded_pids(guard_log)) >= 9  # each CLI run, and the chat's engine process


def test_the_tripwire_sees_the_cli_reach_out(env: dict[str, str], guard_log: Path,
                                             hub_site: Tripwire) -> None:
    """The control: planning a catalog model that is not downloaded does ask the Hub; the
    tripwire counts that one connection, and the CLI says "Cannot reach" at once."""
    started = time.monotonic()
    result = cli(env, "plan", "--model", "mixtral-8x7b-instruct-q4_k_m")
    assert result.returncode == 1 and "Cannot reach" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20  # a process start; huggingface_hub alone took ~23 s
    assert hub_site.connections == 1  # one attempt, no retry loop
    assert read_log(guard_log) == [], format_attempts(read_log(guard_log))


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", "--offline"])
def test_offline_mode_refuses_downloads_and_remote_plans(env: dict[str, str], guard_log: Path,
                                                         hub_site: Tripwire,
                                                         switch: str) -> None:
    flags: list[str] = []
    if switch == "--offline":
        flags = ["--offline"]
    else:
        env["HF_HUB_OFFLINE"] = "1"
    download = cli(env, *flags, "download", "--repo", "owner/model-GGUF", "--file", "m.gguf")
    if download.returncode == 2 and "--offline" in download.stderr:
        pytest.skip("this CLI has no --offline flag")
    assert download.returncode == 1 and "Offline mode is on" in download.stderr, download.stderr
    plan = cli(env, *flags, "plan", "--model", "mixtral-8x7b-instruct-q4_k_m")
    assert plan.returncode == 1 and "offline mode is on" in plan.stderr.lower(), plan.stderr
    listing = json.loads(ok(cli(env, *flags, "downloads", "list", "--json")))
    assert listing == []  # no job was created
    assert read_log(guard_log) == [], format_attempts(read_log(guard_log))
    assert hub_site.connections == 0
