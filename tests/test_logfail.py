"""The shared fixture that fails a test on an unexpected WARNING or ERROR log record."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import _allowed


@pytest.mark.allow_log("tests.logfail", "expected")
def test_an_allowed_record_passes() -> None:
    logging.getLogger("tests.logfail.child").warning("an expected warning")
    logging.getLogger("tests.other").info("INFO is never a failure")


def test_matching_is_by_logger_prefix_and_message_part() -> None:
    def record(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)

    allow = [("mixtral_desk.desktop", "Offline mode is on")]
    assert _allowed(record("mixtral_desk.desktop", "Offline mode is on: …"), allow)
    assert _allowed(record("mixtral_desk.desktop.x", "… Offline mode is on"), allow)
    assert not _allowed(record("mixtral_desk.desktopx", "Offline mode is on"), allow)
    assert not _allowed(record("mixtral_desk.desktop", "something else"), allow)
    assert _allowed(record("uvicorn.error", "anything"), [("uvicorn", "")])
