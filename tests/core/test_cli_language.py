"""The CLI's language and Offline mode: chosen from the settings file or the environment before
the parser is built; errors keep an English text for programs (the API server) and the log."""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixtral_desk.core import i18n, network
from mixtral_desk.core.cli import main
from mixtral_desk.core.early_settings import read_early_settings
from mixtral_desk.core.engine import EngineHost, LoadOptions
from mixtral_desk.core.engine.worker import GPU_ADVICE_SOME
from mixtral_desk.core.errors import (
    ContextOverflowError,
    DeskError,
    GGUFError,
    GPUOffloadUnavailableError,
    NotFoundError,
    UserText,
)
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.server.errors import from_exception
from tests.core.test_cli import assert_clean_failure, cli

# Messages these tests expect in Chinese; they are in core/locale/zh_CN/LC_MESSAGES/mixtral_desk.po.
NO_CONVERSATION = "No conversation with id {id}"
CLI_DESCRIPTION = "Run Mixtral and other GGUF models on your own machine, offline."


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test ends in English, with Offline mode as it was, whatever it switched."""
    monkeypatch.setenv("LANGUAGE", "en")
    monkeypatch.setattr(network, "_offline_override", network._offline_override)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))
    i18n.set_language("en")
    yield
    i18n.set_language("en")


def chinese(message: str, **values: object) -> str:
    """``message`` as the compiled zh_CN catalog has it (failing when it is not translated)."""
    try:
        assert i18n.set_language("zh_CN") == "zh_CN", "the zh_CN catalog is not compiled"
        text = i18n.tr(message, **values)
    finally:
        i18n.set_language("en")
    assert text != message.format(**values), f"{message!r} has no zh_CN translation"
    return text


def write_settings(paths: DataPaths, **sections: dict[str, object]) -> None:
    paths.settings_file.parent.mkdir(parents=True, exist_ok=True)
    paths.settings_file.write_text(json.dumps(sections), encoding="utf-8")


# --- language --------------------------------------------------------------------------------

def test_the_cli_speaks_chinese_under_a_chinese_locale() -> None:
    expected = chinese(NO_CONVERSATION, id="01NOSUCHID")
    result = cli("conversations", "show", "01NOSUCHID", language="zh_CN")
    assert_clean_failure(result, expected)
    assert "No conversation" not in result.stderr
    helped = cli("--help", language="zh_CN")
    assert helped.returncode == 0 and chinese(CLI_DESCRIPTION) in helped.stdout


def test_the_settings_language_wins_over_the_locale(data_home: DataPaths) -> None:
    write_settings(data_home, interface={"language": "en"})
    result = cli("conversations", "show", "01NOSUCHID", language="zh_CN")
    assert_clean_failure(result, "No conversation with id 01NOSUCHID")
    write_settings(data_home, interface={"language": "zh_CN"})
    result = cli("conversations", "show", "01NOSUCHID", language="en")
    assert_clean_failure(result, chinese(NO_CONVERSATION, id="01NOSUCHID"))


def test_json_output_is_never_translated(data_home: DataPaths) -> None:
    write_settings(data_home, interface={"language": "zh_CN"})
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["fit"] in ("fits-gpu", "fits-ram", "tight", "too-large")


@pytest.mark.parametrize(("content", "expected"), [
    ('{"interface": {"language": "zh_CN"}, "network": {"offline": true}}', ("zh_CN", True)),
    ('{"interface": {"language": "en", "theme": "dark"}}', ("en", False)),
    ('{"network": {"offline": "yes"}}', ("system", False)),
    ('{"interface": "zh_CN"}', ("system", False)),
    ("[1, 2]", ("system", False)),
    ("{not json", ("system", False)),
    (None, ("system", False)),
])
def test_the_settings_file_is_read_cheaply_and_forgivingly(tmp_path: Path, content: str | None,
                                                           expected: tuple[str, bool]) -> None:
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    early = read_early_settings(path)
    assert (early.language, early.offline) == expected


def test_main_sets_the_language_before_it_builds_the_parser(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LANGUAGE", "zh_CN")
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    assert i18n.current_language() == "zh_CN"
    assert chinese(CLI_DESCRIPTION) in capsys.readouterr().out


# --- offline ---------------------------------------------------------------------------------

def test_the_offline_flag_turns_the_network_off(capsys: pytest.CaptureFixture[str]) -> None:
    network.set_offline(False)
    assert main(["--offline", "conversations", "list", "--json"]) == 0
    assert network.is_offline()
    assert json.loads(capsys.readouterr().out) == []


def test_the_offline_setting_turns_the_network_off(data_home: DataPaths) -> None:
    network.set_offline(False)
    assert main(["conversations", "list", "--json"]) == 0
    assert not network.is_offline()
    write_settings(data_home, network={"offline": True})
    assert main(["conversations", "list", "--json"]) == 0
    assert network.is_offline()


# --- translatable errors ---------------------------------------------------------------------

def test_an_error_is_translated_when_shown_and_keeps_its_english() -> None:
    error = NotFoundError(N_(NO_CONVERSATION), id="abc")
    assert str(error) == error.english == "No conversation with id abc"
    assert error.args == ("No conversation with id abc",) and isinstance(error, KeyError)
    i18n.set_language("zh_CN")
    assert str(error) == chinese(NO_CONVERSATION, id="abc") != error.english
    assert error.english == "No conversation with id abc"


def test_errors_survive_pickling_with_their_fields() -> None:
    error = GGUFError("/m/x.gguf", N_("part {number} of {count} is missing: {name} (expected next "
                                      "to this file)"), number=2, count=3, name="x-2.gguf")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is GGUFError and copy.path == Path("/m/x.gguf")
    assert str(copy) == str(error) == ("/m/x.gguf: part 2 of 3 is missing: x-2.gguf (expected "
                                       "next to this file)")
    assert copy.problem == "part 2 of 3 is missing: x-2.gguf (expected next to this file)"


def test_a_finished_message_passes_through() -> None:
    assert str(DeskError("100% {done}")) == "100% {done}"
    nested = UserText(N_("{path}: {problem}"), path="a", problem=UserText(N_("not an SQLite file")))
    assert nested.english() == str(nested) == "a: not an SQLite file"


def test_api_answers_stay_english_in_a_chinese_app() -> None:
    overflow = ContextOverflowError(
        N_("The prompt needs {prompt} tokens but the context holds {context}; shorten it or load "
           "the model with a larger context."), prompt=900, context=512)
    i18n.set_language("zh_CN")
    answer = from_exception(overflow)
    assert answer.message == ("The prompt needs 900 tokens but the context holds 512; shorten "
                              "it or load the model with a larger context.")
    assert answer.code == "context_length_exceeded"


# --- the engine process -----------------------------------------------------------------------

def test_the_engine_process_speaks_the_hosts_language(tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    expected = chinese(GPU_ADVICE_SOME, count=5)
    i18n.set_language("zh_CN")
    with EngineHost(log) as host:
        if host.backend_info().gpu_offload:
            pytest.skip("this llama.cpp build can offload to a GPU")
        with pytest.raises(GPUOffloadUnavailableError) as caught:
            host.load(LoadOptions(model_path=tiny_model, n_gpu_layers=5))
    assert "language zh_CN" in log.read_text(encoding="utf-8"), "the catalog did not load there"
    assert str(caught.value) == expected
    assert caught.value.english == GPU_ADVICE_SOME.format(count=5)


def test_the_theme_is_read_early_too(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"interface": {"theme": "dark"}}', encoding="utf-8")
    assert read_early_settings(path).theme == "dark"
    path.write_text('{"interface": {"theme": 3}}', encoding="utf-8")
    assert read_early_settings(path).theme == "system"
