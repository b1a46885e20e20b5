"""Fixtures of the offline tests: the socket guard (Offline mode is restored after each test by
the shared ``process_wide_switches`` fixture)."""

from __future__ import annotations

from tests.net_guard import net_guard

__all__ = ["net_guard"]
