"""The socket guard itself: loopback and Unix sockets pass; anything else is recorded and refused,
in this process and in guarded child processes (plain, and multiprocessing's ``spawn``)."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2
import pytest

from tests.net_guard import (
    BlockedConnectionError,
    NetGuard,
    guarded_env,
    is_local_host,
    read_log,
)

UNROUTABLE = "10.255.255.1"


def test_loopback_and_unix_sockets_pass(net_guard: NetGuard, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        with socket.create_connection(("localhost", port), timeout=2):
            pass
        with socket.socket() as raw:
            assert raw.connect_ex(("127.0.0.1", port)) == 0
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as unix_server:
        unix_server.bind(str(path))
        unix_server.listen(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    assert socket.getaddrinfo("localhost", 80)
    assert net_guard.attempts == []


def test_outbound_connections_and_lookups_are_refused_at_once(net_guard: NetGuard) -> None:
    started = time.monotonic()
    with pytest.raises(BlockedConnectionError):
        socket.create_connection((UNROUTABLE, 80), timeout=30)
    with socket.socket() as raw:
        with pytest.raises(ConnectionRefusedError):
            raw.connect((UNROUTABLE, 443))
        assert raw.connect_ex(("8.8.8.8", 53)) == errno.ECONNREFUSED
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(ConnectionRefusedError):
        udp.sendto(b"x", ("1.1.1.1", 53))
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(httpx2.ConnectError):
        # (the URL is built from parts: the refused destination is the address itself)
        httpx2.get(httpx2.URL(scheme="http", host=UNROUTABLE, path="/"), timeout=30)
    assert time.monotonic() - started < 2
    apis = [(a.api, a.host) for a in net_guard.attempts]
    assert ("create_connection", UNROUTABLE) in apis and ("connect", UNROUTABLE) in apis
    assert ("connect_ex", "8.8.8.8") in apis and ("sendto", "1.1.1.1") in apis
    assert ("getaddrinfo", "huggingface.co") in apis
    assert "test_guard.py" in net_guard.attempts[0].stack


def test_uninstalled_guard_restores_the_socket_module() -> None:
    before = (socket.socket.connect, socket.create_connection, socket.getaddrinfo)
    with NetGuard():
        assert socket.socket.connect is not before[0]
    assert (socket.socket.connect, socket.create_connection, socket.getaddrinfo) == before


def test_local_hosts() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST",
                 "app.localhost", "0.0.0.0", "::", "::ffff:127.0.0.1", "", None):
        assert is_local_host(host), host
    for host in ("10.255.255.1", "192.168.1.2", "huggingface.co", "::ffff:8.8.8.8", "2001:db8::1"):
        assert not is_local_host(host), host


def test_guarded_child_processes_log_their_attempts(tmp_path: Path) -> None:
    """A plain child and its multiprocessing ``spawn`` child both run guarded and log."""
    log = tmp_path / "attempts.jsonl"
    script = textwrap.dedent(f"""
        import multiprocessing, socket

        def reach():
            try:
                socket.create_connection(({UNROUTABLE!r}, 80), timeout=30)
            except ConnectionRefusedError:
                pass

        if __name__ == "__main__":
            reach()
            process = multiprocessing.get_context("spawn").Process(target=reach)
            process.start()
            process.join(60)
            print(process.exitcode)
    """)
    (tmp_path / "reach.py").write_text(script, encoding="utf-8")
    result = subprocess.run([sys.executable, str(tmp_path / "reach.py")], env=guarded_env(log),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "0", result.stderr
    attempts = read_log(log)
    assert len(attempts) == 2 and {a["host"] for a in attempts} == {UNROUTABLE}
    assert len({a["pid"] for a in attempts}) == 2
