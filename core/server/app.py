"""The ASGI app (Starlette): OpenAI's ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Answers, streamed or not, are written by :class:`_ReplyResponse`, which also listens for the
client leaving: a request whose client disconnects, while it waits for its turn or while its
reply streams, is cancelled, and its generation stopped. Streams are server-sent events
(``data: {json}\\n\\n`` … ``data: [DONE]\\n\\n``; the usage chunk also carries llama-server's
``timings``); an engine error after the stream began is sent
as a last ``data: {"error": {...}}`` event. Every error answer has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 for invalid requests and prompts that do
not fit the context, 401 for a missing or wrong key, 404 for unknown paths or models, 413 for a
body over :data:`~mixtral_desk.core.untrusted_json.MAX_REQUEST_BYTES` (refused from its
``Content-Length``, or as soon as that many bytes have arrived), 503 while the queue is full, 500
when the engine fails. A body is parsed under the limits of
:mod:`mixtral_desk.core.untrusted_json` (depth, integer digits, valid Unicode) before its schema
is checked.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mixtral_desk.core.engine import DoneEvent, SamplingOptions, TokenEvent
from mixtral_desk.core.engine.interface import ChatEngine, ReplyEvent, ReplyEvents
from mixtral_desk.core.server import schemas
from mixtral_desk.core.server.auth import check_key
from mixtral_desk.core.server.errors import ApiError, from_exception, invalid_request
from mixtral_desk.core.server.generation import Replies, StartReply
from mixtral_desk.core.untrusted_json import MAX_REQUEST_BYTES, LimitError, load_limited_json

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
               (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
JSON_HEADERS = [(b"content-type", b"application/json")]

Writer = Callable[[Send], Awaitable[None]]
_Body = TypeVar("_Body", bound=BaseModel)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body().model_dump(), status_code=error.status)


def _json(body: BaseModel) -> str:
    """The body as JSON; ``timings`` (an extension) only where it is filled."""
    return body.model_dump_json(exclude={"timings"} if getattr(body, "timings", 1) is None
                                else None)


async def _send_json(send: Send, status: int, body: BaseModel) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": _json(body).encode()})


def _event(body: BaseModel | str) -> bytes:
    text = body if isinstance(body, str) else _json(body)
    return f"data: {text}\n\n".encode()


class _ReplyResponse(Response):
    """Runs a writer while watching for the client to disconnect (which cancels the writer)."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch)
            with contextlib.suppress(OSError):  # the client left while we wrote
                await self._writer(send)
            group.cancel_scope.cancel()


class OpenAIApi:
    """The endpoints, serving one engine under one model id."""

    def __init__(self, engine: ChatEngine, model_id: str, *, api_key: str | None = None,
                 sampling: SamplingOptions | None = None, max_waiting: int = 64) -> None:
        self.model_id = model_id
        self.api_key = api_key
        self.sampling = sampling or SamplingOptions()
        self.replies = Replies(engine, max_waiting)
        self.created = int(time.time())

    # --- endpoints -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """``GET /health`` (no key needed): whether the server answers."""
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the one loaded model."""
        self._authorize(request)
        listing = schemas.ModelList(data=[self._card()])
        return JSONResponse(listing.model_dump())

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{model}``."""
        self._authorize(request)
        name = request.path_params["model"]
        if name != self.model_id:
            raise ApiError(404, f"The model '{name}' does not exist; this server serves "
                           f"'{self.model_id}'.", code="model_not_found", param="model")
        return JSONResponse(self._card().model_dump())

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (streamed when ``"stream": true``)."""
        self._authorize(request)
        body = await _parse(request, schemas.ChatCompletionRequest)
        messages = body.chat_messages()
        sampling = self._sampling(body)

        def start(engine: ChatEngine) -> ReplyEvents:
            return engine.chat(messages, sampling)

        if body.stream:
            return _ReplyResponse(self._streamer(start, chat=True, usage=body.include_usage))
        return _ReplyResponse(self._collector(start, chat=True))

    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions`` (streamed when ``"stream": true``)."""
        self._authorize(request)
        body = await _parse(request, schemas.CompletionRequest)
        prompt = body.text
        sampling = self._sampling(body)

        def start(engine: ChatEngine) -> ReplyEvents:
            return engine.complete(prompt, sampling)

        if body.stream:
            return _ReplyResponse(self._streamer(start, chat=False, usage=body.include_usage))
        return _ReplyResponse(self._collector(start, chat=False))

    # --- helpers -------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        check_key(request.headers.get("authorization"), self.api_key)

    def _card(self) -> schemas.ModelCard:
        return schemas.ModelCard(id=self.model_id, created=self.created)

    def _sampling(self, body: schemas.ChatCompletionRequest | schemas.CompletionRequest
                  ) -> SamplingOptions:
        try:
            return body.sampling(self.sampling)
        except ValidationError as error:
            raise invalid_request(error) from error

    def _collector(self, start: StartReply, *, chat: bool) -> Writer:
        async def write(send: Send) -> None:
            parts: list[str] = []
            stats = None
            events = self.replies.events(start)
            try:
                async for event in events:
                    if isinstance(event, TokenEvent):
                        parts.append(event.text)
                    else:
                        stats = event.stats
            except Exception as error:
                failure = from_exception(error)
                await _send_json(send, failure.status, failure.body())
                return
            finally:
                with anyio.CancelScope(shield=True):
                    await events.aclose()
            assert stats is not None
            ident, created = _ident(chat), int(time.time())
            usage = schemas.Usage.from_stats(stats)
            timings = schemas.Timings.from_stats(stats)
            reason = schemas.finish_reason(stats.finish_reason)
            text = "".join(parts)
            body: BaseModel
            if chat:
                body = schemas.ChatCompletion(
                    id=ident, created=created, model=self.model_id, usage=usage,
                    timings=timings, choices=[schemas.ChatChoice(
                        message=schemas.AssistantMessage(content=text), finish_reason=reason)])
            else:
                body = schemas.Completion(
                    id=ident, created=created, model=self.model_id, usage=usage,
                    timings=timings,
                    choices=[schemas.CompletionChoice(text=text, finish_reason=reason)])
            await _send_json(send, 200, body)

        return write

    def _streamer(self, start: StartReply, *, chat: bool, usage: bool) -> Writer:
        async def write(send: Send) -> None:
            ident, created = _ident(chat), int(time.time())
            events = self.replies.events(start)
            try:
                try:  # wait for the turn and the first event, so early errors get a status
                    first = await events.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as error:
                    failure = from_exception(error)
                    await _send_json(send, failure.status, failure.body())
                    return
                await send({"type": "http.response.start", "status": 200,
                            "headers": SSE_HEADERS})
                chunks = _Chunks(ident, created, self.model_id, chat)
                if chat:
                    await self._body(send, _event(chunks.role()))
                try:
                    async for event in _prepend(first, events):
                        await self._body(send, _event(chunks.event(event)))
                        if isinstance(event, DoneEvent) and usage:
                            await self._body(send, _event(chunks.usage(event)))
                except Exception as error:
                    await self._body(send, _event(from_exception(error).body()))
                await self._body(send, _event("[DONE]"))
                await send({"type": "http.response.body", "body": b""})
            finally:
                with anyio.CancelScope(shield=True):
                    await events.aclose()

        return write

    @staticmethod
    async def _body(send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})


class _Chunks:
    """Builds the streamed chunks of one answer."""

    def __init__(self, ident: str, created: int, model: str, chat: bool) -> None:
        self.ident, self.created, self.model, self.chat = ident, created, model, chat

    def role(self) -> BaseModel:
        return self._chunk(schemas.ChunkChoice(delta=schemas.Delta(role="assistant",
                                                                   content="")))

    def event(self, event: ReplyEvent) -> BaseModel:
        if isinstance(event, TokenEvent):
            if self.chat:
                return self._chunk(schemas.ChunkChoice(delta=schemas.Delta(content=event.text)))
            return self._completion([schemas.CompletionChoice(text=event.text)])
        reason = schemas.finish_reason(event.stats.finish_reason)
        if self.chat:
            return self._chunk(schemas.ChunkChoice(delta=schemas.Delta(), finish_reason=reason))
        return self._completion([schemas.CompletionChoice(text="", finish_reason=reason)])

    def usage(self, event: DoneEvent) -> BaseModel:
        usage = schemas.Usage.from_stats(event.stats)
        timings = schemas.Timings.from_stats(event.stats)
        if self.chat:
            return schemas.ChatCompletionChunk(id=self.ident, created=self.created,
                                               model=self.model, choices=[], usage=usage,
                                               timings=timings)
        return schemas.Completion(id=self.ident, created=self.created, model=self.model,
                                  choices=[], usage=usage, timings=timings)

    def _chunk(self, choice: schemas.ChunkChoice) -> schemas.ChatCompletionChunk:
        return schemas.ChatCompletionChunk(id=self.ident, created=self.created,
                                           model=self.model, choices=[choice])

    def _completion(self, choices: list[schemas.CompletionChoice]) -> schemas.Completion:
        return schemas.Completion(id=self.ident, created=self.created, model=self.model,
                                  choices=choices)


async def _prepend(first: ReplyEvent, rest: AsyncIterator[ReplyEvent]
                   ) -> AsyncIterator[ReplyEvent]:
    yield first
    async for event in rest:
        yield event


def _ident(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def _too_large() -> ApiError:
    return ApiError(413, f"The request body is larger than {MAX_REQUEST_BYTES:,} bytes.",
                    code="request_too_large")


async def _read_body(request: Request) -> bytes:
    """The body, read no further than :data:`MAX_REQUEST_BYTES`.

    Raises:
        ApiError: 413 when the body (or its ``Content-Length``) is larger.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and len(declared) <= 20 and int(declared) > MAX_REQUEST_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, model: type[_Body]) -> _Body:
    raw = await _read_body(request)
    try:
        # Off the event loop: a hostile 16 MiB body takes seconds to check, and the streams of
        # other clients must not wait for it.
        data = await anyio.to_thread.run_sync(
            lambda: load_limited_json(raw, max_bytes=MAX_REQUEST_BYTES))
    except LimitError as error:
        raise ApiError(400, f"The request body cannot be used: {error}.", code="invalid_value",
                       param=error.field or None) from None
    except json.JSONDecodeError as error:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json"
                       ) from error
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_request(error) from error


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return _error_response(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    message = (f"Unknown path {request.url.path}; this server offers /v1/models, "
               "/v1/chat/completions and /v1/completions." if error.status_code == 404
               else str(error.detail))
    return _error_response(ApiError(error.status_code, message, code=code))


async def _unexpected(request: Request, error: Exception) -> Response:
    return _error_response(from_exception(error))


def create_app(engine: ChatEngine, model_id: str, *, api_key: str | None = None,
               sampling: SamplingOptions | None = None, max_waiting: int = 64) -> Starlette:
    """The ASGI app serving ``engine`` (already loaded) as the model ``model_id``.

    ``sampling``: the defaults that a request's fields override (e.g. the user's settings).
    ``api_key``: when set, every ``/v1`` request must send ``Authorization: Bearer KEY``.
    """
    api = OpenAIApi(engine, model_id, api_key=api_key, sampling=sampling,
                    max_waiting=max_waiting)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error,
                                                       HTTPException: _http_error,
                                                       Exception: _unexpected})
    app.state.api = api
    return app
