"""The OpenAI wire format: request bodies (validated) and response bodies (serialized).

Only what a single local model can honour is accepted; unknown fields are ignored (clients send
``user``, ``logit_bias`` …), fields that would change the meaning of an answer and that we cannot
honour (``n`` > 1, non-text message parts, several prompts) are refused with a 400. Beyond
OpenAI's fields, llama-server's ``top_k``, ``min_p``, ``repeat_penalty`` (vLLM:
``repetition_penalty``) and ``ignore_eos`` are understood. A message or prompt holds at most
:data:`~mixtral_desk.core.untrusted_json.MAX_MESSAGE_CHARS` characters, and a chat request needs
a user or assistant message (a system message alone is a 400, not an engine error).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mixtral_desk.core.engine import ChatMessage, FinishReason, ReplyStats, SamplingOptions
from mixtral_desk.core.untrusted_json import MAX_MESSAGE_CHARS

_MAX_SEED = 2**32 - 1

# --- requests ----------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content; only ``{"type": "text", "text": ...}`` is supported."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class MessageIn(BaseModel):
    """A chat message as clients send it (``developer`` counts as ``system``)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, value: str | list[ContentPart] | None
                         ) -> str | list[ContentPart] | None:
        if isinstance(value, list) and any(p.type != "text" for p in value):
            raise ValueError("only text content parts are supported by this server")
        return value

    @field_validator("content")
    @classmethod
    def _not_too_long(cls, value: str | list[ContentPart] | None
                      ) -> str | list[ContentPart] | None:
        parts = [value] if isinstance(value, str) else [p.text or "" for p in value or []]
        if sum(len(part) for part in parts) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message holds at most {MAX_MESSAGE_CHARS:,} characters")
        return value

    def to_chat_message(self) -> ChatMessage:
        """The engine's message type."""
        if isinstance(self.content, list):
            text = "".join(part.text or "" for part in self.content)
        else:
            text = self.content or ""
        return ChatMessage(role="system" if self.role == "developer" else self.role,
                           content=text)


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk carrying ``usage``."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=10.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    presence_penalty: float | None = None  # accepted and ignored (llama.cpp's is not the same)
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=_MAX_SEED)
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 32 or any(not s for s in stops):
            raise ValueError("stop takes up to 32 non-empty strings")
        return value

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def _limit(self) -> int | None:
        return self.max_tokens

    def sampling(self, base: SamplingOptions) -> SamplingOptions:
        """``base`` (the app's settings) with this request's fields laid over it."""
        update: dict[str, Any] = {
            "temperature": self.temperature, "top_p": self.top_p or None, "top_k": self.top_k,
            "min_p": self.min_p, "repeat_penalty": self.repeat_penalty or self.repetition_penalty,
            "max_tokens": self._limit(), "seed": self.seed,
        }
        values = {k: v for k, v in update.items() if v is not None}
        if self.stop is not None:
            values["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.ignore_eos:
            values["ignore_eos"] = True
        return SamplingOptions.model_validate({**base.model_dump(), **values})


class ChatCompletionRequest(_GenerationRequest):
    """``POST /v1/chat/completions``."""

    messages: list[MessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _a_turn(cls, value: list[MessageIn]) -> list[MessageIn]:
        if all(m.role in ("system", "developer") for m in value):
            raise ValueError("messages needs at least one user or assistant message; a system "
                             "message alone gives the model nothing to answer")
        return value

    def _limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[ChatMessage]:
        """The conversation in the engine's terms."""
        return [m.to_chat_message() for m in self.messages]


class CompletionRequest(_GenerationRequest):
    """``POST /v1/completions`` (one prompt; OpenAI's default of 16 tokens)."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("this server takes exactly one prompt per request")
        if len(value if isinstance(value, str) else value[0]) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a prompt holds at most {MAX_MESSAGE_CHARS:,} characters")
        return value

    @property
    def text(self) -> str:
        """The prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# --- responses ---------------------------------------------------------------------------------

OpenAIFinish = Literal["stop", "length"]


def finish_reason(reason: FinishReason) -> OpenAIFinish:
    """Ours → OpenAI's: a reply stopped by the app counts as ``stop``."""
    return "length" if reason == "length" else "stop"


class PromptTokensDetails(BaseModel):
    """OpenAI's ``usage.prompt_tokens_details``: ``cached_tokens`` were not evaluated again (the
    live context or the prompt cache held them)."""

    cached_tokens: int


class Usage(BaseModel):
    """Token counts of one answer (from :class:`ReplyStats`)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails

    @classmethod
    def from_stats(cls, stats: ReplyStats) -> Usage:
        """Usage from the engine's figures."""
        return cls(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
                   total_tokens=stats.prompt_tokens + stats.completion_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens))


class Timings(BaseModel):
    """llama-server's ``timings`` extension: the engine's own figures for one answer.

    Clients that know it (Mixtral Desk's remote engine, llama.cpp tools) take the decode speed
    from here instead of timing the network.
    """

    cache_n: int
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float

    @classmethod
    def from_stats(cls, stats: ReplyStats) -> Timings:
        """Timings from the engine's figures (prompt time = time to first token; as in
        llama-server, ``prompt_n`` counts the prompt tokens evaluated, ``cache_n`` those reused).
        """
        return cls(cache_n=stats.cached_tokens,
                   prompt_n=stats.prompt_tokens - stats.cached_tokens,
                   prompt_ms=stats.time_to_first_token_s * 1000,
                   predicted_n=stats.completion_tokens,
                   predicted_ms=max(stats.total_seconds - stats.time_to_first_token_s, 0.0) * 1000,
                   predicted_per_second=stats.decode_tokens_per_s)


class AssistantMessage(BaseModel):
    """The answer of a non-streamed chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One choice of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: OpenAIFinish
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings | None = None


class Delta(BaseModel):
    """What a chunk adds to the answer."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """One choice of a streamed chunk."""

    index: int = 0
    delta: Delta
    finish_reason: OpenAIFinish | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class CompletionChoice(BaseModel):
    """One choice of a text completion (also the shape of its streamed chunks)."""

    index: int = 0
    text: str
    finish_reason: OpenAIFinish | None = None
    logprobs: None = None


class Completion(BaseModel):
    """A text completion, or one chunk of a streamed one (``usage`` absent until the end)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mixtral-desk"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """``{"error": {...}}``, the body of every error answer."""

    error: ErrorDetail
