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

The worker drives ``llama_decode`` itself: :class:`~.sequence.LiveSequence` holds what the KV cache
holds, and llama.cpp's native sampler chain (:mod:`.sampler`) picks each token, so nothing runs in
Python per token but the stop-string check. Before a reply, the live sequence is set to the
longest reusable start of the prompt: what the previous reply left, or a state restored from the
prompt cache (:mod:`.prompt_cache`) when that serves more, either first cut down by a context
shift when the chat outgrew the context (:mod:`.context_shift`); after the reply (its
:class:`~.protocol.DoneMsg` sent), the sequence's state is kept in the cache (RAM at once, disk in
the background).

``llama_cpp`` is imported here only, lazily, so the host never loads llama.cpp for generation.
Every llama.cpp log line goes to the engine log file through ``llama_log_set``.

Why one module of over 500 lines: it is the engine process's whole program (its loop, loading,
chat and completion, the prompt cache's restore and save, cancellation and log capture share the
process's one model and state); the message formats, placement, history fitting, the KV cache's
bookkeeping, sampling, the context shift's rule and the prompt cache's store live in their own
modules.
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
from typing import TYPE_CHECKING, Any

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
from .context_shift import PLAIN, Layout, Reuse, needed_layout, plan_reuse
from .events import ChatMessage, FinishReason, ModelInfo, ReplyStats
from .formatting import ChatFormatter, TemplateError, split_at_stop
from .history_fit import (
    check_token_budget,
    drop_unfittable,
    fit_messages,
    must_fit_chars,
    reply_reserve,
)
from .logs import EngineLog
from .options import LoadOptions, SamplingOptions
from .placement import TensorOverrides, cpu_moe_overrides
from .prompt_cache import PromptCache, cache_key, model_identity
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
    WarmRequest,
)

if TYPE_CHECKING:
    from .sequence import LiveSequence

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
        from .sequence import LiveSequence

        self.llama = llama
        self.options = options
        self.formatter = formatter
        self.info = info
        self.overrides = overrides  # kept alive with the model
        self.vocab = llama._model.vocab
        self.cache = cache
        self.sequence: LiveSequence = LiveSequence(llama.ctx, llama._model.model, llama.n_batch)
        self._pieces: dict[int, bytes] = {}

    def piece(self, token: int) -> bytes:
        """The bytes of a generated token's text (control tokens give none)."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = bytes(self.llama.detokenize([token]))
        return text


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
        elif isinstance(message, WarmRequest):
            self.warm(message.rid, message.messages, message.sampling, message.cache_tag)
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
            if self.model.cache is not None and not self.model.cache.flush(timeout=10.0):
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
        if options.n_cpu_moe > 0 or options.cpu_moe_tensors:
            limit = int(llama_cpp.llama_max_tensor_buft_overrides()) - 1
            overrides = cpu_moe_overrides(options.n_cpu_moe, max_entries=max(2, limit),
                                          partial=options.cpu_moe_tensors)
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
                fallback = ChatFormatter(None, bos_token=bos, eos_token=eos)
                fallback.broken = str(error)
                return fallback
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

    def chat_prompt(self, messages: Sequence[ChatMessage], sampling: SamplingOptions
                    ) -> tuple[list[int], Layout, int]:
        """The whole conversation's tokens, the :class:`Layout` that fits them into the context
        with room for the reply (its oldest turns cut out; see :mod:`.context_shift`), and how
        many messages that leaves out.

        Raises:
            ContextOverflowError: the last user turn alone does not fit.
            EngineError: the template rejects the conversation, or it has no turns.
        """
        formatter = self.require_model().formatter
        add_bos = not formatter.starts_with_bos
        check_token_budget(must_fit_chars(messages), self.require_model().info.n_ctx)
        messages, unfittable = drop_unfittable(messages, self.require_model().info.n_ctx)

        def count(candidate: Sequence[ChatMessage]) -> int:
            return len(self.tokenize(formatter.format(candidate), True, add_bos))

        n_ctx = self.require_model().info.n_ctx
        try:
            full = self.tokenize(formatter.format(messages), True, add_bos)
            kept, dropped = fit_messages(messages, count, n_ctx,
                                         reply_reserve(sampling.max_tokens, n_ctx))
            fitted = self.tokenize(formatter.format(kept), True, add_bos) if dropped else full
        except TemplateError as error:
            raise EngineError(N_("The model's chat template rejected the conversation: {error}"),
                              error=str(error)) from error
        except ValueError as error:  # no user or assistant turn
            raise EngineError(str(error)) from error
        return full, needed_layout(full, fitted), dropped + unfittable

    def chat(self, rid: int, messages: Sequence[ChatMessage], sampling: SamplingOptions,
             cache_tag: str | None = None) -> None:
        """Format ``messages``, fit them into the context and stream the reply; ``cache_tag``
        tags the prompt cache entry it leaves.

        Raises:
            ContextOverflowError, EngineError: as :meth:`chat_prompt`.
        """
        full, layout, dropped = self.chat_prompt(messages, sampling)
        text, finish = self.generate(rid, full, layout, sampling,
                                     self.require_model().formatter.stop, dropped,
                                     strip_leading=True, cache_tag=cache_tag, save=False)
        if finish != "cancelled" and text:
            # In RAM only: what Regenerate (the same prompt again) needs, should the next
            # request come before the reply is evaluated again as text.
            self.save_state(self.require_model(), cache_tag, to_disk=False)
            self.prepare(rid, [*messages, ChatMessage("assistant", text)], sampling, cache_tag,
                         "after the reply")
        else:
            self.save_state(self.require_model(), cache_tag)

    def complete(self, rid: int, prompt: str, sampling: SamplingOptions) -> None:
        """Stream a raw continuation of ``prompt`` (BOS added as the model wants).

        Raises:
            ContextOverflowError: ``prompt`` is too long to fit, refused before tokenizing.
        """
        check_token_budget(len(prompt), self.require_model().info.n_ctx)
        self.generate(rid, self.tokenize(prompt, False), PLAIN, sampling, (), 0,
                      strip_leading=False)

    def _set_abort(self, llama: Any, rid: int | None, yield_to_next: bool = False) -> None:
        """Let llama.cpp abort a running ``llama_decode`` when ``rid`` is stopped (None: off),
        or, with ``yield_to_next``, as soon as another command waits in the queue.

        Used only while a prompt is evaluated: the callback runs once per graph node, too often
        for a Python function during fast token-by-token decoding, where the stop mark is checked
        between tokens instead.
        """
        import llama_cpp

        if rid is None:
            llama_cpp.llama_set_abort_callback(llama.ctx, llama_cpp.ggml_abort_callback(), None)
            self._abort_callback = None
            return

        def should_abort(_data: Any) -> bool:
            return self.stop_upto >= rid or (yield_to_next and not self.queue.empty())

        self._abort_callback = llama_cpp.ggml_abort_callback(should_abort)
        llama_cpp.llama_set_abort_callback(llama.ctx, self._abort_callback, None)

    def evaluate_prompt(self, rid: int, model: _Loaded, tokens: Sequence[int],
                        yield_to_next: bool = False) -> bool:
        """Evaluate ``tokens`` after what the sequence holds, abortable by a stop request (and,
        with ``yield_to_next``, by the next command); ``False`` when stopped.

        Raises:
            EngineError: llama.cpp failed (its log says why).
        """
        from .sequence import DecodeError

        self._set_abort(model.llama, rid, yield_to_next)
        try:
            model.sequence.evaluate(tokens)
        except DecodeError as error:
            if error.aborted or self.cancelled(rid):
                self.log.note("prompt evaluation aborted by a stop request or the next command "
                              "(the 'failed to compute graph' lines above are that)")
                return False
            raise EngineError(N_("llama.cpp could not evaluate the prompt (llama_decode "
                                 "returned {code}); the engine log has the details."),
                              code=error.code) from error
        finally:
            self._set_abort(model.llama, None)
        return True

    def generate(self, rid: int, full: list[int], layout: Layout, sampling: SamplingOptions,
                 extra_stop: Sequence[str], dropped: int, *, strip_leading: bool,
                 cache_tag: str | None = None, save: bool = True) -> tuple[str, FinishReason]:
        """Stream tokens for a tokenized prompt (``full`` in ``layout``), then :class:`DoneMsg`;
        then (``save``) keep the state in the prompt cache. Returns the reply's text and how it
        ended.

        Raises:
            ContextOverflowError: the prompt leaves no room for a reply.
            EngineError: llama.cpp failed to evaluate the prompt.
        """
        import llama_cpp

        from .sampler import NativeSampler
        from .sequence import DecodeError

        model = self.require_model()
        started = time.perf_counter()
        n_ctx = model.info.n_ctx
        room = n_ctx - (len(full) - layout.removed)
        if room <= 0:
            raise ContextOverflowError(
                N_("The prompt needs {prompt} tokens but the context holds {context}; shorten it "
                   "or load the model with a larger context."),
                prompt=len(full) - layout.removed, context=n_ctx)
        limit = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        stops = [*sampling.stop, *extra_stop]
        self.send(StartedMsg(rid, len(full) - layout.removed, dropped))
        seed = sampling.seed if sampling.seed is not None else (
            llama_cpp.LLAMA_DEFAULT_SEED if model.options.seed < 0 else model.options.seed)
        prompt, cached = self.reuse(model, full, layout)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab, ctx, sequence = model.vocab, model.llama.ctx, model.sequence
        is_eog = llama_cpp.llama_vocab_is_eog
        finish: FinishReason = "length"
        pending = ""
        count = unsent = 0
        first_at = last_at = 0.0
        hit_stop = False
        sent: list[str] = []
        with NativeSampler(sampling, seed, model.llama.n_vocab()) as sampler:
            if not self.evaluate_prompt(rid, model, prompt[cached:]):
                finish = "cancelled"
            while finish != "cancelled":
                if self.cancelled(rid):
                    finish = "cancelled"
                    break
                token = sampler.sample(ctx)
                now = time.perf_counter()
                first_at = first_at or now
                if not sampling.ignore_eos and is_eog(vocab, token):
                    finish = "stop"
                    break
                count += 1
                unsent += 1
                last_at = now
                pending += decoder.decode(model.piece(token))
                emit, pending, hit_stop = split_at_stop(pending, stops)
                if strip_leading and emit:
                    emit = emit.lstrip()
                    strip_leading = not emit
                if emit:
                    self.send(TokenMsg(rid, emit, unsent))
                    sent.append(emit)
                    unsent = 0
                if hit_stop:
                    finish = "stop"
                    break
                if count >= limit:
                    break
                try:
                    sequence.append(token)
                except DecodeError as error:
                    self.log.note(f"decoding stopped: llama_decode returned {error.code}")
                    break
        if not hit_stop:
            pending += decoder.decode(b"", final=True)
        else:
            pending = ""
        if strip_leading:
            pending = pending.lstrip()
        if pending or unsent:
            self.send(TokenMsg(rid, pending, unsent))
            sent.append(pending)
        ended = time.perf_counter()
        ttft = (first_at or ended) - started
        decode_rate = (count - 1) / (last_at - first_at) if count > 1 and last_at > first_at \
            else 0.0
        self.send(DoneMsg(rid, ReplyStats(
            prompt_tokens=len(prompt), completion_tokens=count, time_to_first_token_s=ttft,
            decode_tokens_per_s=decode_rate, total_seconds=ended - started,
            finish_reason=finish, dropped_messages=dropped, cached_tokens=cached)))
        if save:
            self.save_state(model, cache_tag)
        return "".join(sent), finish

    def warm(self, rid: int, messages: Sequence[ChatMessage], sampling: SamplingOptions,
             cache_tag: str | None) -> None:
        """Get a conversation's prompt into the live sequence (restored, shifted or evaluated)
        without replying, until done or stopped; then keep its state."""
        self.prepare(rid, messages, sampling, cache_tag, "warm-up")

    def prepare(self, rid: int, messages: Sequence[ChatMessage], sampling: SamplingOptions,
                cache_tag: str | None, label: str) -> None:
        """Make the live sequence hold ``messages`` formatted (restored, shifted or evaluated)
        until done, stopped or another command arrives; then keep its state. Reports nothing:
        a failed or stopped preparation only means the next turn evaluates what it needs.

        Two uses: a warm-up (a conversation just opened) and the step after each reply, which
        evaluates the reply again *as its text will be tokenized in the next prompt* (a model
        rarely tokenizes a text the way it generated it, so without this the next turn would
        evaluate the whole previous reply again, and the saved state would never be a prefix of
        the next one).
        """
        if self.model is None:
            return
        model = self.model
        if self.cancelled(rid):
            self.save_state(model, cache_tag)
            return
        started = time.perf_counter()
        try:
            full, layout, _ = self.chat_prompt(messages, sampling)
            if len(full) - layout.removed >= model.info.n_ctx:
                self.save_state(model, cache_tag)
                return
            prompt, cached = self.reuse(model, full, layout)
            finished = self.evaluate_prompt(rid, model, prompt[cached:], yield_to_next=True)
        except DeskError as error:
            self.log.note(f"{label} skipped: {error}")
            self.save_state(model, cache_tag)
            return
        evaluated = len(model.sequence.tokens) - cached
        self.log.note(f"{label}: {cached} tokens reused, {evaluated} evaluated in "
                      f"{time.perf_counter() - started:.3f} s"
                      + ("" if finished else " (stopped by the next request)"))
        self.save_state(model, cache_tag)

    # --- reusing what was evaluated before -----------------------------------------------------

    def reuse(self, model: _Loaded, full: list[int], needed: Layout) -> tuple[list[int], int]:
        """Make the live sequence hold the longest reusable start of the prompt; the prompt (in
        its layout) and how many of its tokens are already evaluated.

        The live sequence (what the previous reply left) and the prompt cache compete: a cache
        entry is restored only when it serves more of the prompt. Either may first be shifted
        (:mod:`.context_shift`). The prompt's last token is always evaluated, since its logits
        are not part of a state.
        """
        sequence = model.sequence
        best = self.usable(sequence, full, needed)
        cap = len(best.prompt) - 1
        if model.cache is not None and min(best.prefix, cap) < cap:
            best = self.restore(model, full, needed, better_than=min(best.prefix, cap)) or best
        if best.shift is not None:
            sequence.shift(*best.shift, best.layout)
            self.log.note(f"context shift: removed {best.shift[1]} tokens at {best.shift[0]}")
        prefix = min(best.prefix, len(best.prompt) - 1)
        sequence.truncate(prefix)
        sequence.layout = best.layout
        return best.prompt, len(sequence.tokens)

    @staticmethod
    def usable(sequence: LiveSequence, full: list[int], needed: Layout) -> Reuse:
        """How much of the live sequence serves the prompt (nothing when a sliding window lost
        what that needs)."""
        plan = plan_reuse(sequence.tokens, sequence.layout, full, needed, sequence.can_shift())
        if plan.prefix > 0 and plan.shift is None and not sequence.window_kept(plan.prefix):
            return Reuse(plan.prompt, plan.layout, 0)
        return plan

    def restore(self, model: _Loaded, full: list[int], needed: Layout, better_than: int
                ) -> Reuse | None:
        """Load the prompt cache's best entry for this prompt into the live sequence, if it
        serves more than ``better_than`` tokens; how to use it, or ``None`` (the live sequence is
        then untouched, or empty when the entry turned out unusable)."""
        import llama_cpp

        assert model.cache is not None
        sequence = model.sequence
        shiftable = bool(llama_cpp.llama_memory_can_shift(sequence.memory))
        cap = len(full) - needed.removed - 1

        def score(tokens: tuple[int, ...], layout: Layout) -> int:
            return min(cap, plan_reuse(tokens, layout, full, needed, shiftable).prefix)

        hit = model.cache.lookup(score=score, better_than=better_than,
                                 max_tokens=model.info.n_ctx)
        if hit is None:
            return None
        started = time.perf_counter()
        if not sequence.write_state(hit.state, hit.tokens, hit.layout):
            self.log.note(f"prompt cache: state of {len(hit.tokens)} tokens refused; "
                          "evaluating instead")
            model.cache.discard(hit)
            return Reuse(needed.apply(full), needed, 0)
        plan = self.usable(sequence, full, needed)
        if plan.prefix <= 0:
            self.log.note(f"prompt cache: state of {len(hit.tokens)} tokens keeps positions "
                          f"{sequence.positions()} only (a sliding window); evaluating instead")
        self.log.note(f"prompt cache: restored {len(hit.tokens)} tokens ({len(hit.state)} "
                      f"bytes, {plan.prefix} usable) from {hit.source} in "
                      f"{time.perf_counter() - started:.3f} s")
        return plan

    def save_state(self, model: _Loaded, tag: str | None = None, *, to_disk: bool = True) -> None:
        """Keep the live sequence's state in the prompt cache (RAM now, disk in the background
        unless ``to_disk`` is false), tagged ``tag``."""
        cache, sequence = model.cache, model.sequence
        if cache is None or not sequence.tokens:
            return
        if cache.has(sequence.tokens, sequence.layout):
            if to_disk:
                cache.persist(sequence.tokens)
            return
        if not to_disk and sequence.state_size() > cache.ram_bytes:
            return  # RAM would not keep it
        started = time.perf_counter()
        state = sequence.read_state()
        if state is None:
            return
        cache.put(sequence.tokens, state, tag, sequence.layout, to_disk=to_disk)
        self.log.note(f"prompt cache: kept {len(sequence.tokens)} tokens ({len(state)} bytes) in "
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
