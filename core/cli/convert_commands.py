"""``merge-experts``: convert a Mixtral file from before April 2024 into the layout llama.cpp loads.

The work is :func:`mixtral_desk.core.gguf.merge_experts.merge_experts`; this command only shows
its progress and says where the new file is. Ctrl+C stops it and removes the partial file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mixtral_desk.core.cli.output import print_json
from mixtral_desk.core.gguf.merge_experts import merge_experts, merged_path, plan_merge
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.units import format_bytes


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``merge-experts`` to the CLI."""
    merge = commands.add_parser(
        "merge-experts",
        help=tr("convert a Mixtral file with one tensor per expert (made before April 2024) into "
                "the layout llama.cpp loads today"),
        description=tr("Mixtral GGUF files converted before April 2024 store each expert as its "
                       "own tensor; the llama.cpp of this app loads only merged experts. This "
                       "writes a converted copy beside the file (the weights are copied, not "
                       "changed) and keeps the original."))
    merge.add_argument("path", type=Path, help=tr("the GGUF file to convert"))
    merge.add_argument("--output", type=Path, default=None,
                       help=tr("where to write the converted file (default: NAME.merged-experts."
                               "gguf beside it)"))
    merge.add_argument("--json", action="store_true", help=tr("print JSON"))
    merge.set_defaults(handler=merge_experts_command)


def merge_experts_command(args: argparse.Namespace) -> int:
    """Convert the file, printing progress on stderr; exit 0 when the new file is written.

    Raises:
        DeskError: the file is not a per-expert GGUF, the target exists, or the disk is too full
            (see :func:`~mixtral_desk.core.gguf.merge_experts.merge_experts`).
    """
    plan = plan_merge(args.path)
    target = args.output or merged_path(plan.header.path)
    started = time.monotonic()
    shown = -1

    def progress(done: int, total: int) -> None:
        nonlocal shown
        percent = done * 100 // max(total, 1)
        if percent != shown and sys.stderr.isatty():
            shown = percent
            print("\r" + tr("Converting: {percent} % of {total}", percent=percent,
                            total=format_bytes(total)), end="", file=sys.stderr, flush=True)

    written = merge_experts(plan.header.path, target, on_progress=progress)
    seconds = time.monotonic() - started
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print_json({"source": str(plan.header.path), "output": str(written),
                    "merged_tensors": plan.merged_groups, "data_bytes": plan.data_bytes,
                    "seconds": round(seconds, 2)})
        return 0
    print(tr("Wrote {output}: {count} expert tensors merged, {size} in {seconds:.0f} s. The "
             "original is unchanged; delete it when the new file works.", output=str(written),
             count=plan.merged_groups, size=format_bytes(plan.data_bytes), seconds=seconds))
    return 0
