"""Loading a model: the user's settings and choices → load options → a plan → a loaded model.

One rule for the window, the CLI (``chat``, ``complete``, ``serve``) and the API server:

* a command-line value (``--gpu-layers``, ``--cpu-moe``, ``--ctx``, ``--threads``) wins over the
  saved setting of the same name;
* "Automatic" GPU layers (``--gpu-layers auto``, or the setting) plan the GPU layers and the
  expert placement for this machine (:func:`mixtral_desk.core.planner.auto_load`);
* a context length that nobody chose is chosen for this machine with the model — 8k, longer only
  when memory is plentiful, shorter when it is tight, always leaving room for the rest of the
  system — planned for the CPU alone when the llama.cpp build cannot offload, and for the
  placement set by hand when GPU layers are not automatic; the report says why
  (:mod:`mixtral_desk.core.context_size`);
* the file is inspected before llama.cpp sees it, so a broken file gets a clear error, and a
  Mixtral file from before April 2024 (one tensor per expert) is refused with a way to convert it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from mixtral_desk.core.engine import LoadOptions
from mixtral_desk.core.errors import SettingsError
from mixtral_desk.core.i18n import N_

if TYPE_CHECKING:
    from mixtral_desk.core.context_size import ContextChoice
    from mixtral_desk.core.engine import BackendInfo, EngineHost, ModelInfo
    from mixtral_desk.core.gguf.model_file import ModelFacts
    from mixtral_desk.core.hardware import Hardware
    from mixtral_desk.core.planner import Plan
    from mixtral_desk.core.settings import LoadDefaults

GpuLayers = int | Literal["auto"]


@dataclass(frozen=True)
class LoadChoice:
    """What the user asked to load: a model file and the values given for this load only.

    ``None`` for a value means "as in the settings". ``gpu_layers`` is a layer count (-1: all) or
    ``"auto"`` (plan for this machine).
    """

    path: Path
    gpu_layers: GpuLayers | None = None
    cpu_moe: int | None = None
    n_ctx: int | None = None
    n_threads: int | None = None

    def automatic(self, defaults: LoadDefaults) -> bool:
        """Whether the GPU layers and expert placement are planned for this machine."""
        if self.gpu_layers is None:
            return defaults.gpu_layers_auto
        return self.gpu_layers == "auto"


@dataclass(frozen=True)
class LoadReport:
    """How a model was loaded.

    ``plan``: the plan that worked, when the placement was planned automatically; ``notes``: what
    the planner said (the plan, a fallback after running out of memory); ``warnings``: where
    llama.cpp did not do what the plan expected; ``n_cpu_moe``: the layers whose experts were kept
    in RAM; ``fallback_template``: the model has no chat template (a plain format is used);
    ``broken_template``: the model has one, but it fails when rendering a conversation (the plain
    format is used instead);
    ``context``: the context length and why it was chosen (:meth:`ContextChoice.text` says it).
    """

    n_cpu_moe: int = 0
    plan: Plan | None = None
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    fallback_template: bool = False
    broken_template: bool = False
    settings: LoadDefaults | None = None
    context: ContextChoice | None = None


def load_options(defaults: LoadDefaults, choice: LoadChoice, *, n_ctx: int) -> LoadOptions:
    """The load options for ``choice`` over the saved ``defaults``, with context ``n_ctx``.

    Raises:
        SettingsError: the values cannot be used together (say, a quantized KV cache without
            flash attention); the message says which and why.
    """
    manual = choice.gpu_layers if isinstance(choice.gpu_layers, int) else None
    try:
        return _options(defaults, choice, manual, n_ctx)
    except ValidationError as error:
        problem = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise SettingsError(N_("These load settings cannot be used: {problem}"),
                            problem=problem) from error


def _options(defaults: LoadDefaults, choice: LoadChoice, manual: int | None,
             n_ctx: int) -> LoadOptions:
    return LoadOptions(
        model_path=choice.path,
        n_gpu_layers=defaults.n_gpu_layers if manual is None else manual,
        n_cpu_moe=defaults.n_cpu_moe if choice.cpu_moe is None else choice.cpu_moe,
        n_ctx=n_ctx,
        n_threads=defaults.n_threads if choice.n_threads is None else choice.n_threads,
        n_batch=defaults.n_batch,
        flash_attn=defaults.flash_attn,
        kv_type=defaults.kv_type,
        use_mmap=defaults.use_mmap,
        use_mlock=defaults.use_mlock,
        prompt_cache_dir=None if defaults.prompt_cache_gib == 0 else prompt_cache_dir(),
        prompt_cache_disk_bytes=None if defaults.prompt_cache_gib is None
        else int(defaults.prompt_cache_gib * (1 << 30)),
    )


def prompt_cache_dir() -> Path:
    """The prompt cache's folder (in the cache folder: it can be deleted at any time)."""
    from mixtral_desk.core.paths import data_paths

    return data_paths().cache_dir / "prompt-cache"


@dataclass(frozen=True)
class PreparedLoad:
    """Everything a load needs, worked out before the engine is touched: the file's facts, the
    machine, the llama.cpp build and the load options (with the context length, and ``context``:
    why that length)."""

    choice: LoadChoice
    defaults: LoadDefaults
    facts: ModelFacts
    hardware: Hardware
    backend: BackendInfo
    options: LoadOptions
    context: ContextChoice | None = None


def prepare_load(engine: EngineHost, defaults: LoadDefaults, choice: LoadChoice) -> PreparedLoad:
    """Check the file and work out the load options (the automatic context included), without
    touching the model the engine holds now.

    Raises:
        ModelFileNotFoundError, GGUFError: the file is missing or not a usable model.
        PerExpertModelError: it stores one tensor per expert (convert it first).
        SettingsError: the load settings cannot be used together.
    """
    from mixtral_desk.core import planner
    from mixtral_desk.core.context_size import choose_context, set_context
    from mixtral_desk.core.gguf.merge_experts import refuse_per_expert
    from mixtral_desk.core.gguf.model_file import inspect_model
    from mixtral_desk.core.hardware import detect_hardware

    facts = inspect_model(choice.path)
    refuse_per_expert(facts)
    backend = engine.backend_info()
    hardware = detect_hardware(probe_gpus=backend.gpu_offload)
    n_ctx = choice.n_ctx or defaults.n_ctx
    if n_ctx is not None:
        return PreparedLoad(choice, defaults, facts, hardware, backend,
                            load_options(defaults, choice, n_ctx=n_ctx), set_context(n_ctx))
    # Without "Automatic", the placement set by hand decides what a context may use.
    manual = None if choice.automatic(defaults) else (
        choice.gpu_layers if isinstance(choice.gpu_layers, int) else defaults.n_gpu_layers)
    machine = planner.machine_from_hardware(hardware, gpu_offload=backend.gpu_offload)
    context = choose_context(facts, machine, ram_total=hardware.ram_total,
                             kv_type=defaults.kv_type, flash_attn=defaults.flash_attn,
                             gpu_layers=manual, cpu_moe=defaults.n_cpu_moe
                             if choice.cpu_moe is None else choice.cpu_moe)
    return PreparedLoad(choice, defaults, facts, hardware, backend,
                        load_options(defaults, choice, n_ctx=context.n_ctx), context)


def load_prepared(engine: EngineHost, prepared: PreparedLoad, *,
                  say: Callable[[str], None] = lambda _: None,
                  on_progress: Callable[[float], None] | None = None,
                  ) -> tuple[ModelInfo, LoadReport]:
    """Load a prepared model into ``engine`` (it replaces the model there); blocks until loaded.

    ``say`` gets the planner's sentences as they are made (possibly on this worker thread);
    ``on_progress`` the loading progress, 0.0 to 1.0.

    Raises:
        GPUOffloadUnavailableError: GPU layers were asked of a CPU-only llama.cpp build.
        DeskError: the engine cannot load the model (out of memory, llama.cpp refused it…).
    """
    from mixtral_desk.core import planner

    choice, defaults, options = prepared.choice, prepared.defaults, prepared.options
    facts, hardware, backend = prepared.facts, prepared.hardware, prepared.backend

    def load(load_options: LoadOptions) -> ModelInfo:
        return engine.load(load_options, on_progress=on_progress)

    if choice.automatic(defaults):
        notes: list[str] = []

        def note(text: str) -> None:
            notes.append(text)
            say(text)

        info, plan, warnings = planner.auto_load(load, options, facts, hardware, backend, note,
                                                 cpu_moe=choice.cpu_moe)
        return info, LoadReport(plan.n_cpu_moe, plan, tuple(notes), tuple(warnings),
                                fallback_template=info.template_source == "fallback",
                                broken_template=info.template_source == "broken",
                                settings=defaults, context=prepared.context)
    model, machine = planner.planning_inputs(options, facts, hardware, backend)
    manual_plan = planner.plan_for_settings(model, machine, options.n_gpu_layers,
                                            options.n_cpu_moe)
    info = load(options)
    return info, LoadReport(options.n_cpu_moe,
                            warnings=tuple(planner.compare_with_actual(manual_plan, info)),
                            fallback_template=info.template_source == "fallback",
                            broken_template=info.template_source == "broken",
                            settings=defaults, context=prepared.context)
