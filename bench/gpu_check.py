"""One-shot GPU check of llama-cpp-python: offload, VRAM, and MoE experts kept in CPU RAM.

On the device machine packaging/gpu_check.sh builds a CUDA llama-cpp-python and runs this file.
Here, on a CPU build, ``python bench/gpu_check.py --cpu-only --small`` checks the same logic
(the expert overrides included) on a tiny model. For each configuration it loads a Mixtral-shaped
synthetic model with ``llama_cpp.Llama``, captures llama.cpp's log (debug level included), reads
the offload and per-buffer sizes from it, measures VRAM (nvidia-smi), time to first token and decode
speed, and compares the GPU model buffer with what the GGUF header predicts. Writes
``gpu_check.json`` and ``llama_logs.txt`` into ``--out``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import gguf
import llama_cpp
import llama_cpp.llama_cpp as llama_low

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
PROMPT = "the model is hello world and " * 60  # cut to N_PROMPT tokens (byte pieces mostly)
N_PROMPT = 256
EXPERT_RE = re.compile(r"^blk\.(\d+)\.ffn_(up|down|gate)_exps")
BUFFER_RE = re.compile(r"(\S+)\s+(model|KV|compute|output|RS) buffer size =\s*([\d.]+) MiB")
OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
OVERRIDE_RE = re.compile(r"tensor (\S+) \(.*?\) buffer type overridden to (\S+)")
GPU_BUFFER_RE = re.compile(r"^(CUDA|ROCm|Vulkan|Metal|SYCL)\d* ")  # not CUDA_Host: that is RAM
DEVICE_RE = re.compile(r"(found \d+ CUDA devices|Device \d+: .*|using device .*)")


@dataclasses.dataclass(frozen=True)
class Config:
    """One way of placing the model."""

    name: str
    n_gpu_layers: int  # -1: every layer and the output layer
    cpu_moe: int = 0  # the expert tensors of layers 0..cpu_moe-1 stay in CPU RAM
    use_mmap: bool = True


class BuftOverride(ctypes.Structure):
    """llama.cpp's ``struct llama_model_tensor_buft_override``."""

    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


class LogSink:
    """Collects every llama.cpp/ggml log message (debug level too) through llama_log_set."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self._callback = llama_low.llama_log_callback(self._on_log)  # C keeps only the pointer
        llama_low.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        self.chunks.append((text or b"").decode("utf-8", "replace"))

    def take(self) -> str:
        text, self.chunks = "".join(self.chunks), []
        return text


def load_synthetic() -> ModuleType:
    """Import the repository's core/gguf/synthetic.py without the package being installed."""
    name = "mixtral_desk_core_synthetic"
    spec = importlib.util.spec_from_file_location(name, REPO / "core" / "gguf" / "synthetic.py")
    if spec is None or spec.loader is None:
        raise ImportError("core/gguf/synthetic.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def gpu_query(fields: str) -> list[str] | None:
    """One row of ``nvidia-smi --query-gpu`` for GPU 0, or None without a working nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        command = ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.strip().splitlines()
    return [f.strip() for f in lines[0].split(",")] if lines else None


def vram_used_mib() -> int | None:
    row = gpu_query("memory.used")
    return int(row[0]) if row and row[0].isdigit() else None


def cpu_buffer_type() -> int:
    """``ggml_backend_cpu_buffer_type()`` from the libggml-cpu that llama_cpp loaded."""
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for path in sorted(lib_dir.glob("libggml-cpu*.so*")) + sorted(lib_dir.glob("ggml-cpu*.dll")):
        function = ctypes.CDLL(str(path)).ggml_backend_cpu_buffer_type
        function.restype, function.argtypes = ctypes.c_void_p, []
        pointer = function()
        if pointer:
            return int(pointer)
    raise RuntimeError(f"no libggml-cpu with ggml_backend_cpu_buffer_type in {lib_dir}")


@contextlib.contextmanager
def experts_on_cpu(n_layers: int) -> Iterator[str | None]:
    """While active, models that ``Llama`` loads keep layers 0..n_layers-1's experts in CPU RAM.

    ``Llama.__init__`` takes its params from ``llama_cpp.llama_cpp.llama_model_default_params()``,
    so that function is wrapped to point ``tensor_buft_overrides`` at a NULL-terminated array.
    The array (and its pattern bytes, which ctypes keeps in it) lives as long as this context.
    """
    if n_layers <= 0:
        yield None
        return
    pattern = r"blk\.({})\.ffn_(up|down|gate)_exps".format("|".join(map(str, range(n_layers))))
    overrides = (BuftOverride * 2)()  # the second entry stays zeroed: the terminator
    overrides[0].pattern = pattern.encode()
    overrides[0].buft = cpu_buffer_type()
    original = llama_low.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.tensor_buft_overrides = ctypes.addressof(overrides)
        return params

    llama_low.llama_model_default_params = patched
    try:
        yield pattern
    finally:
        llama_low.llama_model_default_params = original


def expected_gpu_model_mib(tensors: dict[str, int], config: Config) -> float:
    """The model bytes llama.cpp should put on the GPU: all but token_embd and CPU experts."""
    if config.n_gpu_layers == 0:
        return 0.0
    total = 0
    for name, n_bytes in tensors.items():
        match = EXPERT_RE.match(name)
        if name == "token_embd.weight" or (match and int(match.group(1)) < config.cpu_moe):
            continue
        total += n_bytes
    return total / MIB


def buffer_mib(buffers: dict[str, float], kind: str, *, on_gpu: bool) -> float:
    """Sum of the ``kind`` buffers (model, KV, ...) in device memory (CUDA0...) or host memory
    (CPU, CPU_Mapped, CPU_REPACK, CUDA_Host pinned)."""
    return sum(v for k, v in buffers.items()
               if k.endswith(" " + kind) and bool(GPU_BUFFER_RE.match(k)) == on_gpu)


def parse_log(text: str) -> dict[str, Any]:
    buffers: dict[str, float] = {}
    for match in BUFFER_RE.finditer(text):
        key = f"{match.group(1)} {match.group(2)}"
        buffers[key] = round(buffers.get(key, 0.0) + float(match.group(3)), 2)
    offloaded = OFFLOAD_RE.search(text)
    overridden = OVERRIDE_RE.findall(text)
    return {
        "offloaded": f"{offloaded.group(1)}/{offloaded.group(2)}" if offloaded else None,
        "buffers_mib": buffers,
        "overridden": len(overridden),
        "override_targets": sorted({target for _, target in overridden}),
        "mmap_override_warning": "tensor overrides to CPU are used with mmap" in text,
        "device_lines": sorted(set(DEVICE_RE.findall(text)))[:6],
    }


def generate(llm: llama_cpp.Llama, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """Greedy generation of n tokens: (time to first token s, decode tokens/s, tokens)."""
    cast(Any, llm).reset()  # untyped in llama_cpp; drops the KV prefix the last run left
    stamps: list[float] = []
    tokens: list[int] = []
    start = time.perf_counter()
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        stamps.append(time.perf_counter())
        tokens.append(token)
        if len(tokens) >= n:
            break
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return stamps[0] - start, decode, tokens


def run_config(config: Config, model: Path, tensors: dict[str, int], n_gen: int,
               sink: LogSink) -> dict[str, Any]:
    gc.collect()
    result: dict[str, Any] = dataclasses.asdict(config)
    result["vram_before_mib"] = vram_used_mib()
    sink.take()
    started = time.perf_counter()
    python_log = io.StringIO()  # llama-cpp-python's own verbose prints (metadata, templates)
    try:
        with experts_on_cpu(config.cpu_moe) as pattern, contextlib.redirect_stderr(python_log):
            result["override_pattern"] = pattern
            llm = llama_cpp.Llama(model_path=str(model), n_gpu_layers=config.n_gpu_layers,
                                  use_mmap=config.use_mmap, n_ctx=1024, n_batch=512, seed=0,
                                  n_threads=max(1, (os.cpu_count() or 2) // 2), verbose=True)
            try:
                result["load_s"] = round(time.perf_counter() - started, 2)
                result["vram_after_load_mib"] = vram_used_mib()
                prompt = llm.tokenize(PROMPT.encode())[:N_PROMPT]
                generate(llm, prompt, 2)  # warm-up: kernels and cuBLAS for both batch sizes
                llama_low.llama_perf_context_reset(llm._ctx.ctx)
                ttft, decode, tokens = generate(llm, prompt, n_gen)
                perf = llama_low.llama_perf_context(llm._ctx.ctx)
                result["vram_after_gen_mib"] = vram_used_mib()
            finally:
                llm.close()
                del llm
        result.update(prompt_tokens=len(prompt), ttft_ms=round(ttft * 1000, 1),
                      decode_tok_s=round(decode, 1), first_tokens=tokens[:16])
        if perf.t_p_eval_ms > 0:
            result["prompt_tok_s"] = round(perf.n_p_eval / perf.t_p_eval_ms * 1000, 1)
        if perf.t_eval_ms > 0:
            result["perf_decode_tok_s"] = round(perf.n_eval / perf.t_eval_ms * 1000, 1)
    except Exception as error:  # report and go on with the next configuration
        result["error"] = f"{type(error).__name__}: {error}"
    log = sink.take()
    result["log"] = log + "\n----- llama-cpp-python stderr -----\n" + python_log.getvalue()
    result.update(parse_log(log))
    result["expected_gpu_model_mib"] = round(expected_gpu_model_mib(tensors, config), 2)
    if result.get("vram_before_mib") is not None and result.get("vram_after_load_mib") is not None:
        result["vram_load_delta_mib"] = result["vram_after_load_mib"] - result["vram_before_mib"]
    return result


def check(results: list[dict[str, Any]], n_layers: int, gpu: bool) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) for what this run is meant to show."""
    checks: list[tuple[str, bool, str]] = []
    for r in results:
        checks.append((f"{r['name']}: ran", "error" not in r, r.get("error", "")))
        want = 3 * min(r["cpu_moe"], n_layers)
        checks.append((f"{r['name']}: {want} expert tensors overridden to CPU",
                       r["overridden"] == want, str(r["overridden"])))
        if not gpu or r["n_gpu_layers"] == 0:
            continue
        checks.append((f"{r['name']}: all layers offloaded", r["offloaded"] == f"{n_layers + 1}/"
                       f"{n_layers + 1}", str(r["offloaded"])))
        got = buffer_mib(r["buffers_mib"], "model", on_gpu=True)
        want_mib = r["expected_gpu_model_mib"]
        checks.append((f"{r['name']}: CUDA model buffer matches GGUF plan",
                       abs(got - want_mib) <= max(4.0, 0.02 * want_mib),
                       f"{got:.1f} MiB reported, {want_mib:.1f} MiB planned"))
    deltas = {r["name"]: r.get("vram_load_delta_mib") for r in results}
    full, moe = deltas.get("gpu_all"), deltas.get(f"gpu_cpu_moe{n_layers}")
    if gpu and full is not None and moe is not None:
        checks.append(("experts on CPU use less VRAM than all on GPU", moe < full,
                       f"{moe} vs {full} MiB"))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gpu_check")
    parser.add_argument("--cpu-only", action="store_true", help="no GPU configurations")
    parser.add_argument("--small", action="store_true", help="tiny model instead of BENCH")
    parser.add_argument("--model", type=Path, help="use this GGUF instead of writing one")
    parser.add_argument("--n-gen", type=int, default=128)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    sink = LogSink()
    info = llama_low.llama_print_system_info().decode(errors="replace").strip()
    offload = bool(llama_low.llama_supports_gpu_offload())
    gpu_row = gpu_query("name,memory.total,driver_version")
    print(f"system_info: {info}\nsupports_gpu_offload: {offload}\nnvidia-smi: {gpu_row}")
    gpu = offload and not args.cpu_only
    if not offload and not args.cpu_only:
        print("WARNING: this llama-cpp-python has no usable GPU backend; CPU configurations only")

    synthetic = load_synthetic()
    shape = dataclasses.replace(synthetic.TINY, quantization="Q8_0") if args.small \
        else synthetic.BENCH
    tag = "tiny" if args.small else "bench"
    model = args.model or Path(tempfile.gettempdir()) / f"gpu_check_{tag}.gguf"
    started = time.perf_counter()
    if args.model is None:
        synthetic.write_synthetic_model(model, shape)
    print(f"model: {model} ({model.stat().st_size / MIB:.0f} MiB, {shape}), "
          f"written in {time.perf_counter() - started:.1f} s")
    reader = gguf.GGUFReader(model)
    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    del reader
    n, half = shape.n_layers, max(1, shape.n_layers // 2)
    if gpu:
        # "cpu" (n_gpu_layers=0 on a CUDA build) runs last: on the H200 run of 2026-11-27 it
        # segfaulted inside llama_model_load_from_file and took the other configurations with it.
        configs = [Config("gpu_all", -1), Config(f"gpu_cpu_moe{half}", -1, half),
                   Config(f"gpu_cpu_moe{n}", -1, n), Config(f"gpu_cpu_moe{n}_nommap", -1, n, False),
                   Config("cpu", 0)]
    else:
        configs = [Config("cpu", 0), Config(f"cpu_moe{half}", 0, half), Config(f"cpu_moe{n}", 0, n)]

    results = []
    for config in configs:
        print(f"--- {config}", flush=True)
        results.append(run_config(config, model, tensors, args.n_gen, sink))

    header = ("config", "offload", "GPU MiB", "plan MiB", "CPU MiB", "KV GPU", "ovr", "VRAM+",
              "load s", "TTFT ms", "pp t/s", "tg t/s")
    print("\n" + " ".join(f"{h:>12}" for h in header))
    for r in results:
        mib = r["buffers_mib"]
        gpu_mib = buffer_mib(mib, "model", on_gpu=True)
        cpu_mib = buffer_mib(mib, "model", on_gpu=False)
        kv_gpu = buffer_mib(mib, "KV", on_gpu=True)
        row = (r["name"], r["offloaded"], f"{gpu_mib:.1f}", f"{r['expected_gpu_model_mib']:.1f}",
               f"{cpu_mib:.1f}", f"{kv_gpu:.1f}", r["overridden"], r.get("vram_load_delta_mib"),
               r.get("load_s"), r.get("ttft_ms"), r.get("prompt_tok_s"), r.get("decode_tok_s"))
        print(" ".join(f"{v!s:>12}" for v in row))
    for r in results:
        print(f"{r['name']}: buffers {r['buffers_mib']} targets {r['override_targets']} "
              f"mmap-warning {r['mmap_override_warning']} first tokens {r.get('first_tokens')}")
    checks = check(results, n, gpu)
    if not args.cpu_only:
        checks.insert(0, ("llama_supports_gpu_offload", offload, info[:80]))
    print()
    for name, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}  {detail}")

    logs = "".join(f"\n===== {r['name']} =====\n{r.pop('log')}" for r in results)
    (args.out / "llama_logs.txt").write_text(logs, encoding="utf-8")
    report = {"system_info": info, "supports_gpu_offload": offload, "nvidia_smi": gpu_row,
              "llama_cpp_version": llama_cpp.__version__, "model": str(model),
              "shape": dataclasses.asdict(shape),
              "tensor_mib": round(sum(tensors.values()) / MIB, 2),
              "results": results, "checks": [{"name": c, "passed": p, "detail": d}
                                            for c, p, d in checks]}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'llama_logs.txt'}")
    return 0 if all(p for _, p, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
