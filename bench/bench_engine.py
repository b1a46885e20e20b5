"""Engine overhead: plain llama-cpp-python in this process vs the same model through EngineHost.

Writes the ~0.7 GB Mixtral-shaped benchmark model once (cached under /tmp, ~20 s), then runs the
same greedy completion (same prompt shape, same threads, same length: end-of-text ignored) both
ways, several rounds in alternating order, and prints time to first token and decode tok/s for each
plus the ratio engine/plain (goal: ≥ 0.97).

Both sides are timed the same way, in this process: TTFT from the request to the first token's
text, decode rate = (tokens - 1) / (time from the first to the last token's text). Each round uses
a different first word so no side reuses the other's KV cache prefix.

Run: .venv/bin/python bench/bench_engine.py [--rounds 6] [--tokens 128] [--threads 2] [--mmap]
     [--overhead]  (adds a CPU-time measurement that other load on the machine does not skew)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from mixtral_desk.core.engine import EngineHost, LoadOptions, SamplingOptions, TokenEvent
from mixtral_desk.core.gguf.synthetic import BENCH, write_synthetic_model

CACHE = Path("/tmp/mixtral-desk-bench")
MODEL = CACHE / "bench-moe-q8_0.gguf"
PROMPT = "{word} starts this prompt; both sides then write the same number of tokens."
WORDS = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
         "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa"]
N_CTX = 1024


def ensure_model() -> Path:
    """The benchmark model, written on first use."""
    if not MODEL.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = MODEL.with_suffix(".partial")
        started = time.perf_counter()
        write_synthetic_model(partial, BENCH, name="bench-moe")
        partial.replace(MODEL)
        print(f"wrote {MODEL} ({MODEL.stat().st_size / 1e9:.2f} GB) in "
              f"{time.perf_counter() - started:.1f} s")
    return MODEL


def run_plain(llama: Any, prompt: str, tokens: int) -> tuple[float, float]:
    """Greedy completion with llama-cpp-python directly; (ttft s, decode tok/s)."""
    started = time.perf_counter()
    prompt_tokens = llama.tokenize(prompt.encode(), add_bos=True, special=False)
    first = last = 0.0
    count = 0
    for token in llama.generate(prompt_tokens, temp=0.0, repeat_penalty=1.0, top_k=40,
                                top_p=0.95, min_p=0.05):
        llama.detokenize([token])
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
        if count >= tokens:
            break
    return first - started, (count - 1) / (last - first)


def run_engine(host: EngineHost, prompt: str, tokens: int) -> tuple[float, float]:
    """The same completion through the engine process; (ttft s, decode tok/s)."""
    sampling = SamplingOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens,
                               ignore_eos=True)
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    for event in host.complete(prompt, sampling):
        now = time.perf_counter()
        if isinstance(event, TokenEvent):
            first = first or now
            last = now
        else:
            count = event.stats.completion_tokens
    assert count == tokens, count
    return first - started, (count - 1) / (last - first)


def cpu_overhead(rounds: int, tokens: int = 1500) -> float:
    """Extra CPU time per token of the engine path (engine process + host), in microseconds.

    Wall-clock figures swing wildly on a shared machine; CPU time does not. Measured on the tiny
    model with one thread (no spinning worker threads to inflate CPU time), so the per-token cost
    of the Python around llama.cpp stands out; divide by a real model's time per token to get the
    expected slowdown.
    """
    import llama_cpp
    import psutil

    from mixtral_desk.core.gguf.synthetic import TINY

    tiny = write_synthetic_model(CACHE / "tiny-moe.gguf", TINY)
    llama = llama_cpp.Llama(model_path=str(tiny), n_ctx=2048, n_threads=1, n_threads_batch=1,
                            verbose=False)
    me = psutil.Process()

    def cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    plain: list[float] = []
    engine: list[float] = []
    with EngineHost(CACHE / "engine.log") as host:
        host.load(LoadOptions(model_path=tiny, n_ctx=2048, n_threads=1))
        assert host.pid is not None
        worker = psutil.Process(host.pid)
        run_plain(llama, "warm", 50)
        run_engine(host, "warm", 50)
        for r in range(rounds):
            before = cpu(me)
            run_plain(llama, f"{WORDS[r % len(WORDS)]} plain", tokens)
            plain.append((cpu(me) - before) / tokens * 1e6)
            before, before_worker = cpu(me), cpu(worker)
            run_engine(host, f"{WORDS[r % len(WORDS)]} engine", tokens)
            engine.append((cpu(me) - before + cpu(worker) - before_worker) / tokens * 1e6)
            print(f"cpu per token: plain {plain[-1]:.0f} us, engine+host {engine[-1]:.0f} us")
    extra = statistics.median(engine) - statistics.median(plain)
    print(f"median extra CPU per token through the engine: {extra:.0f} us")
    return extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmap", action="store_true",
                        help="map the model file (default: read it into memory, which keeps "
                             "page-cache eviction on a busy machine out of the figures)")
    parser.add_argument("--overhead", action="store_true",
                        help="also measure the engine's extra CPU time per token (robust to "
                             "other load on the machine)")
    args = parser.parse_args()
    model = ensure_model()
    extra = cpu_overhead(4) if args.overhead else None

    import llama_cpp

    started = time.perf_counter()
    llama = llama_cpp.Llama(model_path=str(model), n_ctx=N_CTX, n_threads=args.threads,
                            n_threads_batch=args.threads, n_batch=512, n_ubatch=512,
                            use_mmap=args.mmap, verbose=False)
    print(f"plain load {time.perf_counter() - started:.2f} s")
    with EngineHost(CACHE / "engine.log") as host:
        info = host.load(LoadOptions(model_path=model, n_ctx=N_CTX, n_threads=args.threads,
                                     use_mmap=args.mmap))
        print(f"engine load {info.load_seconds:.2f} s ({info.backend.backends}, "
              f"llama-cpp-python {info.backend.llama_cpp_version})")
        run_plain(llama, PROMPT.format(word="Warm"), 16)
        run_engine(host, PROMPT.format(word="Warmer"), 16)
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "engine": []}
        for r in range(args.rounds):
            order = ("plain", "engine") if r % 2 == 0 else ("engine", "plain")
            for i, side in enumerate(order):
                prompt = PROMPT.format(word=WORDS[(2 * r + i) % len(WORDS)])
                result = (run_plain(llama, prompt, args.tokens) if side == "plain"
                          else run_engine(host, prompt, args.tokens))
                results[side].append(result)
                print(f"round {r + 1} {side:>6}: ttft {result[0] * 1000:7.1f} ms  "
                      f"decode {result[1]:6.1f} tok/s")
    plain_rate = statistics.median(r[1] for r in results["plain"])
    engine_rate = statistics.median(r[1] for r in results["engine"])
    plain_ttft = statistics.median(r[0] for r in results["plain"])
    engine_ttft = statistics.median(r[0] for r in results["engine"])
    print(f"median plain : ttft {plain_ttft * 1000:.1f} ms, decode {plain_rate:.1f} tok/s")
    print(f"median engine: ttft {engine_ttft * 1000:.1f} ms, decode {engine_rate:.1f} tok/s")
    ratio = engine_rate / plain_rate
    pair_ratios = [e[1] / p[1] for p, e in zip(results["plain"], results["engine"], strict=True)]
    print(f"decode ratio engine/plain (medians): {ratio:.3f} (goal >= 0.97)")
    print(f"median of per-round ratios (each round's two runs are back to back): "
          f"{statistics.median(pair_ratios):.3f}")
    if extra is not None:
        per_token_ms = 1000 / plain_rate
        print(f"expected ratio from CPU overhead at the plain rate ({per_token_ms:.1f} ms/token): "
              f"{per_token_ms / (per_token_ms + extra / 1000):.3f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average now {load:.2f} on {os.cpu_count()} CPUs (other work skews the figures)")
    return 0 if ratio >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
