"""The command line, end to end: real processes, real engine, real SQLite, generated models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mixtral_desk import __version__
from mixtral_desk.core.paths import DataPaths


def cli(*args: str | Path, timeout: float = 120,
        language: str = "en") -> subprocess.CompletedProcess[str]:
    """Run ``python -m mixtral_desk ARGS`` in the test's data home, with ``LANGUAGE`` set to
    ``language`` (the CLI follows it unless the settings file names a language)."""
    return subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANGUAGE": language})


def cli_json(*args: str | Path) -> Any:
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A user error: non-zero exit, one line on stderr that says what is wrong, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mixtral-desk {__version__}"


def test_doctor_reports_backend_hardware_and_paths(data_home: DataPaths) -> None:
    report = cli_json("doctor")
    assert "CPU" in report["llama_cpp"]["backends"]
    assert report["llama_cpp"]["gpu_offload"] is False  # this machine's build is CPU-only
    assert report["hardware"]["ram_total"] > 1 << 30
    assert report["paths"]["database"] == str(data_home.database)
    text = cli("doctor")
    assert text.returncode == 0
    assert "GPU offload: no" in text.stdout


def test_models_lists_the_mixtral_quants() -> None:
    rows = cli_json("models")
    ids = {row["id"] for row in rows}
    for quant in ("q2_k", "q3_k_m", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q8_0"):
        assert f"mixtral-8x7b-instruct-{quant}" in ids
    assert all(row["downloaded"] is False for row in rows)


def test_inspect_reports_the_facts(tiny_model: Path) -> None:
    facts = cli_json("inspect", tiny_model)
    assert facts["architecture"] == "llama"
    assert facts["expert_count"] == 4
    assert facts["n_layers"] == 2
    assert cli("inspect", tiny_model).stdout.strip()


def test_inspect_a_web_page_saved_as_model(tmp_path: Path) -> None:
    page = tmp_path / "model.gguf"
    page.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    assert_clean_failure(cli("inspect", page), str(page))


def test_chat_one_turn_streams_and_is_saved(tiny_model: Path) -> None:
    result = cli("chat", "--model", tiny_model, "--prompt", "Hello there", "--system",
                 "Be brief.", "--max-tokens", "12", "--temperature", "0", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "no reply was printed"
    assert "tok/s" in result.stderr

    [conversation] = cli_json("conversations", "list")
    assert conversation["title"] == "Hello there"
    shown = cli_json("conversations", "show", conversation["id"])
    roles = [m["role"] for m in shown["messages"]]
    assert roles == ["user", "assistant"]
    assert shown["conversation"]["system_prompt"] == "Be brief."
    assert shown["messages"][1]["status"] == "complete"
    assert shown["messages"][1]["content"].strip() == result.stdout.strip()

    again = cli("chat", "--model", tiny_model, "--conversation", conversation["id"],
                "--prompt", "And again", "--max-tokens", "4")
    assert again.returncode == 0, again.stderr
    shown = cli_json("conversations", "show", conversation["id"])
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"] * 2


def test_complete_without_a_template(tiny_model_no_template: Path) -> None:
    result = cli("complete", "--model", tiny_model_no_template, "--prompt", "Once upon",
                 "--max-tokens", "8", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_user_mistakes_get_one_clear_line(tiny_model: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    assert_clean_failure(cli("chat", "--model", missing, "--prompt", "hi"), "not found",
                         str(missing))
    assert_clean_failure(cli("conversations", "show", "01NOSUCHID"), "01NOSUCHID")
    assert_clean_failure(cli("chat", "--model", tiny_model, "--conversation", "01NOSUCHID",
                             "--prompt", "hi"), "01NOSUCHID")
    assert_clean_failure(cli("chat", "--model", tiny_model, "--gpu-layers", "5", "--prompt",
                             "hi"), "GPU", "CMAKE_ARGS")
    truncated = tmp_path / "half.gguf"
    truncated.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    assert_clean_failure(cli("chat", "--model", truncated, "--prompt", "hi"), str(truncated))


def test_conversations_search_export_import_delete(tiny_model: Path, tmp_path: Path) -> None:
    chat = cli("chat", "--model", tiny_model, "--prompt", "Tell me about zeppelins",
               "--max-tokens", "4")
    assert chat.returncode == 0, chat.stderr
    [conversation] = cli_json("conversations", "list")

    hits = cli_json("conversations", "search", "zeppelins")
    assert hits and hits[0]["conversation_id"] == conversation["id"]
    assert "zeppelin" in hits[0]["snippet"].lower()

    exported = tmp_path / "all.json"
    result = cli("conversations", "export", "--all", "--format", "json", "-o", exported)
    assert result.returncode == 0, result.stderr
    markdown = cli("conversations", "export", conversation["id"], "--format", "md")
    assert "Tell me about zeppelins" in markdown.stdout

    deleted = cli("conversations", "delete", conversation["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert cli_json("conversations", "list") == []
    assert cli_json("conversations", "search", "zeppelins") == []

    imported = cli("conversations", "import", exported)
    assert imported.returncode == 0, imported.stderr
    [restored] = cli_json("conversations", "list")
    assert restored["title"] == conversation["title"]
    assert cli_json("conversations", "search", "zeppelins")

    not_json = tmp_path / "notes.txt"
    not_json.write_text("hello")
    assert_clean_failure(cli("conversations", "import", not_json), str(not_json))


@pytest.mark.slow
def test_real_weights_complete_the_eiffel_tower(gemma_model: Path) -> None:
    result = cli("complete", "--model", gemma_model, "--prompt",
                 "The Eiffel Tower is located in the city of", "--max-tokens", "8",
                 "--temperature", "0", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_self_test_runs_in_a_temporary_folder(data_home: DataPaths) -> None:
    result = cli("--self-test")
    assert result.returncode == 0, result.stderr
    assert "self-test passed" in result.stdout
    assert "backend: CPU" in result.stdout
    assert not data_home.database.exists(), "the self-test touched the user's data folder"


@pytest.mark.parametrize("command", ["chat", "complete"])
def test_a_sampling_value_out_of_range_fails_before_anything_happens(
        command: str, tiny_model: Path) -> None:
    result = cli(command, "--model", tiny_model, "--prompt", "hi", "--seed", "-1")
    assert_clean_failure(result, "seed", "-1")
    assert cli_json("conversations", "list") == []  # no empty conversation is left behind
