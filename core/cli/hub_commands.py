"""``hub search`` and ``hub files``: find a GGUF model on the Hub and see, per quantization,
whether it fits this machine — before downloading it.

Both use the Hub settings the window saves (mirror and token; ``--endpoint`` wins) and refuse at
once in Offline mode. ``hub files`` reads each model entry's header by HTTP Range (a few hundred
kilobytes per file, :data:`~..hub.fit.MAX_PARALLEL` at a time) and plans it like ``plan`` does.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..i18n import tr
from ..units import format_bytes, format_count, format_parameters
from .numbers import whole_number
from .output import print_json, print_table
from .plan_commands import _size

if TYPE_CHECKING:
    from ..hub.browse import RepoFiles, SearchPage
    from ..hub.fit import FitVerdict

SORTS = ("downloads", "likes", "trending", "updated")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hub search`` and ``hub files`` to the CLI."""
    hub = commands.add_parser("hub", help=tr("search the Hugging Face Hub for GGUF models"))
    actions = hub.add_subparsers(dest="action", metavar="ACTION", required=True)
    search = actions.add_parser("search", help=tr("GGUF repositories matching a text"))
    search.add_argument("query", help=tr("words to look for in repository names"))
    search.add_argument("--sort", choices=SORTS, default="downloads",
                        help=tr("order of the results (default: downloads)"))
    search.add_argument("--limit", type=whole_number(1, 100), default=20, metavar="N",
                        help=tr("results per page, 1 to 100 (default 20)"))
    search.add_argument("--page", type=whole_number(1, 10_000), default=1, metavar="N",
                        help=tr("which page of results (default 1)"))
    files = actions.add_parser("files", help=tr("a repository's quantizations, their sizes and "
                                                "whether each fits this machine"))
    files.add_argument("repo", help=tr("owner/name, owner/name:QUANT or a Hub URL"))
    files.add_argument("--revision", help=tr("branch, tag or commit (default: main)"))
    files.add_argument("--no-verdicts", action="store_true",
                       help=tr("list the files only, without reading their headers"))
    files.add_argument("--vram", type=_size, metavar="SIZE",
                       help=tr("plan for this much free GPU memory (e.g. 24GiB; 0 = no GPU)"))
    files.add_argument("--ram", type=_size, metavar="SIZE",
                       help=tr("plan for this much available RAM (e.g. 64GiB)"))
    for parser in (search, files):
        parser.add_argument("--endpoint", help=tr("Hub endpoint or mirror (default: the app's "
                                                  "Hub settings)"))
        parser.add_argument("--json", action="store_true", help=tr("print JSON"))
    search.set_defaults(handler=search_command)
    files.set_defaults(handler=files_command, gpu_name=None)


def search_command(args: argparse.Namespace) -> int:
    """Print a page of GGUF repositories (or JSON).

    Raises:
        DeskError: Offline mode, the Hub unreachable or answering nonsense (said so).
    """
    from ..hub.browse import browser_from_settings

    page = browser_from_settings(args.endpoint).search(args.query, args.sort, args.page - 1,
                                                       args.limit)
    if args.json:
        print_json(_search_json(page))
        return 0
    if not page.repos:
        print(tr("No GGUF repository matches {query!r}.", query=args.query))
        return 0
    rows = [[r.repo_id, format_count(r.downloads), str(r.likes),
             r.updated.date().isoformat() if r.updated else "–", r.licence or "–",
             tr("gated") if r.gated else "", format_parameters(r.parameters), r.architecture or "–"]
            for r in page.repos]
    print_table(rows, [tr("Repository"), tr("Downloads"), tr("Likes"), tr("Updated"),
                       tr("Licence"), tr("Access"), tr("Parameters"), tr("Architecture")])
    if page.has_more:
        print(tr("More on page {page} (--page {page}).", page=args.page + 1))
    return 0


def _search_json(page: SearchPage) -> dict[str, Any]:
    return {"query": page.query, "sort": page.sort, "page": page.page + 1,
            "has_more": page.has_more, "repos": [
                {"repo_id": r.repo_id, "downloads": r.downloads, "likes": r.likes,
                 "updated": r.updated.isoformat() if r.updated else None,
                 "licence": r.licence, "gated": r.gated, "parameters": r.parameters,
                 "architecture": r.architecture} for r in page.repos]}


def files_command(args: argparse.Namespace) -> int:
    """Print a repository's quantizations with sizes and fit verdicts (or JSON).

    Raises:
        DeskError: not a repository reference, Offline mode, the repository or revision not
            found, the Hub unreachable or answering nonsense (said so).
    """
    from ..hub.browse import browser_from_settings
    from ..hub.fit import FitChecker
    from ..hub.references import parse_reference
    from .plan_commands import machine_for, ram_total_for

    reference = parse_reference(args.repo)
    browser = browser_from_settings(args.endpoint)
    files = browser.repo_files(reference.repo_id, args.revision or reference.revision)
    verdicts: dict[str, FitVerdict] = {}
    if not args.no_verdicts and files.models:
        checker = FitChecker(browser.hub, machine_for(args), ram_total=ram_total_for(args))
        verdicts = checker.verdicts(files.repo_id, files.commit, files.models)
    if args.json:
        print_json(_files_json(files, verdicts))
        return 0
    _print_files(files, verdicts)
    return 0


def _print_files(files: RepoFiles, verdicts: dict[str, FitVerdict]) -> None:
    lines = [tr("{repo} at {commit} · licence {licence}", repo=files.repo_id,
                commit=files.commit[:12], licence=files.licence or tr("not stated"))]
    if files.gated:
        lines.append(tr("Gated: accept the licence at {url} and sign in with a token to "
                        "download.", url=files.url))
    if not files.models:
        lines.append(tr("This repository holds no GGUF model file."))
    for line in lines:
        print(line)
    if not files.models:
        return
    rows = []
    for entry in files.entries:
        bpw = entry.bits_per_weight(files.parameters) if entry.kind == "model" else None
        verdict = verdicts.get(entry.name)
        rows.append([entry.name, entry.quant, format_bytes(entry.size),
                     f"{bpw:.2f}" if bpw else "–",
                     tr("vision projector, not a model") if entry.kind == "mmproj"
                     else verdict.summary() if verdict else "–"])
    print_table(rows, [tr("File"), tr("Quant"), tr("Size"), tr("Bits/weight"), tr("Fit")])


def _files_json(files: RepoFiles, verdicts: dict[str, FitVerdict]) -> dict[str, Any]:
    return {"repo_id": files.repo_id, "revision": files.revision, "commit": files.commit,
            "url": files.url, "licence": files.licence, "gated": files.gated,
            "parameters": files.parameters, "architecture": files.architecture,
            "entries": [{"name": e.name, "quant": e.quant, "kind": e.kind, "files": e.files,
                         "size": e.size,
                         "bits_per_weight": (round(b, 3) if (b := e.bits_per_weight(
                             files.parameters)) and e.kind == "model" else None),
                         "fit": verdicts[e.name].to_json_dict() if e.name in verdicts else None}
                        for e in files.entries]}
