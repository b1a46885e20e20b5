"""The engine end to end: a real engine process running real llama-cpp-python on generated models.

One host serves most tests of this module (the tiny model loads in milliseconds); tests that crash
or kill the engine get their own.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    EngineHost,
    LoadOptions,
    ModelInfo,
    ReplyStats,
    SamplingOptions,
    TokenEvent,
    probe_backend,
)
from mixtral_desk.core.engine.host import DEBUG_ENV, ReplyStream
from mixtral_desk.core.errors import (
    ContextOverflowError,
    EngineBusyError,
    EngineCrashedError,
    EngineError,
    GPUOffloadUnavailableError,
    ModelFileNotFoundError,
    ModelLoadError,
)
from mixtral_desk.core.gguf.synthetic import MIXTRAL_CHAT_TEMPLATE
from mixtral_desk.core.paths import DataPaths

if importlib.util.find_spec("llama_cpp") is None:  # not imported here: the host never does
    pytest.skip("llama-cpp-python is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
FIXED = SamplingOptions(temperature=0.8, seed=7, max_tokens=16, ignore_eos=True)
ENDLESS = SamplingOptions(temperature=1.0, seed=3, max_tokens=None, ignore_eos=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineHost]:
    with EngineHost(tmp_path_factory.mktemp("engine-logs") / "engine.log") as engine:
        yield engine


def ensure_loaded(host: EngineHost, model: Path, **options: object) -> ModelInfo:
    """Load ``model`` with ``options`` unless exactly that is loaded already."""
    wanted = LoadOptions(model_path=model, n_threads=2, **options)  # type: ignore[arg-type]
    if getattr(host, "_test_loaded", None) != wanted or host.model_info is None:
        host.load(wanted)
        host._test_loaded = wanted  # type: ignore[attr-defined]
    assert host.model_info is not None
    return host.model_info


def collect(stream: Iterator[TokenEvent | DoneEvent]) -> tuple[str, ReplyStats]:
    text = []
    for event in stream:
        if isinstance(event, TokenEvent):
            text.append(event.text)
        else:
            return "".join(text), event.stats
    raise AssertionError("the stream ended without a DoneEvent")


def first_token(stream: ReplyStream) -> str:
    event = next(stream)
    assert isinstance(event, TokenEvent)
    return event.text


# --- loading -----------------------------------------------------------------------------------


def test_load_reports_model_info_and_progress(host: EngineHost, tiny_model: Path) -> None:
    progress: list[float] = []
    info = host.load(LoadOptions(model_path=tiny_model, n_ctx=1024, n_threads=2), progress.append)
    host._test_loaded = None  # type: ignore[attr-defined]
    assert info.path == str(tiny_model)
    assert (info.n_ctx, info.n_ctx_train, info.n_layers) == (1024, 4096, 2)
    assert info.template_source == "model" and info.chat_template == MIXTRAL_CHAT_TEMPLATE
    assert info.n_gpu_layers == 0 and info.overridden_tensors == 0
    assert info.backend.backends[-1] == "CPU" and not info.backend.gpu_offload
    assert 0 < info.load_seconds < 30
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    assert host.model_info == info and host.is_alive and host.pid is not None


def test_a_template_that_fails_when_rendering_is_reported_as_broken(
        host: EngineHost, models_dir: Path) -> None:
    from mixtral_desk.core.gguf.synthetic import TINY, write_synthetic_model

    broken = write_synthetic_model(models_dir / "tiny-broken-template.gguf", TINY,
                                   chat_template="{{ raise_exception('this template is broken') }}")
    info = ensure_loaded(host, broken)
    assert info.template_source == "broken"  # not "fallback": the model has a template
    _text, stats = collect(host.chat([ChatMessage("user", "Hi")], FIXED))
    assert stats.completion_tokens > 0


def test_model_without_template_uses_the_fallback(host: EngineHost,
                                                  tiny_model_no_template: Path) -> None:
    info = ensure_loaded(host, tiny_model_no_template)
    assert info.template_source == "fallback" and info.chat_template is None
    text, stats = collect(host.chat([ChatMessage("system", "S"), ChatMessage("user", "Hi")], FIXED))
    assert stats.completion_tokens > 0 and "### User:" not in text


def test_engine_log_gets_llama_cpp_lines(tiny_model: Path, data_home: DataPaths) -> None:
    with EngineHost() as engine:
        engine.load(LoadOptions(model_path=tiny_model, n_ctx=256))
    log = data_home.engine_log
    assert log.parent == data_home.log_dir and log.is_file()
    text = log.read_text()
    assert "llama_model_loader" in text and "DEBUG" in text and "engine started" in text


def test_missing_model_file(host: EngineHost, tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFoundError) as caught:
        host.load(LoadOptions(model_path=tmp_path / "nope.gguf"))
    assert "nope.gguf" in str(caught.value) and isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_bad_model_file_is_a_load_error(host: EngineHost, tiny_model: Path, tmp_path: Path,
                                        kind: str) -> None:
    bad = tmp_path / f"{kind}.gguf"
    if kind == "garbage":
        bad.write_bytes(b"this is not a model\n" * 1000)
    else:
        bad.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as caught:
        host.load(LoadOptions(model_path=bad))
    assert bad.name in str(caught.value)
    assert host.is_alive and host.model_info is None
    ensure_loaded(host, tiny_model)  # the same engine carries on


def test_gpu_layers_without_gpu_support(host: EngineHost, tiny_model: Path) -> None:
    with pytest.raises(GPUOffloadUnavailableError) as caught:
        host.load(LoadOptions(model_path=tiny_model, n_gpu_layers=5))
    message = str(caught.value)
    assert "no GPU support" in message and 'CMAKE_ARGS="-DGGML_CUDA=on"' in message
    assert "--force-reinstall --no-cache-dir" in message and "-DGGML_METAL=on" in message


def test_cpu_moe_overrides_expert_tensors(tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    with EngineHost(log) as engine:
        info = engine.load(LoadOptions(model_path=tiny_model, n_cpu_moe=2, n_ctx=256))
        assert info.overridden_tensors == 6
        _, stats = collect(engine.chat([ChatMessage("user", "Hi")], FIXED))
        assert stats.completion_tokens == 16
    lines = [ln for ln in log.read_text().splitlines() if "buffer type overridden to CPU" in ln]
    assert len(lines) == 6
    assert {ln.split("tensor ")[1].split(" ")[0] for ln in lines} == {
        f"blk.{i}.ffn_{part}_exps.weight" for i in (0, 1) for part in ("gate", "up", "down")}


def test_probe_backend(tmp_path: Path) -> None:
    info = probe_backend(tmp_path / "engine.log")
    assert "CPU" in info.backends and not info.gpu_offload
    assert info.llama_cpp_version.count(".") >= 2 and "CPU" in info.system_info
    assert any(d.startswith("CPU") for d in info.devices)


# --- generating --------------------------------------------------------------------------------


def test_chat_streams_tokens_and_stats_add_up(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    events = list(host.chat([ChatMessage("user", "Hello there")], FIXED))
    assert all(isinstance(e, TokenEvent) for e in events[:-1]) and len(events) > 2
    done = events[-1]
    assert isinstance(done, DoneEvent)
    stats = done.stats
    assert stats.completion_tokens == 16 and stats.finish_reason == "length"
    # "<s>[INST] Hello there [/INST]": BOS + ~20 byte/word tokens
    assert 10 < stats.prompt_tokens < 40 and stats.dropped_messages == 0
    assert 0 < stats.time_to_first_token_s <= stats.total_seconds
    assert stats.decode_tokens_per_s > 0
    # a fixed seed gives the same reply again
    again = list(host.chat([ChatMessage("user", "Hello there")], FIXED))
    assert [e for e in again if isinstance(e, TokenEvent)] == events[:-1]


def test_system_prompt_is_merged_into_the_first_user_turn(host: EngineHost,
                                                          tiny_model: Path) -> None:
    info = ensure_loaded(host, tiny_model)
    assert info.template_source == "model"
    text, stats = collect(host.chat([ChatMessage("system", "Be brief."),
                                     ChatMessage("user", "Hi")], FIXED))
    merged_text, merged_stats = collect(host.chat([ChatMessage("user", "Be brief.\n\nHi")],
                                                  FIXED))
    # the same prompt → the same prompt tokens, and with the same seed the same text
    assert (text, stats.prompt_tokens) == (merged_text, merged_stats.prompt_tokens)


def test_complete_raw_prompt(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    text, stats = collect(host.complete("The quick brown fox",
                                        SamplingOptions(temperature=0, max_tokens=8,
                                                        ignore_eos=True)))
    assert stats.completion_tokens == 8 and stats.finish_reason == "length"
    # BOS + byte-fallback pieces ("▁" alone is 3 byte tokens in this vocabulary)
    assert 20 < stats.prompt_tokens < 40
    assert isinstance(text, str)


def test_stop_strings_end_the_reply(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    sampling = SamplingOptions(temperature=0, max_tokens=24, ignore_eos=True)
    text, _ = collect(host.complete("abc", sampling))
    assert len(text) > 4
    stop = text[2:4]
    cut, stats = collect(host.complete("abc", sampling.model_copy(update={"stop": [stop]})))
    assert stop not in cut and text.startswith(cut) and stats.finish_reason == "stop"


def test_stop_cancels_within_100_ms(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    stream = host.chat([ChatMessage("user", "Tell me a long story")], ENDLESS)
    first_token(stream)
    stopped_at: list[float] = []

    def press_stop() -> None:
        time.sleep(0.05)
        stopped_at.append(time.perf_counter())
        host.stop()

    threading.Thread(target=press_stop).start()
    done = None
    for event in stream:
        if isinstance(event, DoneEvent):
            done = event
    ended = time.perf_counter()
    assert done is not None and done.stats.finish_reason == "cancelled"
    assert ended - stopped_at[0] < 0.1
    assert done.stats.completion_tokens > 1
    _, stats = collect(host.chat([ChatMessage("user", "Hi")], FIXED))  # not busy any more
    assert stats.finish_reason == "length"


def test_stop_during_a_long_prompt_aborts_llama_decode(host: EngineHost,
                                                       tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model, n_ctx=4096)  # ~4000 prompt tokens take seconds here
    collect(host.complete("warm up", SamplingOptions(max_tokens=1)))
    stream = host.complete("x" * 4000, SamplingOptions(max_tokens=1, ignore_eos=True))
    threading.Timer(0.1, host.stop).start()
    _, stats = collect(stream)
    assert stats.finish_reason == "cancelled" and stats.completion_tokens == 0
    started = time.perf_counter()
    _, stats = collect(host.complete("x", SamplingOptions(max_tokens=1)))
    # the engine was free at once: llama_decode was aborted, not run to its end
    assert time.perf_counter() - started < 0.5


def test_engine_started_from_a_short_lived_thread_survives_it(tiny_model: Path,
                                                              tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG follows the creating *thread*; the host must not set it from one.
    with EngineHost(tmp_path / "engine.log") as engine:
        loader = threading.Thread(target=engine.load,
                                  args=(LoadOptions(model_path=tiny_model, n_ctx=256),))
        loader.start()
        loader.join()
        time.sleep(0.3)
        assert engine.is_alive and engine.model_info is not None
        _, stats = collect(engine.chat([ChatMessage("user", "Hi")], FIXED))
        assert stats.completion_tokens == 16


def test_second_request_while_generating_is_busy(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    stream = host.chat([ChatMessage("user", "Hi")], ENDLESS)
    first_token(stream)
    with pytest.raises(EngineBusyError):
        host.chat([ChatMessage("user", "Hi")], FIXED)
    with pytest.raises(EngineBusyError):
        host.load(LoadOptions(model_path=tiny_model))
    stream.close()  # abandoning a stream frees the host at once
    _, stats = collect(host.complete("x", FIXED))
    assert stats.completion_tokens == 16


def test_context_overflow_drops_the_oldest_turns(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model, n_ctx=256)
    conversation: list[ChatMessage] = [ChatMessage("system", "Answer briefly.")]
    for i in range(8):
        conversation += [ChatMessage("user", f"Question number {i}: what is {i} plus {i}?"),
                         ChatMessage("assistant", f"It is {2 * i}, of course.")]
    conversation.append(ChatMessage("user", "And the last one?"))
    sampling = SamplingOptions(temperature=0, max_tokens=32, ignore_eos=True)
    _, stats = collect(host.chat(conversation, sampling))
    assert stats.dropped_messages > 0 and stats.dropped_messages % 2 == 0
    assert stats.prompt_tokens + 32 <= 256
    assert stats.completion_tokens == 32


def test_context_overflow_error_for_one_giant_message(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model, n_ctx=256)
    with pytest.raises(ContextOverflowError, match=r"needs \d+ tokens.*256"):
        collect(host.chat([ChatMessage("user", "word " * 400)], FIXED))
    with pytest.raises(ContextOverflowError):
        collect(host.complete("x" * 400, FIXED))
    _, stats = collect(host.chat([ChatMessage("user", "short")], FIXED))  # still usable
    assert stats.completion_tokens == 16


def test_a_huge_prompt_is_refused_or_trimmed_before_tokenizing(host: EngineHost,
                                                                tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model, n_ctx=256)
    huge = "x" * 4_000_000  # tokenizing it would take the byte vocabulary minutes
    started = time.perf_counter()
    with pytest.raises(ContextOverflowError, match="characters cannot fit in 256 tokens"):
        collect(host.complete(huge, FIXED))
    with pytest.raises(ContextOverflowError, match="characters cannot fit in 256 tokens"):
        collect(host.chat([ChatMessage("user", huge)], FIXED))
    old = [ChatMessage("user", huge), ChatMessage("assistant", huge)]
    _, stats = collect(host.chat([*old, ChatMessage("user", "short")], FIXED))
    assert stats.dropped_messages == 2 and stats.completion_tokens == 16
    assert time.perf_counter() - started < 30


def test_unload_and_chat_without_model(host: EngineHost, tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    host.unload()
    assert host.model_info is None and host.is_alive
    with pytest.raises(EngineError, match="No model"):
        host.chat([ChatMessage("user", "Hi")], FIXED)
    ensure_loaded(host, tiny_model)


# --- crash isolation ---------------------------------------------------------------------------


@pytest.fixture
def crashable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EngineHost]:
    monkeypatch.setenv(DEBUG_ENV, "1")
    with EngineHost(tmp_path / "engine.log") as engine:
        yield engine


def _crash_mid_reply(engine: EngineHost, model: Path, crash: object) -> tuple[str, str]:
    engine.load(LoadOptions(model_path=model, n_threads=2))
    stream = engine.chat([ChatMessage("user", "Hi")], ENDLESS)
    kept = [first_token(stream)]
    assert callable(crash)
    crash()
    with pytest.raises(EngineCrashedError) as caught:
        for event in stream:
            if isinstance(event, TokenEvent):
                kept.append(event.text)
    return str(caught.value), "".join(kept)


@pytest.mark.parametrize(("how", "signame"), [("abort", "SIGABRT"), ("segfault", "SIGSEGV"),
                                              ("kill", "SIGKILL")])
def test_engine_crash_mid_reply_is_an_error_not_a_crash(crashable: EngineHost, tiny_model: Path,
                                                        how: str, signame: str) -> None:
    old_pid = crashable.pid or 0

    def crash() -> None:
        if how == "kill":
            assert crashable.pid is not None
            os.kill(crashable.pid, signal.SIGKILL)
        else:
            crashable._debug_crash(how)  # type: ignore[arg-type]

    message, kept = _crash_mid_reply(crashable, tiny_model, crash)
    assert signame in message and "while generating" in message
    assert "Reload the model" in message and kept
    assert not crashable.is_alive and crashable.model_info is None
    with pytest.raises(EngineError):
        crashable.chat([ChatMessage("user", "Hi")], FIXED)
    crashable.load(LoadOptions(model_path=tiny_model))  # a fresh engine
    assert crashable.pid not in (None, old_pid)
    _, stats = collect(crashable.chat([ChatMessage("user", "Hi")], FIXED))
    assert stats.completion_tokens == 16


def test_debug_crash_is_ignored_without_the_test_switch(host: EngineHost,
                                                        tiny_model: Path) -> None:
    ensure_loaded(host, tiny_model)
    host._debug_crash("abort")
    _, stats = collect(host.complete("x", FIXED))
    assert stats.completion_tokens == 16 and host.is_alive


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_engine_exits_when_the_host_is_killed(tiny_model: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mixtral_desk.core.engine import ChatMessage, EngineHost, LoadOptions, SamplingOptions
        if __name__ == "__main__":
            host = EngineHost(Path({str(tmp_path / "engine.log")!r}))
            host.load(LoadOptions(model_path=Path({str(tiny_model)!r}), n_ctx=256))
            stream = host.chat([ChatMessage("user", "Hi")],
                               SamplingOptions(max_tokens=None, ignore_eos=True))
            next(stream)
            print(host.pid, flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        assert child.stdout is not None
        engine_pid = int(child.stdout.readline())
        assert not _gone(engine_pid)
        child.kill()
        child.wait(5)
        deadline = time.monotonic() + 5
        while not _gone(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(engine_pid), "the engine outlived its host"
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


def test_close_is_idempotent(tiny_model: Path, tmp_path: Path) -> None:
    engine = EngineHost(tmp_path / "engine.log")
    engine.load(LoadOptions(model_path=tiny_model, n_ctx=256))
    pid = engine.pid
    assert pid is not None
    engine.close()
    engine.close()
    assert engine.pid is None and not engine.is_alive and _gone(pid)

