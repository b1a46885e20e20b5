"""Who may use the server: the bind-address rule and the API key check.

Bound to a loopback address (127.0.0.0/8, ``::1``, ``localhost``:
:func:`~mixtral_desk.core.network.is_loopback_host`) the server may run without a key; bound to
anything else (``0.0.0.0`` or ``::``, which mean every interface, a LAN address, a host name) it
refuses to start without one. When a key is set, every ``/v1`` request must carry it as
``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import hmac

from mixtral_desk.core.i18n import N_
from mixtral_desk.core.network import is_loopback_host
from mixtral_desk.core.server.errors import ApiError, ServerConfigError


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the model beyond this machine without an API key.

    Raises:
        ServerConfigError: ``host`` is not a loopback address and ``api_key`` is empty.
    """
    if not is_loopback_host(host) and not api_key:
        raise ServerConfigError(
            N_("Refusing to serve on {host} without an API key: anyone who can reach this "
               "address could use the model. Set one with --api-key KEY (or "
               "MIXTRAL_DESK_API_KEY), or bind to 127.0.0.1."), host=host)


def check_key(authorization: str | None, api_key: str | None) -> None:
    """Check a request's ``Authorization`` header against the server's key (if any).

    Raises:
        ApiError: 401 ``invalid_api_key`` when the key is missing or wrong.
    """
    if not api_key:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer KEY'.",
                       code="invalid_api_key")
    if not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
