"""A plan before download: the header of a remote 26 GB Mixtral read from the loopback Hub with a
few Range requests; offline and unreachable say so; the ``plan`` command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.errors import GGUFError
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.gguf.remote_header import (
    RemoteHeaderError,
    parse_header_prefix,
    read_remote_facts,
)
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.planner import plan_offload, simulated_machine
from mixtral_desk.core.units import GiB
from tests.hub_server import LoopbackHub, RemoteFile, make_bytes
from tests.mixtral_header import write_mixtral_q4_k_m

REPO = "mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF"
FILE = "Mixtral-8x7B-Instruct-v0.1.Q4_K_M.gguf"  # the catalog's mixtral-8x7b-instruct-q4_k_m


@pytest.fixture(scope="module")
def mixtral_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if sys.platform == "win32":
        pytest.skip("needs sparse files")
    path: Path = write_mixtral_q4_k_m(tmp_path_factory.mktemp("remote") / FILE)
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, mixtral_file: Path) -> Iterator[LoopbackHub]:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with LoopbackHub() as server:
        # A made-up sha256: hashing 26 GB of holes would take a minute.
        remote = RemoteFile(path=mixtral_file, sha256="5" * 64)
        server.add_repo(REPO, {FILE: remote, "junk.gguf": make_bytes(300_000)})
        yield server


def client(hub: LoopbackHub) -> HubClient:
    return HubClient(hub.url, use_stored_token=False)


def test_remote_header_gives_the_same_facts_and_plan(hub: LoopbackHub,
                                                     mixtral_file: Path) -> None:
    facts = read_remote_facts(client(hub), REPO, [FILE], first_read=64 * 1024)
    local = inspect_model(mixtral_file)
    assert facts.tensors == local.tensors and facts.file_size == local.file_size
    assert facts.n_params == 46_702_792_704 and facts.quantization == "Q4_K_M"
    gets = hub.gets(FILE)
    assert 2 <= len(gets) <= 6  # 64 KiB, 256 KiB, 1 MiB: the header is ~0.7 MB
    machine = simulated_machine(ram=64 * GiB, vram=24 * GiB, gpu_name="RTX 4090")
    remote_plan = plan_offload(memory_model_from_facts(facts, 4096), machine)
    local_plan = plan_offload(memory_model_from_facts(local, 4096), machine)
    assert remote_plan == local_plan and remote_plan.verdict == "gpu+cpu-experts"


def test_one_request_with_the_default_first_read(hub: LoopbackHub) -> None:
    read_remote_facts(client(hub), REPO, [FILE])
    assert len(hub.gets(FILE)) == 1


def test_offline_mode_says_so(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RemoteHeaderError, match="offline mode is on"):
        read_remote_facts(client(hub), REPO, [FILE])
    assert hub.gets(FILE) == []


def test_unreachable_hub_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with LoopbackHub() as gone:
        url = gone.url
    with pytest.raises(RemoteHeaderError, match="Cannot reach"):
        read_remote_facts(HubClient(url, use_stored_token=False), REPO, [FILE])


def test_remote_file_that_is_not_gguf(hub: LoopbackHub) -> None:
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_remote_facts(client(hub), REPO, ["junk.gguf"])
    with pytest.raises(RemoteHeaderError, match="not in"):
        read_remote_facts(client(hub), REPO, ["missing.gguf"])


def test_prefix_parser_asks_for_more_or_fails(mixtral_file: Path) -> None:
    with mixtral_file.open("rb") as f:
        data = f.read(2 * 1024 * 1024)
    size = mixtral_file.stat().st_size
    assert parse_header_prefix(data[:100_000], size, "m.gguf") is None  # read more
    header = parse_header_prefix(data, size, "m.gguf")
    assert header is not None and len(header.tensors) == 323
    with pytest.raises(GGUFError, match="truncated"):  # the whole file, and it is too short
        parse_header_prefix(data[:100_000], 100_000, "m.gguf")


# --- the plan command -----------------------------------------------------------------------

def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, env=env)


def cli_json(*args: str | Path, env: dict[str, str] | None = None) -> Any:
    result = cli(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_command_on_a_local_file_for_a_simulated_machine(mixtral_file: Path) -> None:
    data = cli_json("plan", "--model", mixtral_file, "--vram", "24GiB", "--ram", "64GiB",
                    "--gpu-name", "RTX 4090", "--ctx", "4096")
    assert data["verdict"] == "gpu+cpu-experts" and data["n_gpu_layers"] == 33
    assert 0 < data["n_cpu_moe"] < 12 and data["source"] == "local file"
    assert data["vram_bytes"] <= data["vram_budget"] and data["ram_bytes"] <= data["ram_budget"]
    assert f"experts of {data['n_cpu_moe']} of 32 layers in RAM" in data["explanation"]
    # Without --ctx (and no context in the settings) the plan uses the context a load would
    # choose: 8k here, as a longer one's KV cache would push more experts to RAM; it says so.
    auto = cli_json("plan", "--model", mixtral_file, "--vram", "24GiB", "--ram", "64GiB",
                    "--gpu-name", "RTX 4090")
    assert auto["n_ctx"] == 8192 and auto["n_cpu_moe"] >= data["n_cpu_moe"]
    assert auto["context"]["reason"] == "default" and auto["context"]["longer_slower"]
    assert data["context"]["reason"] == "set"
    cpu = cli_json("plan", "--model", mixtral_file, "--vram", "0", "--ram", "32GiB")
    assert cpu["verdict"] == "cpu" and cpu["n_gpu_layers"] == 0
    small = cli_json("plan", "--model", mixtral_file, "--vram", "0", "--ram", "16GiB")
    assert small["verdict"] == "too-large"
    q8 = cli_json("plan", "--model", mixtral_file, "--vram", "80GiB", "--ram", "64GiB",
                  "--ctx", "32768", "--kv-type", "q8_0")
    assert q8["verdict"] == "gpu" and q8["kv_bytes"] == 4 * GiB * 34 // 64
    text = cli("plan", "--model", mixtral_file, "--vram", "24GiB", "--ram", "64GiB",
               "--gpu-name", "RTX 4090", "--ctx", "4096")
    assert text.returncode == 0 and "Verdict:  gpu+cpu-experts" in text.stdout
    assert "--gpu-layers -1 --cpu-moe" in text.stdout
    assert "Context:  4,096 tokens" in text.stdout
    assert "\n          as set, not chosen automatically\n" in text.stdout
    text = cli("plan", "--model", mixtral_file, "--vram", "24GiB", "--ram", "64GiB")
    assert text.returncode == 0 and "Context:  8,192 tokens" in text.stdout
    assert "\n          the default; 16,384 would move weights from the GPU to RAM" in text.stdout


def test_plan_command_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = cli("plan", "--model", "mixtral-8x7b-instruct-q4_k_m", "--vram", "8GiB")
    assert result.returncode == 1 and "offline mode is on" in result.stderr
    assert "Traceback" not in result.stderr
    missing = cli("plan", "--model", tmp_path / "nope.gguf")
    assert missing.returncode == 1 and "not found" in missing.stderr
    unknown = cli("plan", "--model", "mixtral-8x7b-instruct-q4-k-m")
    assert unknown.returncode == 1 and "Did you mean" in unknown.stderr
    bad_size = cli("plan", "--model", tmp_path / "x.gguf", "--vram", "lots")
    assert bad_size.returncode == 2 and "not a size" in bad_size.stderr


def test_plan_command_uses_a_downloaded_catalog_model(data_home: DataPaths) -> None:
    folder = data_home.models_dir / "mixtral-8x7b-instruct-q4_k_m"
    folder.mkdir(parents=True)
    write_mixtral_q4_k_m(folder / FILE)
    data = cli_json("plan", "--model", "mixtral-8x7b-instruct-q4_k_m", "--vram", "80GiB",
                    "--ram", "64GiB")
    assert data["source"] == "downloaded file" and data["verdict"] == "gpu"
    assert data["model_path"] == str(folder / FILE)


def test_plan_command_reads_a_catalog_model_remotely(hub: LoopbackHub, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    data = cli_json("plan", "--model", "mixtral-8x7b-instruct-q4_k_m", "--endpoint", hub.url,
                    "--vram", "12GiB", "--ram", "32GiB", env=env)
    assert data["source"].startswith("remote header") and data["verdict"] == "gpu+cpu-experts"
    assert len(hub.gets(FILE)) == 1
