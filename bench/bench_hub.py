"""The Hub browser's time from a search to a repository view with every verdict shown.

Usage::

    .venv/bin/python bench/bench_hub.py [--files 20] [--latency-ms 50] [--rounds 3]

The loopback Hub (tests/hub_server.py) runs in its own process with ``latency_ms`` added to every
request (Hub and CDN). Its repository holds ``files`` Mixtral-8x7B-shaped GGUF files (sparse, real
headers: Q4_K_M and Q2_K alternately, 16–26 GB each). One round, as the window does it: search
"mixtral" → open the repository (its file list) → read every model file's header by Range
(:data:`~mixtral_desk.core.hub.fit.MAX_PARALLEL` at a time) and plan it for a 64 GiB + 24 GiB
RTX 4090 machine. A second view of the same repository then measures the header cache. Reported:
the median and best round, the requests per round and the bytes read per header.
Goal: ≤ 1.5 s for 20 files at 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.hub_server and tests.mixtral_header
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "0"
os.environ.pop("HF_TOKEN", None)

REPO = "bench/Mixtral-8x7B-Instruct-v0.1-GGUF"


def serve(files: int, latency_s: float, folder: Path) -> None:
    """Serve the repository; print the URL; on each stdin line print the request log as JSON
    (and clear it); stop when stdin ends."""
    from tests.hub_server import LoopbackHub, RemoteFile
    from tests.mixtral_header import write_mixtral_q2_k, write_mixtral_q4_k_m

    q4 = write_mixtral_q4_k_m(folder / "q4.gguf")
    q2 = write_mixtral_q2_k(folder / "q2.gguf")
    with LoopbackHub(latency_s=latency_s) as hub:
        hub.add_repo(REPO, {
            f"mixtral-{i:02d}.{'Q4_K_M' if i % 2 else 'Q2_K'}.gguf":
                RemoteFile(path=q4 if i % 2 else q2, sha256=f"{i:064x}") for i in range(files)},
            gguf={"total": 46_702_792_704, "architecture": "llama"})
        print(hub.url, flush=True)
        for _ in sys.stdin:
            log = [{"server": r.server, "file": r.filename, "status": r.status} for r in hub.log]
            hub.log.clear()
            print(json.dumps(log), flush=True)


def one_round(url: str) -> tuple[float, float, int]:
    """Seconds to the full view, seconds for a second view, verdicts shown."""
    from mixtral_desk.core.downloads.hub import HubClient
    from mixtral_desk.core.hub.browse import HubBrowser
    from mixtral_desk.core.hub.fit import FitChecker
    from mixtral_desk.core.planner import simulated_machine
    from mixtral_desk.core.units import GiB

    machine = simulated_machine(ram=64 * GiB, vram=24 * GiB, gpu_name="RTX 4090")
    started = time.perf_counter()
    browser = HubBrowser(hub=HubClient(url, use_stored_token=False))
    page = browser.search("mixtral")
    files = browser.repo_files(page.repos[0].repo_id)
    checker = FitChecker(browser.hub, machine)
    verdicts = checker.verdicts(files.repo_id, files.commit, files.models)
    first = time.perf_counter() - started
    assert all(v.fits for v in verdicts.values()), verdicts
    started = time.perf_counter()
    again = browser.repo_files(page.repos[0].repo_id)
    checker.verdicts(again.repo_id, again.commit, again.models)
    return first, time.perf_counter() - started, len(verdicts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.files, args.latency_ms / 1000, args.folder)
        return 0
    from mixtral_desk.core.hub.fit import FIRST_READ, MAX_PARALLEL

    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--files", str(args.files), "--latency-ms",
             str(args.latency_ms), "--folder", folder],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdin is not None and server.stdout is not None
        try:
            url = server.stdout.readline().strip()
            firsts, agains, requests = [], [], []
            reads: list[int] = []
            for _ in range(args.rounds):
                first, again, shown = one_round(url)
                server.stdin.write("log\n")
                server.stdin.flush()
                log = json.loads(server.stdout.readline())
                firsts.append(first)
                agains.append(again)
                requests.append(len(log))
                per_file: dict[str, int] = {}
                for record in log:
                    if record["server"] == "cdn":
                        per_file[record["file"]] = per_file.get(record["file"], 0) + 1
                reads.extend(per_file.values())
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    print(f"{args.files} files, {args.latency_ms:g} ms per request, {MAX_PARALLEL} headers at a "
          f"time, {args.rounds} rounds")
    print(f"search → repo view with {shown} verdicts: median {statistics.median(firsts):.3f} s, "
          f"best {min(firsts):.3f} s (goal ≤ 1.5 s)")
    print(f"second view (header cache): median {statistics.median(agains):.3f} s")
    print(f"requests per round: {statistics.median(requests):g} (1 search + 1 repo info + "
          f"2 per header + 1 repo info for the second view)")
    print(f"bytes read per header: {max(reads) * FIRST_READ:,} ({max(reads)} Range read(s) of "
          f"{FIRST_READ:,} bytes; the Mixtral header is ~0.7 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
