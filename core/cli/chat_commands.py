"""``chat`` and ``complete``: talk to a model from the terminal.

Ctrl-C while a reply streams stops it (within 100 ms) and keeps what was written, marked as
interrupted; a second Ctrl-C, or one at the prompt, leaves.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from mixtral_desk.core import chat
from mixtral_desk.core import planner as planning
from mixtral_desk.core.context_size import automatic_context_for_file
from mixtral_desk.core.engine import (
    DoneEvent,
    EngineHost,
    LoadOptions,
    ModelInfo,
    ReplyStats,
    SamplingOptions,
)
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.hardware import detect_hardware
from mixtral_desk.core.i18n import ntr, tr
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.store import Store

if TYPE_CHECKING:  # the remote module imports httpx; only its Protocol is needed here
    from mixtral_desk.core.remote import ChatEngine

TITLE_LENGTH = 60


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chat`` and ``complete`` to the CLI."""
    chat_parser = commands.add_parser("chat", help=tr("chat with a model (saved in the store)"))
    _model_arguments(chat_parser)
    chat_parser.add_argument("--system", help=tr("system prompt for a new conversation"))
    chat_parser.add_argument("--prompt", help=tr("send one message, stream the reply and exit"))
    chat_parser.add_argument("--conversation", metavar="ID",
                             help=tr("continue this conversation"))
    _sampling_arguments(chat_parser)
    from mixtral_desk.core.cli import serve_commands  # lazy: it imports this module

    serve_commands.add_remote_arguments(chat_parser)
    chat_parser.set_defaults(handler=chat_command)

    complete = commands.add_parser("complete", help=tr("raw text completion (no chat template)"))
    _model_arguments(complete)
    complete.add_argument("--prompt", required=True, help=tr("the text to continue"))
    _sampling_arguments(complete)
    complete.set_defaults(handler=complete_command)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help=tr("path to a .gguf file"))
    parser.add_argument("--gpu-layers", type=_gpu_layers, metavar="N|auto",
                        help=tr("layers to offload to the GPU (-1 = all; auto = plan GPU layers "
                                "and expert placement for this machine, see `plan`)"))
    parser.add_argument("--cpu-moe", type=_count, metavar="N",
                        help=tr("keep the expert tensors of the first N layers in RAM (MoE "
                                "models)"))
    parser.add_argument("--ctx", type=int, metavar="N", help=tr("context length in tokens"))
    parser.add_argument("--threads", type=int, metavar="N", help=tr("CPU threads"))


def _gpu_layers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(tr("{text} is not a number of layers or 'auto'",
                                            text=repr(text))) from None
    if value < -1:
        raise argparse.ArgumentTypeError(tr("use -1 for all layers, 0 or more, or 'auto'"))
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(tr("{text} is not a number of layers (0 or more)",
                                            text=repr(text)))
    return value


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help=tr("longest reply in tokens"))
    parser.add_argument("--temperature", type=float, metavar="X",
                        help=tr("0 = always the same"))
    parser.add_argument("--seed", type=int, metavar="N", help=tr("random seed for sampling"))


def _load_options(args: argparse.Namespace) -> LoadOptions:
    defaults = load_settings().load
    manual = args.gpu_layers if isinstance(args.gpu_layers, int) else None
    return LoadOptions(
        model_path=args.model,
        n_gpu_layers=defaults.n_gpu_layers if manual is None else manual,
        n_cpu_moe=defaults.n_cpu_moe if args.cpu_moe is None else args.cpu_moe,
        n_ctx=args.ctx or defaults.n_ctx or automatic_context_for_file(
            args.model, kv_type=defaults.kv_type, flash_attn=defaults.flash_attn),
        n_threads=defaults.n_threads if args.threads is None else args.threads,
        n_batch=defaults.n_batch,
        flash_attn=defaults.flash_attn,
        kv_type=defaults.kv_type,
        use_mmap=defaults.use_mmap,
        use_mlock=defaults.use_mlock,
    )


def _sampling(args: argparse.Namespace) -> SamplingOptions:
    overrides = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    base = load_settings().sampling
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _say(text: str) -> None:
    note = tr("note: {text}", text=text)
    print("\n" + note if sys.stderr.isatty() else note, file=sys.stderr)


def _load(engine: EngineHost, args: argparse.Namespace) -> ModelInfo:
    """Check the file (clear errors before llama.cpp sees it), plan the placement with
    ``--gpu-layers auto``, load with progress (once more with a safer plan after running out of
    memory), then warn where llama.cpp did not do what the plan expected.

    Raises:
        DeskError: the file is not a usable model, or the engine cannot load it.
    """
    facts = inspect_model(args.model)
    options = _load_options(args)
    backend = engine.backend_info()
    hardware = detect_hardware(probe_gpus=backend.gpu_offload)
    show = sys.stderr.isatty()

    def progress(fraction: float) -> None:
        if show:
            print("\r" + tr("Loading {name}: {percent}", name=args.model.name,
                            percent=format(fraction, "4.0%")), end="", file=sys.stderr, flush=True)

    def load(load_options: LoadOptions) -> ModelInfo:
        return engine.load(load_options, on_progress=progress)

    auto = args.gpu_layers == "auto" or (args.gpu_layers is None
                                         and load_settings().load.gpu_layers_auto)
    if auto:
        info, _, warnings = planning.auto_load(load, options, facts, hardware, backend, _say,
                                               cpu_moe=args.cpu_moe)
    else:
        model, machine = planning.planning_inputs(options, facts, hardware, backend)
        plan = planning.plan_for_settings(model, machine, options.n_gpu_layers,
                                          options.n_cpu_moe)
        info = load(options)
        warnings = planning.compare_with_actual(plan, info)
    if show:
        print(file=sys.stderr)
    for warning in warnings:
        print(tr("warning: {text}", text=warning), file=sys.stderr)
    if info.template_source == "fallback":
        print(tr("note: this model has no chat template; using the plain fallback format."),
              file=sys.stderr)
    return info


@contextmanager
def ctrl_c_stops(engine: ChatEngine) -> Iterator[None]:
    """While a reply streams, the first Ctrl-C stops it; a second one interrupts for real."""
    pressed = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal pressed
        if pressed:
            raise KeyboardInterrupt
        pressed = True
        engine.stop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_token(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_stats(stats: ReplyStats | None, interrupted: bool) -> None:
    if stats is None:
        return
    parts = [tr("{count} tokens, {rate} tok/s, first token after {seconds} s",
                count=stats.completion_tokens, rate=format(stats.decode_tokens_per_s, ".1f"),
                seconds=format(stats.time_to_first_token_s, ".2f"))]
    if interrupted:
        parts.append(tr("stopped"))
    if stats.dropped_messages:
        parts.append(ntr("{count} older message left out to fit the context",
                         "{count} older messages left out to fit the context",
                         stats.dropped_messages))
    print("[" + tr("; ").join(parts) + "]", file=sys.stderr)


def chat_command(args: argparse.Namespace) -> int:
    """One streamed turn with ``--prompt``; otherwise an interactive chat."""
    from mixtral_desk.core.cli import serve_commands

    if serve_commands.uses_remote(args):
        return serve_commands.remote_chat_command(args)
    with Store.open(data_paths().ensure().database) as store, EngineHost() as engine:
        if args.conversation:
            store.get_conversation(args.conversation)  # an unknown id fails before the load
        _load(engine, args)
        return converse(store, engine, args, model_name=args.model.name,
                        where=args.model.name)


def converse(store: Store, engine: ChatEngine, args: argparse.Namespace, *, model_name: str,
             where: str) -> int:
    """Continue ``--conversation`` or start one, then send ``--prompt`` or chat interactively.

    Shared by the local and the remote ``chat``; returns the exit code (130 when a reply of
    ``--prompt`` was interrupted).

    Raises:
        NotFoundError: ``--conversation`` names no conversation.
        EngineError: the engine failed; the reply so far is stored as interrupted.
    """
    if args.conversation:
        conversation = store.get_conversation(args.conversation)
    else:
        # No title until there is a prompt: each reader shows "New chat" in its own language.
        title = args.prompt[:TITLE_LENGTH] if args.prompt else None
        conversation = store.create_conversation(title, model=model_name,
                                                 system_prompt=args.system)
    sampling = _sampling(args)

    def turn(text: str) -> bool:
        with ctrl_c_stops(engine):
            result = chat.send(store, engine, conversation.id, text, sampling,
                               on_token=_print_token, model_name=model_name)
        print()
        _print_stats(result.stats, result.interrupted)
        return result.interrupted

    if args.prompt is not None:
        print(tr("conversation {id}", id=conversation.id), file=sys.stderr)
        return 130 if turn(args.prompt) else 0
    print(tr("Chatting with {where} (conversation {id}). Ctrl-C stops a reply; Ctrl-D or /exit "
             "leaves.", where=where, id=conversation.id), file=sys.stderr)
    while True:
        try:
            text = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in {"/exit", "/quit"}:
            return 0
        if text.strip():
            turn(text)


def complete_command(args: argparse.Namespace) -> int:
    """Stream a raw completion of ``--prompt`` to stdout; nothing is stored."""
    with EngineHost() as engine:
        _load(engine, args)
        stats: ReplyStats | None = None
        with ctrl_c_stops(engine):
            for event in engine.complete(args.prompt, _sampling(args)):
                if isinstance(event, DoneEvent):
                    stats = event.stats
                else:
                    _print_token(event.text)
        print()
        interrupted = stats is not None and stats.finish_reason == "cancelled"
        _print_stats(stats, interrupted)
        return 130 if interrupted else 0
