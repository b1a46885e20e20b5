"""A local OpenAI-compatible API for the loaded model (``mixtral-desk serve``, the GUI toggle).

Built on Starlette and uvicorn; the engine stays in its own process (:mod:`..engine`), requests
queue for it in arrival order (:mod:`.queue`), and tokens are bridged from the engine's thread
to the event loop (:mod:`.generation`). Start it with :class:`ApiServer`.
"""

from mixtral_desk.core.server.app import create_app
from mixtral_desk.core.server.auth import check_bind
from mixtral_desk.core.server.errors import ApiError, ServerConfigError, ServerStartError
from mixtral_desk.core.server.queue import FairQueue, QueueFullError
from mixtral_desk.core.server.run import DEFAULT_HOST, DEFAULT_PORT, ApiServer

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiError",
    "ApiServer",
    "FairQueue",
    "QueueFullError",
    "ServerConfigError",
    "ServerStartError",
    "check_bind",
    "create_app",
]
