"""What the engine reports: model facts, load progress, streamed text and per-reply statistics.

All are frozen dataclasses made of plain values, so they pickle across the process boundary and
are safe to hand to any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]
TemplateSource = Literal["model", "fallback", "broken"]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class BackendInfo:
    """What the installed llama.cpp can do.

    ``backends``: the registered ggml backends, e.g. ``("CPU",)`` or ``("CUDA", "CPU")``.
    ``gpu_offload``: ``llama_supports_gpu_offload()`` (a GPU backend compiled in *and* a device
    found). ``devices``: ``"name: description"`` per ggml device, empty where the device API is
    unreachable.
    """

    backends: tuple[str, ...]
    gpu_offload: bool
    system_info: str
    llama_cpp_version: str
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadProgress:
    """Model loading progress, 0.0 to 1.0."""

    fraction: float


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model.

    ``n_gpu_layers``: what llama.cpp actually offloaded (parsed from its log line "offloaded X/Y
    layers to GPU"; 0 on the CPU). ``template_source``: ``"model"`` when the GGUF's own chat
    template is used, ``"fallback"`` for the plain ``### User:`` format (no template in the model),
    ``"broken"`` for that format because the model's template fails to render a conversation.
    ``overridden_tensors``:
    expert tensors kept in CPU memory by ``n_cpu_moe`` (counted from llama.cpp's log).
    ``buffers``: ``(device, kind, bytes)`` per buffer llama.cpp logged, e.g. ``("CUDA0", "model",
    645_682_463)``; kinds ``model``, ``KV``, ``compute``, ``output``.
    """

    path: str
    n_ctx: int
    n_ctx_train: int
    n_layers: int
    n_gpu_layers: int
    backend: BackendInfo
    chat_template: str | None
    template_source: TemplateSource
    load_seconds: float
    overridden_tensors: int
    buffers: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """A piece of the reply (one token's text, or several when a stop string was held back)."""

    text: str


@dataclass(frozen=True)
class ReplyStats:
    """Figures for one reply.

    ``decode_tokens_per_s`` counts the completion tokens after the first over the time after the
    first (0.0 with fewer than two tokens). ``dropped_messages``: older turns left out because the
    conversation did not fit the context. ``cached_tokens``: prompt tokens whose KV state was
    reused (kept from the previous reply, or restored from the prompt cache) instead of being
    evaluated.
    """

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    decode_tokens_per_s: float
    total_seconds: float
    finish_reason: FinishReason
    dropped_messages: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class DoneEvent:
    """The last event of a reply."""

    stats: ReplyStats
