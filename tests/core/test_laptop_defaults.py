"""Laptop-friendly defaults: the context that fits this machine, the catalog entry to suggest."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixtral_desk.core.catalog import load_catalog
from mixtral_desk.core.context_size import CANDIDATES, MINIMUM, automatic_context
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model
from mixtral_desk.core.planner import simulated_machine
from mixtral_desk.core.recommend import READABLE_TOKENS_PER_S, recommend
from mixtral_desk.core.settings import Settings
from tests.mixtral_header import write_mixtral_q4_k_m

GB = 10**9


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    """The header of a Mixtral-8x7B Q4_K_M file (26 GB of sparse tensor data)."""
    return inspect_model(write_mixtral_q4_k_m(tmp_path_factory.mktemp("m") / "mixtral.gguf"))


def test_context_defaults_to_automatic() -> None:
    load = Settings().load
    assert load.n_ctx is None
    assert load.n_threads is None  # physical cores, chosen in the engine process
    assert load.use_mmap is True
    assert load.idle_unload_minutes == 30


def test_a_roomy_machine_gets_the_longest_context(mixtral: ModelFacts) -> None:
    assert mixtral.context_length == 32768
    assert automatic_context(mixtral, simulated_machine(ram=128 * GB)) == CANDIDATES[0]


def test_the_context_shrinks_to_what_fits(mixtral: ModelFacts) -> None:
    chosen = [automatic_context(mixtral, simulated_machine(ram=ram * GB))
              for ram in (31, 32, 33, 36, 40, 64)]
    assert chosen == sorted(chosen), chosen  # more memory never gives a shorter context
    assert chosen[0] < CANDIDATES[0] <= chosen[-1]
    assert all(n in CANDIDATES for n in chosen)


def test_nothing_fits_gives_the_minimum(mixtral: ModelFacts) -> None:
    assert automatic_context(mixtral, simulated_machine(ram=8 * GB)) == MINIMUM


def test_a_gpu_counts_towards_the_room_for_the_context(mixtral: ModelFacts) -> None:
    cpu_only = automatic_context(mixtral, simulated_machine(ram=32 * GB))
    with_gpu = automatic_context(mixtral, simulated_machine(ram=32 * GB, vram=24 * GB,
                                                            gpu_name="NVIDIA GeForce RTX 4090"))
    assert with_gpu >= cpu_only
    assert with_gpu == CANDIDATES[0]


def test_the_trained_length_caps_the_context(tiny_model: Path) -> None:
    facts = inspect_model(tiny_model)
    assert automatic_context(facts, simulated_machine(ram=64 * GB)) == facts.context_length


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
