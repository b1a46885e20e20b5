"""Who may use the server: the bind-address rule and the API key check.

Bound to a loopback address (127.0.0.0/8, ``::1``, ``localhost``) the server may run without a
key; bound to anything else (``0.0.0.0``, a LAN address, a host name) it refuses to start without
one. When a key is set, every ``/v1`` request must carry it as ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import hmac
import ipaddress

from mixtral_desk.core.i18n import N_
from mixtral_desk.core.server.errors import ApiError, ServerConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the model beyond this machine without an API key.

    Raises:
        ServerConfigError: ``host`` is not a loopback address and ``api_key`` is empty.
    """
    if not is_loopback(host) and not api_key:
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
