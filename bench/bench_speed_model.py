"""The speed model against what the engine measures on this machine: decode and prompt speed.

For each thread count, loads the model on the CPU through the app's engine (as ``chat`` does),
sends a short prompt and one of ``--words`` words (a different first word each round, so nothing
comes from the cache) and greedy-decodes ``--tokens`` tokens after each; prints the engine's own
figures (``ReplyStats``: decode tok/s, and prompt tok/s = tokens evaluated / time to first token)
next to the planner's prediction without any calibration (this machine's measured CPU only), at
the same context, and the error. Writes the ~0.7 GB Mixtral-shaped Q8_0 bench model first if
needed (see bench_engine.py).

Run: .venv/bin/python bench/bench_speed_model.py [--model PATH] [--threads 1,2] [--rounds 3]
     [--tokens 128] [--words 250] [--ctx 2048]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from mixtral_desk.core.cpu_speed import cpu_speed_profile
from mixtral_desk.core.engine import ChatMessage, DoneEvent, EngineHost, LoadOptions
from mixtral_desk.core.engine import SamplingOptions as Sampling
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.hardware import detect_hardware
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.model_layout import layout_from_facts
from mixtral_desk.core.planner import evaluate, machine_from_hardware
from mixtral_desk.core.speed_model import prompt_seconds

WORDS = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
         "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--words", type=int, default=250)
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args()
    if args.model is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_engine import ensure_model

        args.model = ensure_model()
    facts = inspect_model(args.model)
    model = memory_model_from_facts(facts, args.ctx)
    layout = layout_from_facts(facts)
    hardware = detect_hardware(probe_gpus=False)
    probe = cpu_speed_profile(hardware, refresh=True)
    hardware = replace(hardware, cpu_speed=probe)
    if probe is not None:
        print(f"probe: {probe.bandwidth_one / 1e9:.1f} GB/s with 1 thread, "
              f"{probe.bandwidth_all / 1e9:.1f} GB/s with {probe.threads}, "
              f"{probe.flops / 1e9:.0f} GFLOP/s float32 matmul")
    print(f"model: {facts.path.name} ({facts.quantization}, {facts.file_size / 1e9:.2f} GB)")
    print("threads | prompt tokens | decode predicted | measured (median of runs) | error | "
          "prompt predicted | measured | error")
    with tempfile.TemporaryDirectory() as log_dir, EngineHost(Path(log_dir) / "e.log") as host:
        for threads in (int(t) for t in args.threads.split(",")):
            host.load(LoadOptions(model_path=facts.path, n_ctx=args.ctx, n_threads=threads))
            machine = machine_from_hardware(hardware, vram=0, threads=threads)
            p = evaluate(model, machine, 0, 0, layout=layout)
            for words in (3, args.words):
                decode: list[float] = []
                prompt: list[float] = []
                for i in range(args.rounds):
                    text = WORDS[i % len(WORDS)] + " says" + " more" * words
                    events = list(host.chat([ChatMessage("user", text)],
                                            Sampling(temperature=0.0, max_tokens=args.tokens,
                                                     ignore_eos=True, seed=1)))
                    done = events[-1]
                    assert isinstance(done, DoneEvent)
                    s = done.stats
                    decode.append(s.decode_tokens_per_s)
                    evaluated = s.prompt_tokens - s.cached_tokens
                    prompt.append(evaluated / s.time_to_first_token_s)
                fill = s.prompt_tokens + args.tokens / 2
                predicted_decode = p.tokens_per_s(machine, fill, layout.shape)
                predicted_prompt = evaluated / prompt_seconds(
                    p.traffic, machine.rates(), layout.shape, evaluated, s.cached_tokens)
                measured_decode = statistics.median(decode)
                measured_prompt = statistics.median(prompt)
                print(f"{threads:7d} | {s.prompt_tokens:13d} | {predicted_decode:16.1f} | "
                      f"{measured_decode:7.1f} ({', '.join(f'{d:.1f}' for d in decode)}) | "
                      f"{(predicted_decode / measured_decode - 1) * 100:+.0f} % | "
                      f"{predicted_prompt:16.1f} | {measured_prompt:8.1f} | "
                      f"{(predicted_prompt / measured_prompt - 1) * 100:+.0f} %", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
