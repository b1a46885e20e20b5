"""Offline mode refuses every network path at once; an unreachable Hub fails within the short
timeout with the "Cannot reach" error, never after huggingface_hub's ~23 s retry loop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub.constants
import pytest

from mixtral_desk.core import network
from mixtral_desk.core.downloads.errors import (
    HubOfflineError,
    HubUnavailableError,
    HubUnreachableError,
)
from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.downloads.manager import DownloadManager
from mixtral_desk.core.gguf.remote_header import (
    RemoteHeaderError,
    RemoteHeaderOfflineError,
    read_remote_facts,
)
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.remote import RemoteConnectionError, RemoteEngine, RemoteOfflineError
from tests.net_guard import NetGuard, Tripwire, format_attempts, guarded_env, read_log

REPO, FILE = "owner/model-GGUF", "model-Q4_K_M.gguf"
#: huggingface_hub's own loop would take ~23 s; ours answers in well under this.
FAST_S = 2.5


def timed(call: Callable[[], object], error: type[BaseException] | tuple[type[BaseException], ...]
          ) -> tuple[BaseException, float]:
    """The error ``call`` raised (it must raise ``error``) and how long it took."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return caught.value, time.monotonic() - started


def hub_calls(hub: HubClient) -> dict[str, Callable[[], object]]:
    return {"resolve": lambda: hub.resolve(REPO, [FILE]),
            "locate": lambda: hub.locate(REPO, "main", FILE),
            "remote header": lambda: read_remote_facts(hub, REPO, [FILE])}


# --- Offline mode --------------------------------------------------------------------------------

def test_offline_mode_refuses_every_network_path_at_once(online: None, net_guard: NetGuard,
                                                         data_home: DataPaths) -> None:
    network.set_offline(True)
    assert network.is_offline() and huggingface_hub.constants.HF_HUB_OFFLINE
    with Tripwire() as hub_site:
        offline_refuses_everything(hub_site.url, data_home)
    assert hub_site.connections == 0  # nothing even tried the Hub
    assert net_guard.attempts == [], format_attempts(net_guard.attempts)


def offline_refuses_everything(endpoint: str, data_home: DataPaths) -> None:
    hub = HubClient(endpoint, use_stored_token=False)
    for name, call in hub_calls(hub).items():
        error, seconds = timed(call, network.OfflineError)
        assert seconds < 1, name
        assert "offline mode is on" in str(error).lower(), (name, error)
        assert network.network_problem(error) == "offline"
    assert isinstance(timed(hub_calls(hub)["resolve"], HubOfflineError)[0], HubUnavailableError)
    timed(hub_calls(hub)["remote header"], RemoteHeaderOfflineError)

    manager = DownloadManager(paths=data_home, endpoint=endpoint, use_stored_token=False)
    error, seconds = timed(lambda: manager.add_repo(REPO, [FILE]), HubOfflineError)
    assert seconds < 1 and "Offline mode is on" in str(error)
    assert manager.jobs() == [] and manager.resume_all() == []
    manager.store.close()

    # A server on another computer: refused before any socket is opened (the guard would
    # refuse it too; no name is even looked up).
    elsewhere = str(httpx2.URL(scheme="http", host="gpu-box.example.com", port=8000, path="/v1"))
    with RemoteEngine(elsewhere, "m") as remote:
        error, seconds = timed(remote.list_models, RemoteOfflineError)
    assert seconds < 1 and "gpu-box.example.com" in str(error)
    with socket.socket() as spare:  # a closed loopback port: allowed, and refused by the OS
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    with RemoteEngine(f"http://127.0.0.1:{port}/v1", "m") as local:
        error, _ = timed(local.list_models, RemoteConnectionError)
    assert not isinstance(error, network.OfflineError)


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("[::]", False), ("192.168.1.20", False)])
def test_offline_mode_allows_a_remote_engine_on_loopback_only(host: str, local: bool) -> None:
    """The check comes before any connection: nothing here opens a socket. 0.0.0.0 and :: are
    where a server listens on every interface, not a loopback address to connect to."""
    network.set_offline(True)
    url = str(httpx2.URL(scheme="http", host=host.strip("[]"), port=8080, path="/v1"))
    with RemoteEngine(url, "m") as remote:
        if local:
            remote.require_network()
        else:
            with pytest.raises(RemoteOfflineError, match="Offline mode is on"):
                remote.require_network()


def test_offline_mode_follows_the_setting_and_the_environment(online: None) -> None:
    assert not network.is_offline()
    network.apply_offline_setting(True)
    assert network.is_offline() and huggingface_hub.constants.HF_HUB_OFFLINE
    network.apply_offline_setting(False)  # back to what the environment said
    assert not network.is_offline()
    network.set_offline(False)
    assert not network.is_offline() and not huggingface_hub.constants.HF_HUB_OFFLINE


def test_hf_hub_offline_in_the_environment_refuses_at_once(tmp_path: Path) -> None:
    """``HF_HUB_OFFLINE=1`` as a user sets it: in a fresh, guarded process."""
    log = tmp_path / "attempts.jsonl"
    with Tripwire() as hub_site:
        output = run_offline_script(hub_site.url, log, tmp_path)
    for name, (message, seconds) in output.items():
        assert "offline mode is on" in message.lower() and seconds < 1, (name, message)
    assert hub_site.connections == 0
    assert read_log(log) == [], format_attempts(read_log(log))


def run_offline_script(endpoint: str, log: Path, tmp_path: Path) -> dict[str, list[Any]]:
    """Every Hub path tried in a fresh guarded process with ``HF_HUB_OFFLINE=1``; what each
    raised (message, seconds)."""
    script = textwrap.dedent(f"""
        import json, time
        from mixtral_desk.core import network
        from mixtral_desk.core.downloads.hub import HubClient
        from mixtral_desk.core.downloads.manager import DownloadManager
        from mixtral_desk.core.gguf.remote_header import read_remote_facts

        hub = HubClient({endpoint!r}, use_stored_token=False)
        calls = {{
            "resolve": lambda: hub.resolve({REPO!r}, [{FILE!r}]),
            "locate": lambda: hub.locate({REPO!r}, "main", {FILE!r}),
            "remote header": lambda: read_remote_facts(hub, {REPO!r}, [{FILE!r}]),
            "download": lambda: DownloadManager(use_stored_token=False).add_repo(
                {REPO!r}, [{FILE!r}]),
        }}
        out = {{}}
        for name, call in calls.items():
            started = time.monotonic()
            try:
                call()
                out[name] = ["no error", 0]
            except network.OfflineError as error:
                out[name] = [str(error), time.monotonic() - started]
        print(json.dumps(out))
    """)
    env = guarded_env(log)
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    output: dict[str, list[Any]] = json.loads(result.stdout)
    return output


# --- an unreachable Hub, Offline mode off ------------------------------------------------------

def test_a_hub_that_hangs_up_fails_after_one_attempt(online: None, net_guard: NetGuard) -> None:
    """A dead server (every connection closed at once): one attempt per call, no retry loop."""
    with Tripwire() as dead:
        hub = HubClient(dead.url, use_stored_token=False)
        for name, call in hub_calls(hub).items():
            before = dead.connections
            error, seconds = timed(call, (HubUnreachableError, RemoteHeaderError))
            assert seconds < FAST_S and "Cannot reach" in str(error), (name, error)
            assert network.network_problem(error) == "unreachable"
            assert dead.connections - before == 1, name
    assert net_guard.attempts == [], format_attempts(net_guard.attempts)


def test_refused_port_fails_at_once_with_the_default_timeouts(online: None) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{spare.getsockname()[1]}"
    hub = HubClient(url, use_stored_token=False)
    for name, call in hub_calls(hub).items():
        error, seconds = timed(call, (HubUnreachableError, RemoteHeaderError))
        assert seconds < FAST_S and "Cannot reach" in str(error), (name, error)
        assert network.network_problem(error) == "unreachable"


def test_server_that_never_answers_times_out_once(online: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "METADATA_TIMEOUT_S", 1.0)
    with Tripwire(hang_up=False) as silent:  # accepts, never answers (a black-holing proxy)
        hub = HubClient(silent.url, use_stored_token=False)
        for name, call in hub_calls(hub).items():
            before = silent.connections
            error, seconds = timed(call, (HubUnreachableError, RemoteHeaderError))
            assert 0.9 < seconds < FAST_S, (name, seconds)
            assert "Cannot reach" in str(error) and "no answer within 1 s" in str(error)
            assert silent.connections - before == 1, name  # no second try


@contextmanager
def blackhole() -> Iterator[str]:
    """A loopback port whose connections never complete (a full listen queue drops SYNs, as a
    firewall that drops packets would); skips where the system refuses them instead."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    filler = socket.create_connection(address, timeout=1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(address)
        pytest.skip("this system completes connections beyond the listen queue")
    except TimeoutError:
        pass
    except OSError:
        pytest.skip("this system refuses connections beyond the listen queue")
    finally:
        probe.close()
    try:
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        filler.close()
        server.close()


def test_connection_that_never_completes_gives_up_after_the_connect_timeout(
        online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "CONNECT_TIMEOUT_S", 1.0)
    with blackhole() as url:
        error, seconds = timed(lambda: HubClient(url, use_stored_token=False).resolve(
            REPO, [FILE]), HubUnreachableError)
    assert 0.9 < seconds < FAST_S and "no answer within 1 s" in str(error)


class _Busy(BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_a_busy_hub_is_tried_again_briefly_and_is_not_unreachable(online: None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        error, seconds = timed(lambda: HubClient(url, use_stored_token=False).resolve(
            REPO, [FILE]), HubUnavailableError)
    finally:
        server.shutdown()
        server.server_close()
        huggingface_hub.close_session()
    assert _Busy.requests == network.METADATA_ATTEMPTS and seconds < 5
    assert "answered 503" in str(error) and not isinstance(error, HubUnreachableError)
    assert network.network_problem(error) is None


def test_network_problem_classifies_causes() -> None:
    def chained(outer: Exception, inner: BaseException) -> Exception:
        try:
            try:
                raise inner
            except BaseException as cause:
                raise outer from cause
        except Exception as error:
            return error

    assert network.network_problem(chained(RuntimeError("x"), socket.gaierror(-2, "no"))) \
        == "unreachable"
    assert network.network_problem(chained(RuntimeError("x"), TimeoutError())) == "unreachable"
    assert network.network_problem(chained(RuntimeError("x"), network.OfflineError("off"))) \
        == "offline"
    assert network.network_problem(ValueError("x")) is None
    assert network.is_loopback_host("127.0.0.1") and network.is_loopback_host("[::1]")
    assert not network.is_loopback_host("10.255.255.1")
