"""How fast a placement decodes and reads a prompt: from where its bytes are and what this machine
measured.

A placement (:class:`~.planner.Placement`) says what one token reads where (:class:`Traffic`). This
module turns that into seconds with the machine's rates (:class:`Rates`):

- **Decode** is bound by memory: a new token reads every dense weight of the model and
  ``expert_used_count / expert_count`` of the experts, plus the KV cache as far as it is filled.
  On the CPU the weights stream at the smaller of the memory's rate and what the decoding threads
  can take in (a thread pays for each byte and for each weight in it: a Q2_K byte, three times
  the weights of a Q8_0 byte, takes longer); attention over the KV cache costs arithmetic beyond
  its bytes (:data:`CPU_ATTENTION_FLOPS` per layer and token of context: the context makes CPU
  decoding slower than its bytes say). On the GPU: ``bytes / GPU bandwidth``. Each layer adds a
  fixed cost (llama.cpp's thread barriers on the CPU, kernel launches on the GPU) and each token
  one more (sampling).
- **Prompt evaluation** is bound by arithmetic: about ``2 × active weights`` FLOPs a token, plus
  attention over the context so far (``2 × heads × (key + value dims)`` FLOPs per layer and token
  of context, at :data:`ATTENTION_SHARE` of the matrix rate, where the layer's KV cache is). A
  batch of :data:`UBATCH` tokens also reads every weight once; with a discrete GPU, llama.cpp
  copies the weights kept in RAM over PCIe for each batch of :data:`OP_OFFLOAD_MIN_BATCH` tokens
  or more and multiplies on the GPU, so that copy can bound it instead.

The CPU's rates come from :mod:`.cpu_speed`'s probe, scaled by what llama.cpp reaches of them.
The shares and costs here were measured on this project's 2-core EPYC VM with three Q8_0 models
of 8, 4 and 32 layers (0.04–0.4 GB read a token, 1 and 2 threads, short and 1,800-token
contexts) and Mixtral-8x7B Q2_K (4.8 GB read a token): bench/SPEED_MODEL.md. What the app then
measures of a model (:mod:`.measured_speeds`) calibrates these predictions for that model
(:func:`calibrate`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cpu_speed import CpuSpeed

GB = 1e9
#: One llama.cpp decoding thread takes in quantized weights at a rate set by their bytes and by
#: their number: a byte costs 1 / (this share × what one probe thread reads) and a weight 1 / (the
#: weight share × the probe's FLOP/s per thread). Fitted to one thread decoding Q8_0 at 17.6 GB/s
#: (0.94 weights a byte) and two decoding Q2_K at 23 GB/s (2.96 weights a byte), where one probe
#: thread read 27 GB/s and multiplied 100 GFLOP/s.
THREAD_STREAM_SHARE = 0.86
THREAD_WEIGHT_SHARE = 0.69
#: All decoding threads together reach at most the larger of what one probe thread reads and this
#: share of what one probe thread per core reads (2 threads: 28 GB/s; the probe read 27.5 GB/s
#: with one thread, 31–53 with two, depending on the other work on the machine).
BANDWIDTH_SHARE = 0.58
#: Attention over the KV cache on the CPU costs, beyond reading it, about this much arithmetic
#: per layer and token of context (at the prompt's FLOP rate: mask, softmax and f16 conversions
#: per head; 160–220 ns a layer and token of context on 2 threads of this project's machine,
#: for models with 16 heads of 64 and 8 heads of 32 dims alike).
CPU_ATTENTION_FLOPS = 20_000.0
#: Fixed costs of a token: per layer on the CPU (thread barriers), per layer on the GPU (kernel
#: launches: 938 tok/s for the 9-layer bench model on an H200), and per token (sampling); a
#: 32-layer model 256 wide decodes at 127–146 tok/s on 2 threads here, nearly all fixed costs.
CPU_LAYER_SECONDS = 0.15e-3
GPU_LAYER_SECONDS = 0.1e-3
TOKEN_SECONDS = 0.5e-3
#: The share of the float32 matrix-multiply probe that prompt evaluation reaches (the bench model:
#: 300 tok/s × 0.38 GFLOP a token on 2 threads = 113 of 185 GFLOP/s), and the share of that
#: attention reaches (a 1,800-token prompt: 245 instead of 290 tok/s).
FLOPS_SHARE = 0.6
ATTENTION_SHARE = 0.4
#: Matrix multiplies of wider models run closer to the probe's rate: the share above is for a
#: model 1,024 wide and grows as (width / 1,024) ** 0.2 (2,048 wide: 20–28 % faster prompts than
#: the 1,024-wide share says; 256 wide: 25–40 % slower).
REFERENCE_WIDTH = 1024
WIDTH_EXPONENT = 0.2
#: A GPU's usable matrix throughput per byte/s of its memory bandwidth (an estimate: an RTX 4090
#: has 1 TB/s and ~165 TFLOP/s of half-precision tensor math, an H200 4.8 TB/s and ~990; llama.cpp
#: reaches well under peak; Apple GPUs have less arithmetic per byte).
GPU_FLOPS_PER_BYTE: dict[str, float] = {"nvidia": 60.0, "amd": 40.0, "apple": 20.0,
                                        "intel": 20.0, "unknown": 20.0}
#: Host-to-GPU copies (a PCIe 4.0 x16 link in practice), bytes/s.
PCIE_BANDWIDTH = 25 * GB
#: llama.cpp moves a matrix multiply to the GPU, copying weights kept in RAM, from this batch size.
OP_OFFLOAD_MIN_BATCH = 32
#: llama.cpp's default micro-batch: a prompt is evaluated this many tokens at a time.
UBATCH = 512
#: The prompt the plan's prompt speed is for, and the context filled when its decode speed is
#: quoted (the first replies of a chat).
PROMPT_TOKENS = 512
DECODE_FILL_TOKENS = 512
#: Without a header's tensor table: weights per byte (about 4.5 bits a weight, Q4_K_M).
DEFAULT_PARAMS_PER_BYTE = 8 / 4.5


@dataclass(frozen=True)
class ModelShape:
    """What a model's arithmetic depends on beyond its bytes: weights per byte of weight data,
    attention FLOPs per layer for one new token per token of context, and its width (embedding
    length: wider matrices multiply faster)."""

    params_per_byte: float = DEFAULT_PARAMS_PER_BYTE
    attention_flops: float = 0.0
    width: int = REFERENCE_WIDTH

    @property
    def matmul_scale(self) -> float:
        """How much faster than a 1,024-wide model's this model's matrix multiplies run."""
        return float((max(1, self.width) / REFERENCE_WIDTH) ** WIDTH_EXPONENT)


@dataclass(frozen=True)
class Traffic:
    """What a placement reads, and where: weight bytes a token reads from VRAM and from RAM (the
    used share of the experts), KV bytes per token of context in each, the layers whose attention
    runs on each, and all weight bytes held in RAM and in VRAM (a prompt batch reads them all);
    ``split_layers``: GPU layers whose experts (some or all) run on the CPU."""

    gpu_weights: float
    cpu_weights: float
    gpu_kv: float
    cpu_kv: float
    gpu_layers: int
    cpu_layers: int
    host_bytes: float
    gpu_bytes: float
    split_layers: int = 0


@dataclass(frozen=True)
class Rates:
    """A machine's rates for llama.cpp, in bytes/s and FLOP/s: CPU read bandwidth, the rates at
    which the decoding threads take in weight bytes and weights (weights/s), CPU arithmetic for a
    prompt, the GPU's bandwidth and arithmetic, and the host-to-GPU link (0: none, or unified
    memory)."""

    cpu_bandwidth: float
    cpu_stream: float
    cpu_flops: float
    gpu_bandwidth: float = 0.0
    cpu_weight_rate: float = math.inf
    gpu_flops: float = 0.0
    link: float = 0.0


@dataclass(frozen=True)
class CpuRates:
    """What llama.cpp reaches of a CPU probe (see :func:`cpu_rates`)."""

    bandwidth: float
    stream: float
    weight_rate: float
    flops: float


def cpu_rates(probe: CpuSpeed, threads: int | None = None,
              batch_threads: int | None = None) -> CpuRates:
    """What llama.cpp reaches of a CPU probe: read bandwidth, the byte and weight rates of
    ``threads`` decoding threads, prompt FLOP/s with ``batch_threads``. Without ``threads``
    llama.cpp decodes with one thread per physical core and evaluates prompts with every core;
    with ``threads`` it uses that many for both (the engine's ``n_threads_batch``), unless
    ``batch_threads`` says otherwise. Raises nothing."""
    count = probe.threads if threads is None else max(1, threads)
    batch = batch_threads if batch_threads is not None else threads
    return CpuRates(bandwidth=max(probe.bandwidth_one, probe.bandwidth(count) * BANDWIDTH_SHARE),
                    stream=count * probe.bandwidth_one * THREAD_STREAM_SHARE,
                    weight_rate=probe.flops_with(count) * THREAD_WEIGHT_SHARE,
                    flops=probe.flops_with(batch) * FLOPS_SHARE)


def decode_seconds(traffic: Traffic, rates: Rates, fill: float,
                   shape: ModelShape | None = None) -> float:
    """Seconds to decode one token with ``fill`` tokens of context in the KV cache (``shape``
    gives the weights per byte; default :data:`DEFAULT_PARAMS_PER_BYTE`)."""
    cpu = 0.0
    if traffic.cpu_weights or traffic.cpu_kv:
        per_byte = (shape or ModelShape()).params_per_byte
        weights = traffic.cpu_weights
        taken_in = weights / rates.cpu_stream + weights * per_byte / rates.cpu_weight_rate
        cpu = (max(weights / rates.cpu_bandwidth, taken_in)
               + traffic.cpu_kv * fill / rates.cpu_bandwidth
               + traffic.cpu_layers * fill * CPU_ATTENTION_FLOPS / rates.cpu_flops)
    gpu_bytes = traffic.gpu_weights + traffic.gpu_kv * fill
    gpu = gpu_bytes / rates.gpu_bandwidth if gpu_bytes and rates.gpu_bandwidth else 0.0
    fixed = (CPU_LAYER_SECONDS * (traffic.cpu_layers + traffic.split_layers)
             + GPU_LAYER_SECONDS * traffic.gpu_layers + TOKEN_SECONDS)
    return cpu + gpu + fixed


def prompt_seconds(traffic: Traffic, rates: Rates, shape: ModelShape, tokens: int,
                   start: int = 0) -> float:
    """Seconds to evaluate a prompt of ``tokens`` tokens after ``start`` tokens of context."""
    if tokens <= 0:
        return 0.0
    batches = math.ceil(tokens / UBATCH)
    position = start + tokens / 2  # the average context a prompt token attends to
    attention = shape.attention_flops * position * tokens
    cpu_attention = attention * traffic.cpu_layers / (rates.cpu_flops * ATTENTION_SHARE)
    matmul = 2 * shape.params_per_byte * tokens / shape.matmul_scale
    on_gpu = traffic.gpu_bytes > 0 and rates.gpu_flops > 0
    if not on_gpu:
        compute = matmul * traffic.cpu_weights / rates.cpu_flops + cpu_attention
        return max(compute, batches * traffic.host_bytes / rates.cpu_bandwidth)
    gpu_attention = attention * traffic.gpu_layers / (rates.gpu_flops * ATTENTION_SHARE)
    if rates.link > 0 and tokens >= OP_OFFLOAD_MIN_BATCH:  # weights in RAM copied to the GPU
        gpu = matmul * (traffic.gpu_weights + traffic.cpu_weights) / rates.gpu_flops
        copies = batches * traffic.host_bytes / rates.link
        return max(gpu + gpu_attention, copies) + cpu_attention
    gpu = matmul * traffic.gpu_weights / rates.gpu_flops + gpu_attention
    cpu = max(matmul * traffic.cpu_weights / rates.cpu_flops,
              batches * traffic.host_bytes / rates.cpu_bandwidth) + cpu_attention
    return gpu + cpu


@dataclass(frozen=True)
class Calibration:
    """What measured replies say about a model's predictions on this machine: the factors
    measured / predicted for decode and prompt (1.0 without measurements), and the measured
    speeds themselves for the exact placement and threads (None when none was measured)."""

    decode_factor: float = 1.0
    prompt_factor: float = 1.0
    measured_decode: float | None = None
    measured_prompt: float | None = None
    replies: int = 0

    @property
    def calibrated(self) -> bool:
        """Whether any measurement of the model changed the predictions."""
        return self.replies > 0


@dataclass(frozen=True)
class Sample:
    """One measured speed: ``kind`` ``decode`` (``position``: the average context while decoding)
    or ``prompt`` (``position``: the context before it; ``tokens``: the tokens evaluated);
    ``exact``: measured with the placement and threads being planned."""

    kind: str
    tokens_per_s: float
    position: float
    tokens: int
    exact: bool


def calibrate(samples: Sequence[Sample], predict: Callable[[Sample], float]) -> Calibration:
    """The median ratio measured / predicted of decode samples and of prompt samples (those
    measured with the exact placement when there are any, else all of them: a factor for the
    model on this machine), and the median measured speeds of the exact samples. ``predict``
    gives a sample's prediction (tok/s) for its own placement and context. Raises nothing."""
    values: dict[str, float] = {}
    measured: dict[str, float | None] = {}
    used = 0
    for kind in ("decode", "prompt"):
        of_kind = [s for s in samples if s.kind == kind and s.tokens_per_s > 0]
        exact = [s for s in of_kind if s.exact]
        chosen = exact or of_kind
        ratios = [s.tokens_per_s / p for s in chosen if (p := predict(s)) > 0]
        values[kind] = statistics.median(ratios) if ratios else 1.0
        measured[kind] = statistics.median(s.tokens_per_s for s in exact) if exact else None
        used += len(ratios)
    return Calibration(values["decode"], values["prompt"], measured["decode"],
                       measured["prompt"], used)


@dataclass(frozen=True)
class Speed:
    """A plan's predicted speeds (tok/s, calibrated when measurements exist): decoding the first
    replies (:data:`DECODE_FILL_TOKENS` of context), decoding with the context full, and a
    prompt of :data:`PROMPT_TOKENS`; with the calibration behind them."""

    decode: float
    decode_full: float
    prompt: float
    calibration: Calibration


def predict(traffic: Traffic, rates: Rates, shape: ModelShape, n_ctx: int,
            calibration: Calibration | None = None) -> Speed:
    """The speeds of a placement with ``traffic`` at context length ``n_ctx``. Raises nothing."""
    cal = calibration or Calibration()

    def rate(tokens: float, seconds: float) -> float:
        return tokens / seconds if seconds > 0 else 0.0

    fill = min(DECODE_FILL_TOKENS, n_ctx)
    prompt = min(PROMPT_TOKENS, n_ctx)
    return Speed(
        decode=rate(1, decode_seconds(traffic, rates, fill, shape)) * cal.decode_factor,
        decode_full=rate(1, decode_seconds(traffic, rates, n_ctx, shape)) * cal.decode_factor,
        prompt=rate(prompt, prompt_seconds(traffic, rates, shape, prompt)) * cal.prompt_factor,
        calibration=cal)


__all__ = [
    "ATTENTION_SHARE", "BANDWIDTH_SHARE", "CPU_ATTENTION_FLOPS", "CPU_LAYER_SECONDS",
    "DECODE_FILL_TOKENS", "FLOPS_SHARE", "GPU_LAYER_SECONDS", "PROMPT_TOKENS", "REFERENCE_WIDTH",
    "THREAD_STREAM_SHARE", "THREAD_WEIGHT_SHARE", "TOKEN_SECONDS", "Calibration", "CpuRates",
    "ModelShape", "Rates", "Sample", "Speed",
    "Traffic", "calibrate", "cpu_rates", "decode_seconds", "predict", "prompt_seconds",
]
