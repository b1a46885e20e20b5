"""Laptop-friendly defaults: the context that fits this machine, the catalog entry to suggest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mixtral_desk.core.catalog import load_catalog
from mixtral_desk.core.context_size import (
    CANDIDATES,
    DEFAULT_CONTEXT,
    MINIMUM,
    PLENTIFUL_FACTOR,
    ContextChoice,
    ContextReason,
    automatic_context,
    choose_context,
    ram_headroom,
    set_context,
    vram_headroom,
)
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model
from mixtral_desk.core.hardware import Hardware
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.planner import Machine, machine_from_hardware, simulated_machine
from mixtral_desk.core.recommend import READABLE_TOKENS_PER_S, recommend
from mixtral_desk.core.settings import Settings
from mixtral_desk.core.units import GiB, MiB, format_memory
from tests.mixtral_header import write_mixtral_q2_k, write_mixtral_q4_k_m

GB = 10**9


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    """The header of a Mixtral-8x7B Q4_K_M file (26 GB of sparse tensor data)."""
    return inspect_model(write_mixtral_q4_k_m(tmp_path_factory.mktemp("m") / "mixtral.gguf"))


def test_context_and_gpu_layers_default_to_automatic() -> None:
    load = Settings().load
    assert load.n_ctx is None
    assert load.gpu_layers_auto is True  # plans 0 GPU layers on a CPU-only build
    assert load.n_threads is None  # physical cores, chosen in the engine process
    assert load.use_mmap is True
    assert load.idle_unload_minutes == 30


def test_a_roomy_machine_gets_the_longest_context(mixtral: ModelFacts) -> None:
    assert mixtral.context_length == 32768
    choice = choose_context(mixtral, simulated_machine(ram=128 * GB))
    assert (choice.n_ctx, choice.reason) == (CANDIDATES[0], ContextReason.PLENTIFUL)
    assert choice.free is not None and choice.free >= PLENTIFUL_FACTOR * choice.headroom
    assert automatic_context(mixtral, simulated_machine(ram=128 * GB)) == CANDIDATES[0]


def test_more_memory_never_gives_a_shorter_context(mixtral: ModelFacts) -> None:
    chosen = [automatic_context(mixtral, simulated_machine(ram=ram * GB))
              for ram in (24, 31, 32, 33, 36, 40, 44, 48, 64)]
    assert chosen == sorted(chosen), chosen
    assert chosen[0] == MINIMUM and chosen[-1] == CANDIDATES[0]
    assert all(n in CANDIDATES for n in chosen)


def test_nothing_fits_gives_the_minimum_and_says_so(mixtral: ModelFacts) -> None:
    choice = choose_context(mixtral, simulated_machine(ram=8 * GB))
    assert (choice.n_ctx, choice.reason) == (MINIMUM, ContextReason.TOO_LARGE)
    assert choice.text() == ("context 2,048 tokens: the shortest offered; the model does not "
                             "fit this machine's memory even with it")


def test_the_headroom_is_kept_for_the_system() -> None:
    assert ram_headroom(8 * GiB) == 2 * GiB  # the floor
    assert ram_headroom(int(23.5 * GiB)) == int(23.5 * GiB * 0.15)  # 3.5 GiB on this machine
    assert ram_headroom(64 * GiB) == int(9.6 * GiB)
    assert vram_headroom(0) == 0
    assert vram_headroom(4 * GiB) == 512 * MiB
    assert vram_headroom(24 * GiB) == int(24 * GiB * 0.05)


# --- Mixtral Q2_K (15.6 GB) on this 24 GB machine, and on 16 GB and 64 GB ----------------------

@pytest.fixture(scope="module")
def q2_k(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    """A Mixtral-8x7B-Instruct Q2_K with merged experts (15.8 GB), the layout llama.cpp loads."""
    return inspect_model(write_mixtral_q2_k(tmp_path_factory.mktemp("q2") / "mixtral.gguf"))


def machine_of(total: int, available: int | None = None) -> tuple[Machine, int]:
    """A CPU-only machine with ``total`` bytes of RAM, ``available`` of them free now."""
    hardware = Hardware(ram_total=total, ram_available=total if available is None else available,
                        cpu_physical_cores=2, cpu_logical_cores=2, cpu_name="Test CPU",
                        os_name="Linux", os_platform="Linux", machine="x86_64")
    return machine_from_hardware(hardware), hardware.ram_total


def test_the_q2_k_header_is_a_mixtral_with_merged_experts(q2_k: ModelFacts) -> None:
    assert q2_k.quantization == "Q2_K" and q2_k.n_layers == 32 and q2_k.is_moe
    assert 15.7 * GB < q2_k.file_size < 15.8 * GB
    assert len(q2_k.tensors) == 323  # 3 merged expert tensors per layer
    assert sum(t.is_expert for t in q2_k.tensors) == 32 * 3


def test_mixtral_q2_k_on_this_24_gb_machine_gets_8k(q2_k: ModelFacts) -> None:
    """The issue's machine: 23.5 GiB, about 22 GiB of it available. 32k (KV 4 GiB + compute
    2 GiB) once left 1 GiB for everything else; now 8k, and the reason says 16k would not leave
    twice the 3.5 GiB kept for the system."""
    machine, total = machine_of(int(23.5 * GiB), int(22 * GiB))
    choice = choose_context(q2_k, machine, ram_total=total)
    assert (choice.n_ctx, choice.reason) == (DEFAULT_CONTEXT, ContextReason.DEFAULT)
    assert choice.headroom == ram_headroom(total)
    assert choice.free is not None and choice.free >= choice.headroom
    assert choice.longer == 16384
    assert choice.longer_free is not None and choice.longer_free < 2 * choice.headroom
    assert choice.text() == (
        "context 8,192 tokens: the default; 16,384 would leave "
        f"{format_memory(choice.longer_free)} free, less than twice the 3.5 GiB kept for the "
        "system")
    assert choose_context(q2_k, simulated_machine(ram=24 * GB)).n_ctx == DEFAULT_CONTEXT


def test_mixtral_q2_k_on_a_busy_24_gb_machine_gets_less(q2_k: ModelFacts) -> None:
    machine, total = machine_of(24 * GB, 19 * GiB)  # 3 GiB in use elsewhere
    choice = choose_context(q2_k, machine, ram_total=total)
    assert choice.n_ctx < DEFAULT_CONTEXT and choice.reason is ContextReason.MOST_THAT_FITS
    assert choice.free is not None and choice.free >= choice.headroom
    assert choice.longer == choice.n_ctx * 2
    assert choice.why().startswith(f"the most that leaves {format_memory(choice.headroom)} "
                                   f"free for the system; {choice.longer:,} would leave ")


def test_mixtral_q2_k_on_16_gb_does_not_fit_and_gets_the_minimum(q2_k: ModelFacts) -> None:
    machine, total = machine_of(16 * GB)
    choice = choose_context(q2_k, machine, ram_total=total)
    assert (choice.n_ctx, choice.reason) == (MINIMUM, ContextReason.TOO_LARGE)


def test_mixtral_q2_k_on_64_gb_gets_32k(q2_k: ModelFacts) -> None:
    machine, total = machine_of(64 * GB, 60 * GB)
    choice = choose_context(q2_k, machine, ram_total=total)
    assert (choice.n_ctx, choice.reason) == (32768, ContextReason.PLENTIFUL)
    assert choice.why().startswith("memory is plentiful, ")


def test_a_gpu_does_not_buy_a_longer_context_with_weights(mixtral: ModelFacts,
                                                        q2_k: ModelFacts) -> None:
    """On a GPU a context above 8k must also keep the 8k plan's layers and experts on the GPU:
    by default a longer window never slows every token."""
    cpu_only = choose_context(mixtral, simulated_machine(ram=32 * GB))
    rtx = simulated_machine(ram=32 * GB, vram=24 * GiB, gpu_name="NVIDIA GeForce RTX 4090")
    with_gpu = choose_context(mixtral, rtx)
    assert with_gpu.n_ctx >= cpu_only.n_ctx
    assert (with_gpu.n_ctx, with_gpu.reason) == (DEFAULT_CONTEXT, ContextReason.DEFAULT)
    assert with_gpu.longer_slower
    assert with_gpu.why() == ("the default; 16,384 would move weights from the GPU to RAM, "
                              "slowing every token")
    q2_on_gpu = choose_context(q2_k, rtx)  # 14.6 GiB of weights: 32k fits beside them
    assert (q2_on_gpu.n_ctx, q2_on_gpu.reason) == (32768, ContextReason.PLENTIFUL)


def test_a_placement_set_by_hand_decides_what_the_context_may_use(q2_k: ModelFacts) -> None:
    rtx = simulated_machine(ram=24 * GB, vram=24 * GiB, gpu_name="NVIDIA GeForce RTX 4090")
    assert choose_context(q2_k, rtx).n_ctx == 32768  # all on the GPU
    by_hand = choose_context(q2_k, rtx, gpu_layers=0)  # the CPU alone, as chosen
    assert by_hand.n_ctx == DEFAULT_CONTEXT


def test_the_trained_length_caps_the_context(tiny_model: Path) -> None:
    facts = inspect_model(tiny_model)
    choice = choose_context(facts, simulated_machine(ram=64 * GB))
    assert (choice.n_ctx, choice.reason) == (facts.context_length, ContextReason.TRAINED)
    assert choice.why().startswith("the model's training length, which leaves ")


def test_the_reason_is_data_and_one_sentence() -> None:
    choice = ContextChoice(4096, ContextReason.MOST_THAT_FITS, int(3.5 * GiB), 4 * GiB, 8192,
                           int(1.2 * GiB))
    assert choice.text() == ("context 4,096 tokens: the most that leaves 3.5 GiB free for the "
                             "system; 8,192 would leave 1.2 GiB")
    assert choice.to_json_dict() == {
        "n_ctx": 4096, "reason": "most-that-fits", "headroom_bytes": int(3.5 * GiB),
        "free_bytes": 4 * GiB, "longer": 8192, "longer_free_bytes": int(1.2 * GiB),
        "longer_slower": False, "text": choice.text()}
    assert set_context(512).text() == "context 512 tokens: as set, not chosen automatically"
    gone = ContextChoice(8192, ContextReason.DEFAULT, 2 * GiB, 3 * GiB, 16384, None)
    assert gone.why() == "the default; 16,384 would not fit in memory"
    tight = ContextChoice(2048, ContextReason.TIGHT, 2 * GiB, GiB)
    assert tight.why() == ("the shortest offered, and even it leaves only 1.0 GiB free, less "
                           "than the 2.0 GiB kept for the system")


def test_a_load_plans_its_context_for_the_machine_it_finds(
        q2_k: ModelFacts, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_load on a faked 24 GB machine (CPU build): 8k, and the reason travels along."""
    from mixtral_desk.core import hardware
    from mixtral_desk.core.engine import BackendInfo
    from mixtral_desk.core.session.loading import LoadChoice, prepare_load

    machine = Hardware(ram_total=int(23.5 * GiB), ram_available=22 * GiB, cpu_physical_cores=2,
                       cpu_logical_cores=2, cpu_name="Test CPU", os_name="Linux",
                       os_platform="Linux", machine="x86_64")
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: machine)

    class CpuBuild:
        def backend_info(self) -> BackendInfo:
            return BackendInfo(("CPU",), False, "AVX2 = 1", "test")

    engine: Any = CpuBuild()
    prepared = prepare_load(engine, Settings().load, LoadChoice(q2_k.path))
    assert prepared.options.n_ctx == DEFAULT_CONTEXT
    assert prepared.context is not None and prepared.context.reason is ContextReason.DEFAULT
    manual = prepare_load(engine, Settings().load, LoadChoice(q2_k.path, gpu_layers=0))
    assert manual.options.n_ctx == DEFAULT_CONTEXT
    given = prepare_load(engine, Settings().load, LoadChoice(q2_k.path, n_ctx=1024))
    assert given.options.n_ctx == 1024 and given.context == set_context(1024)


def test_first_run_recommends_what_fits_and_reads_well() -> None:
    catalog = load_catalog()
    gpu = simulated_machine(ram=64 * GB, vram=24 * GB, gpu_name="NVIDIA GeForce RTX 4090")
    choice = recommend(catalog, gpu)
    assert choice is not None and choice.readable
    assert choice.entry.family.lower().startswith("mixtral")
    assert choice.plan.fits and choice.plan.tokens_per_s >= READABLE_TOKENS_PER_S
    # A bigger model or file that would also be readable is never passed over.
    for entry in catalog:
        from mixtral_desk.core.planner import plan_for_catalog_entry

        plan = plan_for_catalog_entry(entry, gpu)
        if plan.fits and plan.tokens_per_s >= READABLE_TOKENS_PER_S:
            assert (entry.parameters, entry.size_bytes) <= (choice.entry.parameters,
                                                            choice.entry.size_bytes)


def test_a_small_laptop_gets_a_small_model_and_a_tiny_one_none() -> None:
    catalog = load_catalog()
    small = recommend(catalog, simulated_machine(ram=8 * GB))
    assert small is not None and small.entry.size_bytes < 8 * GB
    assert recommend(catalog, simulated_machine(ram=2 * GB)) is None


def test_the_cli_says_why_the_context_has_its_length(tiny_model: Path,
                                                     data_home: DataPaths) -> None:
    """``complete`` (like ``chat``) says it after loading; ``plan`` under its Context line."""
    run = [sys.executable, "-m", "mixtral_desk"]
    result = subprocess.run([*run, "complete", "--model", str(tiny_model), "--prompt", "Once",
                             "--max-tokens", "2", "--temperature", "0"], capture_output=True,
                            text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "note: plan: all 3 layers on the CPU" in result.stderr  # Automatic, by default
    assert "note: context 4,096 tokens: the model's training length, which leaves " \
        in result.stderr
    given = subprocess.run([*run, "complete", "--model", str(tiny_model), "--prompt", "Once",
                            "--max-tokens", "2", "--ctx", "512"], capture_output=True, text=True,
                           timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert given.returncode == 0 and "note: context" not in given.stderr  # set: nothing to say
    plan = subprocess.run([*run, "plan", "--model", str(tiny_model), "--ram", "64GiB",
                           "--vram", "0", "--json"], capture_output=True, text=True, timeout=60,
                          check=False)
    context = json.loads(plan.stdout)["context"]
    assert (context["n_ctx"], context["reason"]) == (4096, "trained")
    assert context["headroom_bytes"] == ram_headroom(64 * GiB)
    assert context["text"].startswith("context 4,096 tokens: the model's training length")
