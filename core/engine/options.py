"""What a caller may ask of the engine: how to load a model and how to sample a reply.

Both are pydantic models, so they validate on construction (a ``pydantic.ValidationError``, which is
a ``ValueError``, names the bad field) and pickle cheaply into the engine process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KVCacheType = Literal["f16", "q8_0", "q4_0"]
ExpertKind = Literal["up", "gate", "gate_up", "down"]

_MAX_SEED = 2**32 - 1
#: The context lengths a load accepts (llama.cpp takes a 32-bit count; 2M tokens is far beyond
#: what any machine here holds the KV cache of).
MIN_CONTEXT = 32
MAX_CONTEXT = 1 << 21


class LoadOptions(BaseModel):
    """How to load one GGUF model.

    ``n_gpu_layers``: layers offloaded to the GPU, -1 for all. ``n_cpu_moe``: layers, counted from
    layer 0, whose expert tensors (``ffn_{gate,up,down}_exps``) stay in CPU memory even when the
    layer is offloaded (llama.cpp's ``--n-cpu-moe``); ``cpu_moe_tensors``: the kinds of expert
    tensors of layer ``n_cpu_moe`` that stay in CPU memory too (that layer split tensor by
    tensor, e.g. ``("down",)``: its gate and up experts on the GPU). ``n_threads``: ``None`` means
    the number of physical cores. ``kv_type``: the KV cache's element type; a quantized cache needs
    ``flash_attn=True`` (llama.cpp only quantizes the V cache with flash attention) and is rejected
    without it rather than silently changed. ``seed``: -1 for a random seed.

    ``prompt_cache_dir``: the folder of the prompt cache's files (see
    :mod:`~.prompt_cache`); ``None`` turns the prompt cache off (RAM included).
    ``prompt_cache_ram_bytes`` and ``prompt_cache_disk_bytes`` are its budgets; a disk budget of
    ``None`` means min(8 GiB, 10 % of the free disk space).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: Path
    n_gpu_layers: int = Field(default=0, ge=-1)
    n_cpu_moe: int = Field(default=0, ge=0)
    cpu_moe_tensors: tuple[ExpertKind, ...] = ()
    n_ctx: int = Field(default=4096, ge=MIN_CONTEXT, le=MAX_CONTEXT)
    n_threads: int | None = Field(default=None, ge=1, le=1024)
    n_batch: int = Field(default=512, ge=1)
    n_ubatch: int = Field(default=512, ge=1)
    flash_attn: bool = False
    kv_type: KVCacheType = "f16"
    use_mmap: bool = True
    use_mlock: bool = False
    seed: int = Field(default=-1, ge=-1, le=_MAX_SEED)
    prompt_cache_dir: Path | None = None
    prompt_cache_ram_bytes: int = Field(default=1 << 29, ge=0)
    prompt_cache_disk_bytes: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _quantized_cache_needs_flash_attention(self) -> LoadOptions:
        if self.kv_type != "f16" and not self.flash_attn:
            raise ValueError(
                f"kv_type {self.kv_type!r} needs flash_attn=True: llama.cpp can only quantize the "
                "V cache with flash attention. Turn flash attention on or use kv_type 'f16'."
            )
        return self


class SamplingOptions(BaseModel):
    """How to sample one reply.

    ``temperature`` 0 means greedy. ``max_tokens`` ``None`` means until the model stops or the
    context is full. ``stop``: strings that end the reply (not included in it). ``seed`` ``None``
    uses the load seed. ``ignore_eos`` keeps generating past the end-of-generation token (for
    benchmarks that need equal lengths; the reply still ends at ``max_tokens`` or a full context).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.7, ge=0.0, le=10.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.1, gt=0.0, le=10.0)
    max_tokens: int | None = Field(default=1024, ge=1)
    stop: list[str] = Field(default_factory=list, max_length=32)
    seed: int | None = Field(default=None, ge=0, le=_MAX_SEED)
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _no_empty_stop_strings(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value
