"""``serve`` (the local OpenAI-compatible API) and ``chat --remote`` (a remote engine).

``serve`` loads the model like ``chat`` does (same ``--model``/``--gpu-layers``/``--ctx``
options) and serves it until Ctrl-C. ``chat --remote URL [--remote-model NAME]
[--remote-key KEY]`` talks to an OpenAI-compatible server instead of a local model; the
conversation is stored exactly like a local one.
"""

from __future__ import annotations

import argparse
import os
import sys

from mixtral_desk.core.cli import chat_commands
from mixtral_desk.core.cli.backup_commands import open_store
from mixtral_desk.core.cli.numbers import whole_number
from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.remote import RemoteEngine, save_key, stored_key
from mixtral_desk.core.server import DEFAULT_HOST, DEFAULT_PORT, check_bind
from mixtral_desk.core.session import Session
from mixtral_desk.core.settings import load_settings

API_KEY_ENV = "MIXTRAL_DESK_API_KEY"


class RemoteOptionsError(DeskError, ValueError):
    """Raised when ``chat`` gets neither ``--model`` nor ``--remote``, or both."""


# --- serve -------------------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the CLI."""
    serve = commands.add_parser(
        "serve", help=tr("serve a model over an OpenAI-compatible API (/v1/chat/completions …)"))
    chat_commands._model_arguments(serve)
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=tr("address to listen on (default {host}; any other address needs "
                               "--api-key)", host=DEFAULT_HOST))
    serve.add_argument("--port", type=whole_number(0, 65_535), default=DEFAULT_PORT,
                       help=tr("port (default {port})", port=DEFAULT_PORT))
    serve.add_argument("--api-key", metavar="KEY",
                       help=tr("require 'Authorization: Bearer KEY' (default: ${variable})",
                               variable=API_KEY_ENV))
    serve.add_argument("--model-id", metavar="NAME",
                       help=tr("the model's name in /v1/models (default: the file name)"))
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Load the model and serve it until Ctrl-C (exit code 0)."""
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(args.host, key)  # before the (possibly long) model load
    model_id = args.model_id or args.model.name.removesuffix(".gguf")
    with Session(load_settings()) as session:
        chat_commands.load(session, args)
        server = session.serve(host=args.host, port=args.port, api_key=key, model_id=model_id)
        if key:
            print(tr("Serving {model} at {url} (API key required). Ctrl-C stops.",
                     model=model_id, url=server.base_url), file=sys.stderr)
        else:
            print(tr("Serving {model} at {url}. Ctrl-C stops.", model=model_id,
                     url=server.base_url), file=sys.stderr)
        try:
            while not server.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("\n" + tr("Stopping the server."), file=sys.stderr)
        finally:
            session.stop_serving()
    return 0


# --- chat --remote -----------------------------------------------------------------------------

def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--remote``, ``--remote-model``, ``--remote-key`` to ``chat``; ``--model`` becomes
    optional (:func:`uses_remote` checks that exactly one of them is given)."""
    group = parser.add_argument_group(tr("remote engine (instead of --model)"))
    group.add_argument("--remote", metavar="URL",
                       help=tr("an OpenAI-compatible server, e.g. http://gpu-box:8000/v1"))
    group.add_argument("--remote-model", metavar="NAME",
                       help=tr("the model's name on that server (default: the first it lists)"))
    group.add_argument("--remote-key", metavar="KEY",
                       help=tr("its API key (default: the saved key for URL, else "
                               "$MIXTRAL_DESK_REMOTE_KEY)"))
    group.add_argument("--save-remote-key", action="store_true",
                       help=tr("remember --remote-key for this URL (a file only you can read)"))
    for action in parser._actions:  # argparse has no public way to relax an existing option
        if "--model" in action.option_strings:
            action.required = False


def uses_remote(args: argparse.Namespace) -> bool:
    """Whether ``chat`` runs against ``--remote``.

    Raises:
        RemoteOptionsError: neither or both of ``--model`` and ``--remote`` were given.
    """
    remote = getattr(args, "remote", None)
    if remote and args.model is not None:
        raise RemoteOptionsError(N_("Use either --model PATH (a local model) or --remote URL."))
    if not remote and args.model is None:
        raise RemoteOptionsError(N_("chat needs --model PATH (a local model) or --remote URL "
                                    "(an OpenAI-compatible server)."))
    return bool(remote)


def remote_chat_command(args: argparse.Namespace) -> int:
    """``chat`` against a remote engine: one turn with ``--prompt``, else interactive.

    Raises:
        RemoteEngineError (and subclasses): the server is unreachable, refuses the key or fails.
    """
    if args.remote_key and args.save_remote_key:
        save_key(args.remote, args.remote_key)
    key = args.remote_key or stored_key(args.remote)
    with open_store() as store, \
            RemoteEngine(args.remote, args.remote_model or "", key) as engine:
        if not engine.model:
            models = engine.list_models()
            if not models:
                raise RemoteOptionsError(N_("{url} lists no models; name one with "
                                            "--remote-model."), url=engine.base_url)
            engine.model = models[0]
        with Session(load_settings(), engine=engine, remote_model=engine.model) as session:
            return chat_commands.converse(store, session, args,
                                          where=tr("{model} at {url}", model=engine.model,
                                                   url=engine.base_url))
