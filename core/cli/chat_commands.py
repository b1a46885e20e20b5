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

from mixtral_desk.core.cli.backup_commands import open_store
from mixtral_desk.core.cli.numbers import finite_number, whole_number
from mixtral_desk.core.context_size import ContextReason
from mixtral_desk.core.engine import DoneEvent, ModelInfo, ReplyStats
from mixtral_desk.core.i18n import ntr, tr
from mixtral_desk.core.reply_figures import prompt_figure
from mixtral_desk.core.session import LoadChoice, Session
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.store import Conversation, Store
from mixtral_desk.core.untrusted_json import check_message

if TYPE_CHECKING:
    from mixtral_desk.core.engine.interface import ChatEngine


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
    parser.add_argument("--ctx", type=whole_number(256, 1_048_576), metavar="N",
                        help=tr("context length in tokens"))
    parser.add_argument("--threads", type=whole_number(1, 1024), metavar="N",
                        help=tr("CPU threads"))


#: Sampling values are range-checked with their own message (SamplingError); argparse only
#: refuses what is not a number at all.
_INT64 = 2**63


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
    parser.add_argument("--max-tokens", type=whole_number(-_INT64, _INT64 - 1), metavar="N",
                        help=tr("longest reply in tokens"))
    parser.add_argument("--temperature", type=finite_number(-1e9, 1e9), metavar="X",
                        help=tr("0 = always the same"))
    parser.add_argument("--seed", type=whole_number(-_INT64, _INT64 - 1), metavar="N",
                        help=tr("random seed for sampling"))


def load_choice(args: argparse.Namespace) -> LoadChoice:
    """What ``--model``, ``--gpu-layers``, ``--cpu-moe``, ``--ctx`` and ``--threads`` ask for."""
    return LoadChoice(path=args.model, gpu_layers=args.gpu_layers, cpu_moe=args.cpu_moe,
                      n_ctx=args.ctx, n_threads=args.threads)


def sampling_overrides(args: argparse.Namespace, session: Session) -> dict[str, object]:
    """The sampling values given on the command line (``None``: not given), checked now, before
    a model loads.

    Raises:
        SamplingError: a value is out of range.
    """
    overrides = {"max_tokens": args.max_tokens, "temperature": args.temperature,
                 "seed": args.seed}
    session.sampling_for(None, overrides)
    return overrides


def _say(text: str) -> None:
    note = tr("note: {text}", text=text)
    print("\n" + note if sys.stderr.isatty() else note, file=sys.stderr)


def load(session: Session, args: argparse.Namespace) -> ModelInfo:
    """Load ``--model`` into the session (the planner's notes and the progress on stderr),
    then say why the context has its length (when it was chosen automatically) and warn where
    llama.cpp did not do what the plan expected.

    Raises:
        DeskError: the file is not a usable model, or the engine cannot load it.
    """
    show = sys.stderr.isatty()

    def progress(fraction: float) -> None:
        if show:
            print("\r" + tr("Loading {name}: {percent}", name=args.model.name,
                            percent=format(fraction, "4.0%")), end="", file=sys.stderr, flush=True)

    session.planner_said.connect(_say)
    session.load_progress.connect(progress)
    info = session.load(load_choice(args))
    if show:
        print(file=sys.stderr)
    report = session.load_report
    context = report.context if report is not None else None
    if context is not None and context.reason is not ContextReason.SET:
        print(tr("note: {text}", text=context.text()), file=sys.stderr)
    for warning in report.warnings if report is not None else ():
        print(tr("warning: {text}", text=warning), file=sys.stderr)
    if report is not None and report.fallback_template:
        print(tr("note: this model has no chat template; using the plain fallback format."),
              file=sys.stderr)
    if report is not None and report.broken_template:
        print(tr("note: this model's chat template fails when it renders a conversation (the "
                 "engine log says how); using the plain fallback format."), file=sys.stderr)
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
    cached = prompt_figure(stats.prompt_tokens, stats.cached_tokens)
    if cached:
        parts.append(cached)
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
    with open_store() as store, Session(load_settings()) as session:
        if args.conversation:
            store.get_conversation(args.conversation)  # an unknown id fails before the load
        sampling_overrides(args, session)  # so does a value out of range
        load(session, args)
        return converse(store, session, args, where=args.model.name)


def converse(store: Store, session: Session, args: argparse.Namespace, *, where: str) -> int:
    """Continue ``--conversation`` or start one, then send ``--prompt`` or chat interactively.

    Shared by the local and the remote ``chat``; returns the exit code (130 when a reply of
    ``--prompt`` was interrupted).

    Raises:
        NotFoundError: ``--conversation`` names no conversation.
        EngineError: the engine failed; the reply so far is stored as interrupted.
    """
    overrides = sampling_overrides(args, session)
    conversation_id: str | None = None
    if args.conversation:
        conversation_id = store.get_conversation(args.conversation).id
    elif args.prompt is None:  # interactive: the first message gives the title
        conversation_id = session.start_conversation(store, system_prompt=args.system).id

    def say_id(conversation: Conversation) -> None:
        print(tr("conversation {id}", id=conversation.id), file=sys.stderr)

    def turn(text: str) -> bool:
        with ctrl_c_stops(session.engine):
            result = session.send(store, conversation_id, text, on_token=_print_token,
                                  system_prompt=args.system, overrides=overrides,
                                  on_conversation=say_id)
        print()
        _print_stats(result.stats, result.interrupted)
        return result.interrupted

    if args.prompt is not None:
        if conversation_id is not None:
            print(tr("conversation {id}", id=conversation_id), file=sys.stderr)
        return 130 if turn(args.prompt) else 0
    print(tr("Chatting with {where} (conversation {id}). Ctrl-C stops a reply; Ctrl-D or /exit "
             "leaves.", where=where, id=conversation_id), file=sys.stderr)
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
    check_message(args.prompt)  # before a model is loaded for it
    with Session(load_settings()) as session:
        sampling = session.sampling_for(None, sampling_overrides(args, session))
        load(session, args)
        stats: ReplyStats | None = None
        engine = session.engine
        with ctrl_c_stops(engine):
            for event in engine.complete(args.prompt, sampling):
                if isinstance(event, DoneEvent):
                    stats = event.stats
                else:
                    _print_token(event.text)
        print()
        interrupted = stats is not None and stats.finish_reason == "cancelled"
        _print_stats(stats, interrupted)
        return 130 if interrupted else 0
