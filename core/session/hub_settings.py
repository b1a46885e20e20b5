"""The Hugging Face Hub endpoint (a mirror) and access token: ``hub.json`` in the config folder.

The window's Hub tab and the first-run mirror offer write it; downloads in the window and on the
command line read it. Precedence, for the endpoint: ``download --endpoint``, then this file, then
``HF_ENDPOINT``, then huggingface.co; for the token: this file, then the token huggingface_hub
keeps for ``hf auth login`` (or ``HF_TOKEN``). The file is written atomically and readable by its
owner only, since it may hold a token. The token is not copied into huggingface_hub's own store:
that one belongs to the user's other tools, and signing in there is what ``hf auth login`` is for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mixtral_desk.core.atomic_write import write_atomic
from mixtral_desk.core.paths import DataPaths, data_paths
from mixtral_desk.core.untrusted_json import MAX_SETTINGS_BYTES, load_limited_json

#: The Hub mirror offered to users in mainland China.
HUB_MIRROR = "https://hf-mirror.com"


@dataclass(frozen=True)
class HubSettings:
    """``endpoint``: a mirror such as https://hf-mirror.com (empty: ``HF_ENDPOINT`` or
    huggingface.co). ``token``: a Hugging Face access token (empty: the one stored by
    ``hf auth login``, if any)."""

    endpoint: str = ""
    token: str = ""

    @property
    def uses_mirror(self) -> bool:
        """Whether the endpoint is the mirror of :data:`HUB_MIRROR`."""
        return self.endpoint.rstrip("/") == HUB_MIRROR


def load_hub_settings(paths: DataPaths | None = None) -> HubSettings:
    """Read the Hub settings; a missing, unreadable or malformed file gives the defaults (the
    file holds nothing that cannot be entered again). Raises nothing."""
    path = (paths or data_paths()).hub_settings_file
    try:
        with path.open("rb") as file:
            data = load_limited_json(file.read(MAX_SETTINGS_BYTES + 1),
                                     max_bytes=MAX_SETTINGS_BYTES)
    except (OSError, ValueError):  # LimitError and JSONDecodeError are ValueErrors
        return HubSettings()
    if not isinstance(data, dict):
        return HubSettings()
    return HubSettings(endpoint=str(data.get("endpoint") or "").strip().rstrip("/"),
                       token=str(data.get("token") or "").strip())


def save_hub_settings(settings: HubSettings, paths: DataPaths | None = None) -> None:
    """Write the Hub settings (owner-only).

    Raises:
        OSError: the file cannot be written; the old one is kept.
    """
    write_atomic((paths or data_paths()).hub_settings_file,
                 json.dumps(asdict(settings), indent=2), private=True)
