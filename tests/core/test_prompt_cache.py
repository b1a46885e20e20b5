"""The prompt cache: the store itself (RAM and disk, pure Python), then the engine end to end on
real llama-cpp-python: restored states give exactly the replies a full recompute gives, a hit skips
evaluation, and anything not made by this model with these settings is a miss."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mixtral_desk.core.engine import (
    ChatMessage,
    EngineHost,
    LoadOptions,
    ReplyStats,
    SamplingOptions,
)
from mixtral_desk.core.engine.context_shift import common_prefix
from mixtral_desk.core.engine.prompt_cache import (
    FORMAT_VERSION,
    MAGIC,
    SUFFIX,
    PromptCache,
    cache_key,
    clear_folder,
    conversation_tag,
    folder_usage,
    forget_tag,
    model_identity,
)
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.session.loading import LoadChoice, load_options
from mixtral_desk.core.settings import LoadDefaults
from tests.engine_replies import chat_reply

KEY = cache_key("model", {"kv_type": "f16"}, "test")


def state(n: int, fill: int = 1) -> bytes:
    return bytes([fill % 256]) * n


def written(cache: PromptCache) -> list[Path]:
    assert cache.flush(timeout=10)
    return cache.disk_files()


# --- the store ---------------------------------------------------------------------------------


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_ram_keeps_the_most_recently_used_within_its_budget() -> None:
    cache = PromptCache(KEY, None, ram_bytes=250)
    cache.put([1, 2], state(100))
    cache.put([3, 4], state(100))
    assert cache.lookup([1, 2, 9]) is not None  # [1, 2] is now the most recently used
    cache.put([5, 6], state(100))
    assert cache.ram_entries() == [(1, 2), (5, 6)] and cache.ram_used == 200
    cache.put([7], state(300))  # larger than the whole budget: not kept in RAM
    assert cache.ram_entries() == [(1, 2), (5, 6)]


def test_an_entry_that_extends_another_replaces_it(tmp_path: Path) -> None:
    cache = PromptCache(KEY, tmp_path / "pc", disk_bytes=1 << 20)
    cache.put([1, 2, 3], state(10))
    assert len(written(cache)) == 1
    cache.put([1, 2, 3, 4, 5], state(20))
    assert cache.ram_entries() == [(1, 2, 3, 4, 5)]
    assert len(written(cache)) == 1
    cache.put([1, 2, 7], state(10))  # a branch: both stay
    assert len(cache.ram_entries()) == 2 and len(written(cache)) == 2


def test_lookup_finds_the_longest_common_prefix_in_ram_then_on_disk(tmp_path: Path) -> None:
    cache = PromptCache(KEY, tmp_path / "pc", disk_bytes=1 << 20)
    cache.put([1, 2, 3, 4], state(8, 1))
    cache.put([1, 2, 9, 9, 9], state(8, 2))
    cache.put([5, 6], state(8, 3))
    written(cache)
    hit = cache.lookup([1, 2, 3, 7, 7])
    assert hit is not None and (hit.tokens, hit.prefix, hit.state, hit.source) == \
        ((1, 2, 3, 4), 3, state(8, 1), "ram")
    assert cache.lookup([1, 2, 3, 7], better_than=3) is None
    assert cache.lookup([8, 8]) is None
    short = cache.lookup([1, 2, 9, 9, 0], max_tokens=4)  # [1, 2, 9, 9, 9] would not fit
    assert short is not None and (short.tokens, short.prefix) == ((1, 2, 3, 4), 2)

    fresh = PromptCache(KEY, tmp_path / "pc", disk_bytes=1 << 20)  # a new process: disk only
    hit = fresh.lookup([1, 2, 9, 9, 0])
    assert hit is not None and (hit.tokens, hit.prefix, hit.state, hit.source) == \
        ((1, 2, 9, 9, 9), 4, state(8, 2), "disk")
    again = fresh.lookup([1, 2, 9, 9, 0])
    assert again is not None and again.source == "ram"


def test_another_key_sees_nothing(tmp_path: Path) -> None:
    PromptCache(KEY, tmp_path / "pc", disk_bytes=1 << 20).put([1, 2], state(8))
    other = PromptCache(cache_key("model", {"kv_type": "q8_0"}, "test"), tmp_path / "pc")
    assert other.lookup([1, 2, 3]) is None


def test_disk_keeps_the_most_recently_used_within_its_budget(tmp_path: Path) -> None:
    header = 160  # a little more than the header, the key and one token
    cache = PromptCache(KEY, tmp_path / "pc", disk_bytes=3 * (1000 + header))
    for n, tokens in enumerate(([1], [2], [3])):
        cache.put(tokens, state(1000, n))
    files = written(cache)
    assert len(files) == 3
    for path in files:  # [1] oldest, then [2], then [3]
        age = _tokens_of(path)[0]
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    assert cache.lookup([1]) is not None  # RAM
    fresh = PromptCache(KEY, tmp_path / "pc", disk_bytes=3 * (1000 + header))
    assert fresh.lookup([1]) is not None  # read from disk: [1] is now the most recent file
    fresh.put([4], state(1000, 4))
    assert {tuple(_tokens_of(path)) for path in written(fresh)} == {(1,), (3,), (4,)}


def test_a_conversations_entries_are_forgotten_in_ram_and_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "pc"
    cache = PromptCache(KEY, root, disk_bytes=1 << 20)
    other_model = PromptCache(cache_key("other", {}, "test"), root, disk_bytes=1 << 20)
    cache.put([1, 2, 3], state(64, 1), tag=conversation_tag("c7"))
    cache.put([1, 2, 9], state(64, 2), tag=conversation_tag("c7"))  # a branch of the same chat
    cache.put([4, 5], state(64, 3), tag=conversation_tag("c8"))
    cache.put([6], state(64, 4))  # an API request: no conversation
    other_model.put([1, 2, 3], state(64, 5), tag=conversation_tag("c7"))
    assert other_model.flush(timeout=10) and len(written(cache)) == 4

    assert cache.forget(conversation_tag("c7")) == 3  # both branches, and the other model's file
    assert cache.lookup([1, 2, 3]) is None and cache.lookup([1, 2, 9]) is None
    hit = cache.lookup([4, 5, 6])
    assert hit is not None and hit.prefix == 2
    assert {tuple(_tokens_of(p)) for p in written(cache)} == {(4, 5), (6,)}
    assert forget_tag(root, conversation_tag("c8")) == 1
    assert forget_tag(root, conversation_tag("c8")) == 0
    assert {tuple(_tokens_of(p)) for p in written(cache)} == {(6,)}


def test_folder_usage_and_clear(tmp_path: Path) -> None:
    root = tmp_path / "pc"
    assert folder_usage(root).files == 0  # no folder yet
    cache = PromptCache(KEY, root, disk_bytes=1 << 20)
    cache.put([1, 2, 3], state(1000, 1))
    cache.put([4, 5], state(1000, 2))
    other_model = PromptCache(cache_key("other", {}, "test"), root)
    other_model.put([9], state(10))
    assert cache.flush(timeout=10) and other_model.flush(timeout=10)
    (root / "notes.txt").write_text("not ours")
    usage = folder_usage(root)
    assert (usage.files, usage.tokens, usage.keys) == (3, 6, 2)
    assert usage.bytes > 2010
    assert clear_folder(root) == usage.bytes
    assert folder_usage(root).files == 0
    assert (root / "notes.txt").read_text() == "not ours"


def _tokens_of(path: Path) -> list[int]:
    raw = path.read_bytes()
    header = struct.Struct("<8sIIIIQIII32s")
    _, _, key_len, tag_len, n_tokens, *_ = header.unpack_from(raw)
    start = header.size + key_len + tag_len
    return list(struct.unpack_from(f"<{n_tokens}i", raw, start))


def _one_file(tmp_path: Path) -> tuple[PromptCache, Path]:
    cache = PromptCache(KEY, tmp_path / "pc", disk_bytes=1 << 20)
    cache.put([1, 2, 3], state(64, 5))
    (path,) = written(cache)
    return cache, path


BREAKAGE: dict[str, Callable[[bytes], bytes]] = {
    "zero-length": lambda raw: b"",
    "truncated": lambda raw: raw[:-10],
    "corrupt state": lambda raw: raw[:-1] + bytes([raw[-1] ^ 0xFF]),
    "corrupt token": lambda raw: raw[:-70] + bytes([raw[-70] ^ 0x01]) + raw[-69:],
    "padded": lambda raw: raw + b"\0",
    "foreign": lambda raw: b"GGUF" + raw[4:],
    "old format": lambda raw: raw[:8] + struct.pack("<I", FORMAT_VERSION + 1) + raw[12:],
}


@pytest.mark.parametrize("how", sorted(BREAKAGE))
def test_a_broken_file_is_ignored_and_removed(tmp_path: Path, how: str) -> None:
    _, path = _one_file(tmp_path)
    path.write_bytes(BREAKAGE[how](path.read_bytes()))
    fresh = PromptCache(KEY, tmp_path / "pc")
    assert fresh.lookup([1, 2, 3, 4]) is None
    assert not path.exists()


def test_stray_files_in_the_folder_are_removed(tmp_path: Path) -> None:
    cache, path = _one_file(tmp_path)
    stray = path.with_name("notes.txt")
    stray.write_text("hello")
    other_key = path.with_name("0" * 40 + SUFFIX)
    other_key.write_bytes(MAGIC + b"\0" * 40)
    assert cache.lookup([1, 2, 3, 4]) is not None
    assert PromptCache(KEY, tmp_path / "pc").lookup([1, 2, 3, 4]) is not None
    assert not stray.exists() and not other_key.exists() and path.exists()


def test_an_unwritable_folder_means_no_save_and_no_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = PromptCache(KEY, blocker / "prompt-cache", disk_bytes=1 << 20)
    cache.put([1, 2, 3], state(64))
    assert cache.flush(timeout=10) and cache.saved_files == 0
    assert cache.lookup([1, 2, 3, 4]) is not None  # RAM still serves it
    assert PromptCache(KEY, blocker / "prompt-cache").lookup([1, 2, 3, 4]) is None


def test_the_key_covers_the_model_the_settings_and_the_engine(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\1" * 5000)
    identity = model_identity(model)
    kv = {"kv_type": "f16", "flash_attn": False}
    key = cache_key(identity, kv, "0.3.36")
    assert key == cache_key(identity, dict(reversed(kv.items())), "0.3.36")
    assert key != cache_key(identity, {**kv, "kv_type": "q8_0"}, "0.3.36")
    assert key != cache_key(identity, {**kv, "flash_attn": True}, "0.3.36")
    assert key != cache_key(identity, kv, "0.3.37")
    stamp = model.stat().st_mtime_ns
    os.utime(model, ns=(1, 1))
    assert model_identity(model) != identity
    model.write_bytes(b"GGUF" + b"\2" * 5000)
    os.utime(model, ns=(stamp, stamp))  # the same size and mtime, other bytes
    assert model_identity(model) != identity
    with model.open("ab") as file:
        file.write(b"\0")
    os.utime(model, ns=(stamp, stamp))
    assert model_identity(model) != identity


def test_load_settings_fill_the_cache_folder_and_budget(data_home: DataPaths) -> None:
    choice = LoadChoice(Path("m.gguf"))
    options = load_options(LoadDefaults(), choice, n_ctx=512)
    assert options.prompt_cache_dir == data_home.cache_dir / "prompt-cache"
    assert options.prompt_cache_disk_bytes is None
    options = load_options(LoadDefaults(prompt_cache_gib=0.5), choice, n_ctx=512)
    assert options.prompt_cache_disk_bytes == 1 << 29
    assert load_options(LoadDefaults(prompt_cache_gib=0), choice, n_ctx=512) \
        .prompt_cache_dir is None
    with pytest.raises(ValueError):
        LoadDefaults(prompt_cache_gib=-1)


# --- the engine --------------------------------------------------------------------------------

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed")
GREEDY = SamplingOptions(temperature=0.0, max_tokens=24, ignore_eos=True)
STORY = "Tell me a long story about a cat who travels the world, and mind the details. " * 12
OTHER = "Explain how the tides work, in simple words, for a child of seven. " * 12


def reply(host: EngineHost, messages: Sequence[ChatMessage]) -> tuple[str, ReplyStats]:
    return chat_reply(host, messages, GREEDY)


def options(model: Path, cache: Path | None, **extra: object) -> LoadOptions:
    return LoadOptions(model_path=model, n_threads=2, n_ctx=2048, prompt_cache_dir=cache,
                       prompt_cache_disk_bytes=1 << 30, **extra)  # type: ignore[arg-type]


def conversations(first: str) -> tuple[list[ChatMessage], list[ChatMessage], list[ChatMessage]]:
    """The first turn; the second turn; a branch of the second (another last user message)."""
    one = [ChatMessage("user", STORY)]
    two = [*one, ChatMessage("assistant", first), ChatMessage("user", "And then what happened?")]
    branch = [*one, ChatMessage("assistant", first), ChatMessage("user", "Who was the cat?")]
    return one, two, branch


def exactness(model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    with EngineHost(tmp_path / "engine.log") as plain:
        plain.load(options(model, None))
        first, _ = reply(plain, [ChatMessage("user", STORY)])
        one, two, branch = conversations(first)
        expected = {}
        for name, messages in (("two", two), ("branch", branch)):
            plain.load(options(model, None))  # an empty context: a full recompute
            expected[name] = reply(plain, messages)
        # What llama-cpp-python's own prefix matching reuses going from `two` to `branch`.
        _, live_branch = reply(plain, branch)
        assert live_branch.cached_tokens == live_branch.prompt_tokens - 1
        plain.load(options(model, None))
        reply(plain, two)
        _, live_branch = reply(plain, branch)
        shared = live_branch.cached_tokens
        assert 0 < shared < live_branch.prompt_tokens - 1

    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(model, cache_dir))
        assert reply(host, one)[0] == first
        text, stats = reply(host, two)
        assert text == expected["two"][0] and stats.cached_tokens > 0  # the live context
        reply(host, [ChatMessage("user", OTHER)])  # switch to another conversation
        text, stats = reply(host, two)  # and back: restored from RAM
        assert text == expected["two"][0]
        assert stats.cached_tokens == stats.prompt_tokens - 1
        reply(host, [ChatMessage("user", OTHER)])
        text, stats = reply(host, branch)  # a branch: the parent's state, cut back
        assert text == expected["branch"][0]
        assert stats.cached_tokens == shared

    with EngineHost(tmp_path / "engine.log") as fresh:  # a new engine process: from disk
        fresh.load(options(model, cache_dir))
        for name, messages in (("two", two), ("branch", branch)):
            text, stats = reply(fresh, messages)
            assert text == expected[name][0]
            assert stats.cached_tokens == stats.prompt_tokens - 1
            fresh.load(options(model, cache_dir))  # nothing live: only the disk can help


@needs_llama
def test_restored_states_reply_exactly_like_a_full_recompute_tiny(tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    exactness(tiny_model, tmp_path)


@needs_llama
@pytest.mark.slow
def test_restored_states_reply_exactly_like_a_full_recompute_gemma(gemma_model: Path,
                                                                  tmp_path: Path) -> None:
    exactness(gemma_model, tmp_path / "pc")


@needs_llama
def test_a_hit_skips_the_prompt_and_misses_are_misses(tiny_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    model = tmp_path / "model.gguf"
    shutil.copyfile(tiny_model, model)
    story = [ChatMessage("user", STORY)]
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(model, cache_dir))
        text, cold = reply(host, story)
        assert cold.cached_tokens == 0
        host.load(options(model, cache_dir))
        again, warm = reply(host, story)
        assert again == text and warm.cached_tokens == warm.prompt_tokens - 1
        assert warm.time_to_first_token_s < cold.time_to_first_token_s

        host.load(options(model, cache_dir, flash_attn=True))  # another KV layout
        _, other_kv = reply(host, story)
        assert other_kv.cached_tokens == 0

        stamp = model.stat().st_mtime_ns
        os.utime(model, ns=(stamp + 10**9, stamp + 10**9))  # a changed model file
        host.load(options(model, cache_dir))
        _, touched = reply(host, story)
        assert touched.cached_tokens == 0

        with model.open("ab") as file:
            file.write(b"\0" * 64)
        host.load(options(model, cache_dir))
        _, grown = reply(host, story)
        assert grown.cached_tokens == 0


@needs_llama
def test_broken_cache_files_still_give_an_answer(tiny_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    story = [ChatMessage("user", STORY)]
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(tiny_model, cache_dir))
        text, _ = reply(host, story)
    files = sorted(cache_dir.rglob("*" + SUFFIX))
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(tiny_model, cache_dir))
        # A sound entry would give the template's first tokens, which the two prompts share.
        other, stats = reply(host, [ChatMessage("user", OTHER)])
        assert other and stats.completion_tokens > 0 and stats.cached_tokens == 0
    assert text and all(not path.exists() for path in files)


@needs_llama
@pytest.mark.slow
def test_another_kv_type_is_a_miss(gemma_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    story = [ChatMessage("user", STORY)]
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(gemma_model, cache_dir, flash_attn=True))
        text, _ = reply(host, story)
        host.load(options(gemma_model, cache_dir, kv_type="q8_0", flash_attn=True))
        _, quantized = reply(host, story)
        assert quantized.cached_tokens == 0
        host.load(options(gemma_model, cache_dir, flash_attn=True))
        again, hit = reply(host, story)
        assert again == text and hit.cached_tokens == hit.prompt_tokens - 1


@needs_llama
@pytest.mark.slow
def test_a_sliding_window_model_past_its_window_is_still_exact(gemma_model: Path,
                                                               tmp_path: Path) -> None:
    """Gemma 3 keeps only the last 512 positions in its sliding-window layers: a state that no
    longer holds the window before the prefix is not used, so the reply stays exact."""
    cache_dir = tmp_path / "prompt-cache"
    long_story = [ChatMessage("user", STORY * 3)]  # about 600 tokens with Gemma's tokenizer
    with EngineHost(tmp_path / "engine.log") as plain:
        plain.load(options(gemma_model, None))
        first, _ = reply(plain, long_story)
        two = [*long_story, ChatMessage("assistant", first), ChatMessage("user", "Go on.")]
        plain.load(options(gemma_model, None))
        expected, full = reply(plain, two)
        assert full.prompt_tokens > 512
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(gemma_model, cache_dir))
        reply(host, long_story)
        assert reply(host, two)[0] == expected  # the live context
        reply(host, [ChatMessage("user", OTHER)])
        assert reply(host, two)[0] == expected  # back from another conversation
    with EngineHost(tmp_path / "engine.log") as fresh:
        fresh.load(options(gemma_model, cache_dir))
        assert reply(fresh, two)[0] == expected  # after a restart


def test_a_full_disk_means_no_save_and_no_error(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (4 * 1024 * 1024 - 64 * 1024))
    cache = PromptCache(KEY, small_disk / "prompt-cache", disk_bytes=1 << 30)
    cache.put([1, 2, 3], state(256 * 1024))
    assert cache.flush(timeout=10) and cache.saved_files == 0
    assert not [p for p in (small_disk / "prompt-cache").rglob("*") if p.is_file()]
    assert cache.lookup([1, 2, 3, 4]) is not None  # RAM still serves it


@needs_llama
def test_the_engine_chats_on_with_a_full_disk(tiny_model: Path, small_disk: Path,
                                              tmp_path: Path) -> None:
    (small_disk / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 64 * 1024))
    cache_dir = small_disk / "prompt-cache"
    with EngineHost(tmp_path / "engine.log") as host:
        host.load(options(tiny_model, cache_dir))
        text, _ = reply(host, [ChatMessage("user", STORY)])
        reply(host, [ChatMessage("user", OTHER)])
        again, stats = reply(host, [ChatMessage("user", STORY)])  # from RAM all the same
        assert again == text and stats.cached_tokens == stats.prompt_tokens - 1
    assert not [p for p in cache_dir.rglob("*") if p.is_file()]
