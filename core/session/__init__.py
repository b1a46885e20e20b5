"""The session layer: one application model that the window, the CLI and the API server share.

* :mod:`.session` — :class:`Session`: the loaded model, chat turns, serving, idle unload;
* :mod:`.loading` — settings and choices → load options → plan → loaded model;
* :mod:`.conversations` — titles, per-conversation sampling, deleting a conversation;
* :mod:`.cache_folder` — the prompt cache's folder: what it holds, its budget, clearing it;
* :mod:`.hub_settings` — the Hugging Face Hub endpoint (mirror) and token;
* :mod:`.events` — the plain events the session reports through.
"""

from .cache_folder import CacheFolderError, CacheReport, cache_report, clear_cache
from .conversations import SAMPLING_KEY, delete_conversation, sampling_for, title_from
from .events import Event
from .hub_settings import HubSettings, load_hub_settings, save_hub_settings
from .loading import LoadChoice, LoadReport, load_options
from .session import LOCAL_HOST, NoModelError, Session

__all__ = [
    "LOCAL_HOST",
    "SAMPLING_KEY",
    "CacheFolderError",
    "CacheReport",
    "Event",
    "HubSettings",
    "LoadChoice",
    "LoadReport",
    "NoModelError",
    "Session",
    "cache_report",
    "clear_cache",
    "delete_conversation",
    "load_hub_settings",
    "load_options",
    "sampling_for",
    "save_hub_settings",
    "title_from",
]
