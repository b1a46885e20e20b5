"""One error convention: every error raised in core carries an ``N_()`` text and its values.

``str(error)`` is translated when it is shown, in the language of that moment; ``error.english``
stays English, and so does the API server's answer, whatever the language of the app that serves
it. Each core area raises a real error here (through its own code, while the interface speaks
Chinese); a source scan keeps ``tr()`` out of every error construction in core.
"""

from __future__ import annotations

import ast
import pickle
import re
import socket
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import httpx2
import huggingface_hub.constants
import pytest

from mixtral_desk.core import i18n, network
from mixtral_desk.core.catalog import parse_catalog
from mixtral_desk.core.downloads.errors import (
    HubOfflineError,
    HubUnreachableError,
    InsufficientSpaceError,
    JobNotFoundError,
    RemoteFileNotFoundError,
)
from mixtral_desk.core.downloads.events import DownloadEvent, JobStateChanged
from mixtral_desk.core.downloads.hub import HubClient
from mixtral_desk.core.downloads.jobs import JobStore
from mixtral_desk.core.downloads.manager import DownloadManager
from mixtral_desk.core.downloads.storage import check_free_space
from mixtral_desk.core.engine import ChatMessage, EngineHost, SamplingOptions
from mixtral_desk.core.engine.history_fit import fit_messages
from mixtral_desk.core.engine.interface import ReplyEvent
from mixtral_desk.core.errors import (
    CatalogError,
    ContextOverflowError,
    DeskError,
    EngineError,
    GGUFError,
    GGUFMetadataError,
    SearchQueryError,
    SettingsError,
)
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.gguf.remote_header import RemoteHeaderOfflineError, read_remote_header
from mixtral_desk.core.gguf.synthetic import TINY, write_synthetic_model
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.remote import RemoteAuthError, RemoteEngine, RemoteEngineError
from mixtral_desk.core.server import ApiServer
from mixtral_desk.core.server.errors import from_exception
from mixtral_desk.core.settings import load_settings
from mixtral_desk.core.store import Store
from mixtral_desk.core.units import SizeError, parse_size
from tests.hub_server import LoopbackHub, make_bytes

ROOT = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


@pytest.fixture
def chinese() -> Iterator[None]:
    """The interface in Simplified Chinese for this test (the compiled catalog must be there);
    English again afterwards."""
    assert i18n.catalog_path("zh_CN").is_file(), (
        f"no compiled zh_CN catalog at {i18n.catalog_path('zh_CN')}: build the package, or run "
        "`python packaging/translations.py compile`")
    assert i18n.set_language("zh_CN") == "zh_CN"
    try:
        yield
    finally:
        i18n.set_language("en")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode on for this test (what the Hub and remote-header errors need)."""
    monkeypatch.setattr(network, "_offline_override", True)


def _closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _raised(call: Callable[[], object]) -> DeskError:
    with pytest.raises(DeskError) as caught:
        call()
    return caught.value


def _store_search(path: Path) -> None:
    store = Store.open(path)
    try:
        store.search('"unbalanced', raw=True)
    finally:
        store.close()


def _remote_models(status: int, body: str) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(status, text=body))
    with RemoteEngine("http://127.0.0.1:9/v1", "m", transport=transport) as engine:
        engine.list_models()


def _errors_of_every_area(tmp_path: Path) -> dict[str, tuple[type[DeskError], DeskError, str]]:
    """One real error of each core area, raised through that area's own code: its expected
    class, the error, and the start of its English text. Needs Offline mode on."""
    settings = tmp_path / "settings.json"
    settings.write_text("{not json", encoding="utf-8")
    web_page = tmp_path / "model.gguf"
    web_page.write_bytes(b"<!DOCTYPE html><html><body>Sign in to continue</body></html>" * 4)
    absurd_context = write_synthetic_model(tmp_path / "ctx.gguf",
                                           replace(TINY, n_ctx_train=2**32 - 1))
    offline_hub = HubClient("http://127.0.0.1:9", use_stored_token=False)
    messages = [ChatMessage("user", "hello " * 50)]
    with EngineHost(tmp_path / "engine.log") as engine:  # no model loaded, no process started
        no_model = _raised(lambda: engine.chat(messages, SamplingOptions()))
    return {
        "settings": (SettingsError, _raised(lambda: load_settings(settings)),
                     f"The settings file {settings} is not valid JSON"),
        "catalog": (CatalogError, _raised(lambda: parse_catalog("[[models]\nid = 1\n", "x.toml")),
                    "x.toml: not valid TOML"),
        "model file": (GGUFError, _raised(lambda: inspect_model(web_page)),
                       f"{web_page}: is a web page (HTML)"),
        "model header": (GGUFMetadataError, _raised(lambda: inspect_model(absurd_context)),
                         f"{absurd_context}: the header says llama.context_length is "
                         "4294967295, outside the range"),
        "engine": (EngineError, no_model, "No model is loaded"),
        "engine context": (ContextOverflowError,
                           _raised(lambda: fit_messages(messages, lambda kept: 400, 512, 256)),
                           "The message is too long for the context window"),
        "store": (SearchQueryError, _raised(lambda: _store_search(tmp_path / "chats.db")),
                  "Cannot search for"),
        "download list": (JobNotFoundError,
                          _raised(lambda: JobStore(tmp_path / "jobs.sqlite3").get("nope")),
                          "No download with id 'nope'"),
        "disk space": (InsufficientSpaceError,
                       _raised(lambda: check_free_space(tmp_path, 1 << 62, 0, "tiny")),
                       "Not enough disk space for tiny"),
        "hub offline": (HubOfflineError, _raised(offline_hub.require_online),
                        "Downloading from the Hugging Face Hub needs the network, and Offline "
                        "mode is on."),
        "remote header": (RemoteHeaderOfflineError,
                          _raised(lambda: read_remote_header(offline_hub, "o/r", "f.gguf")),
                          "Cannot read the header of o/r/f.gguf from the Hub: offline mode is on"),
        "remote engine": (RemoteAuthError, _raised(lambda: _remote_models(401, "no key")),
                          "The remote engine at http://127.0.0.1:9/v1 rejected the API key"),
        "remote answer": (RemoteEngineError, _raised(lambda: _remote_models(200, "[]")),
                          "http://127.0.0.1:9/v1/models did not answer with a model list."),
        "units": (SizeError, _raised(lambda: parse_size("lots")), "'lots' is not a size"),
    }


def _check_chinese_and_english(name: str, error: DeskError, kind: type[DeskError],
                               english_start: str) -> None:
    assert type(error) is kind, (name, error)
    shown = str(error)
    assert CJK.search(shown), f"{name}: not shown in Chinese: {shown!r}"
    assert not CJK.search(error.english), f"{name}: its English is not English: {error.english!r}"
    assert error.english.startswith(english_start), (name, error.english)
    assert error.args == (error.english,)
    answer = from_exception(error)
    assert answer.message == error.english, (name, answer.message)
    assert answer.body().error.message == error.english
    copy = pickle.loads(pickle.dumps(error))  # crosses threads and processes as it is
    assert type(copy) is kind and copy.english == error.english and str(copy) == shown


@pytest.mark.allow_log("mixtral_desk.server", "Error while answering")
def test_every_area_shows_chinese_and_keeps_english(chinese: None, offline: None,
                                                    tmp_path: Path) -> None:
    errors = _errors_of_every_area(tmp_path)  # built while the interface speaks Chinese
    for name, (kind, error, english_start) in errors.items():
        _check_chinese_and_english(name, error, kind, english_start)
    i18n.set_language("en")  # the same errors, shown again: now in English
    for name, (_, error, _) in errors.items():
        assert str(error) == error.english, name


@pytest.mark.allow_log("mixtral_desk.server", "Error while answering")
def test_an_unreachable_hub_is_a_typed_error_in_either_language(
        chinese: None, online: None) -> None:
    hub = HubClient(f"http://127.0.0.1:{_closed_port()}", use_stored_token=False)
    error = _raised(lambda: hub.resolve("owner/model", ["model.gguf"]))
    _check_chinese_and_english("hub unreachable", error, HubUnreachableError,
                               "Cannot reach http://127.0.0.1:")


class _RaisingEngine:
    """A ChatEngine whose replies fail with the next of ``errors``."""

    def __init__(self, errors: list[DeskError]) -> None:
        self.errors = errors
        self.lock = threading.Lock()

    def _fail(self) -> Generator[ReplyEvent, None, None]:
        with self.lock:
            error = self.errors.pop(0)
        raise error
        yield  # a generator: the error comes on the first next(), as from a real engine

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> Generator[ReplyEvent, None, None]:
        return self._fail()

    def complete(self, prompt: str, sampling: SamplingOptions
                 ) -> Generator[ReplyEvent, None, None]:
        return self._fail()

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.allow_log("mixtral_desk.server", "Error while answering")
def test_the_api_server_answers_in_english_while_the_app_speaks_chinese(
        chinese: None, offline: None, tmp_path: Path) -> None:
    errors = {name: error for name, (_, error, _) in _errors_of_every_area(tmp_path).items()}
    server = ApiServer(_RaisingEngine(list(errors.values())), "fake", port=0)
    server.start()
    try:
        with httpx2.Client(base_url=server.base_url + "/", timeout=10) as client:
            for name, error in errors.items():
                answer = client.post("chat/completions", json={
                    "model": "fake", "messages": [{"role": "user", "content": "Hi"}]})
                assert answer.status_code >= 400, name
                message = answer.json()["error"]["message"]
                assert message == error.english, (name, message)
                assert not CJK.search(message) and CJK.search(str(error)), name
    finally:
        server.stop()


# --- downloads: the window gets the exception, not its text ------------------------------------

@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackHub]:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with LoopbackHub() as server:
        server.add_repo("owner/open", {"open.gguf": make_bytes(1000, seed=3)})
        yield server
        huggingface_hub.close_session()


def test_a_failed_download_carries_its_typed_error(chinese: None, hub: LoopbackHub,
                                                   data_home: DataPaths) -> None:
    events: list[DownloadEvent] = []
    manager = DownloadManager(paths=data_home, endpoint=hub.url, use_stored_token=False,
                              on_event=events.append)
    try:
        job = manager.add_repo("owner/open", ["missing.gguf"])
        with pytest.raises(RemoteFileNotFoundError):
            manager.run(job.id)
        [failed] = [e for e in events if isinstance(e, JobStateChanged) and e.state == "failed"]
        error = failed.error
        assert isinstance(error, RemoteFileNotFoundError)
        english = "File 'missing.gguf' is not in owner/open at that revision."
        assert error.english.startswith(english) and CJK.search(str(error))

        copy = pickle.loads(pickle.dumps(failed))  # the event crosses threads (and processes)
        assert isinstance(copy.error, RemoteFileNotFoundError)
        assert copy.error.english == error.english and str(copy.error) == str(error)

        stored = manager.get(job.id)  # the job list keeps the message, not its translation
        assert stored.error is not None and str(stored.error) == str(error)
        assert stored.to_json_dict()["error"] == error.english
        i18n.set_language("en")
        assert str(manager.get(job.id).error) == error.english
    finally:
        manager.close()
        manager.store.close()


# --- no error in core is translated when it is raised --------------------------------------------

#: argparse prints an ArgumentTypeError at once, on the command line that was just typed; it is
#: not a DeskError and never reaches the API server or the log.
_EXEMPT = frozenset({"ArgumentTypeError"})


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else (
        node.attr if isinstance(node, ast.Attribute) else "")


def _translates(node: ast.AST) -> bool:
    """Whether ``node`` contains a ``tr()``/``ntr()`` call."""
    return any(isinstance(sub, ast.Call) and _name(sub.func) in ("tr", "ntr")
               for sub in ast.walk(node))


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function (or module) body, not those of the functions defined in it."""
    pending = list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            pending.extend(ast.iter_child_nodes(node))


def _eager_constructions(sources: list[Path], root: Path = ROOT) -> list[str]:
    """Places where an error (a call of a name ending in "Error") gets a message translated
    now: a ``tr()`` call among its arguments (on any line of a multi-line call), a variable of
    the same function set from one, or the result of a helper (anywhere in ``sources``) that
    returns one.
    """
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sources}
    translating_helpers = {
        function.name for tree in trees.values() for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(isinstance(node, ast.Return) and node.value is not None
                and _translates(node.value) for node in _own_nodes(function))}
    found: list[tuple[str, int, str]] = []
    for path, tree in trees.items():
        scopes: list[ast.AST] = [tree, *(node for node in ast.walk(tree) if isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef))]
        for scope in scopes:
            nodes = list(_own_nodes(scope))
            translated_names = {
                target.id for node in nodes if isinstance(node, ast.Assign)
                and _translates(node.value) for target in node.targets
                if isinstance(target, ast.Name)}
            for call in nodes:
                if not (isinstance(call, ast.Call) and _name(call.func).endswith("Error")
                        and _name(call.func) not in _EXEMPT):
                    continue
                arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
                if any(_translates(argument)
                       or any(isinstance(sub, ast.Name) and sub.id in translated_names
                              for sub in ast.walk(argument))
                       or any(isinstance(sub, ast.Call) and _name(sub.func) in translating_helpers
                              for sub in ast.walk(argument))
                       for argument in arguments):
                    found.append((str(path.relative_to(root)), call.lineno, _name(call.func)))
    return [f"{place}:{line}: {name}" for place, line, name in sorted(found)]


def test_no_error_in_core_is_translated_when_it_is_raised() -> None:
    offenders = _eager_constructions(sorted((ROOT / "core").rglob("*.py")))
    assert not offenders, "raise with N_() and values instead:\n" + "\n".join(offenders)


def test_the_scan_finds_eager_translation_on_any_line(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('''
def reason(error):
    return tr("no answer within {seconds} s", seconds=4)

def lazy():
    raise SettingsError(N_("The settings file {path} is broken"), path="x")

def eager():
    raise SettingsError(
        "prefix",
        problem=tr("The settings file {path} is broken", path="x"))

def built_then_raised():
    text = tr("Cannot reach {url}", url="u")
    error = RemoteEngineError(text)
    raise error

def through_a_helper(error):
    raise HubUnreachableError(N_("Cannot reach {endpoint}: {reason}"), reason=reason(error))

def argparse_types():
    raise argparse.ArgumentTypeError(tr("not a number"))
''', encoding="utf-8")
    assert _eager_constructions([sample], tmp_path) == [
        "sample.py:9: SettingsError", "sample.py:15: RemoteEngineError",
        "sample.py:19: HubUnreachableError"]
