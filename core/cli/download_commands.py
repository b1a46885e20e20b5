"""``download``, ``downloads``, ``local``, ``import`` and ``delete``: getting models onto the disk.

``download`` draws a progress bar on stderr and prints the model's path as the last line of
stdout. Ctrl-C or a plain ``kill`` pauses it (exit 130); running the same command again, or
``downloads resume ID``, continues from the bytes on disk. In Offline mode ``download`` and
``downloads resume`` refuse at once (exit 1, saying so); the other commands work offline.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..downloads.errors import HubOfflineError, LocalModelNotFoundError, VerificationError
from ..i18n import N_, tr
from ..network import require_network
from ..paths import data_paths
from ..units import format_bytes
from .numbers import finite_number
from .output import print_json, print_table

#: Words for the progress bar and notices (translated where shown).
_PHASES = {"resolving": N_("resolving"), "checking": N_("checking"), "joining": N_("joining"),
           "done": N_("done"), "stalled": N_("stalled")}
_NOTICES = {"retrying": N_("retrying"), "stalled": N_("stalled"), "restarted": N_("restarted")}
_SOURCES = {"download": N_("downloaded"), "linked": N_("linked"), "copied": N_("copied"),
            "hf-cache": N_("Hugging Face cache")}


def _word(words: dict[str, str], key: str) -> str:
    return tr(words[key]) if key in words else key

if TYPE_CHECKING:  # the download modules import huggingface_hub: only when a command runs
    from ..downloads.events import DownloadEvent, JobProgress
    from ..downloads.jobs import Job
    from ..downloads.manager import DownloadManager
    from ..downloads.transfer import RetryPolicy


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the download and local-model commands to the CLI."""
    download = commands.add_parser(
        "download", help=tr("download a catalog model or Hub file(s), resumable and verified"))
    download.add_argument("model", nargs="?", help=tr(
        "a catalog id (see `models`), owner/name:QUANT (e.g. "
        "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF:Q4_K_M) or a Hub URL"))
    download.add_argument("--repo", help=tr("a Hub repository, owner/name"))
    download.add_argument("--file", action="append", default=[], metavar="FILE",
                          help=tr("a file in --repo (repeatable; any part of a split model "
                                  "brings all parts)"))
    download.add_argument("--revision", help=tr("branch, tag or commit (default: main)"))
    _common(download)
    download.add_argument("--stall-timeout", type=finite_number(1.0, 86_400.0),
                          default=30.0, metavar="SECONDS",
                          help=tr("reconnect after this long without data (default 30)"))
    download.set_defaults(handler=download_command)

    downloads = commands.add_parser("downloads",
                                    help=tr("list, pause, resume or cancel downloads"))
    actions = downloads.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help=tr("every download and its state"))
    listing.add_argument("--json", action="store_true", help=tr("print JSON"))
    listing.set_defaults(handler=downloads_list_command)
    for name, text in (("pause", tr("pause a download (its bytes are kept)")),
                       ("resume", tr("continue a download here, with a progress bar")),
                       ("cancel", tr("cancel a download and delete its partial data"))):
        action = actions.add_parser(name, help=text)
        action.add_argument("id", help=tr("the download id (or a unique prefix)"))
        action.add_argument("--json", action="store_true", help=tr("print JSON"))
        action.set_defaults(handler=downloads_control_command, control=name)

    local = commands.add_parser("local",
                                help=tr("models on this machine (and in the HF cache)"))
    local.add_argument("--json", action="store_true", help=tr("print JSON"))
    local.add_argument("--models-dir", type=Path, help=tr("the models folder"))
    local.set_defaults(handler=local_command)

    imp = commands.add_parser("import",
                              help=tr("add an existing .gguf (linked in place, or copied)"))
    imp.add_argument("path", type=Path, help=tr("a .gguf file (part 1 of a split model)"))
    imp.add_argument("--copy", action="store_true", help=tr("copy it into the models folder"))
    imp.add_argument("--models-dir", type=Path, help=tr("the models folder"))
    imp.add_argument("--json", action="store_true", help=tr("print JSON"))
    imp.set_defaults(handler=import_command)

    delete = commands.add_parser("delete", help=tr("delete a local model and its partial data"))
    delete.add_argument("model", help=tr("a name from `local`"))
    delete.add_argument("--models-dir", type=Path, help=tr("the models folder"))
    delete.set_defaults(handler=delete_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help=tr("Hub endpoint or mirror (default: the app's Hub "
                                              "settings, else HF_ENDPOINT, else "
                                              "https://huggingface.co)"))
    parser.add_argument("--models-dir", type=Path,
                        help=tr("the models folder (default: in the data folder)"))


def _require_online() -> None:
    """Raise HubOfflineError at once in Offline mode (before a job is created or resumed)."""
    require_network(N_("Downloading a model"), HubOfflineError)


class _ProgressBar:
    """Draws JobProgress events as a tqdm bar on stderr (events arrive on worker threads)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._lock = threading.Lock()

    def __call__(self, event: DownloadEvent) -> None:
        from ..downloads.events import JobNotice, JobProgress

        with self._lock:
            if isinstance(event, JobProgress):
                self._progress(event)
            elif isinstance(event, JobNotice):
                notice = event.notice
                kind = _word(_NOTICES, notice.kind)
                seconds = format(notice.delay, ".1f")
                text = (tr("{file}: {kind} ({reason}), next try in {seconds} s", file=event.file,
                           kind=kind, reason=notice.reason, seconds=seconds)
                        if notice.delay else
                        tr("{file}: {kind} ({reason})", file=event.file, kind=kind,
                           reason=notice.reason))
                self._tqdm.write(text, file=sys.stderr)

    def _progress(self, event: JobProgress) -> None:
        if self._bar is None:
            if event.total is None:
                return
            self._bar = self._tqdm(total=event.total, initial=event.done, unit="B",
                                   unit_scale=True, unit_divisor=1000, file=sys.stderr,
                                   desc=event.job_id, dynamic_ncols=True, mininterval=0.2)
        self._bar.n = event.done
        status = (_word(_PHASES, "stalled") if event.stalled
                  else _word(_PHASES, event.phase) if event.phase != "downloading" else "")
        self._bar.set_postfix_str(status, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def _manager(args: argparse.Namespace, on_event: Any = None,
             policy: RetryPolicy | None = None) -> DownloadManager:
    from ..downloads.manager import DownloadManager
    from ..session.hub_settings import load_hub_settings

    paths = data_paths().ensure()
    hub = load_hub_settings(paths)  # the window's Hub tab: mirror and token
    return DownloadManager(paths=paths, models_dir=getattr(args, "models_dir", None),
                           endpoint=getattr(args, "endpoint", None) or hub.endpoint or None,
                           token=hub.token or None, on_event=on_event, policy=policy)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_with_bar(manager: DownloadManager, job: Job, bar: _ProgressBar) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        path = manager.run(job.id)
    except VerificationError as error:
        bar.close()
        raise VerificationError(N_("{problem} Run the same command again for a fresh "
                                   "download."), error.filename, problem=error) from error
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    print(tr("Downloaded and verified ({id}).", id=job.id), file=sys.stderr)
    print(path)
    return 0


def download_command(args: argparse.Namespace) -> int:
    """Download a catalog entry or Hub files; print the model path last."""
    if bool(args.model) == bool(args.repo) or (args.repo and not args.file):
        print(tr("mixtral-desk: error: give a catalog id, owner/name:QUANT, a Hub URL, or --repo "
                 "with one or more --file"),
              file=sys.stderr)
        return 2
    from ..catalog import load_catalog
    from ..hub.references import looks_like_reference

    hub_reference = bool(args.model) and looks_like_reference(args.model)
    entry = load_catalog().get(args.model) if args.model and not hub_reference else None
    _require_online()
    from ..downloads.transfer import RetryPolicy

    repo, files, revision = args.repo, args.file, args.revision
    if hub_reference:
        repo, files, revision = _hub_files(args.model, args.revision, args.endpoint)
    bar = _ProgressBar()
    policy = RetryPolicy(stall_timeout=args.stall_timeout)
    manager = _manager(args, bar, policy)
    if entry is not None:
        job = manager.add_catalog(entry)
    else:
        job = manager.add_repo(repo, files, revision)
    print(tr("Download {id}: {repo} → {folder}", id=job.id, repo=job.repo_id,
             folder=job.dest_dir), file=sys.stderr)
    return _run_with_bar(manager, job, bar)


def _hub_files(text: str, revision: str | None, endpoint: str | None,
               ) -> tuple[str, list[str], str | None]:
    """The repository, files and revision that ``REPO:QUANT`` or a Hub URL names.

    Raises:
        DeskError: the text names no repository, the quantization or file is not there (the
            choices are listed), or the Hub cannot say.
    """
    from ..hub.browse import browser_from_settings, choose_files
    from ..hub.references import parse_reference

    reference = parse_reference(text)
    if revision:
        reference = dataclasses.replace(reference, revision=revision)
    choice = choose_files(browser_from_settings(endpoint), reference)
    return choice.repo_id, list(choice.entry.files), choice.revision


def _job_row(job: Job) -> list[str]:
    from ..downloads.jobs import state_name

    total = job.total
    share = f"{100 * job.done / total:.0f}%" if total else "-"
    return [job.id, job.model_id, state_name(job.display_state), share,
            format_bytes(total) if total is not None else "?", str(job.error or "")[:60]]


def downloads_list_command(args: argparse.Namespace) -> int:
    """List every download job."""
    jobs = _manager(args).jobs()
    if args.json:
        print_json([job.to_json_dict() for job in jobs])
        return 0
    if not jobs:
        print(tr("No downloads."))
        return 0
    print_table([_job_row(job) for job in jobs],
                [tr("ID"), tr("MODEL"), tr("STATE"), tr("PROGRESS"), tr("SIZE"), tr("MESSAGE")])
    return 0


def downloads_control_command(args: argparse.Namespace) -> int:
    """Pause, resume (in the foreground) or cancel one job."""
    if args.control == "resume":
        _require_online()
        bar = _ProgressBar()
        manager = _manager(args, bar)
        return _run_with_bar(manager, manager.get(args.id), bar)
    manager = _manager(args)
    job = manager.pause(args.id) if args.control == "pause" else manager.cancel(args.id)
    if args.json:
        print_json(job.to_json_dict())
    else:
        from ..downloads.jobs import state_name

        print(tr("Download {id} is {state}.", id=job.id, state=state_name(job.display_state)))
    return 0


def local_command(args: argparse.Namespace) -> int:
    """List local models, and GGUF models found in the Hugging Face cache."""
    from ..downloads.local import list_local_models, scan_hf_cache

    models_dir = args.models_dir or data_paths().models_dir
    models = list_local_models(models_dir) + scan_hf_cache()
    if args.json:
        print_json([m.to_json_dict() for m in models])
        return 0
    if not models:
        print(tr("No local models in {folder}.", folder=models_dir))
        return 0
    print_table([[m.name, format_bytes(m.size), _word(_SOURCES, m.source), str(m.path)]
                 for m in models], [tr("NAME"), tr("SIZE"), tr("SOURCE"), tr("PATH")])
    return 0


def import_command(args: argparse.Namespace) -> int:
    """Import a .gguf by link or copy; print the model's path last."""
    from ..downloads.local import import_model

    model = import_model(args.path, args.models_dir or data_paths().ensure().models_dir,
                         copy=args.copy)
    if args.json:
        print_json(model.to_json_dict())
        return 0
    print(tr("Imported as {name} ({source}, {size}).", name=model.name,
             source=_word(_SOURCES, model.source), size=format_bytes(model.size)),
          file=sys.stderr)
    print(model.path)
    return 0


def delete_command(args: argparse.Namespace) -> int:
    """Delete a local model and cancel its unfinished download (removing the partial data).

    A linked model's original file is left alone.
    """
    from ..downloads.jobs import ACTIVE_STATES
    from ..downloads.local import delete_local_model

    models_dir = args.models_dir or data_paths().models_dir
    manager = _manager(args)
    unfinished = [job for job in manager.jobs() if job.state in ACTIVE_STATES
                  and args.model in (job.model_id, job.id, job.catalog_id)]
    for job in unfinished:
        manager.cancel(job.id)
        print(tr("Cancelled download {id} and deleted its partial data.", id=job.id))
    try:
        model = delete_local_model(models_dir, args.model)
    except LocalModelNotFoundError:
        if unfinished:
            return 0
        raise
    if model.source == "linked":
        print(tr("Deleted {name} (the linked original file was kept).", name=model.name))
    else:
        print(tr("Deleted {name}.", name=model.name))
    return 0
