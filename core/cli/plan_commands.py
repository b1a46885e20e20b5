"""``plan``: where a model's layers and experts would go on this (or a simulated) machine.

``mixtral-desk plan --model (PATH | CATALOG_ID) [--ctx N] [--kv-type T] [--vram SIZE] [--ram SIZE]
[--gpu-name NAME] [--json]``. A catalog id that is not downloaded is planned from its header,
read remotely with HTTP Range requests (a few megabytes), so the plan exists before a 26 GB
download; offline, that says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mixtral_desk.core.catalog import load_catalog
from mixtral_desk.core.cli.output import print_json
from mixtral_desk.core.errors import ModelFileNotFoundError
from mixtral_desk.core.hardware import detect_hardware
from mixtral_desk.core.memory_model import MemoryModel, memory_model_from_facts
from mixtral_desk.core.model_file import ModelFacts, inspect_model
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.planner import Machine, Plan, machine_from_hardware, plan_offload
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.units import format_bytes, format_memory, parse_size

KV_TYPES = ("f16", "q8_0", "q4_0")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plan`` to the CLI."""
    parser = commands.add_parser(
        "plan", help="plan GPU layers and MoE expert placement for a model on this machine")
    parser.add_argument("--model", required=True, metavar="PATH|CATALOG_ID",
                        help="a .gguf file, or a catalog id (its header is read from the Hub "
                             "unless it is downloaded)")
    parser.add_argument("--ctx", type=int, metavar="N", help="context length in tokens")
    parser.add_argument("--kv-type", choices=KV_TYPES, help="KV cache type (default: settings)")
    parser.add_argument("--vram", type=_size, metavar="SIZE",
                        help="plan for this much free GPU memory (e.g. 24GiB; 0 = no GPU)")
    parser.add_argument("--ram", type=_size, metavar="SIZE",
                        help="plan for this much available RAM (e.g. 64GiB)")
    parser.add_argument("--gpu-name", metavar="NAME",
                        help="the simulated GPU's name, for its memory bandwidth (e.g. 'RTX 4090')")
    parser.add_argument("--endpoint", help="Hub endpoint or mirror for a remote header")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=plan_command)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _facts(model: str, endpoint: str | None) -> tuple[ModelFacts, str]:
    """The model's facts and where they came from ("local file" or "remote header").

    Raises:
        ModelFileNotFoundError: not a file and not a catalog id that looks like a path.
        NotFoundError: not a file and not a catalog id (with close ids suggested).
        RemoteHeaderError: the remote header cannot be read (offline, unreachable, refused).
        GGUFError: the file or header is not a usable GGUF model.
    """
    path = Path(model).expanduser()
    if path.exists() or model.endswith(".gguf") or "/" in model or "\\" in model:
        if not path.exists():
            raise ModelFileNotFoundError(path)
        return inspect_model(path), "local file"
    entry = load_catalog().get(model)
    models_dir = data_paths().models_dir
    if entry.is_downloaded(models_dir):
        return inspect_model(entry.local_paths(models_dir)[0]), "downloaded file"
    from mixtral_desk.core.downloads.hub import HubClient
    from mixtral_desk.core.remote_header import read_remote_facts

    hub = HubClient(endpoint)
    return read_remote_facts(hub, entry.repo_id, entry.files, entry.revision), \
        f"remote header ({hub.endpoint}/{entry.repo_id})"


def machine_for(args: argparse.Namespace) -> Machine:
    """The machine to plan for: this one, with ``--vram``/``--ram``/``--gpu-name`` replacing what
    was detected. Raises nothing."""
    hardware = detect_hardware(probe_gpus=args.vram is None or args.gpu_name is None)
    gpu_offload = True
    if args.vram is None and hardware.gpus:
        from mixtral_desk.core.engine import probe_backend
        from mixtral_desk.core.errors import EngineError

        try:
            gpu_offload = probe_backend().gpu_offload
        except EngineError:
            gpu_offload = False
    machine = machine_from_hardware(hardware, vram=args.vram, ram=args.ram,
                                    gpu_offload=gpu_offload)
    if args.gpu_name and machine.has_gpu:
        from mixtral_desk.core.planner import simulated_machine

        vendor = "apple" if args.gpu_name.lower().startswith(("apple", "m1", "m2", "m3", "m4")) \
            else "nvidia"
        machine = simulated_machine(ram=machine.ram_bytes, vram=machine.vram_bytes,
                                    gpu_name=args.gpu_name, vendor=vendor,
                                    unified_memory=vendor == "apple")
    return machine


def memory_model_for(facts: ModelFacts, ctx: int | None, kv_type: str | None) -> MemoryModel:
    """The memory model with the settings' defaults for what is not given.

    Raises:
        ValueError: a context length that is not positive.
    """
    load = load_settings().load
    kv = kv_type or load.kv_type
    return memory_model_from_facts(facts, ctx or load.n_ctx, kv,
                                   flash_attn=load.flash_attn or kv != "f16")


def plan_lines(plan: Plan, facts: ModelFacts, source: str, model: MemoryModel) -> list[str]:
    """The human-readable plan."""
    experts = (f", {facts.expert_count} experts / {facts.expert_used_count} used"
               if facts.is_moe else "")
    flags = f"--gpu-layers {plan.load_gpu_layers}" + (f" --cpu-moe {plan.n_cpu_moe}"
                                                       if plan.n_cpu_moe else "")
    lines = [
        f"Model:    {facts.name or facts.path.name} ({facts.quantization}, "
        f"{format_bytes(facts.file_size)}; {facts.n_layers} layers{experts}) from {source}",
        f"Machine:  {plan.machine.describe()}",
        f"Context:  {plan.n_ctx:,} tokens, KV cache {plan.kv_type} "
        f"({format_memory(model.kv_bytes)}), compute buffer about "
        f"{format_memory(model.compute_bytes)}",
        f"Verdict:  {plan.verdict}",
        f"Plan:     {plan.explanation}",
    ]
    if plan.fits:
        lines.append(f"Flags:    {flags} (or chat --gpu-layers auto)")
    lines.extend(f"Note:     {note}" for note in plan.machine.notes)
    return lines


def plan_command(args: argparse.Namespace) -> int:
    """Print the plan (or JSON); exit 0 even when the verdict is ``too-large``.

    Raises:
        DeskError: the model is not a file or catalog id, its header cannot be read (remotely:
            offline or unreachable, said so), or it is not a usable GGUF model.
    """
    facts, source = _facts(args.model, args.endpoint)
    model = memory_model_for(facts, args.ctx, args.kv_type)
    plan = plan_offload(model, machine_for(args))
    if args.json:
        print_json({**plan.to_json_dict(), "source": source, "model_path": str(facts.path),
                    "kv_bytes": model.kv_bytes, "compute_bytes": model.compute_bytes,
                    "weight_bytes": model.weight_bytes})
        return 0
    for line in plan_lines(plan, facts, source, model):
        print(line)
    return 0
