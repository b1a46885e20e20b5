"""The engine process: owns ``llama_cpp.Llama`` and answers the host's commands.

Started by :class:`~.host.EngineHost` with the ``spawn`` start method; :func:`run` is its entry
point. Two threads:

* the **watcher** blocks on the command pipe. A :class:`~.protocol.StopRequest` only raises the
  stop mark (checked between tokens, and by llama.cpp's abort callback while a prompt is being
  evaluated); other commands go to a queue. End of file on the pipe means the host is gone (even
  after ``kill -9``): the watcher ``os._exit()``\\ s at once. On Linux ``PR_SET_PDEATHSIG`` is set
  as well, when the host started the engine from its main thread (the signal follows the creating
  *thread*, so it would misfire for a worker thread that exits).
* the **main thread** serves the queue: load, chat, complete, unload, backend info.

Before a reply, the live sequence is set to the longest reusable prefix of the prompt: what the
previous reply left, or a state restored from the prompt cache (:mod:`.prompt_cache`) when that
shares more; after the reply (its :class:`~.protocol.DoneMsg` sent), the sequence's state is kept
in the cache (RAM at once, disk in the background).

``llama_cpp`` is imported here only, lazily, so the host never loads llama.cpp for generation.
Every llama.cpp log line goes to the engine log file through ``llama_log_set``.

Why one module of over 500 lines: it is the engine process's whole program (its loop, loading,
chat and completion, the prompt cache's restore and save, cancellation and log capture share the
process's one model and state); the message formats, placement, history fitting and the prompt
cache's store live in their own modules.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from ..errors import (
    ContextOverflowError,
    DeskError,
    EngineError,
    GPUOffloadUnavailableError,
    ModelFileNotFoundError,
    ModelLoadError,
)
from ..i18n import N_, set_language
from .backend import collect_backend_info
from .events import ChatMessage, FinishReason, ModelInfo, ReplyStats
from .formatting import ChatFormatter, TemplateError, split_at_stop
from .history_fit import fit_messages, reply_reserve
from .logs import EngineLog
from .options import LoadOptions, SamplingOptions
from .placement import TensorOverrides, cpu_moe_overrides
from .prompt_cache import Hit, PromptCache, cache_key, common_prefix, model_identity
from .protocol import (
    BackendMsg,
    BackendRequest,
    ChatRequest,
    Command,
    CompleteRequest,
    DebugCrashRequest,
    DoneMsg,
    ErrorKind,
    ErrorMsg,
    Event,
    ForgetCacheRequest,
    LoadedMsg,
    LoadRequest,
    ProgressMsg,
    ShutdownRequest,
    StartedMsg,
    StopRequest,
    TokenMsg,
    UnloadedMsg,
    UnloadRequest,
)

GPU_ADVICE_ALL = N_(
    "This llama-cpp-python build has no GPU support (llama_supports_gpu_offload() is false), so "
    "all layers cannot be offloaded to a GPU, and the engine does not fall back to the CPU on "
    "its own. Install a GPU build, e.g. for NVIDIA: "
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python '
    '(Apple: CMAKE_ARGS="-DGGML_METAL=on"), or set GPU layers to 0 to run on the CPU.'
)
GPU_ADVICE_SOME = N_(
    "This llama-cpp-python build has no GPU support (llama_supports_gpu_offload() is false), so "
    "the {count} layers asked for cannot be offloaded to a GPU, and the engine does not fall "
    "back to the CPU on its own. Install a GPU build, e.g. for NVIDIA: "
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python '
    '(Apple: CMAKE_ARGS="-DGGML_METAL=on"), or set GPU layers to 0 to run on the CPU.'
)
_KV_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}  # GGML_TYPE_*
_ERROR_KINDS: tuple[ErrorKind, ...] = ("ModelFileNotFoundError", "ModelLoadError",
                                      "GPUOffloadUnavailableError", "ContextOverflowError")
PR_SET_PDEATHSIG = 1


def physical_cores() -> int:
    """Physical CPU cores (logical ones when unknown), at least 1."""
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def _set_parent_death_signal(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL us when the host dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)


@contextlib.contextmanager
def _patched_model_params(overrides: TensorOverrides | None, progress: Any) -> Iterator[None]:
    """Make ``Llama.__init__``'s ``llama_model_default_params()`` carry our extra fields.

    ``Llama`` builds its model params from ``llama_cpp.llama_cpp.llama_model_default_params()`` and
    loads at once, never setting ``tensor_buft_overrides`` or ``progress_callback``; wrapping that
    call for the duration of the constructor is the narrowest way in. The caller keeps
    ``overrides`` and ``progress`` alive.
    """
    import llama_cpp.llama_cpp as lowlevel

    original = lowlevel.llama_model_default_params

    def patched() -> Any:
        params = original()
        if overrides is not None:
            params.tensor_buft_overrides = overrides.address
        params.progress_callback = progress
        return params

    lowlevel.llama_model_default_params = patched
    try:
        yield
    finally:
        lowlevel.llama_model_default_params = original


class _Loaded:
    """A loaded model and what the worker derived from it."""

    def __init__(self, llama: Any, options: LoadOptions, formatter: ChatFormatter,
                 info: ModelInfo, overrides: TensorOverrides | None,
                 cache: PromptCache | None = None) -> None:
        self.llama = llama
        self.options = options
        self.formatter = formatter
        self.info = info
        self.overrides = overrides  # kept alive with the model
        self.vocab = llama._model.vocab
        self.cache = cache


class Worker:
    """The engine process's state; see the module docstring."""

    def __init__(self, commands: Connection, events: Connection, log: EngineLog,
                 allow_debug: bool = False) -> None:
        self.commands = commands
        self.events = events
        self.log = log
        self.allow_debug = allow_debug
        self.queue: queue.Queue[Command] = queue.Queue()
        self.stop_upto = 0  # every request with rid <= stop_upto is cancelled
        self.current_rid = 0
        self.model: _Loaded | None = None
        self._log_callback: Any = None
        self._abort_callback: Any = None

    # --- plumbing ------------------------------------------------------------------------------

    def send(self, message: Event) -> None:
        """Send an event to the host; exits when the host is gone."""
        try:
            self.events.send(message)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(0)

    def cancelled(self, rid: int) -> bool:
        """Whether request ``rid`` was asked to stop."""
        return self.stop_upto >= rid

    def watch(self) -> None:
        """The watcher thread: route commands, exit when the host disappears."""
        while True:
            try:
                message = self.commands.recv()
            except (EOFError, OSError):
                os._exit(0)
            if isinstance(message, StopRequest):
                self.stop_upto = max(self.stop_upto, message.rid)
            elif isinstance(message, DebugCrashRequest):
                if self.allow_debug:
                    self.log.note(f"debug crash requested: {message.how}")
                    if message.how == "segfault":
                        ctypes.string_at(0)
                    os.abort()
            elif isinstance(message, ShutdownRequest):
                self.stop_upto = sys.maxsize
                self.queue.put(message)
                return
            else:
                self.queue.put(message)

    def install_log_callback(self) -> None:
        """Route llama.cpp's and ggml's log (all levels) into the engine log."""
        import llama_cpp

        log = self.log

        def on_log(level: int, text: bytes | None, _user_data: Any) -> None:
            if text:
                log.write(int(level), text.decode("utf-8", errors="replace"))

        self._log_callback = llama_cpp.llama_log_callback(on_log)
        llama_cpp.llama_log_set(self._log_callback, ctypes.c_void_p(0))

    def serve(self) -> None:
        """Serve commands until a shutdown request."""
        threading.Thread(target=self.watch, name="engine-watcher", daemon=True).start()
        self.install_log_callback()
        while True:
            message = self.queue.get()
            if isinstance(message, ShutdownRequest):
                self.unload()
                self.log.note("engine shutting down")
                return
            self.current_rid = message.rid
            try:
                self.handle(message)
            except DeskError as error:
                self.send(self.error_message(message.rid, error))
            except Exception as error:  # report, log, keep serving
                self.log.note("unexpected error:\n" + traceback.format_exc())
                failure = EngineError(N_("The engine failed: {error}"),
                                      error=f"{type(error).__name__}: {error}")
                self.send(self.error_message(message.rid, failure))

    @staticmethod
    def error_message(rid: int, error: DeskError) -> ErrorMsg:
        """The protocol message for a typed error."""
        name = type(error).__name__
        kind: ErrorKind = "EngineError"
        for known in _ERROR_KINDS:
            if known == name:
                kind = known
        path = str(error.path) if isinstance(error, ModelFileNotFoundError) else None
        return ErrorMsg(rid, kind, str(error), path, error.user_message)

    def handle(self, message: Command) -> None:
        """Answer one command (raises typed errors that :meth:`serve` reports)."""
        if isinstance(message, LoadRequest):
            self.load(message.rid, message.options)
        elif isinstance(message, ChatRequest):
            self.chat(message.rid, message.messages, message.sampling, message.cache_tag)
        elif isinstance(message, CompleteRequest):
            self.complete(message.rid, message.prompt, message.sampling)
        elif isinstance(message, UnloadRequest):
            self.unload()
            self.send(UnloadedMsg(message.rid))
        elif isinstance(message, ForgetCacheRequest):
            if self.model is not None and self.model.cache is not None:
                removed = self.model.cache.forget(message.tag)
                self.log.note(f"prompt cache: forgot {message.tag} ({removed} files)")
        elif isinstance(message, BackendRequest):
            self.send(BackendMsg(message.rid, collect_backend_info()))

    # --- loading -------------------------------------------------------------------------------

    def unload(self) -> None:
        """Free the loaded model, if any."""
        if self.model is not None:
            if self.model.cache is not None and not self.model.cache.flush(timeout=2.0):
                self.log.note("prompt cache: disk writes still pending at unload")
            self.model.llama.close()
            self.model = None
            self.log.note("model unloaded")

    def load(self, rid: int, options: LoadOptions) -> None:
        """Load a model and send :class:`LoadedMsg`.

        Raises:
            ModelFileNotFoundError: the path is not a file.
            GPUOffloadUnavailableError: GPU layers asked of a build without GPU offload.
            ModelLoadError: llama.cpp refused the file (its log lines say why) or loading was
                cancelled.
        """
        import llama_cpp

        path = Path(options.model_path)
        if not path.is_file():
            raise ModelFileNotFoundError(path)
        backend = collect_backend_info()
        if options.n_gpu_layers != 0 and not backend.gpu_offload:
            if options.n_gpu_layers < 0:
                raise GPUOffloadUnavailableError(GPU_ADVICE_ALL)
            raise GPUOffloadUnavailableError(GPU_ADVICE_SOME, count=options.n_gpu_layers)
        self.unload()
        self.log.reset_counters()
        self.log.note(f"loading {path} with {options.model_dump(mode='json')}")
        overrides = None
        if options.n_cpu_moe > 0:
            limit = int(llama_cpp.llama_max_tensor_buft_overrides()) - 1
            overrides = cpu_moe_overrides(options.n_cpu_moe, max_entries=max(1, limit))
        last = [-1.0]

        def on_progress(fraction: float, _user_data: Any) -> bool:
            if self.cancelled(rid):
                return False
            if fraction - last[0] >= 0.01 or fraction >= 1.0:
                last[0] = fraction
                self.send(ProgressMsg(rid, float(fraction)))
            return True

        progress = llama_cpp.llama_progress_callback(on_progress)
        threads = options.n_threads or physical_cores()
        started = time.perf_counter()
        try:
            with _patched_model_params(overrides, progress):
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=options.n_gpu_layers,
                    n_ctx=options.n_ctx,
                    n_batch=options.n_batch,
                    n_ubatch=options.n_ubatch,
                    n_threads=threads,
                    n_threads_batch=options.n_threads or max(threads, os.cpu_count() or 1),
                    flash_attn=options.flash_attn,
                    type_k=_KV_TYPES[options.kv_type],
                    type_v=_KV_TYPES[options.kv_type],
                    use_mmap=options.use_mmap,
                    use_mlock=options.use_mlock,
                    seed=llama_cpp.LLAMA_DEFAULT_SEED if options.seed < 0 else options.seed,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as error:
            if self.cancelled(rid):
                raise ModelLoadError(N_("Loading {name} was cancelled."), name=path.name) from error
            why = self.log.explain() or str(error)
            raise ModelLoadError(
                N_("llama.cpp could not load {name}: {error}. Its log says:\n{log}"),
                name=path.name, error=str(error), log=why) from error
        seconds = time.perf_counter() - started
        if last[0] < 1.0:
            self.send(ProgressMsg(rid, 1.0))
        template = llama.metadata.get("tokenizer.chat_template") or None
        formatter = self.make_formatter(llama, template)
        model = llama._model.model
        offloaded = self.log.offloaded_layers
        info = ModelInfo(
            path=str(path),
            n_ctx=int(llama.n_ctx()),
            n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(model)),
            n_layers=int(llama_cpp.llama_model_n_layer(model)),
            n_gpu_layers=offloaded if offloaded is not None and backend.gpu_offload else 0,
            backend=backend,
            chat_template=template,
            template_source=formatter.source,
            load_seconds=seconds,
            overridden_tensors=self.log.overridden_tensors,
            buffers=tuple(self.log.buffers),
        )
        self.model = _Loaded(llama, options, formatter, info, overrides,
                             self.make_cache(path, options))
        self.log.note(f"loaded {path.name} in {seconds:.2f} s: {info}")
        self.send(LoadedMsg(rid, info))

    def make_cache(self, path: Path, options: LoadOptions) -> PromptCache | None:
        """The prompt cache for this load (``None`` when it is off or the file is unreadable).

        The key holds the model file's identity, the llama-cpp-python version (which pins the
        vendored llama.cpp and its state format) and the load options that change what the KV
        cache holds or how it is laid out: the KV element type and flash attention (it stores V
        untransposed; llama.cpp refuses such a state in a context without it). Left out on
        purpose, because they change neither: the GPU layers, expert placement, threads, batch
        sizes, mmap/mlock and the seed (where a tensor lives or how work is split changes the
        floating-point results at most in the last bits, as it already does between two runs
        with different offload), and the context length (a position's K and V do not depend on
        it; an entry longer than the context is skipped, and llama.cpp refuses a state that does
        not fit, which is a miss).
        """
        import llama_cpp

        if options.prompt_cache_dir is None:
            return None
        try:
            identity = model_identity(path)
        except OSError as error:
            self.log.note(f"prompt cache off: cannot read {path}: {error}")
            return None
        kv = {"kv_type": options.kv_type, "flash_attn": options.flash_attn, "n_seq_max": 1}
        key = cache_key(identity, kv, f"llama-cpp-python {llama_cpp.__version__}")
        return PromptCache(key, Path(options.prompt_cache_dir),
                           ram_bytes=options.prompt_cache_ram_bytes,
                           disk_bytes=options.prompt_cache_disk_bytes)

    def make_formatter(self, llama: Any, template: str | None) -> ChatFormatter:
        """The model's template formatter, or the fallback when it has none or it is broken."""
        def text(token: int) -> str:
            if token < 0:
                return ""
            return str(llama._model.token_get_text(token))

        bos, eos = text(llama.token_bos()), text(llama.token_eos())
        if template is not None:
            try:
                return ChatFormatter(template, bos_token=bos, eos_token=eos)
            except TemplateError as error:
                self.log.note(f"the model's chat template is unusable ({error}); using fallback")
        return ChatFormatter(None, bos_token=bos, eos_token=eos)

    # --- generating ----------------------------------------------------------------------------

    def require_model(self) -> _Loaded:
        """The loaded model. Raises ModelLoadError when none is."""
        if self.model is None:
            raise ModelLoadError(N_("No model is loaded; load one first."))
        return self.model

    def tokenize(self, text: str, parse_special: bool, add_bos: bool = True) -> list[int]:
        """Tokens of ``text`` with the loaded model."""
        model = self.require_model()
        return list(model.llama.tokenize(text.encode("utf-8"), add_bos=add_bos,
                                         special=parse_special))

    def chat(self, rid: int, messages: Sequence[ChatMessage], sampling: SamplingOptions,
             cache_tag: str | None = None) -> None:
        """Format ``messages``, fit them into the context and stream the reply; ``cache_tag``
        tags the prompt cache entry it leaves.

        Raises:
            ContextOverflowError: the last user turn alone does not fit.
            EngineError: the template rejects the conversation, or it has no turns.
        """
        model = self.require_model()
        formatter = model.formatter
        add_bos = not formatter.starts_with_bos

        def count(candidate: Sequence[ChatMessage]) -> int:
            return len(self.tokenize(formatter.format(candidate), True, add_bos))

        n_ctx = model.info.n_ctx
        try:
            kept, dropped = fit_messages(messages, count, n_ctx,
                                         reply_reserve(sampling.max_tokens, n_ctx))
            prompt = formatter.format(kept)
        except TemplateError as error:
            raise EngineError(N_("The model's chat template rejected the conversation: {error}"),
                              error=str(error)) from error
        except ValueError as error:  # no user or assistant turn
            raise EngineError(str(error)) from error
        tokens = self.tokenize(prompt, True, add_bos)
        self.generate(rid, tokens, sampling, formatter.stop, dropped, strip_leading=True,
                      cache_tag=cache_tag)

    def complete(self, rid: int, prompt: str, sampling: SamplingOptions) -> None:
        """Stream a raw continuation of ``prompt`` (BOS added as the model wants)."""
        self.require_model()
        self.generate(rid, self.tokenize(prompt, False), sampling, (), 0, strip_leading=False)

    def _set_abort(self, llama: Any, rid: int | None) -> None:
        """Let llama.cpp abort a running ``llama_decode`` when ``rid`` is stopped (None: off).

        Used only while the prompt is evaluated: the callback runs once per graph node, too often
        for a Python function during fast token-by-token decoding, where the stop mark is checked
        between tokens instead.
        """
        import llama_cpp

        if rid is None:
            llama_cpp.llama_set_abort_callback(llama.ctx, llama_cpp.ggml_abort_callback(), None)
            self._abort_callback = None
            return

        def should_abort(_data: Any) -> bool:
            return self.stop_upto >= rid

        self._abort_callback = llama_cpp.ggml_abort_callback(should_abort)
        llama_cpp.llama_set_abort_callback(llama.ctx, self._abort_callback, None)

    def generate(self, rid: int, tokens: list[int], sampling: SamplingOptions,
                 extra_stop: Sequence[str], dropped: int, *, strip_leading: bool,
                 cache_tag: str | None = None) -> None:
        """Stream tokens for a tokenized prompt, then :class:`DoneMsg`.

        Raises:
            ContextOverflowError: the prompt leaves no room for a reply.
        """
        import llama_cpp

        model = self.require_model()
        llama = model.llama
        started = time.perf_counter()
        n_ctx = model.info.n_ctx
        room = n_ctx - len(tokens)
        if room <= 0:
            raise ContextOverflowError(
                N_("The prompt needs {prompt} tokens but the context holds {context}; shorten it "
                   "or load the model with a larger context."), prompt=len(tokens), context=n_ctx)
        limit = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        stops = [*sampling.stop, *extra_stop]
        self.send(StartedMsg(rid, len(tokens), dropped))
        llama.set_seed(sampling.seed if sampling.seed is not None else (
            llama_cpp.LLAMA_DEFAULT_SEED if model.options.seed < 0 else model.options.seed))
        cached = self.reuse_prefix(model, tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = model.vocab
        is_eog = llama_cpp.llama_vocab_is_eog
        generator = llama.generate(
            tokens, top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
            temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty, reset=True)
        finish: FinishReason = "length"
        pending = ""
        count = unsent = 0
        first_at = last_at = 0.0
        hit_stop = False
        self._set_abort(llama, rid)
        try:
            while True:
                if self.cancelled(rid):
                    finish = "cancelled"
                    break
                try:
                    token = next(generator)
                except RuntimeError:
                    if self.cancelled(rid):  # llama_decode aborted by the stop mark
                        self.log.note("prompt evaluation aborted by a stop request (the "
                                      "'failed to compute graph' lines above are that)")
                        finish = "cancelled"
                        break
                    raise
                now = time.perf_counter()
                if count == 0 and not first_at:
                    first_at = now
                    self._set_abort(llama, None)
                if not sampling.ignore_eos and is_eog(vocab, token):
                    finish = "stop"
                    break
                count += 1
                unsent += 1
                last_at = now
                pending += decoder.decode(llama.detokenize([token]))
                emit, pending, hit_stop = split_at_stop(pending, stops)
                if strip_leading and emit:
                    emit = emit.lstrip()
                    strip_leading = not emit
                if emit:
                    self.send(TokenMsg(rid, emit, unsent))
                    unsent = 0
                if hit_stop:
                    finish = "stop"
                    break
                if count >= limit:
                    finish = "length"
                    break
        finally:
            generator.close()
            if self._abort_callback is not None:
                self._set_abort(llama, None)
        if not hit_stop:
            pending += decoder.decode(b"", final=True)
        else:
            pending = ""
        if strip_leading:
            pending = pending.lstrip()
        if pending or unsent:
            self.send(TokenMsg(rid, pending, unsent))
        ended = time.perf_counter()
        ttft = (first_at or ended) - started
        decode_rate = (count - 1) / (last_at - first_at) if count > 1 and last_at > first_at \
            else 0.0
        self.send(DoneMsg(rid, ReplyStats(
            prompt_tokens=len(tokens), completion_tokens=count, time_to_first_token_s=ttft,
            decode_tokens_per_s=decode_rate, total_seconds=ended - started,
            finish_reason=finish, dropped_messages=dropped, cached_tokens=cached)))
        self.save_state(model, cache_tag)

    # --- the prompt cache ----------------------------------------------------------------------

    def reuse_prefix(self, model: _Loaded, tokens: list[int]) -> int:
        """Make the live sequence hold the longest reusable prefix of ``tokens``; its length.

        The live context (what the previous reply left) and the prompt cache compete: a cache
        entry is restored only when it shares more of the prompt. The KV beyond the prefix is
        removed here and ``Llama``'s ``input_ids``/``n_tokens`` are set to match, so that
        ``Llama.generate``'s own prefix matching finds exactly this prefix and evaluates the rest.
        The prompt's last token is always evaluated (its logits are not part of a state).

        A sliding-window (SWA) model's cache keeps only the last window of positions in its SWA
        layers; a prefix of ``n`` tokens is usable only when the window before ``n`` is still
        there (llama-server's rule: the smallest position kept ≤ max(0, n - n_swa)). Otherwise
        the whole prompt is evaluated (``Llama.generate`` alone would reuse it anyway).
        """
        import llama_cpp

        llama = model.llama
        cap = len(tokens) - 1
        live = min(cap, common_prefix(llama.input_ids[:llama.n_tokens].tolist(), tokens))
        if live > 0 and not self.window_kept(model, live):
            live = 0
        if model.cache is not None and live < cap:
            hit = model.cache.lookup(tokens, better_than=live, max_tokens=model.info.n_ctx)
            if hit is not None:
                live = min(cap, hit.prefix) if self.restore(model, hit, min(cap, hit.prefix)) \
                    else 0
        memory = llama_cpp.llama_get_memory(llama.ctx)
        if live <= 0 or not llama_cpp.llama_memory_seq_rm(memory, 0, live, -1):
            llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
            live = 0
        llama.n_tokens = live
        llama._requires_eval = True
        return live

    @staticmethod
    def window_kept(model: _Loaded, prefix: int) -> bool:
        """Whether sequence 0 still holds what a prefix of ``prefix`` tokens needs (see
        :meth:`reuse_prefix`)."""
        import llama_cpp

        memory = llama_cpp.llama_get_memory(model.llama.ctx)
        first = int(llama_cpp.llama_memory_seq_pos_min(memory, 0))
        n_swa = int(llama_cpp.llama_model_n_swa(model.llama._model.model))
        return 0 <= first <= max(0, prefix - n_swa)

    def restore(self, model: _Loaded, hit: Hit, prefix: int) -> bool:
        """Load a cached state into sequence 0 (whatever it held), to use its first ``prefix``
        tokens; ``False``: refused or unusable, the sequence is empty."""
        import llama_cpp

        assert model.cache is not None
        llama = model.llama
        started = time.perf_counter()
        memory = llama_cpp.llama_get_memory(llama.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
        llama.n_tokens = 0
        size = len(hit.state)
        buffer = (ctypes.c_uint8 * size).from_buffer_copy(hit.state)
        read = int(llama_cpp.llama_state_seq_set_data(llama.ctx, buffer, size, 0))
        count = len(hit.tokens)
        first = int(llama_cpp.llama_memory_seq_pos_min(memory, 0))
        last = int(llama_cpp.llama_memory_seq_pos_max(memory, 0))
        if read == 0 or last != count - 1:
            self.log.note(f"prompt cache: state of {count} tokens refused (read {read} bytes, "
                          f"positions {first}..{last}); evaluating instead")
            llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
            model.cache.discard(hit.tokens)
            return False
        if not self.window_kept(model, prefix):
            self.log.note(f"prompt cache: state of {count} tokens keeps positions {first}..{last} "
                          f"only (a sliding window); {prefix} tokens needed; evaluating instead")
            llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
            return False
        llama.input_ids[:count] = hit.tokens
        llama.n_tokens = count
        self.log.note(f"prompt cache: restored {count} tokens ({size} bytes, {hit.prefix} shared "
                      f"with the prompt) from {hit.source} in "
                      f"{time.perf_counter() - started:.3f} s")
        return True

    def save_state(self, model: _Loaded, tag: str | None = None) -> None:
        """Keep the live sequence's state in the prompt cache (RAM now, disk in the background),
        tagged ``tag``."""
        import llama_cpp

        cache, llama = model.cache, model.llama
        count = int(llama.n_tokens)
        if cache is None or count <= 0:
            return
        tokens = llama.input_ids[:count].tolist()
        if cache.has(tokens):
            return
        started = time.perf_counter()
        memory = llama_cpp.llama_get_memory(llama.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, count, -1)  # anything an aborted decode left
        size = int(llama_cpp.llama_state_seq_get_size(llama.ctx, 0))
        if size <= 0:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(llama.ctx, buffer, size, 0))
        if written <= 0 or written > size:
            return
        cache.put(tokens, ctypes.string_at(buffer, written), tag)
        self.log.note(f"prompt cache: kept {count} tokens ({written} bytes) in "
                      f"{time.perf_counter() - started:.3f} s")


def run(commands: Connection, events: Connection, log_path: str | None, parent_pid: int,
        death_signal: bool, allow_debug: bool, language: str = "en") -> None:
    """Entry point of the engine process (see the module docstring).

    ``language``: the host's interface language, so that the text of errors made here reads like
    the rest of the interface (they also travel as :class:`UserText` and are translated again
    where they are shown).
    """
    if death_signal:
        _set_parent_death_signal(parent_pid)
    log = EngineLog(Path(log_path) if log_path else None)
    in_use = set_language(language)
    log.note(f"engine started, pid {os.getpid()}, host pid {parent_pid}, language {in_use}")
    worker = Worker(commands, events, log, allow_debug=allow_debug)
    try:
        worker.serve()
    finally:
        log.close()
