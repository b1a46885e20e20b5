"""Offline tests: no outbound connection while starting, loading, chatting, searching, exporting;
Offline mode and an unreachable Hub fail at once."""
