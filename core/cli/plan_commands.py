"""``plan``: where a model's layers and experts would go on this (or a simulated) machine.

``mixtral-desk plan --model (PATH | CATALOG_ID) [--ctx N] [--kv-type T] [--vram SIZE] [--ram SIZE]
[--gpu-name NAME] [--json]``. A catalog id that is not downloaded is planned from its header,
read remotely with HTTP Range requests (a few megabytes), so the plan exists before a 26 GB
download; in Offline mode (or with the Hub unreachable) it says so at once instead of waiting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mixtral_desk.core.catalog import load_catalog
from mixtral_desk.core.cli.output import print_json
from mixtral_desk.core.context_size import ContextChoice
from mixtral_desk.core.errors import ModelFileNotFoundError, PerExpertModelError
from mixtral_desk.core.gguf.merge_experts import refuse_per_expert
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.measured_speeds import speeds_for_facts
from mixtral_desk.core.memory_model import MemoryModel
from mixtral_desk.core.model_layout import layout_from_facts
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.plan_inputs import (
    context_for,
    machine_here,
    memory_model_for,
    ram_total_here,
)
from mixtral_desk.core.planner import Machine, Plan, plan_offload
from mixtral_desk.core.units import format_bytes, format_memory, parse_size

KV_TYPES = ("f16", "q8_0", "q4_0")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plan`` to the CLI."""
    parser = commands.add_parser(
        "plan", help=tr("plan GPU layers and MoE expert placement for a model on this machine"))
    parser.add_argument("--model", required=True, metavar="PATH|CATALOG_ID",
                        help=tr("a .gguf file, or a catalog id (its header is read from the Hub "
                                "unless it is downloaded)"))
    parser.add_argument("--ctx", type=_context_length, metavar="N",
                        help=tr("context length in tokens"))
    parser.add_argument("--kv-type", choices=KV_TYPES,
                        help=tr("KV cache type (default: settings)"))
    parser.add_argument("--vram", type=_size, metavar="SIZE",
                        help=tr("plan for this much free GPU memory (e.g. 24GiB; 0 = no GPU)"))
    parser.add_argument("--ram", type=_size, metavar="SIZE",
                        help=tr("plan for this much available RAM (e.g. 64GiB)"))
    parser.add_argument("--gpu-name", metavar="NAME",
                        help=tr("the simulated GPU's name, for its memory bandwidth "
                                "(e.g. 'RTX 4090')"))
    parser.add_argument("--endpoint", help=tr("Hub endpoint or mirror for a remote header"))
    parser.add_argument("--json", action="store_true", help=tr("print the plan as JSON"))
    parser.set_defaults(handler=plan_command)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _context_length(text: str) -> int:
    """``--ctx``: a whole number of tokens that a load accepts too."""
    from mixtral_desk.core.engine.options import MAX_CONTEXT, MIN_CONTEXT

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_CONTEXT <= value <= MAX_CONTEXT:
        raise argparse.ArgumentTypeError(tr("{text} is not a context length from {low} to {high} "
                                            "tokens", text=repr(text), low=MIN_CONTEXT,
                                            high=MAX_CONTEXT))
    return value


def _facts(model: str, endpoint: str | None) -> tuple[ModelFacts, str]:
    """The model's facts and where they came from (``"local file"``, ``"downloaded file"`` or
    ``"remote header (URL)"``: machine-readable, for ``--json``; :func:`source_text` words it).

    Raises:
        ModelFileNotFoundError: not a file and not a catalog id that looks like a path.
        NotFoundError: not a file and not a catalog id (with close ids suggested).
        RemoteHeaderOfflineError: Offline mode is on (at once, nothing sent).
        RemoteHeaderError: the remote header cannot be read (unreachable, refused).
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
    from mixtral_desk.core.gguf.remote_header import read_remote_facts

    hub = HubClient(endpoint)
    return read_remote_facts(hub, entry.repo_id, entry.files, entry.revision), \
        f"remote header ({hub.endpoint}/{entry.repo_id})"


def source_text(source: str) -> str:
    """Where the facts came from, in the interface language (``source`` from :func:`_facts`)."""
    if source == "local file":
        return tr("local file")
    if source == "downloaded file":
        return tr("downloaded file")
    if source.startswith("remote header (") and source.endswith(")"):
        return tr("remote header ({url})", url=source[len("remote header ("):-1])
    return source


def machine_for(args: argparse.Namespace) -> Machine:
    """The machine to plan for: this one, with ``--vram``/``--ram``/``--gpu-name`` replacing what
    was detected. Raises nothing."""
    return machine_here(args.vram, args.ram, args.gpu_name)


def ram_total_for(args: argparse.Namespace) -> int:
    """The total RAM the automatic context's headroom is taken from: ``--ram``, else this
    machine's. Raises nothing."""
    return ram_total_here(args.ram)


def plan_lines(plan: Plan, facts: ModelFacts, source: str, model: MemoryModel,
               context: ContextChoice | None = None) -> list[str]:
    """The human-readable plan (``source`` as :func:`_facts` gives it; ``context``: why this
    context length, shown under it)."""
    flags = f"--gpu-layers {plan.load_gpu_layers}" + (f" --cpu-moe {plan.n_cpu_moe}"
                                                       if plan.n_cpu_moe else "")
    facts_values = {"name": facts.name or facts.path.name, "quant": facts.quantization,
                    "size": format_bytes(facts.file_size), "layers": facts.n_layers,
                    "source": source_text(source)}
    lines = [
        tr("Model:    {name} ({quant}, {size}; {layers} layers, {experts} experts / {used} "
           "used) from {source}", experts=facts.expert_count, used=facts.expert_used_count,
           **facts_values) if facts.is_moe else
        tr("Model:    {name} ({quant}, {size}; {layers} layers) from {source}", **facts_values),
        tr("Machine:  {machine}", machine=plan.machine.describe()),
        tr("Context:  {tokens} tokens, KV cache {kv_type} ({kv_size}), compute buffer about "
           "{compute_size}", tokens=format(plan.n_ctx, ","), kv_type=plan.kv_type,
           kv_size=format_memory(model.kv_bytes), compute_size=format_memory(model.compute_bytes)),
        *([" " * 10 + context.why()] if context is not None else []),
        tr("Verdict:  {verdict}", verdict=plan.verdict),
        tr("Plan:     {explanation}", explanation=plan.explanation),
        *speed_lines(plan),
    ]
    if plan.fits and plan.cpu_moe_tensors:
        lines.append(tr("Flags:    {flags}, and the boundary layer's {kinds} experts in RAM: only "
                        "chat --gpu-layers auto places those", flags=flags,
                        kinds="/".join(plan.cpu_moe_tensors)))
    elif plan.fits:
        lines.append(tr("Flags:    {flags} (or chat --gpu-layers auto)", flags=flags))
    lines.extend(tr("Note:     {note}", note=note) for note in plan.machine.notes)
    if (refusal := load_refusal(facts)) is not None:
        lines.append(tr("Note:     {note}", note=refusal))
    return lines


def load_refusal(facts: ModelFacts) -> str | None:
    """Why this llama.cpp would refuse to load the model (one tensor per expert), or ``None``."""
    try:
        refuse_per_expert(facts)
    except PerExpertModelError as error:
        return str(error)
    return None


def _rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s:.0f}" if tokens_per_s >= 100 else f"{tokens_per_s:.1f}"


def speed_lines(plan: Plan) -> list[str]:
    """The predicted speeds, what they rest on, and what was measured with this placement."""
    speed = plan.speed
    if speed is None:
        return []
    machine = plan.machine
    lines = [tr("Speed:    decode about {decode} tok/s ({full} tok/s with the context full), "
                "prompt about {prompt} tok/s", decode=_rate(speed.decode),
                full=_rate(speed.decode_full), prompt=_rate(speed.prompt))]
    values = {"bandwidth": f"{machine.cpu_decode_rate / 1e9:.1f}",
              "flops": f"{machine.cpu_flops / 1e9:.0f}"}
    lines.append(tr("Basis:    CPU memory bandwidth {bandwidth} GB/s and {flops} GFLOP/s as "
                    "llama.cpp uses them, measured on this machine", **values)
                 if machine.cpu_measured else
                 tr("Basis:    CPU memory bandwidth {bandwidth} GB/s and {flops} GFLOP/s "
                    "(estimates: this CPU was not measured)", **values))
    cal = speed.calibration
    if cal.measured_decode is not None and cal.measured_prompt is not None:
        lines.append(tr("Measured: decode {decode} tok/s, prompt {prompt} tok/s with this "
                        "placement on this machine; predictions calibrated by {count} replies",
                        decode=_rate(cal.measured_decode), prompt=_rate(cal.measured_prompt),
                        count=cal.replies))
    elif cal.measured_decode is not None:
        lines.append(tr("Measured: decode {decode} tok/s with this placement on this machine; "
                        "predictions calibrated by {count} replies",
                        decode=_rate(cal.measured_decode), count=cal.replies))
    elif cal.calibrated:
        lines.append(tr("Measured: not with this placement; predictions calibrated by {count} "
                        "replies with others on this machine", count=cal.replies))
    return lines


def plan_command(args: argparse.Namespace) -> int:
    """Print the plan (or JSON); exit 0 even when the verdict is ``too-large``.

    Raises:
        DeskError: the model is not a file or catalog id, its header cannot be read (remotely:
            Offline mode or unreachable, said so at once), or it is not a usable GGUF model.
    """
    facts, source = _facts(args.model, args.endpoint)
    machine = machine_for(args)
    context = context_for(facts, args.ctx, args.kv_type, machine, ram_total_for(args))
    model = memory_model_for(facts, args.ctx, args.kv_type, machine, context)
    plan = plan_offload(model, machine, layout=layout_from_facts(facts),
                        measured=speeds_for_facts(facts))
    if args.json:
        print_json({**plan.to_json_dict(), "source": source, "model_path": str(facts.path),
                    "kv_bytes": model.kv_bytes, "compute_bytes": model.compute_bytes,
                    "weight_bytes": model.weight_bytes, "context": context.to_json_dict(),
                    "load_refusal": load_refusal(facts)})
        return 0
    for line in plan_lines(plan, facts, source, model, context):
        print(line)
    return 0
