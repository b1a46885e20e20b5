"""The messages between the host and the engine process.

Two one-way pipes: commands flow host → engine, events flow engine → host. Every request carries a
request id (``rid``, increasing per host); the engine tags what it sends with the id of the request
it answers, so the host can skip leftovers of a request it has already given up on (a stopped or
abandoned stream) without waiting for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import UserText
from .events import BackendInfo, ChatMessage, ModelInfo, ReplyStats
from .options import LoadOptions, SamplingOptions

# --- host → engine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRequest:
    """Load a model (replacing any loaded one)."""

    rid: int
    options: LoadOptions


@dataclass(frozen=True)
class ChatRequest:
    """Format ``messages`` with the model's chat template and stream a reply; ``cache_tag`` tags
    the prompt cache entries it leaves (see :func:`~.prompt_cache.conversation_tag`)."""

    rid: int
    messages: tuple[ChatMessage, ...]
    sampling: SamplingOptions
    cache_tag: str | None = None


@dataclass(frozen=True)
class CompleteRequest:
    """Stream a raw continuation of ``prompt`` (no template)."""

    rid: int
    prompt: str
    sampling: SamplingOptions


@dataclass(frozen=True)
class StopRequest:
    """Cancel every request up to and including ``rid``; handled by the engine's watcher thread."""

    rid: int


@dataclass(frozen=True)
class UnloadRequest:
    """Free the loaded model."""

    rid: int


@dataclass(frozen=True)
class BackendRequest:
    """Report :class:`BackendInfo`."""

    rid: int


@dataclass(frozen=True)
class WarmRequest:
    """Evaluate a conversation's prompt (no reply), so that its next turn starts at once: restore
    its cached state or evaluate its history; stopped by any later request. No answer."""

    rid: int
    messages: tuple[ChatMessage, ...]
    sampling: SamplingOptions
    cache_tag: str | None = None


@dataclass(frozen=True)
class ForgetCacheRequest:
    """Remove the prompt cache entries tagged ``tag`` (RAM and disk); no answer."""

    tag: str
    rid: int = 0


@dataclass(frozen=True)
class ShutdownRequest:
    """Exit the engine process."""

    rid: int = 0


@dataclass(frozen=True)
class DebugCrashRequest:
    """Tests only: make the engine die the way llama.cpp can (``abort`` or ``segfault``)."""

    rid: int
    how: Literal["abort", "segfault"] = "abort"


Command = (LoadRequest | ChatRequest | CompleteRequest | StopRequest | UnloadRequest
           | BackendRequest | WarmRequest | ForgetCacheRequest | ShutdownRequest
           | DebugCrashRequest)

# --- engine → host -----------------------------------------------------------------------------

ErrorKind = Literal["ModelFileNotFoundError", "ModelLoadError", "GPUOffloadUnavailableError",
                    "ContextOverflowError", "EngineError"]


@dataclass(frozen=True)
class ProgressMsg:
    """Load progress."""

    rid: int
    fraction: float


@dataclass(frozen=True)
class LoadedMsg:
    """The model is loaded."""

    rid: int
    info: ModelInfo


@dataclass(frozen=True)
class StartedMsg:
    """A reply started: the prompt's size and the turns left out to fit the context."""

    rid: int
    prompt_tokens: int
    dropped_messages: int


@dataclass(frozen=True)
class TokenMsg:
    """Reply text; ``n_tokens`` tokens were generated since the previous message."""

    rid: int
    text: str
    n_tokens: int


@dataclass(frozen=True)
class DoneMsg:
    """A reply ended."""

    rid: int
    stats: ReplyStats


@dataclass(frozen=True)
class ErrorMsg:
    """A request failed; ``kind`` names the error class the host raises.

    ``message`` is the text in the engine's language; ``text`` the same message as a
    :class:`UserText`, which the host translates where it is shown (and keeps in English for the
    API server).
    """

    rid: int
    kind: ErrorKind
    message: str
    path: str | None = None
    text: UserText | None = None


@dataclass(frozen=True)
class BackendMsg:
    """Answer to :class:`BackendRequest`."""

    rid: int
    info: BackendInfo


@dataclass(frozen=True)
class UnloadedMsg:
    """Answer to :class:`UnloadRequest`."""

    rid: int


Event = (ProgressMsg | LoadedMsg | StartedMsg | TokenMsg | DoneMsg | ErrorMsg | BackendMsg
         | UnloadedMsg)
