"""The Hugging Face Hub token and endpoint (mirror), kept in ``hub.json`` in the config folder.

core.settings has no place for them yet, so the desktop keeps this small file (written with
owner-only permissions since it may hold a token).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "hub.json"


@dataclass(frozen=True)
class HubConfig:
    """``endpoint``: a mirror such as https://hf-mirror.com (empty: huggingface.co or
    ``HF_ENDPOINT``). ``token``: a Hugging Face access token (empty: the one stored by
    ``hf auth login``, if any)."""

    endpoint: str = ""
    token: str = ""


def load_hub_config(config_dir: Path) -> HubConfig:
    """Read the file; a missing or malformed file gives the defaults."""
    try:
        data = json.loads((config_dir / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return HubConfig()
    if not isinstance(data, dict):
        return HubConfig()
    return HubConfig(endpoint=str(data.get("endpoint") or ""), token=str(data.get("token") or ""))


def save_hub_config(config_dir: Path, config: HubConfig) -> None:
    """Write the file (mode 0600). Raises OSError."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / FILE_NAME
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(config), handle, indent=2)
    temporary.replace(path)
