"""Engines behind one interface: the local engine process, or a remote OpenAI-compatible server.

The chat interface of :mod:`mixtral_desk.core.engine.interface` is what a chat turn and the API
server need of an engine; :class:`~mixtral_desk.core.engine.EngineHost` satisfies it, and so does
:class:`RemoteEngine`, which streams from ``/v1/chat/completions`` and ``/v1/completions`` of
llama.cpp's ``llama-server``, vLLM, Ollama, another Mixtral Desk (``mixtral-desk serve``) or any
OpenAI-compatible endpoint::

    engine = RemoteEngine("http://gpu-box:8000/v1", "mistralai/Mixtral-8x22B-Instruct-v0.1", key)
    for event in engine.chat([ChatMessage("user", "Hello")], SamplingOptions()):
        ...  # TokenEvent(text) ..., then DoneEvent(ReplyStats) – the same events as local

Stats come from the server's ``usage`` (prompt and completion tokens) and ``timings`` (decode
speed, where sent), and from the clock here (time to first token), so stored replies look the
same as local ones.
A server on this computer (127.0.0.1, ``localhost``) is always allowed; any other host is refused
at once in Offline mode (:class:`RemoteOfflineError`), and an unreachable one fails within the
short connect timeout of :mod:`.network`.
API keys are kept like the Hugging Face token: ``--remote-key``, the environment variable
``MIXTRAL_DESK_REMOTE_KEY``, or a per-URL key file readable only by the user (:func:`save_key`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2

from mixtral_desk.core.atomic_write import write_atomic
from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    FinishReason,
    ReplyStats,
    SamplingOptions,
    TokenEvent,
)
from mixtral_desk.core.engine.interface import ReplyEvent
from mixtral_desk.core.errors import ContextOverflowError, EngineBusyError, EngineError, UserText
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.network import (
    CONNECT_TIMEOUT_S,
    OfflineError,
    is_loopback_host,
    require_network,
)
from mixtral_desk.core.paths import data_paths

KEY_ENV = "MIXTRAL_DESK_REMOTE_KEY"
READ_TIMEOUT_S = 600.0  # a big model's prompt processing can be slow before the first token

# --- errors ------------------------------------------------------------------------------------

class RemoteEngineError(EngineError):
    """Raised when a remote engine fails a request; the message names the server and the cause."""


class RemoteConnectionError(RemoteEngineError, ConnectionError):
    """Raised when the remote server cannot be reached or the connection breaks."""


class RemoteAuthError(RemoteEngineError, PermissionError):
    """Raised when the remote server rejects the API key (HTTP 401/403)."""


class RemoteOfflineError(RemoteConnectionError, OfflineError):
    """Raised before connecting when Offline mode is on and the server is not on this computer."""


# --- the engine --------------------------------------------------------------------------------

def normalize_base_url(url: str) -> str:
    """``http://host:8080`` → ``http://host:8080/v1``; a URL with a path is kept as given.

    Raises:
        ValueError: the URL is not http(s).
    """
    parsed = httpx2.URL(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"Not an http(s) URL: {url!r} (e.g. http://127.0.0.1:8080/v1)")
    text = str(parsed).rstrip("/")
    return text + "/v1" if parsed.path in ("", "/") else text


class RemoteEngine:
    """A :class:`ChatEngine` that streams from an OpenAI-compatible server.

    ``base_url``: e.g. ``http://127.0.0.1:8080/v1`` (``/v1`` is added to a bare host).
    ``extended_sampling``: also send ``top_k``, ``min_p`` and the repeat penalty, which
    llama-server, vLLM, Ollama and Mixtral Desk understand; turn it off for servers that reject
    unknown parameters (OpenAI's own API).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 extended_sampling: bool = True, read_timeout_s: float = READ_TIMEOUT_S,
                 transport: httpx2.BaseTransport | None = None) -> None:
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.extended_sampling = extended_sampling
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.Client(
            base_url=self.base_url + "/", headers=headers, transport=transport,
            timeout=httpx2.Timeout(CONNECT_TIMEOUT_S, read=read_timeout_s))
        self._lock = threading.Lock()
        self._active: RemoteReplyStream | None = None

    def require_network(self) -> None:
        """Raise :class:`RemoteOfflineError` when Offline mode is on and the server is elsewhere.

        Raises:
            RemoteOfflineError: as said.
        """
        host = httpx2.URL(self.base_url).host
        if not is_loopback_host(host):
            require_network(UserText(N_("Chatting with the remote engine at {url}"),
                                     url=self.base_url), RemoteOfflineError)

    def list_models(self) -> list[str]:
        """The model ids the server offers (a quick connection and key check).

        Raises:
            RemoteOfflineError, RemoteConnectionError, RemoteAuthError, RemoteEngineError.
        """
        self.require_network()
        try:
            response = self._client.get("models")
        except httpx2.HTTPError as error:
            raise RemoteConnectionError(self._unreachable(error)) from error
        if response.status_code >= 400:
            raise _status_error(self.base_url, response.status_code, response.text)
        try:
            return [str(item["id"]) for item in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as error:
            raise RemoteEngineError(N_("{url}/models did not answer with a model list."),
                                    url=self.base_url) from error

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> RemoteReplyStream:
        """Start a reply to ``messages``; the request is sent on the first ``next()``.
        ``cache_tag`` is not sent: the remote server keeps its own cache.

        Raises:
            EngineBusyError: a reply is already streaming.
            ValueError: ``messages`` is empty.
            (while iterating) RemoteConnectionError, RemoteAuthError, ContextOverflowError,
            RemoteEngineError.
        """
        if not messages:
            raise ValueError("messages is empty")
        payload = self._payload(sampling)
        payload["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        return self._start("chat/completions", payload, chat=True)

    def complete(self, prompt: str, sampling: SamplingOptions) -> RemoteReplyStream:
        """Start a raw continuation of ``prompt``; see :meth:`chat`."""
        payload = self._payload(sampling)
        payload["prompt"] = prompt
        return self._start("completions", payload, chat=False)

    def stop(self) -> None:
        """Stop the streaming reply (closing its connection); safe from any thread."""
        with self._lock:
            active = self._active
        if active is not None:
            active.cancel()

    def close(self) -> None:
        """Stop any reply and close the HTTP client; idempotent."""
        self.stop()
        self._client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _payload(self, sampling: SamplingOptions) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model, "stream": True, "stream_options": {"include_usage": True},
            "temperature": sampling.temperature, "top_p": sampling.top_p,
        }
        if sampling.max_tokens is not None:
            payload["max_tokens"] = sampling.max_tokens
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        if self.extended_sampling:
            payload.update(top_k=sampling.top_k, min_p=sampling.min_p,
                           repeat_penalty=sampling.repeat_penalty,
                           repetition_penalty=sampling.repeat_penalty)
            if sampling.ignore_eos:
                payload["ignore_eos"] = True
        return payload

    def _start(self, path: str, payload: dict[str, Any], *, chat: bool) -> RemoteReplyStream:
        with self._lock:
            if self._active is not None:
                raise EngineBusyError(N_("A reply is being generated; stop it or wait for it "
                                         "to end."))
            stream = RemoteReplyStream(self, path, payload, chat=chat)
            self._active = stream
            return stream

    def _release(self, stream: RemoteReplyStream) -> None:
        with self._lock:
            if self._active is stream:
                self._active = None

    def _unreachable(self, error: Exception) -> UserText:
        return UserText(N_("Cannot reach the remote engine at {url}: {reason}"),
                        url=self.base_url, reason=error)


def _status_error(base_url: str, status: int, body: str) -> EngineError:
    """The typed error for an HTTP error answer (OpenAI's error format where the server uses it)."""
    message, code = body.strip()[:300], ""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        error = json.loads(body)["error"]
        if isinstance(error, str):
            message = error
        else:
            message, code = str(error.get("message") or message), str(error.get("code") or "")
    text = UserText(N_("The remote engine at {url} answered HTTP {status}: {message}"),
                    url=base_url, status=status, message=message)
    if status in (401, 403):
        return RemoteAuthError(N_("The remote engine at {url} rejected the API key "
                                  "(HTTP {status}): {message}"), url=base_url, status=status,
                               message=message)
    if code == "context_length_exceeded":
        return ContextOverflowError(text)
    return RemoteEngineError(text)


class RemoteReplyStream(Iterator[ReplyEvent]):
    """The events of one remote reply; the same contract as the local ``ReplyStream``.

    Yields :class:`TokenEvent`\\ s (the server's text deltas), then one :class:`DoneEvent` whose
    :class:`ReplyStats` carry the server's token counts (``usage``; counted from the stream when
    the server sends none), the time to first token measured here, and the decode speed from the
    server's ``timings`` (llama-server, Mixtral Desk) or else measured here.
    ``finish_reason`` is ``"cancelled"`` after :meth:`close`/``stop()``.

    Raises (while iterating): RemoteConnectionError, RemoteAuthError, ContextOverflowError,
    RemoteEngineError.
    """

    def __init__(self, engine: RemoteEngine, path: str, payload: dict[str, Any], *,
                 chat: bool) -> None:
        self._engine = engine
        self._path = path
        self._payload = payload
        self._chat = chat
        self._response: httpx2.Response | None = None
        self._lines: Iterator[str] | None = None
        self._cancelled = threading.Event()
        self._finished = False
        self._started = time.perf_counter()
        self._first_at = 0.0
        self._last_at = 0.0
        self._chunks = 0
        self._usage: dict[str, Any] = {}
        self._timings: dict[str, Any] = {}
        self._finish_reason: FinishReason | None = None

    def __iter__(self) -> RemoteReplyStream:
        return self

    def __enter__(self) -> RemoteReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped without close() must not leave the engine busy forever.
        if not getattr(self, "_finished", True):
            with contextlib.suppress(Exception):
                self._finish()

    def cancel(self) -> None:
        """Ask the reply to end (from any thread); the iterator then yields a cancelled Done."""
        self._cancelled.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # unblocks a read waiting in another thread
                response.close()

    def close(self) -> None:
        """Abandon the reply and free the engine; idempotent."""
        self._cancelled.set()
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            if self._response is not None:
                with contextlib.suppress(Exception):
                    self._response.close()
            self._engine._release(self)

    def _open(self) -> Iterator[str]:
        engine = self._engine
        engine.require_network()
        request = engine._client.build_request("POST", self._path, json=self._payload)
        try:
            response = engine._client.send(request, stream=True)
        except httpx2.HTTPError as error:
            raise RemoteConnectionError(engine._unreachable(error)) from error
        self._response = response
        if response.status_code >= 400:
            body = response.read().decode("utf-8", "replace")
            raise _status_error(engine.base_url, response.status_code, body)
        return response.iter_lines()

    def _done(self, reason: FinishReason | None = None) -> DoneEvent:
        self._finish()
        now = time.perf_counter()
        completion = int(self._usage.get("completion_tokens") or self._chunks)
        rate = ((completion - 1) / (self._last_at - self._first_at)
                if completion > 1 and self._last_at > self._first_at else 0.0)
        with contextlib.suppress(TypeError, ValueError):  # the engine's own figure is exact
            rate = float(self._timings.get("predicted_per_second") or rate)
        return DoneEvent(ReplyStats(
            prompt_tokens=int(self._usage.get("prompt_tokens") or 0),
            completion_tokens=completion,
            time_to_first_token_s=(self._first_at or now) - self._started,
            decode_tokens_per_s=rate, total_seconds=now - self._started,
            finish_reason=reason or self._finish_reason or "stop",
            cached_tokens=self._cached_tokens()))

    def _cached_tokens(self) -> int:
        """The prompt tokens the server reused: OpenAI's ``prompt_tokens_details``, else
        llama-server's ``timings.cache_n``, else 0."""
        details = self._usage.get("prompt_tokens_details")
        found = details.get("cached_tokens") if isinstance(details, dict) else None
        if found is None:
            found = self._timings.get("cache_n")
        try:
            return max(0, int(found or 0))
        except (TypeError, ValueError):
            return 0

    def __next__(self) -> ReplyEvent:
        if self._finished:
            raise StopIteration
        try:
            while True:
                if self._cancelled.is_set():
                    return self._done("cancelled")
                if self._lines is None:
                    self._lines = self._open()
                    continue  # a stop() during the connect is seen before the first read
                try:
                    line = next(self._lines)
                except StopIteration:
                    if self._finish_reason is None:
                        raise RemoteConnectionError(N_(
                            "The remote engine at {url} ended the reply without finishing it."),
                            url=self._engine.base_url) from None
                    return self._done()
                except (httpx2.HTTPError, OSError) as error:
                    if self._cancelled.is_set():
                        return self._done("cancelled")
                    raise RemoteConnectionError(N_(
                        "The connection to the remote engine at {url} broke: {reason}"),
                        url=self._engine.base_url, reason=error) from error
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, event names
                data = line[5:].strip()
                if data == "[DONE]":
                    return self._done()
                text = self._take(data)
                if text:
                    return TokenEvent(text)
        except BaseException:
            self._finish()
            raise

    def _take(self, data: str) -> str:
        """Digest one chunk; returns its text (may be empty)."""
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise RemoteEngineError(N_("The remote engine at {url} sent a chunk that is not "
                                       "JSON: {data!r}"), url=self._engine.base_url,
                                    data=data[:120]) from error
        if not isinstance(chunk, dict):
            return ""
        if "error" in chunk:
            raise _status_error(self._engine.base_url, 500, data)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):  # llama-server and Mixtral Desk send these
            self._timings = chunk["timings"]
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        reason = choice.get("finish_reason")
        if reason:
            self._finish_reason = "length" if reason == "length" else "stop"
        if self._chat:
            text = (choice.get("delta") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        if text:
            stamp = time.perf_counter()
            self._first_at = self._first_at or stamp
            self._last_at = stamp
            self._chunks += 1
        return str(text)


# --- keys --------------------------------------------------------------------------------------

def key_file() -> Path:
    """Where :func:`save_key` keeps API keys (one JSON object, URL → key, mode 0600)."""
    return data_paths().remote_keys_file


def _stored_keys() -> dict[str, str]:
    try:
        raw = json.loads(key_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def stored_key(base_url: str) -> str | None:
    """The key saved for ``base_url`` (normalized), else ``$MIXTRAL_DESK_REMOTE_KEY``, else None."""
    return _stored_keys().get(normalize_base_url(base_url)) or os.environ.get(KEY_ENV) or None


def save_key(base_url: str, key: str | None) -> None:
    """Remember (or with ``None`` forget) the API key for ``base_url``; the file is user-only.

    Raises:
        OSError: the file cannot be written.
    """
    keys = _stored_keys()
    url = normalize_base_url(base_url)
    if key:
        keys[url] = key
    else:
        keys.pop(url, None)
    write_atomic(key_file(), json.dumps(keys, indent=2), private=True)


__all__ = [
    "KEY_ENV",
    "RemoteAuthError",
    "RemoteConnectionError",
    "RemoteEngine",
    "RemoteEngineError",
    "RemoteOfflineError",
    "RemoteReplyStream",
    "key_file",
    "normalize_base_url",
    "save_key",
    "stored_key",
]
