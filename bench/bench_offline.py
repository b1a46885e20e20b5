"""Start-up with the network blocked versus normal: time to the window's first paint.

Each round starts ``python -m mixtral_desk --exit-after-paint`` (offscreen platform, a fresh
temporary ``MIXTRAL_DESK_HOME``) twice, in alternating order:

* ``normal``: the environment as it is (``HF_ENDPOINT`` unset: huggingface.co);
* ``blocked``: ``HF_ENDPOINT`` at a loopback tripwire that counts connections and hangs up on
  each (a dead Hub), and the test socket guard (tests/net_guard.py, through ``sitecustomize``) in
  every process, refusing and logging every connection that would leave this computer.

The time is from spawning the process to the ``first-paint`` line (interpreter start and imports
included); the app's own figure (from ``main()``) is printed too. Goal (issue #8): start-up
offline is the same as online — ratio blocked/normal ≈ 1.0 — with 0 connection attempts.
The guarded runs also pay for loading the guard itself (a few standard modules), so the ratio
errs against them.

Run: .venv/bin/python bench/bench_offline.py [--rounds 7] [--offline-flag]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.net_guard import (  # noqa: E402
    Tripwire,
    format_attempts,
    guarded_env,
    guarded_pids,
    read_log,
)


def first_paint(env: dict[str, str], extra: list[str]) -> tuple[float, float]:
    """(seconds from spawn to the first paint, the app's own first-paint seconds)."""
    with tempfile.TemporaryDirectory() as home:
        env = {**env, "MIXTRAL_DESK_HOME": home, "QT_QPA_PLATFORM": "offscreen"}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "mixtral_desk", "--exit-after-paint", *extra], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        assert process.stdout is not None
        wall = own = float("nan")
        for line in process.stdout:
            if line.startswith("first-paint"):
                wall = time.perf_counter() - started
                own = float(line.split()[1])
                break
        process.wait(60)
    if wall != wall:  # NaN: no first paint
        raise SystemExit(f"no first-paint line (exit code {process.returncode})")
    return wall, own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--offline-flag", action="store_true",
                        help="also pass --offline in the blocked runs")
    args = parser.parse_args()

    normal_env = {k: v for k, v in os.environ.items()
                  if k not in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "MIXTRAL_DESK_NET_GUARD_LOG")}
    with tempfile.TemporaryDirectory() as scratch, Tripwire() as hub_site:
        log = Path(scratch) / "attempts.jsonl"
        blocked_env = guarded_env(log, normal_env)
        blocked_env["HF_ENDPOINT"] = hub_site.url
        blocked_extra = ["--offline"] if args.offline_flag else []

        first_paint(normal_env, [])  # warm the file cache; not counted
        first_paint(blocked_env, blocked_extra)
        log.unlink(missing_ok=True)
        Path(f"{log}.pids").unlink(missing_ok=True)
        runs: dict[str, list[tuple[float, float]]] = {"normal": [], "blocked": []}
        for round_number in range(args.rounds):
            order = ["normal", "blocked"] if round_number % 2 == 0 else ["blocked", "normal"]
            for kind in order:
                if kind == "normal":
                    runs[kind].append(first_paint(normal_env, []))
                else:
                    runs[kind].append(first_paint(blocked_env, blocked_extra))
            print(f"round {round_number + 1}: normal {runs['normal'][-1][0]:.3f} s, "
                  f"blocked {runs['blocked'][-1][0]:.3f} s", flush=True)
        attempts = read_log(log)
        guarded = len(guarded_pids(log))
        hub_connections = hub_site.connections

    print()
    print(f"{'':8} {'spawn→paint median':>19} {'min':>7} {'max':>7} {'app main()→paint':>17}")
    medians = {}
    for kind, values in runs.items():
        walls = [w for w, _ in values]
        medians[kind] = statistics.median(walls)
        print(f"{kind:8} {medians[kind]:>17.3f} s {min(walls):>6.3f} {max(walls):>7.3f} "
              f"{statistics.median(o for _, o in values):>15.3f} s")
    print(f"ratio blocked/normal: {medians['blocked'] / medians['normal']:.3f} "
          f"({args.rounds} rounds, alternating; goal ≈ 1.0)")
    print(f"outbound connection attempts in the blocked runs: {len(attempts)} "
          f"({guarded} guarded processes); connections to the Hub's endpoint: {hub_connections}")
    if attempts or hub_connections:
        print(format_attempts(attempts))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
