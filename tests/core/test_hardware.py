"""Hardware detection: pure parsers on sample outputs, and a real probe of this machine."""

from __future__ import annotations

import json
import subprocess

import pytest

from mixtral_desk.core import hardware
from mixtral_desk.core.hardware import (
    GPU,
    Hardware,
    apple_working_set_bytes,
    detect_hardware,
    parse_nvidia_smi,
)
from mixtral_desk.core.units import GiB, MiB


def test_parse_one_gpu() -> None:
    gpus, notes = parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564, 23974, 550.54.14\n")
    assert notes == []
    assert gpus == [GPU(name="NVIDIA GeForce RTX 4090", vendor="nvidia",
                        total_bytes=24564 * MiB, free_bytes=23974 * MiB,
                        unified_memory=False, driver="550.54.14")]


def test_parse_two_gpus() -> None:
    output = ("NVIDIA H100 80GB HBM3, 81559, 81000, 535.104.05\n"
              "NVIDIA A100-SXM4-40GB, 40960, 1024, 535.104.05\n")
    gpus, notes = parse_nvidia_smi(output)
    assert [gpu.name for gpu in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert gpus[1].usable_bytes == 1024 * MiB
    assert notes == []


def test_parse_not_available_fields() -> None:
    gpus, notes = parse_nvidia_smi("NVIDIA GH200 480GB, [N/A], [N/A], [N/A]\n")
    [gpu] = gpus
    assert (gpu.total_bytes, gpu.free_bytes, gpu.driver) == (None, None, None)
    assert gpu.usable_bytes == 0
    assert any("no memory size" in note for note in notes)
    [gpu] = parse_nvidia_smi("Tesla T4, 15360, [N/A], 470.1\n")[0]
    assert gpu.usable_bytes == 15360 * MiB


@pytest.mark.parametrize("garbage", [
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    "No devices were found",
    "a, b",
    "\x00\xff, , , ,",
])
def test_parse_garbage_gives_notes_not_errors(garbage: str) -> None:
    gpus, notes = parse_nvidia_smi(garbage)
    assert gpus == []
    assert notes and "not understood" in notes[0]
    assert parse_nvidia_smi("") == ([], [])


@pytest.mark.parametrize(("memsize_gib", "factor"), [
    (8, 0.67), (16, 0.67), (36, 0.67), (48, 0.75), (64, 0.75), (192, 0.75),
])
def test_apple_working_set_rule(memsize_gib: int, factor: float) -> None:
    memsize = memsize_gib * GiB
    assert apple_working_set_bytes(memsize) == int(memsize * factor)


def test_apple_working_set_edge_cases() -> None:
    assert apple_working_set_bytes(0) == 0
    assert apple_working_set_bytes(-1) == 0
    assert apple_working_set_bytes(36 * GiB + 1) > apple_working_set_bytes(36 * GiB)


def test_detect_hardware_on_this_machine() -> None:
    found = detect_hardware()
    assert 1 * GiB < found.ram_total < 4096 * GiB
    assert 0 < found.ram_available <= found.ram_total
    assert found.cpu_logical_cores >= 1
    if found.cpu_physical_cores is not None:
        assert 1 <= found.cpu_physical_cores <= found.cpu_logical_cores
    assert found.cpu_name and found.os_name and found.machine
    for gpu in found.gpus:
        assert gpu.vendor in ("nvidia", "apple", "amd", "intel", "unknown")
    data = found.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    lines = found.summary_lines()
    assert any(line.startswith("RAM: ") for line in lines)
    assert any(line.startswith("GPU") for line in lines)


def test_detect_without_gpu_probes() -> None:
    assert detect_hardware(probe_gpus=False).gpus == ()


def test_broken_nvidia_smi_gives_empty_list_and_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_with_timeout", lambda function, timeout: None)  # no NVML
    monkeypatch.setattr("mixtral_desk.core.hardware.shutil.which", lambda _: "/usr/bin/nvidia-smi")

    def failing_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd="nvidia-smi", timeout=3)

    monkeypatch.setattr("mixtral_desk.core.hardware.subprocess.run", failing_run)
    monkeypatch.setattr("mixtral_desk.core.hardware.platform.system", lambda: "Linux")
    found = detect_hardware()
    assert found.gpus == ()
    assert any("nvidia-smi" in note for note in found.notes)


def test_nvidia_smi_output_is_used_when_nvml_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_with_timeout", lambda function, timeout: None)
    monkeypatch.setattr("mixtral_desk.core.hardware.shutil.which", lambda _: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(hardware, "_run", lambda command, timeout: "RTX A, 8192, 4096, 1.0\n")
    monkeypatch.setattr("mixtral_desk.core.hardware.platform.system", lambda: "Linux")
    [gpu] = detect_hardware().gpus
    assert gpu.name == "RTX A" and gpu.free_bytes == 4096 * MiB


def test_with_timeout_abandons_slow_and_failing_probes() -> None:
    import time

    def slow() -> int:
        time.sleep(5)
        return 1

    assert hardware._with_timeout(slow, 0.05) is None
    assert hardware._with_timeout(lambda: 1 / 0, 1.0) is None
    assert hardware._with_timeout(lambda: 42, 1.0) == 42


def test_summary_lines_describe_gpus() -> None:
    machine = Hardware(
        ram_total=64 * GiB, ram_available=40 * GiB, cpu_physical_cores=None,
        cpu_logical_cores=12, cpu_name="Apple M3 Pro", os_name="Darwin",
        os_platform="macOS-14.4", machine="arm64",
        gpus=(GPU("Apple M3 Pro", "apple", apple_working_set_bytes(64 * GiB), None, True),
              GPU("RTX", "nvidia", 8 * GiB, 7 * GiB, driver="550", compute_capability="8.9")),
        notes=("something odd",),
    )
    text = "\n".join(machine.summary_lines())
    assert "12 logical cores" in text
    assert "48.0 GiB usable of unified memory" in text
    assert "7.0 GiB free, driver 550, compute 8.9" in text
    assert "Note: something odd" in text
    assert machine.best_gpu is not None and machine.best_gpu.vendor == "apple"
