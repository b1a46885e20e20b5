"""bench/gpu_fit_check.py's planning half, which runs without a GPU: the llama-bench arguments
of (a) our plan, (b) the best whole-layer offload and (c) llama.cpp's fit for a simulated 24 GiB
card, on the full-size sparse Mixtral-8x7B Q4_K_M that the device check loads."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.planner import simulated_machine
from mixtral_desk.core.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[1]
FREE_MIB = 140_000.0


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fit() -> ModuleType:
    return _load("gpu_fit_check")


@pytest.fixture(scope="module")
def q4(fit: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = fit.write_q4_k_m(tmp_path_factory.mktemp("q4") / "mixtral-q4_k_m.gguf")
    return path


def test_the_loadable_q4_k_m_is_full_size_and_has_what_llama_cpp_needs(q4: Path) -> None:
    facts = inspect_model(q4)
    assert facts.file_size > 26e9 and facts.n_layers == 32 and facts.expert_count == 8
    assert q4.stat().st_blocks * 512 < 50 * MiB  # sparse: the disk holds the header only
    with q4.open("rb") as f:
        raw = f.read(8192)  # the metadata comes before the 32,000 tokens
    for key in ("llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
                "tokenizer.ggml.model"):
        assert key.encode() in raw


def test_configs_for_a_24_gib_card(fit: ModuleType, q4: Path) -> None:
    configs, summary = fit.plan_configs(q4, card=24 * GiB, ram=120 * GiB, ctx=512,
                                        gpu_name="NVIDIA H200", free_mib=FREE_MIB,
                                        fit_default=True)
    by_key = {c.key: c for c in configs}
    assert list(by_key) == ["plan", "layers", "fit", "fit1g"]
    budget = summary["vram_budget_mib"]
    assert budget < 24 * 1024

    plan = by_key["plan"]
    assert plan.planned_vram_mib <= budget
    n_cpu_moe, split = plan.detail["n_cpu_moe"], plan.detail["cpu_moe_tensors"]
    assert plan.args[:2] == ["-ngl", "99"] and n_cpu_moe > 0  # 26 GB does not fit 24 GiB
    assert plan.args[2] == "-ot"
    overrides = plan.args[3].split(";")
    assert len(overrides) == n_cpu_moe + (1 if split else 0)
    assert all(o.endswith("=CPU") and "," not in o for o in overrides)
    tensors = [f"blk.{i}.ffn_{kind}_exps.weight" for i in range(32)
               for kind in ("gate", "up", "down")]
    moved = {t for t in tensors if any(re.search(o[:-len("=CPU")], t) for o in overrides)}
    expected = {f"blk.{i}.ffn_{kind}_exps.weight" for i in range(n_cpu_moe)
                for kind in ("gate", "up", "down")}
    expected |= {f"blk.{n_cpu_moe}.ffn_{kind}_exps.weight" for kind in split}
    assert moved == expected

    layers = by_key["layers"]
    g = int(layers.args[1])
    assert layers.args == ["-ngl", str(g)] and 1 <= g <= 32
    assert layers.planned_vram_mib <= budget
    model = memory_model_from_facts(inspect_model(q4), 512, gpu_host_buffers=True)
    machine = simulated_machine(ram=120 * GiB, vram=24 * GiB, gpu_name="NVIDIA H200")
    assert fit.whole_layer_vram(model, machine, g + 1)[0] > machine.vram_budget  # the largest

    assert by_key["fit"].args == ["-fitt", str(int(FREE_MIB - 24 * 1024))]
    assert by_key["fit1g"].args == ["-fitt", str(int(FREE_MIB - 24 * 1024) + 1024)]


def test_whole_layer_vram_counts_the_output_layer_first(fit: ModuleType, q4: Path) -> None:
    """llama.cpp's ``-ngl g`` is the output layer and g - 1 blocks: every step adds one block,
    and g = 1 already holds the output layer."""
    model = memory_model_from_facts(inspect_model(q4), 512, gpu_host_buffers=True)
    machine = simulated_machine(ram=120 * GiB, vram=80 * GiB, gpu_name="NVIDIA H200")
    vram = [fit.whole_layer_vram(model, machine, g)[0] for g in range(1, 34)]
    assert vram[0] > model.output_bytes + machine.gpu_overhead
    steps = [b - a for a, b in itertools.pairwise(vram)]
    block = model.layers[-1].dense + model.layers[-1].experts + model.layers[-1].kv
    assert all(abs(step - block) < MiB for step in steps[:-1])


def test_goals_and_table(fit: ModuleType) -> None:
    rows = {"plan": {"tg_tok_s": 40.0, "pp_tok_s": 900.0, "vram_used_mib": 23900},
            "layers": {"tg_tok_s": 15.0, "pp_tok_s": 300.0}, "fit": {"tg_tok_s": 41.0}}
    checks = fit.goals(rows, 24 * 1024)
    assert checks == {"decode_a_over_b": 2.67, "decode_a_over_c": 0.98, "prompt_a_over_b": 3.0,
                      "prompt_a_over_c": None, "a_ge_2x_b": True, "a_ge_0.95x_c": True,
                      "a_vram_le_card": True}
    rows["plan"]["vram_used_mib"] = 24 * 1024 + 1
    assert fit.goals(rows, 24 * 1024)["a_vram_le_card"] is False
    assert fit.goals({"plan": {"tg_tok_s": 40.0}}, 24 * 1024)["a_ge_2x_b"] is None


def test_parse_llama_bench_json(fit: ModuleType) -> None:
    out = json.dumps([{"n_prompt": 512, "n_gen": 0, "avg_ts": 812.345, "stddev_ts": 3.1,
                       "n_gpu_layers": 99},
                      {"n_prompt": 0, "n_gen": 128, "avg_ts": 41.26, "stddev_ts": 0.2,
                       "n_gpu_layers": 99}])
    assert fit.parse_bench(out) == {"pp_tok_s": 812.35, "pp_stddev": 3.1, "tg_tok_s": 41.26,
                                    "tg_stddev": 0.2, "n_gpu_layers_reported": 99}


def test_dry_run_prints_the_commands(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_fit_check.py"), "--dry-run",
                           "--out", str(tmp_path), "--model", str(tmp_path / "q4.gguf"),
                           "--llama-bench", "LB", "--threads", "16"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "LB -m" in done.stdout and "-fitt" in done.stdout and "-ot" in done.stdout
    saved = json.loads((tmp_path / "gpu_fit_plan.json").read_text())
    assert [c["key"] for c in saved["configs"]] == ["plan", "layers", "fit", "fit1g"]
