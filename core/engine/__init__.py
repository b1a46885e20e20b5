"""The engine: llama.cpp (through llama-cpp-python) in a separate process, and its host.

Public API::

    with EngineHost() as engine:
        info = engine.load(LoadOptions(model_path=path, n_ctx=8192))
        for event in engine.chat([ChatMessage("user", "Hello")], SamplingOptions()):
            if isinstance(event, TokenEvent): print(event.text, end="")
            else: print(event.stats)

Nothing here imports ``llama_cpp`` in the caller's process; the engine process does
(``worker``). Errors are the typed ones of :mod:`mixtral_desk.core.errors`.
"""

from .events import (
    BackendInfo,
    ChatMessage,
    DoneEvent,
    FinishReason,
    LoadProgress,
    ModelInfo,
    ReplyStats,
    Role,
    TemplateSource,
    TokenEvent,
)
from .formatting import FALLBACK_FORMAT, ChatFormatter, TemplateError, merge_system_prompt
from .host import EngineHost, ReplyEvent, ReplyStream, probe_backend
from .options import KVCacheType, LoadOptions, SamplingOptions
from .placement import TensorOverrides, cpu_moe_overrides, cpu_moe_patterns

__all__ = [
    "FALLBACK_FORMAT",
    "BackendInfo",
    "ChatFormatter",
    "ChatMessage",
    "DoneEvent",
    "EngineHost",
    "FinishReason",
    "KVCacheType",
    "LoadOptions",
    "LoadProgress",
    "ModelInfo",
    "ReplyEvent",
    "ReplyStats",
    "ReplyStream",
    "Role",
    "SamplingOptions",
    "TemplateError",
    "TemplateSource",
    "TensorOverrides",
    "TokenEvent",
    "cpu_moe_overrides",
    "cpu_moe_patterns",
    "merge_system_prompt",
    "probe_backend",
]
