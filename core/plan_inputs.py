"""What a plan is made for: this machine (or a simulated one), the context a load would choose
and the memory model with the settings' defaults.

Shared by ``plan``, ``hub files`` and the window's Hub browser (:mod:`.hub.fit`), so that a
verdict before download and the plan of a downloaded file agree.
"""

from __future__ import annotations

from .context_size import ContextChoice, choose_context, set_context
from .gguf.model_file import ModelFacts
from .hardware import detect_hardware
from .memory_model import MemoryModel, memory_model_from_facts
from .planner import Machine, machine_from_hardware
from .settings import load_settings


def machine_here(vram: int | None = None, ram: int | None = None,
                 gpu_name: str | None = None) -> Machine:
    """The machine to plan for: this one, with ``vram``/``ram``/``gpu_name`` (``plan --vram``
    …) replacing what was detected; the llama.cpp build is asked whether it can offload.
    Raises nothing."""
    hardware = detect_hardware(probe_gpus=vram is None or gpu_name is None)
    threads = load_settings().load.n_threads
    gpu_offload = True
    if vram is None and hardware.gpus:
        from .engine import probe_backend
        from .errors import EngineError

        try:
            gpu_offload = probe_backend().gpu_offload
        except EngineError:
            gpu_offload = False
    machine = machine_from_hardware(hardware, vram=vram, ram=ram,
                                    gpu_offload=gpu_offload, threads=threads)
    if gpu_name and machine.has_gpu:
        from .planner import simulated_machine

        vendor = "apple" if gpu_name.lower().startswith(("apple", "m1", "m2", "m3", "m4")) \
            else "nvidia"
        machine = simulated_machine(ram=machine.ram_bytes, vram=machine.vram_bytes,
                                    gpu_name=gpu_name, vendor=vendor,
                                    unified_memory=vendor == "apple", cpu=hardware.cpu_speed,
                                    threads=threads)
    return machine


def ram_total_here(ram: int | None = None) -> int:
    """The total RAM the automatic context's headroom is taken from: ``ram`` (a simulated
    machine of that size), else this machine's. Raises nothing."""
    if ram is not None:
        return int(ram)
    return detect_hardware(probe_gpus=False).ram_total


def context_for(facts: ModelFacts, ctx: int | None, kv_type: str | None, machine: Machine,
                ram_total: int | None = None) -> ContextChoice:
    """The context a load would use, with why: ``--ctx``, else the settings' length, else the
    automatic one for ``machine`` (:func:`~mixtral_desk.core.context_size.choose_context`).
    Raises nothing."""
    load = load_settings().load
    kv = kv_type or load.kv_type
    n_ctx = ctx or load.n_ctx
    if n_ctx is not None:
        return set_context(n_ctx)
    return choose_context(facts, machine, ram_total=ram_total, kv_type=kv,
                          flash_attn=load.flash_attn or kv != "f16")


def memory_model_for(facts: ModelFacts, ctx: int | None, kv_type: str | None,
                     machine: Machine, context: ContextChoice | None = None) -> MemoryModel:
    """The memory model with the settings' defaults for what is not given (the context as a
    load would choose it, unless ``context`` gives it).

    Raises:
        ValueError: a context length that is not positive.
    """
    load = load_settings().load
    kv = kv_type or load.kv_type
    flash_attn = load.flash_attn or kv != "f16"
    n_ctx = (context or context_for(facts, ctx, kv_type, machine)).n_ctx
    return memory_model_from_facts(facts, n_ctx, kv, flash_attn=flash_attn)
