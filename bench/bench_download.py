"""Our downloader vs plain ``hf_hub_download``: the same 1 GiB file from the loopback Hub.

Usage::

    .venv/bin/python bench/bench_download.py [--size-mib 1024] [--rounds 3]

The random file is generated once under /tmp (kept for later runs). The loopback Hub (tests/
hub_server.py) runs in its own process and serves with ``sendfile``; both clients go through its
``resolve`` redirect to the "CDN" port. Ours includes everything a real download does: resolving
the commit, the free-space check, hashing (sha256) while downloading, verification and the rename.
Rounds alternate the order; the best and the median round of each are compared.
Goal: ours ≥ 0.95× theirs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.hub_server, the loopback Hub
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_TOKEN", None)

REPO, NAME = "bench/big", "big-Q4_K_M.gguf"


def serve(path: Path) -> None:
    """Serve one repo holding ``path`` on the loopback Hub; print the URL; stop when stdin ends."""
    from tests.hub_server import LoopbackHub, RemoteFile

    with LoopbackHub() as hub:
        hub.add_repo(REPO, {NAME: RemoteFile(path=path)})
        print(hub.url, flush=True)
        sys.stdin.read()


def ours(url: str, home: Path) -> float:
    from mixtral_desk.core.downloads.manager import DownloadManager
    from mixtral_desk.core.paths import DataPaths

    paths = DataPaths(home / "config", home / "data", home / "cache", home / "logs").ensure()
    manager = DownloadManager(paths=paths, endpoint=url, use_stored_token=False)
    started = time.perf_counter()
    manager.run(manager.add_repo(REPO, [NAME]).id)
    return time.perf_counter() - started


def theirs(url: str, home: Path) -> float:
    from huggingface_hub import hf_hub_download

    started = time.perf_counter()
    hf_hub_download(REPO, NAME, cache_dir=home / "hf-cache", endpoint=url, token=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    from tests.hub_server import make_random_file

    size = args.size_mib * 1024 * 1024
    source = make_random_file(Path(tempfile.gettempdir()) / f"mixtral-desk-bench-{args.size_mib}"
                              "MiB.bin", size)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(source)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    times: dict[str, list[float]] = {"ours": [], "hf_hub_download": []}
    try:
        for round_no in range(args.rounds):
            order = [("ours", ours), ("hf_hub_download", theirs)]
            for name, fn in order if round_no % 2 == 0 else order[::-1]:
                home = Path(tempfile.mkdtemp(prefix="bench-dl-"))
                try:
                    seconds = fn(url, home)
                finally:
                    shutil.rmtree(home, ignore_errors=True)
                times[name].append(seconds)
                print(f"round {round_no + 1} {name:<16} {size / seconds / 1e6:8.1f} MB/s "
                      f"({seconds:.2f} s)", flush=True)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    for label, pick in (("best", min), ("median", statistics.median)):
        rate = {name: size / pick(values) / 1e6 for name, values in times.items()}
        print(f"{label}: ours {rate['ours']:.1f} MB/s (sha256 included), hf_hub_download "
              f"{rate['hf_hub_download']:.1f} MB/s, ratio "
              f"{rate['ours'] / rate['hf_hub_download']:.3f} (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
