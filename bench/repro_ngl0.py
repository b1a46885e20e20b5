"""Isolate bench/gpu_check.py's segfault: ``n_gpu_layers=0`` on a CUDA build, or its log callback?

bench/GPU_CHECK.md: on the H200's CUDA build, bench/gpu_check.py crashed (SIGSEGV) inside
``llama_model_load_from_file`` on its first configuration — ``Llama(..., n_gpu_layers=0,
verbose=True)`` with its own ``llama_log_set`` callback installed — while a plain
``Llama(..., n_gpu_layers=-1, verbose=True)`` in a fresh process loaded. Each case below runs in
its own process (``python -X faulthandler``, so a crash prints the Python stack), on a small
sparse MoE (tests/mixtral_header.py's BENCH shape, zero data), and the parent records each exit
status (a negative status is the signal that ended it):

- ``ngl0_plain``        Llama(n_gpu_layers=0, verbose=False): no callback of ours
- ``ngl0_verbose``      Llama(n_gpu_layers=0, verbose=True): llama-cpp-python's own callback only
- ``ngl0_logsink``      gpu_check.py's LogSink callback, then Llama(n_gpu_layers=0, verbose=True):
                        the crash as it happened
- ``ngl_all_logsink``   the LogSink callback with n_gpu_layers=-1: the callback without ngl=0
- ``ngl0_lowlevel``     llama_model_load_from_file with n_gpu_layers=0 through the C API alone
- ``ngl0_after_gpu``    LogSink; n_gpu_layers=-1 then 0 in one process (gpu_check.py's new order)
- ``ngl0_llama_bench``  llama-bench -ngl 0 (C++ only, no Python): the build itself

Run: python bench/repro_ngl0.py --out DIR [--llama-bench BIN] [--cases a,b] [--timeout 60]
Writes DIR/repro_ngl0.json; the exit status is 0 however the cases end.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CASES = ("ngl0_plain", "ngl0_verbose", "ngl0_logsink", "ngl_all_logsink", "ngl0_lowlevel",
         "ngl0_after_gpu", "ngl0_llama_bench")


def install_logsink() -> list[bytes]:
    """bench/gpu_check.py's LogSink: every log message into a list, through llama_log_set."""
    import llama_cpp.llama_cpp as low

    chunks: list[bytes] = []

    def on_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
        chunks.append(text or b"")

    callback = low.llama_log_callback(on_log)
    install_logsink.keep = callback  # type: ignore[attr-defined]  # C keeps only the pointer
    low.llama_log_set(callback, ctypes.c_void_p(0))
    return chunks


def load(model: Path, n_gpu_layers: int, verbose: bool) -> None:
    """Load ``model`` with llama-cpp-python's ``Llama`` as gpu_check.py did; evaluate 4 tokens."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_gpu_layers=n_gpu_layers, n_ctx=256,
                          n_batch=64, seed=0, verbose=verbose)
    llm.eval([1, 10, 11, 12])  # token ids: the sparse model's made-up vocabulary has no bytes
    llm.close()
    print(f"loaded and evaluated with n_gpu_layers={n_gpu_layers}", flush=True)


def lowlevel(model: Path) -> None:
    """``llama_model_load_from_file`` with n_gpu_layers=0 and nothing else of llama-cpp-python."""
    import llama_cpp.llama_cpp as low

    low.llama_backend_init()
    params = low.llama_model_default_params()
    params.n_gpu_layers = 0
    handle = low.llama_model_load_from_file(str(model).encode(), params)
    print(f"llama_model_load_from_file: {'ok' if handle else 'NULL'}", flush=True)
    if handle:
        low.llama_model_free(handle)


def child(case: str, model: Path) -> None:
    """Run one case in this process."""
    if case == "ngl0_plain":
        load(model, 0, False)
    elif case == "ngl0_verbose":
        load(model, 0, True)
    elif case == "ngl0_logsink":
        install_logsink()
        load(model, 0, True)
    elif case == "ngl_all_logsink":
        install_logsink()
        load(model, -1, True)
    elif case == "ngl0_lowlevel":
        lowlevel(model)
    elif case == "ngl0_after_gpu":
        install_logsink()
        load(model, -1, True)
        load(model, 0, True)
    else:
        raise SystemExit(f"unknown case {case}")


def run_case(case: str, model: Path, bench: str | None, timeout: float) -> dict[str, Any]:
    """Run ``case`` in a subprocess; its exit status, signal name and the end of its output."""
    if case == "ngl0_llama_bench":
        if not bench:
            return {"case": case, "skipped": "no llama-bench"}
        command = [bench, "-m", str(model), "-ngl", "0", "-p", "16", "-n", "4", "-r", "1",
                   "-fa", "0"]
    else:
        command = [sys.executable, "-X", "faulthandler", __file__, "--child", case,
                   "--model", str(model)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        rc: int | str = done.returncode
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        rc = "timeout"
        output = str(error.stdout or "") + str(error.stderr or "")
    result: dict[str, Any] = {"case": case, "rc": rc,
                              "seconds": round(time.perf_counter() - started, 1)}
    if isinstance(rc, int) and rc < 0:
        result["signal"] = signal.Signals(-rc).name
    result["crashed"] = isinstance(rc, int) and rc < 0
    result["tail"] = output.splitlines()[-25:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/repro_ngl0"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--llama-bench", default=None)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or args.out / "repro-small-moe.gguf"
    if not model.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from gpu_fit_check import write_small_moe

        write_small_moe(model)
    results: list[dict[str, Any]] = []
    env = {key: os.environ.get(key) for key in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    for case in args.cases.split(","):
        result = run_case(case, model, args.llama_bench, args.timeout)
        results.append(result)
        print(f"{case}: rc={result.get('rc')} {result.get('signal', '')} "
              f"{result.get('skipped', '')} ({result.get('seconds', 0)} s)", flush=True)
        # after each case: a run cut short keeps the cases it finished
        (args.out / "repro_ngl0.json").write_text(json.dumps({"env": env, "results": results},
                                                             indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
