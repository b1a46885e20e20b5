"""The server's errors: refusals to start, and API errors in OpenAI's format with their status."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from mixtral_desk.core.errors import (
    ContextOverflowError,
    DeskError,
    EngineBusyError,
    EngineCrashedError,
    EngineError,
    NotFoundError,
)
from mixtral_desk.core.server.queue import QueueFullError
from mixtral_desk.core.server.schemas import ErrorBody, ErrorDetail

log = logging.getLogger("mixtral_desk.server")


class ServerConfigError(DeskError, ValueError):
    """Raised when the server is asked to start unsafely (a public address without an API key)."""


class ServerStartError(DeskError, OSError):
    """Raised when the server cannot start (the port is taken, the address does not exist)."""


class ApiError(DeskError):
    """An error answer: HTTP ``status`` and OpenAI's ``type`` / ``code`` / ``param``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> ErrorBody:
        """The JSON body."""
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type,
                                           param=self.param, code=self.code))


def invalid_request(error: ValidationError) -> ApiError:
    """A 400 naming the first invalid field."""
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return ApiError(400, f"Invalid value for {param or 'the request'}: {first['msg']}",
                    code="invalid_value", param=param)


def _english(error: Exception) -> str:
    """The error's message in English: programs read the API's answers, whatever the language
    of the app that serves them."""
    return error.english if isinstance(error, DeskError) else str(error)


def from_exception(error: Exception) -> ApiError:
    """The API error for an exception raised while answering.

    A :class:`DeskError` answers with its English text, whatever the app's language; anything
    else is a bug: a 500 that names only its class (the details go to the log).
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, ValidationError):
        return invalid_request(error)
    if isinstance(error, ContextOverflowError):
        return ApiError(400, _english(error), code="context_length_exceeded", param="messages")
    if isinstance(error, QueueFullError | EngineBusyError):
        return ApiError(503, _english(error), "server_error", code="server_busy")
    if isinstance(error, EngineCrashedError):
        return ApiError(500, _english(error), "server_error", code="engine_crashed")
    if isinstance(error, EngineError):
        return ApiError(500, _english(error), "server_error", code="engine_error")
    if isinstance(error, ValueError):  # e.g. SamplingOptions refusing a combination
        return ApiError(400, _english(error), code="invalid_value")
    if isinstance(error, NotFoundError):
        return ApiError(404, _english(error), code="not_found")
    if isinstance(error, DeskError):  # a known problem (a store, a download …), not a bug
        log.warning("Error while answering: %s", _english(error))
        return ApiError(500, _english(error), "server_error")
    log.error("Unexpected error while answering", exc_info=error)
    return ApiError(500, f"Internal error: {type(error).__name__}", "server_error",
                    code="internal_error")
