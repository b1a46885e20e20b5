"""The desktop window's cost while streaming, and its cold start.

1. Decode tok/s of the same greedy chat reply (same ~0.7 GB generated model, same threads, same
   length, end-of-text ignored) through the window — typed into the composer, streamed, rendered
   as Markdown, saved to the store — versus the engine alone (EngineHost.chat in a plain loop).
   Both figures are the engine's own ``ReplyStats.decode_tokens_per_s`` (timed on the host side
   as the tokens arrive); rounds alternate (alone, window, alone, ...) so that load from other
   programs hits both alike; a first round of each warms up and is not counted.
   Goal: window/alone ≥ 0.95.
2. Event-loop lateness while the window streams: a 10 ms precise QTimer records how late each
   tick fires; max and p99 (goal ≤ 50 ms).
3. Cold start to first paint: a fresh ``python`` process running ``desktop.app.main`` until the
   window's first paint event (offscreen platform), timed from the spawn; median of several.

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_gui.py [--rounds 4] [--tokens 128]
     [--threads 2] [--starts 5]
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

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# bench/ is on sys.path when this file runs as a script.
from bench_engine import N_CTX, ensure_model

TICK_MS = 10
START_CODE = ("import sys; from mixtral_desk.desktop.app import main; "
              "sys.exit(main(['--exit-after-paint']))")


def cold_start(runs: int) -> list[float]:
    """Seconds from spawning the process to the window's first paint, per run."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "MIXTRAL_DESK_HOME": home, "QT_QPA_PLATFORM": "offscreen"}
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", START_CODE], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True)
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("first-paint"):
                    times.append(time.perf_counter() - started)
                    break
            process.wait(30)
    return times


class Alone:
    """The engine alone: its own EngineHost with the same model and options."""

    def __init__(self, model: Path, threads: int, tokens: int) -> None:
        from mixtral_desk.core.engine import EngineHost, LoadOptions, SamplingOptions

        self.tokens = tokens
        self.sampling = SamplingOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens,
                                        ignore_eos=True)
        self.host = EngineHost(Path(tempfile.gettempdir()) / "bench-gui-engine.log")
        self.host.load(LoadOptions(model_path=model, n_ctx=N_CTX, n_threads=threads))

    def round(self, index: int) -> float:
        """Decode tok/s of one reply."""
        from mixtral_desk.core.engine import ChatMessage, DoneEvent

        for event in self.host.chat([ChatMessage("user", f"Round {index}: tell me a story.")],
                                    self.sampling):
            if isinstance(event, DoneEvent):
                assert event.stats.completion_tokens == self.tokens, event.stats
                return event.stats.decode_tokens_per_s
        raise AssertionError("no DoneEvent")


def interleaved(model: Path, threads: int, tokens: int, rounds: int
                ) -> tuple[list[float], list[float], list[float], int, tuple[float, float]]:
    """Alternating rounds: engine alone, then through the window (drift hits both alike).

    Returns the alone rates, the window rates, the timer's lateness (ms) while the window
    streamed, how often the streaming message was re-rendered, and this process's CPU use (share
    of one core) during the alone rounds and during the window rounds. The CPU share does not
    depend on other programs' load: it is what the window costs the machine while it streams.
    """
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from mixtral_desk.core.paths import data_paths
    from mixtral_desk.desktop.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow(data_paths().ensure())
    window.show()

    def wait_for(signal: object, timeout_s: float = 600) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)  # type: ignore[attr-defined]
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        signal.disconnect(loop.quit)  # type: ignore[attr-defined]

    wait_for(window.ready)
    window.settings = window.settings.model_copy(update={
        "load": window.settings.load.model_copy(update={"n_ctx": N_CTX, "n_threads": threads}),
        "sampling": window.settings.sampling.model_copy(update={
            "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": tokens,
            "ignore_eos": True})})
    window.load_model(model)
    wait_for(window.session.model_loaded)
    alone = Alone(model, threads, tokens)

    lateness: list[float] = []
    last = [0.0]
    streaming = [False]

    def tick() -> None:
        now = time.perf_counter()
        if streaming[0] and last[0]:
            lateness.append(max(0.0, (now - last[0]) * 1000 - TICK_MS))
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    base: list[float] = []
    gui: list[float] = []
    cpu = {"alone": [0.0, 0.0], "window": [0.0, 0.0]}  # [cpu seconds, wall seconds]

    def account(kind: str, cpu0: float, wall0: float) -> None:
        cpu[kind][0] += time.process_time() - cpu0
        cpu[kind][1] += time.perf_counter() - wall0

    page = window.chat_page
    for index in range(-1, rounds):  # round -1 warms both up (page faults), not counted
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rate = alone.round(index)
        if index >= 0:
            base.append(rate)
            account("alone", cpu0, wall0)
        page.new_chat()
        page.view.composer.setPlainText(f"Round {index}: tell me a story.")
        results: list[object] = []
        page.turn_finished.connect(results.append)
        streaming[0], last[0] = index >= 0, 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
        wait_for(page.branch_shown)
        if index >= 0:
            account("window", cpu0, wall0)
        streaming[0] = False
        page.turn_finished.disconnect(results.append)
        stats = getattr(results[0], "stats", None)
        assert stats is not None and stats.completion_tokens == tokens, results
        if index >= 0:
            gui.append(stats.decode_tokens_per_s)
    renders = page.view.renders
    timer.stop()
    alone.host.close()
    window.close()
    window.shutdown()
    app.processEvents()
    shares = (cpu["alone"][0] / cpu["alone"][1], cpu["window"][0] / cpu["window"][1])
    return base, gui, lateness, renders, shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    starts = cold_start(args.starts)
    print(f"cold start to first paint: median {statistics.median(starts):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)}; goal < 1.5 s)")

    model = ensure_model()
    os.environ["MIXTRAL_DESK_HOME"] = tempfile.mkdtemp(prefix="bench-gui-")
    base, gui, late, renders, shares = interleaved(model, args.threads, args.tokens,
                                                   args.rounds)
    print(f"decode tok/s, engine alone:   {statistics.median(base):6.1f} "
          f"(rounds: {', '.join(f'{r:.1f}' for r in base)})")
    print(f"decode tok/s, window showing: {statistics.median(gui):6.1f} "
          f"(rounds: {', '.join(f'{r:.1f}' for r in gui)})")
    pairs = [g / b for g, b in zip(gui, base, strict=True)]
    print(f"ratio window/alone: {statistics.median(gui) / statistics.median(base):.3f} of the "
          f"medians; per round {', '.join(f'{r:.3f}' for r in pairs)} (goal ≥ 0.95)")
    late_sorted = sorted(late)
    p99 = late_sorted[min(len(late_sorted) - 1, int(0.99 * len(late_sorted)))] if late else 0.0
    print(f"10 ms timer lateness while streaming: max {max(late, default=0):.1f} ms, "
          f"p99 {p99:.1f} ms over {len(late)} ticks (goal ≤ 50 ms)")
    print(f"this process's CPU while a reply streams: {100 * shares[1]:.1f} % of one core with "
          f"the window, {100 * shares[0]:.1f} % for the engine alone's host loop "
          f"(the engine process itself uses {args.threads} threads)")
    print(f"streaming messages re-rendered {renders} times for {args.rounds} x {args.tokens} "
          "tokens (coalesced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
