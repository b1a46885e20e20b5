"""Offline mode blocks every Hub-browsing path, counted by the socket guard (in each process) and
the loopback tripwire at ``HF_ENDPOINT``: ``hub search``, ``hub files`` (with and without a
mirror given), ``download REPO:QUANT`` and ``download`` of a Hub URL each say so at once and
open no connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.net_guard import Tripwire, format_attempts, read_log
from tests.offline.test_cli_offline import cli, env, guard_log

__all__ = ["env", "guard_log"]

REPO = "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", "--offline"])
def test_offline_mode_blocks_every_hub_path(env: dict[str, str], guard_log: Path,
                                           hub_site: Tripwire, switch: str) -> None:
    flags = ["--offline"] if switch == "--offline" else []
    if not flags:
        env["HF_HUB_OFFLINE"] = "1"
    for args in (["hub", "search", "mixtral"],
                 ["hub", "search", "mixtral", "--endpoint", hub_site.url, "--json"],
                 ["hub", "files", REPO],
                 ["hub", "files", f"{hub_site.url}/{REPO}/blob/main/m.Q4_K_M.gguf"],
                 ["download", f"{REPO}:Q4_K_M"],
                 ["download", f"{hub_site.url}/{REPO}"]):
        result = cli(env, *flags, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Offline mode is on" in result.stderr and "Traceback" not in result.stderr, args
    assert read_log(guard_log) == [], format_attempts(read_log(guard_log))
    assert hub_site.connections == 0
