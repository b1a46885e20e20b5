"""``chat --cpu-moe N`` and ``--gpu-layers auto`` end to end on the CPU build of llama.cpp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mixtral_desk.core.paths import DataPaths


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)],
                          capture_output=True, text=True, timeout=180, check=False,
                          stdin=subprocess.DEVNULL)


def test_chat_cpu_moe_keeps_six_expert_tensors_on_the_cpu(tiny_model: Path,
                                                          data_home: DataPaths) -> None:
    result = cli("chat", "--model", tiny_model, "--cpu-moe", "2", "--ctx", "256", "--prompt",
                 "Hello", "--max-tokens", "8", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "no reply was printed"
    assert "tok/s" in result.stderr and "warning:" not in result.stderr
    log = data_home.engine_log.read_text()
    lines = [ln for ln in log.splitlines() if "buffer type overridden to CPU" in ln]
    assert {ln.split("tensor ")[1].split(" ")[0] for ln in lines} == {
        f"blk.{i}.ffn_{part}_exps.weight" for i in (0, 1) for part in ("gate", "up", "down")}
    assert len(lines) == 6
    assert "'n_cpu_moe': 2" in log


def test_chat_gpu_layers_auto_plans_and_generates(tiny_model: Path) -> None:
    result = cli("complete", "--model", tiny_model, "--gpu-layers", "auto", "--ctx", "256",
                 "--prompt", "Once", "--max-tokens", "6", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert "note: plan: all 3 layers on the CPU" in result.stderr
    assert "warning:" not in result.stderr and result.stdout.strip()


def test_gpu_layers_and_cpu_moe_are_checked(tiny_model: Path) -> None:
    for args in (("--gpu-layers", "many"), ("--gpu-layers", "-2"), ("--cpu-moe", "-1")):
        result = cli("complete", "--model", tiny_model, "--prompt", "x", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
