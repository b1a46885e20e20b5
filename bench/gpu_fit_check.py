"""Issue #14's GPU check: our offload plan against whole-layer offload and llama.cpp's ``--fit``.

On the device (through packaging/gpu_fit_check.sh) this writes the full-size sparse
Mixtral-8x7B Q4_K_M (26.44 GB by the helper's recipe, TheBloke's size; the issue says 28.3 GB;
zero data; loadable: tests/mixtral_header.py's tensors with
:data:`~tests.mixtral_header.LOADABLE_KV`), plans for a simulated 24 GiB card with the app's
planner, and measures with llama.cpp's own ``llama-bench`` (pp512 and tg128, flash attention
off, mmap on, all CPU threads) and the VRAM the process holds (``nvidia-smi``, polled):

- (a) ``plan``: :func:`~mixtral_desk.core.planner.plan_offload` — ``-ngl`` and the engine's own
  override patterns (:func:`~mixtral_desk.core.engine.placement.cpu_moe_patterns`: the experts
  of layers 0 … n-1 and the boundary layer's split tensors, ``=CPU``);
- (b) ``layers``: the best whole-layer offload without expert overrides — the largest
  ``-ngl`` whose planned VRAM fits the same budget (the memory model's figure, counted the way
  llama.cpp places ``-ngl`` layers: :func:`whole_layer_vram`);
- (c) ``fit``: llama.cpp's fit (``llama-bench -fitt``, the ``common_fit_params`` behind
  ``--fit``) with its margin = free VRAM − 24 GiB, so that it may use 24 GiB in all;
- (c') ``fit1g``: the same with fit's default 1 GiB margin kept on the 24 GiB card (what a
  24 GiB user's ``llama-server`` does), when time is left.

llama-bench runs each test at n_ctx = its tokens (512, 128), so (a) and (b) are planned at
``--ctx`` 512 too. ``llama-fit-params`` prints the arguments fit chose and llama.cpp's own
memory estimate of (a) and (b) (kept in the JSON and the table).
Goals (issue #14): (a) ≥ 2 × (b) and ≥ 0.95 × (c) for decode, and (a)'s VRAM ≤ 24 GiB.
Writes ``gpu_fit_check.json``, ``gpu_fit_check.md`` and ``llama_bench_logs.txt`` into ``--out``.

Without a GPU (``--dry-run``): prints the plan, the planned VRAM of (a)/(b), the margin (c)
would get on an H200 and the exact commands; ``--cpu-bench`` then also runs the same three kinds
of command (same flags, ``-ot`` patterns, ``-fitt``) on a small sparse MoE (8 layers, 0.7 GB)
with a CPU llama-bench, to prove the flags parse and the JSON is read.

Run here: PYTHONPATH=$PWD .venv/bin/python bench/gpu_fit_check.py --dry-run [--cpu-bench BIN]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mixtral_desk.core.engine.placement import cpu_moe_patterns  # noqa: E402
from mixtral_desk.core.gguf.model_file import inspect_model  # noqa: E402
from mixtral_desk.core.memory_model import memory_model_from_facts  # noqa: E402
from mixtral_desk.core.model_layout import layout_from_facts  # noqa: E402
from mixtral_desk.core.planner import (  # noqa: E402
    Machine,
    Placement,
    evaluate,
    plan_offload,
    simulated_machine,
)
from mixtral_desk.core.units import GiB, MiB  # noqa: E402
from tests import mixtral_header as mh  # noqa: E402

if TYPE_CHECKING:
    from mixtral_desk.core.memory_model import MemoryModel

#: The simulated card and what an H200 reported free before (bench/GPU_CHECK.md), for dry runs.
CARD_GIB = 24
H200_FREE_MIB = 143_771 - 500
#: llama.cpp's default ``--fit-target`` margin (common/common.h), MiB.
FIT_DEFAULT_MARGIN_MIB = 1024


@dataclass
class Config:
    """One measured configuration: its llama-bench arguments and what we planned for it."""

    key: str
    label: str
    args: list[str]
    planned_vram_mib: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: the same placement for llama-fit-params (common/arg.cpp's syntax: ``-ot`` joined by ``,``)
    fit_params_args: list[str] = field(default_factory=list)


def write_q4_k_m(path: Path) -> Path:
    """The loadable full-size sparse Mixtral-8x7B Q4_K_M (28.3 GB of which the disk holds ~1 MB).
    tests/mixtral_header.py's ``write_mixtral_q4_k_m`` is header-only (planning); llama.cpp needs
    the :data:`LOADABLE_KV` keys too, as for its Q2_K."""
    kv = {**mh.MIXTRAL_KV, **mh.LOADABLE_KV}
    return mh.write_header_model(path, mh.mixtral_q4_k_m_tensors(), kv, vocab=mh.N_VOCAB)


def write_small_moe(path: Path) -> Path:
    """A loadable sparse MoE of bench/GPU_CHECK.md's BENCH shape (8 layers, Q8_0, 0.7 GB)."""
    kv = {**mh.BENCH_KV, **mh.LOADABLE_KV}
    return mh.write_header_model(path, mh.bench_tensors(), kv, vocab=32000)


def override_args(patterns: list[str]) -> list[str]:
    """llama-bench's ``-ot`` for ``patterns`` to the CPU buffer type (``;`` joins the overrides of
    one test; ``,`` would start another test, and no pattern contains either)."""
    if not patterns:
        return []
    assert not any(c in p for p in patterns for c in ",;="), patterns
    return ["-ot", ";".join(f"{p}=CPU" for p in patterns)]


def whole_layer_vram(model: MemoryModel, machine: Machine, g: int) -> tuple[int, Placement]:
    """The VRAM llama.cpp uses with ``-ngl g`` and no overrides, and the planner's placement.

    This llama.cpp (src/llama-model.cpp, ``get_layer_buft_list``) puts the *output* layer on the
    GPU first: ``-ngl g`` (1 ≤ g ≤ L) is the output layer and the last g − 1 blocks; the
    planner's :func:`evaluate` counts them the same way.
    """
    p = evaluate(model, machine, g, 0)
    return p.vram_bytes, p


def plan_configs(model_path: Path, *, card: int, ram: int, ctx: int, gpu_name: str,
                 free_mib: float, fit_default: bool) -> tuple[list[Config], dict[str, Any]]:
    """The configurations (a), (b), (c) [and (c')] for ``model_path`` on a ``card``-byte GPU,
    and the plan's JSON. ``free_mib``: the real GPU's free memory (sets fit's margin)."""
    facts = inspect_model(model_path)
    model = memory_model_from_facts(facts, ctx, gpu_host_buffers=True)
    layout = layout_from_facts(facts)
    machine = simulated_machine(ram=ram, vram=card, gpu_name=gpu_name)
    plan = plan_offload(model, machine, layout=layout)
    ngl = 99 if plan.load_gpu_layers < 0 else plan.n_gpu_layers
    patterns = cpu_moe_patterns(plan.n_cpu_moe, partial=plan.cpu_moe_tensors)
    configs = [Config("plan", "(a) our plan", ["-ngl", str(ngl), *override_args(patterns)],
                      plan.vram_bytes / MiB,
                      {"n_gpu_layers": plan.n_gpu_layers, "n_cpu_moe": plan.n_cpu_moe,
                       "cpu_moe_tensors": list(plan.cpu_moe_tensors),
                       "predicted_decode_tok_s": round(plan.tokens_per_s, 2),
                       "predicted_prompt_tok_s": round(plan.prompt_tokens_per_s, 2)},
                      ["-ngl", str(ngl), "-fitp", "on",
                       *(["-ot", ",".join(f"{p}=CPU" for p in patterns)] if patterns else [])])]
    best: tuple[int, int, float] | None = None
    for g in range(1, model.n_layers + 2):
        vram, p = whole_layer_vram(model, machine, g)
        if vram <= machine.vram_budget:
            best = (g, vram, p.tokens_per_s(machine))
    if best is not None:
        configs.append(Config("layers", "(b) whole layers", ["-ngl", str(best[0])],
                              best[1] / MiB,
                              {"n_gpu_layers": best[0], "predicted_decode_tok_s_planner_order":
                               round(best[2], 2)}, ["-ngl", str(best[0]), "-fitp", "on"]))
    margin = int(free_mib - card / MiB)
    configs.append(Config("fit", "(c) --fit, 24 GiB in all", ["-fitt", str(margin)], None,
                          {"fit_target_mib": margin, "free_mib": free_mib},
                          ["-fitt", str(margin)]))
    if fit_default:
        wider = margin + FIT_DEFAULT_MARGIN_MIB
        configs.append(Config("fit1g", "(c') --fit, 1 GiB margin on 24 GiB", ["-fitt", str(wider)],
                              None, {"fit_target_mib": wider}, ["-fitt", str(wider)]))
    summary = {"plan": plan.to_json_dict(), "vram_budget_mib": machine.vram_budget / MiB,
               "card_mib": card / MiB, "ctx": ctx, "model": str(model_path),
               "model_gb": round(facts.file_size / 1e9, 2)}
    return configs, summary


def bench_args(binary: str, model: Path, *, threads: int, reps: int, pp: int,
               tg: int) -> list[str]:
    """The llama-bench arguments every configuration shares."""
    return [binary, "-m", str(model), "-p", str(pp), "-n", str(tg), "-r", str(reps), "-fa", "0",
            "-t", str(threads), "-o", "json"]


def gpu_mib(field_name: str) -> float | None:
    """nvidia-smi's ``memory.<field_name>`` (used, free) of GPU 0 in MiB; None without a
    working nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu=memory.{field_name}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        return float(out.splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class VramPeak:
    """Polls :func:`gpu_mib` ("used") every ``period`` s on a thread while active; ``peak`` MiB."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = gpu_mib("used")
            if used is not None and (self.peak is None or used > self.peak):
                self.peak = used
            self._stop.wait(self.period)

    def __enter__(self) -> VramPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def parse_bench(stdout: str) -> dict[str, float]:
    """``pp_tok_s``/``tg_tok_s`` (and their stddev) from llama-bench's ``-o json`` output."""
    out: dict[str, float] = {}
    for row in json.loads(stdout or "[]"):
        kind = "pp" if row.get("n_gen", 0) == 0 else "tg"
        out[f"{kind}_tok_s"] = round(float(row["avg_ts"]), 2)
        out[f"{kind}_stddev"] = round(float(row.get("stddev_ts", 0.0)), 2)
        out["n_gpu_layers_reported"] = row.get("n_gpu_layers", -1)
    return out


def run_config(config: Config, base: list[str], timeout: float, log: Any) -> dict[str, Any]:
    """Run llama-bench for ``config``; its figures, the VRAM peak and the exit status."""
    command = [*base, *config.args]
    log.write(f"\n===== {config.label}: {' '.join(command)}\n")
    log.flush()
    before = gpu_mib("used")
    started = time.perf_counter()
    result: dict[str, Any] = {"command": command}
    with VramPeak() as peak:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  check=False)
            result["rc"] = done.returncode
            log.write(done.stderr)
            try:
                result.update(parse_bench(done.stdout))
            except (ValueError, KeyError, TypeError) as error:
                result["parse_error"] = str(error)
                log.write(done.stdout)
        except subprocess.TimeoutExpired as error:
            result["rc"] = "timeout"
            log.write(str(error.stderr or ""))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["vram_before_mib"] = before
    result["vram_peak_mib"] = peak.peak
    if before is not None and peak.peak is not None:
        result["vram_used_mib"] = round(peak.peak - before)
    log.flush()
    return result


def fit_params(binary: str | None, model: Path, ctx: int, config: Config, log: Any) -> str | None:
    """What llama-fit-params prints for ``config``: for a fit, the ``-c … -ngl … -ot …`` that fit
    picks; for a placement (``-fitp on``), llama.cpp's own estimate of each device's memory
    (device, model, context, compute, MiB), to hold against our planned VRAM. No GPU memory is
    allocated."""
    if not binary:
        return None
    command = [binary, "-m", str(model), "-c", str(ctx), "-fa", "off", *config.fit_params_args]
    log.write(f"\n===== fit-params, {config.label}: {' '.join(command)}\n")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "timeout"
    log.write(done.stderr[-6000:])
    return done.stdout.strip() or f"rc={done.returncode}"


def goals(rows: dict[str, dict[str, Any]], card_mib: float) -> dict[str, Any]:
    """Issue #14's goal checks on decode (tg) from the measured rows, and the same ratios for
    prompt evaluation (pp) to report beside them; None where a figure is missing."""
    def rate(key: str, kind: str) -> float | None:
        value = rows.get(key, {}).get(f"{kind}_tok_s")
        return float(value) if value else None

    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 2) if x and y else None

    a, b, c = rate("plan", "tg"), rate("layers", "tg"), rate("fit", "tg")
    used = rows.get("plan", {}).get("vram_used_mib")
    return {"decode_a_over_b": ratio(a, b), "decode_a_over_c": ratio(a, c),
            "prompt_a_over_b": ratio(rate("plan", "pp"), rate("layers", "pp")),
            "prompt_a_over_c": ratio(rate("plan", "pp"), rate("fit", "pp")),
            "a_ge_2x_b": (a >= 2 * b) if a and b else None,
            "a_ge_0.95x_c": (a >= 0.95 * c) if a and c else None,
            "a_vram_le_card": (used <= card_mib) if used is not None else None}


def markdown(configs: list[Config], rows: dict[str, dict[str, Any]], summary: dict[str, Any],
             checks: dict[str, Any]) -> str:
    """The table for bench/GPU_CHECK.md."""
    lines = ["| config | llama-bench args | planned VRAM MiB | VRAM used MiB (nvidia-smi) | "
             f"pp{summary['ctx']} tok/s | tg128 tok/s |", "|---|---|---|---|---|---|"]
    for c in configs:
        r = rows.get(c.key, {})
        planned = f"{c.planned_vram_mib:.0f}" if c.planned_vram_mib is not None else "-"
        args = " ".join(c.args)
        lines.append(f"| {c.label} | `{args}` | {planned} | {r.get('vram_used_mib', '-')} | "
                     f"{r.get('pp_tok_s', '-')} | {r.get('tg_tok_s', '-')} |")
    lines += ["", f"Simulated card {summary['card_mib']:.0f} MiB, planner budget "
              f"{summary['vram_budget_mib']:.0f} MiB, n_ctx {summary['ctx']}, model "
              f"{summary['model_gb']} GB.", "", "Goals: " + json.dumps(checks)]
    for c in configs:
        if c.detail.get("fit_params"):
            lines.append(f"\nllama-fit-params, {c.label}: `{c.detail['fit_params']}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_fit_out"))
    parser.add_argument("--model", type=Path, default=Path("/tmp/mixtral-8x7b-q4_k_m.gguf"))
    parser.add_argument("--llama-bench", default="llama-bench")
    parser.add_argument("--fit-params", default=None, help="llama-fit-params binary")
    parser.add_argument("--dry-run", action="store_true", help="plan and print; no GPU needed")
    parser.add_argument("--cpu-bench", default=None,
                        help="with --dry-run: a CPU llama-bench to run the commands on a small MoE")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="epoch seconds by which to stop starting configurations")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--card-gib", type=float, default=CARD_GIB)
    parser.add_argument("--ram-gib", type=float, default=120)
    parser.add_argument("--gpu-name", default="NVIDIA H200")
    parser.add_argument("--no-fit-default", action="store_true", help="skip (c')")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    card = int(args.card_gib * GiB)

    if not args.model.exists():
        started = time.perf_counter()
        write_q4_k_m(args.model)
        print(f"wrote {args.model} ({args.model.stat().st_size / 1e9:.2f} GB sparse) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    free = gpu_mib("free")
    configs, summary = plan_configs(args.model, card=card, ram=int(args.ram_gib * GiB),
                                    ctx=args.ctx, gpu_name=args.gpu_name,
                                    free_mib=free if free is not None else H200_FREE_MIB,
                                    fit_default=not args.no_fit_default)
    summary["gpu_free_mib"] = free
    plan = summary["plan"]
    print(f"plan: {plan['n_gpu_layers']}/{plan['n_layers'] + 1} layers on the GPU, experts of "
          f"{plan['n_cpu_moe']} layers in RAM, split {plan['cpu_moe_tensors']}; VRAM "
          f"{plan['vram_bytes'] / MiB:.0f} MiB of a {summary['vram_budget_mib']:.0f} MiB budget; "
          f"predicted {plan['decode_tokens_per_s']} tok/s decode, "
          f"{plan['prompt_tokens_per_s']} tok/s prompt")
    base = args_base(args)
    for c in configs:
        planned = f"{c.planned_vram_mib:.0f} MiB" if c.planned_vram_mib is not None else "fit's"
        print(f"{c.label}: planned VRAM {planned}\n  {' '.join([*base, *c.args])}")
    if args.dry_run:
        (args.out / "gpu_fit_plan.json").write_text(json.dumps(
            {"summary": summary, "configs": [asdict(c) for c in configs]}, indent=1))
        if args.cpu_bench:
            return cpu_bench(args, configs)
        return 0

    measure(args, configs, summary, card)
    return 0


def measure(args: argparse.Namespace, configs: list[Config], summary: dict[str, Any],
            card: int) -> None:
    """Run llama-fit-params, then each configuration while time is left (none starts within
    45 s of ``--deadline``; one may run 60 s past it), saving the JSON and the table after each,
    so that a call cut short still returns what was measured."""
    rows: dict[str, dict[str, Any]] = {}

    def save() -> str:
        checks = goals(rows, card / MiB)
        report = {"summary": summary, "configs": [asdict(c) for c in configs], "results": rows,
                  "goals": checks, "threads": args.threads, "reps": args.reps}
        (args.out / "gpu_fit_check.json").write_text(json.dumps(report, indent=1))
        table = markdown(configs, rows, summary, checks)
        (args.out / "gpu_fit_check.md").write_text(table)
        return table

    with (args.out / "llama_bench_logs.txt").open("w") as log:
        for c in configs:  # seconds each: llama.cpp's estimate of (a)/(b), fit's choice
            c.detail["fit_params"] = fit_params(args.fit_params, args.model, args.ctx, c, log)
            print(f"llama-fit-params, {c.label}: {c.detail['fit_params']}", flush=True)
        save()
        for c in configs:
            left = args.deadline - time.time() if args.deadline else 600.0
            if left < 45:
                print(f"{c.label}: skipped, {left:.0f} s left", flush=True)
                rows[c.key] = {"skipped": f"{left:.0f} s left"}
                continue
            rows[c.key] = run_config(c, args_base(args), max(left, 60.0), log)
            print(f"{c.label}: {json.dumps(rows[c.key])}", flush=True)
            save()
    print(save())


def args_base(args: argparse.Namespace) -> list[str]:
    """The shared llama-bench arguments for ``args``."""
    return bench_args(args.llama_bench, args.model, threads=args.threads, reps=args.reps,
                      pp=args.ctx, tg=128)


def cpu_bench(args: argparse.Namespace, configs: list[Config]) -> int:
    """Run (a)/(b)/(c)'s kinds of command with a CPU llama-bench on a small sparse MoE: the
    flags parse, the patterns match (``-ot`` of the plan's shape) and the JSON is read."""
    small = args.out / "small-moe.gguf"
    write_small_moe(small)
    base = bench_args(args.cpu_bench, small, threads=args.threads, reps=1, pp=32, tg=8)
    shapes = {"plan": ["-ngl", "99", *override_args(cpu_moe_patterns(3, partial=("up", "gate")))],
              "layers": ["-ngl", "4"], "fit": ["-fitt", "1024"]}
    failed = 0
    with (args.out / "llama_bench_logs.txt").open("w") as log:
        for c in configs:
            if c.key not in shapes:
                continue
            dry = Config(c.key, c.label + " (CPU, small MoE)", shapes[c.key])
            row = run_config(dry, base, 300, log)
            ok = row.get("rc") == 0 and "tg_tok_s" in row and "pp_tok_s" in row
            failed += not ok
            print(f"{dry.label}: {'ok' if ok else 'FAILED'} {json.dumps(row)}", flush=True)
    small.unlink()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
