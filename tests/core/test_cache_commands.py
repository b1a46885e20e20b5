"""The prompt cache where people see it: ``cache``, ``cache clear`` and ``doctor`` on a real
folder of real entry files, deleting a conversation (its states go, the others' stay), and the
reply figure that says how much of a prompt came from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_desk.core import i18n
from mixtral_desk.core.engine.prompt_cache import (
    PromptCache,
    cache_key,
    conversation_tag,
    folder_usage,
)
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.reply_figures import prompt_figure, stored_prompt_figure
from mixtral_desk.core.session import CacheFolderError, cache_report, clear_cache
from mixtral_desk.core.session.loading import prompt_cache_dir
from mixtral_desk.core.settings import LoadDefaults, Settings, save_settings
from mixtral_desk.core.store import Store
from mixtral_desk.core.units import format_bytes
from tests.cache_files import files_of
from tests.core.test_cli import assert_clean_failure, cli, cli_json

KEY = cache_key("model", {"kv_type": "f16"}, "test")
OTHER_KEY = cache_key("other-model", {"kv_type": "q8_0"}, "test")


def fill(tags: dict[str | None, int], key: str = KEY) -> PromptCache:
    """Write entries into the data home's prompt cache folder: ``count`` entries of 1000 bytes of
    state for each tag (None: an entry without a conversation, as the API server's)."""
    cache = PromptCache(key, prompt_cache_dir(), disk_bytes=1 << 30)
    start = 1
    for tag, count in tags.items():
        for _ in range(count):
            cache.put([start, start + 1, start + 2], bytes([start % 256]) * 1000, tag=tag)
            start += 10
    assert cache.flush(timeout=10)
    return cache


def test_cache_shows_the_folder_what_it_holds_and_the_budget(data_home: DataPaths) -> None:
    fill({conversation_tag("a"): 2, None: 1})
    fill({conversation_tag("b"): 1}, key=OTHER_KEY)
    report = cli_json("cache")
    assert report["folder"] == str(data_home.cache_dir / "prompt-cache")
    assert (report["entries"], report["tokens"], report["models"]) == (4, 12, 2)
    assert report["bytes"] == folder_usage(prompt_cache_dir()).bytes > 4000
    assert report["budget"]["mode"] == "automatic" and report["budget"]["setting_gib"] is None
    assert 0 < report["budget"]["bytes"] <= 8 << 30

    text = cli("cache")
    assert text.returncode == 0, text.stderr
    assert str(prompt_cache_dir()) in text.stdout
    assert "4 saved states" in text.stdout and "12 tokens" in text.stdout
    assert "automatic" in text.stdout

    save_settings(Settings(load=LoadDefaults(prompt_cache_gib=2.5)))
    assert cli_json("cache")["budget"] == {"mode": "setting", "bytes": int(2.5 * (1 << 30)),
                                          "setting_gib": 2.5}
    assert "2.5 GiB (load.prompt_cache_gib)" in cli("cache").stdout
    save_settings(Settings(load=LoadDefaults(prompt_cache_gib=0)))
    assert cli_json("cache")["budget"] == {"mode": "off", "bytes": 0, "setting_gib": 0.0}
    assert "budget off" in " ".join(cli("cache").stdout.split())


def test_cache_clear_removes_every_entry_and_says_what_it_freed(data_home: DataPaths) -> None:
    fill({conversation_tag("a"): 2})
    fill({None: 1}, key=OTHER_KEY)
    (prompt_cache_dir() / "notes.txt").write_text("not ours")
    size = folder_usage(prompt_cache_dir()).bytes
    result = cli("cache", "clear")
    assert result.returncode == 0, result.stderr
    assert f"{format_bytes(size)} freed" in result.stdout
    assert folder_usage(prompt_cache_dir()).files == 0
    assert (prompt_cache_dir() / "notes.txt").read_text() == "not ours"
    again = cli("cache", "clear")
    assert again.returncode == 0 and "0 B freed" in again.stdout
    assert "RAM until it is unloaded" in " ".join(cli("cache", "clear", "--help").stdout.split())


def test_an_unreadable_cache_folder_is_one_clear_line(data_home: DataPaths) -> None:
    folder = prompt_cache_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the folder should be")
    for args in (("cache",), ("cache", "--json"), ("cache", "clear")):
        assert_clean_failure(cli(*args), "Cannot read the prompt cache folder", str(folder))
    with pytest.raises(CacheFolderError, match="Not a directory"):
        cache_report(LoadDefaults())
    with pytest.raises(OSError):  # also the builtin it resembles
        clear_cache()
    doctor = cli_json("doctor")  # doctor reports it and goes on
    assert "Cannot read the prompt cache folder" in doctor["prompt_cache"]["error"]


def test_a_missing_folder_is_an_empty_cache(data_home: DataPaths) -> None:
    report = cache_report(LoadDefaults(prompt_cache_gib=1))
    assert (report.entries, report.bytes, report.models) == (0, 0, 0)
    assert report.budget.bytes == 1 << 30
    assert clear_cache() == 0


def test_doctor_shows_the_prompt_cache(data_home: DataPaths) -> None:
    fill({conversation_tag("a"): 3})
    report = cli_json("doctor")
    assert report["paths"]["prompt_cache"] == str(prompt_cache_dir())
    cache = report["prompt_cache"]
    assert (cache["entries"], cache["tokens"], cache["models"]) == (3, 9, 1)
    assert cache["budget"]["mode"] == "automatic"
    text = cli("doctor").stdout
    assert "Prompt cache:" in text and "3 saved states" in text
    assert f"prompt cache {prompt_cache_dir()}" in text


def test_deleting_a_conversation_deletes_its_cached_states(data_home: DataPaths) -> None:
    with Store.open(data_home.database) as store:
        doomed = store.create_conversation("Doomed")
        kept = store.create_conversation("Kept")
    fill({conversation_tag(doomed.id): 2, conversation_tag(kept.id): 1, None: 1})
    fill({conversation_tag(doomed.id): 1}, key=OTHER_KEY)  # made by another model
    assert len(files_of(prompt_cache_dir(), doomed.id)) == 3

    result = cli("conversations", "delete", doomed.id)
    assert result.returncode == 0, result.stderr
    assert files_of(prompt_cache_dir(), doomed.id) == []
    assert len(files_of(prompt_cache_dir(), kept.id)) == 1
    assert folder_usage(prompt_cache_dir()).files == 2  # the kept chat's and the untagged one
    assert [c["id"] for c in cli_json("conversations", "list")] == [kept.id]
    assert_clean_failure(cli("conversations", "delete", doomed.id), doomed.id)
    assert folder_usage(prompt_cache_dir()).files == 2


def test_the_reply_figure_says_what_came_from_the_cache() -> None:
    assert prompt_figure(2431, 2400) == "prompt 2,431 tokens, 2,400 from cache"
    assert prompt_figure(1, 1) == "prompt 1 token, 1 from cache"
    assert prompt_figure(2431, 0) == ""
    assert stored_prompt_figure({"prompt_tokens": 40, "cached_tokens": 39}) == \
        "prompt 40 tokens, 39 from cache"
    assert stored_prompt_figure({"completion_tokens": 4}) == ""  # an older reply
    assert stored_prompt_figure(None) == ""
    assert i18n.set_language("zh_CN") == "zh_CN", "the zh_CN catalog is not compiled"
    assert prompt_figure(2431, 2400) == "提示词 2,431 个 token，其中 2,400 个来自缓存"


def test_chat_prints_the_cached_part_of_the_prompt(tiny_model: Path) -> None:
    first = cli("chat", "--model", tiny_model, "--prompt", "Tell me about zeppelins",
                "--max-tokens", "4")
    assert first.returncode == 0, first.stderr
    assert "from cache" not in first.stderr
    [conversation] = cli_json("conversations", "list")
    again = cli("chat", "--model", tiny_model, "--conversation", conversation["id"], "--prompt",
                "And airships?", "--max-tokens", "4")
    assert again.returncode == 0, again.stderr
    # A new process: the first turn's state comes back from the disk.
    assert "from cache" in again.stderr, again.stderr
    stored = json.loads(cli("conversations", "show", conversation["id"], "--json").stdout)
    stats = stored["messages"][-1]["stats"]
    assert 0 < stats["cached_tokens"] < stats["prompt_tokens"]
