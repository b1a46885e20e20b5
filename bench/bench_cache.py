"""Prompt cache (issue #13): time to first token when a chat comes back, with and without the cache.

Through :class:`EngineHost` (a real engine process) on the ~0.7 GB Mixtral-shaped benchmark model
(written once under /tmp, see bench_engine.py) or ``--model``, greedy, short replies of equal length
(end-of-text ignored). Two synthetic chats, A and B, of about 2,600 tokens each to start with
(measured by the engine's ``prompt_tokens``; A is 3,000 to 3,600 tokens by the time it is returned
to, and one more turn still fits in a 4,096-token context before it overflows), then:

a. the next turn in A (A already evaluated);
b. a turn in B, then back to A: the return to A;
c. the engine process restarted (unload, close, a new host, load), then the next turn in A: the
   cache's files serve it (they are first evicted from the page cache, so the restore reads the
   disk, as far as a virtual machine's disk lets us know);
d. turns appended to A until the context is full and older turns are dropped: the last turn
   before the first drop and the 5 turns from it on.

Every scenario runs twice in one run: with the prompt cache (a temporary folder) and without it
(``prompt_cache_dir=None``: only the live prefix left by the previous reply is reused). TTFT is the
engine's own (``ReplyStats.time_to_first_token_s``: prefix reuse or restore, prompt evaluation,
first token); "wall" is the host's, from the request to the first text. After a reply the benchmark
waits for the engine's "after the reply: …" log line (after a reply the engine evaluates it again
as its text will be tokenized in the next prompt, and keeps the state, while the user reads), so
that work and the saves are timed on their own and not inside the next turn's TTFT.

Also: disk bytes per 1,000 tokens (cache files / tokens they hold), KV bytes per token, the save
time as a fraction of a turn, the engine's decode rate vs llama.cpp's own ``llama-bench`` tg (when
the binary exists), and, for Mixtral-8x7B (128 KiB of f16 KV per token), the minutes saved
returning to a 3,000-token chat at 6 and 30 tok/s of prompt evaluation. Prints PASS/MISS per goal;
exits 1 when a goal is missed.

On the benchmark model a reply's 16 tokens (mostly its filler words, "▁w123") come back as about
130 byte tokens when the chat is tokenized again; the engine evaluates them after the reply, so a
turn evaluates only its new user message. The table's "prompt" and "cached" columns show what each
turn evaluated.

Run: .venv/bin/python bench/bench_cache.py [--quick] [--model PATH] [--n-ctx 4096] [--threads 2]
     [--chat-tokens 2600] [--llama-bench PATH] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# bench/ is on sys.path when this file runs as a script.
from bench_engine import ensure_model

from mixtral_desk.core.engine import (
    ChatMessage,
    DoneEvent,
    EngineHost,
    LoadOptions,
    ModelInfo,
    ReplyStats,
    Role,
    SamplingOptions,
    TokenEvent,
)
from mixtral_desk.core.engine.prompt_cache import SUFFIX, folder_usage

LLAMA_BENCH = Path("/work/llama-bench/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/"
                   "llama-bench")
# The cache file's header (prompt_cache's module docstring): magic, format version, key length,
# token count, state length, CRC-32.
SETTLED = re.compile(r"after the reply: (\d+) tokens reused, (\d+) evaluated in ([\d.]+) s")
KEPT = re.compile(r"prompt cache: kept (\d+) tokens \((\d+) bytes\) in ([\d.]+) s")
RESTORED = re.compile(r"prompt cache: restored (\d+) tokens \((\d+) bytes, (\d+) shared with the "
                      r"prompt\) from (\w+) in ([\d.]+) s")
NOTABLE = re.compile(r"prompt cache: (state of .* refused|.*still pending|.*instead)")
MIXTRAL_KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads, head dim 128, f16
WORDS_TEXT = (
    "the of and to in is was that for on with as by at from this have not are but be they one had "
    "all were when we there can an which their said if do will each about how up out them then "
    "she many some so these would other into has more her two like him see time could no make "
    "than first been its who now people my made over did down only way find use may water long "
    "little very after words called just where most know get through back much before go good "
    "new write our used me man too any day same right look think also around another came come "
    "work three word must because does part even place well such here take why things help put "
    "years different away again off went old number great tell men say small every found still "
    "between name should home big give air line set own under read last never us left end along "
    "while might next sound below saw something thought both few those always looked show large "
    "often together asked house world going want school important until form food keep children "
    "feet land side without boy once animals life enough took sometimes four head above kind "
    "began almost live page got earth need far hand high year mother light parts country father"
)
WORDS = WORDS_TEXT.split()


def text(rng: random.Random, n_words: int) -> str:
    """Synthetic English-looking sentences of ``n_words`` words."""
    words: list[str] = []
    while len(words) < n_words:
        sentence = [rng.choice(WORDS) for _ in range(min(rng.randint(6, 14), n_words - len(words)))]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        words += sentence
    return " ".join(words)


@dataclass
class Turn:
    """One reply's figures."""

    label: str
    stats: ReplyStats
    wall_ttft_s: float  # request to first text (or to the end), on the host
    wall_s: float  # request to the final event, on the host
    save_s: float | None = None  # from the engine log's "kept" lines (all saves after the reply)
    settle_s: float | None = None  # evaluating the reply again as text, after it
    saved_tokens: int = 0
    saved_bytes: int = 0
    restored: str = ""  # "ram 3012/3010 tok 0.010 s" from the "restored" line
    restore_bytes: int = 0
    restore_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ttft(self) -> float:
        return self.stats.time_to_first_token_s


class Session:
    """An engine host, its log and the chats it serves."""

    def __init__(self, log_path: Path, options: LoadOptions, sampling: SamplingOptions) -> None:
        self.log_path = log_path
        self.options = options
        self.sampling = sampling
        self.caching = options.prompt_cache_dir is not None
        self.host: EngineHost | None = None
        self.info: ModelInfo | None = None

    def start(self) -> ModelInfo:
        self.host = EngineHost(self.log_path)
        self.info = self.host.load(self.options)
        return self.info

    def close(self) -> None:
        if self.host is not None:
            with contextlib.suppress(Exception):
                self.host.unload()
            self.host.close()
            self.host = None

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as file:
                file.seek(offset)
                return file.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def turn(self, chat: list[ChatMessage], user: str | None, label: str,
             sampling: SamplingOptions | None = None) -> Turn:
        """Add ``user`` (unless None: ``chat`` already ends with a user turn), get the reply,
        add it to ``chat``; the figures."""
        assert self.host is not None
        if user is not None:
            chat.append(ChatMessage("user", user))
        offset = self._log_size()
        started = time.perf_counter()
        first = 0.0
        reply: list[str] = []
        stats: ReplyStats | None = None
        with self.host.chat(chat, sampling or self.sampling) as stream:
            for event in stream:
                if isinstance(event, TokenEvent):
                    first = first or time.perf_counter()
                    reply.append(event.text)
                elif isinstance(event, DoneEvent):
                    stats = event.stats
        ended = time.perf_counter()
        assert stats is not None
        chat.append(ChatMessage("assistant", "".join(reply)))
        result = Turn(label, stats, (first or ended) - started, ended - started)
        log = self._log_since(offset)
        # After the reply the engine evaluates it again as text (the next prompt's tokens) and
        # keeps the state: a user reading the reply gives it that time, so wait for it.
        deadline = time.perf_counter() + 120.0
        while not SETTLED.search(log) and time.perf_counter() < deadline:
            time.sleep(0.01)
            log = self._log_since(offset)
        if match := SETTLED.search(log):
            result.settle_s = float(match[3])
        else:
            result.notes.append("no 'after the reply' line within 120 s")
        if self.caching:
            saves = KEPT.findall(log)
            if saves:
                result.saved_tokens, result.saved_bytes = int(saves[-1][0]), int(saves[-1][1])
                result.save_s = sum(float(save[2]) for save in saves)
            else:
                result.notes.append("no 'prompt cache: kept' line")
        if match := RESTORED.search(log):
            result.restored = f"{match[4]} {match[3]}/{match[1]} tok {float(match[5]):.3f} s"
            result.restore_bytes, result.restore_s = int(match[2]), float(match[5])
        result.notes += [m[0] for m in NOTABLE.finditer(log)]
        return result


def show(turn: Turn, mode: str) -> None:
    s = turn.stats
    extra = f"  save {turn.save_s:.3f} s" if turn.save_s is not None else ""
    extra += f"  restored {turn.restored}" if turn.restored else ""
    extra += "".join(f"  [{note}]" for note in turn.notes)
    print(f"  {mode:<7} {turn.label:<24} prompt {s.prompt_tokens:5d}  cached {s.cached_tokens:5d}"
          f"  dropped {s.dropped_messages:3d}  ttft {s.time_to_first_token_s * 1000:8.1f} ms"
          f"  wall {turn.wall_ttft_s * 1000:8.1f} ms  turn {turn.wall_s:6.2f} s{extra}",
          flush=True)


@dataclass
class Sizes:
    """Conversation sizes in tokens, and the engine's tokens per word and per turn."""

    chat_tokens: int
    next_user_tokens: int
    long_user_tokens: int
    per_word: float = 1.5
    per_turn: float = 10.0
    base: float = 2.0

    def words(self, tokens: int) -> int:
        return max(1, round(tokens / self.per_word))


def calibrate(session: Session, sizes: Sizes) -> None:
    """Tokens per word and per turn of this model's tokenizer and template (3 short replies)."""
    rng = random.Random(7)
    one = text(rng, 40)
    sampling = SamplingOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=1,
                               ignore_eos=True)
    p0 = session.turn([ChatMessage("user", "")], None, "calibrate", sampling).stats.prompt_tokens
    p1 = session.turn([ChatMessage("user", one)], None, "calibrate",
                      sampling).stats.prompt_tokens
    three = [ChatMessage("user", one), ChatMessage("assistant", one), ChatMessage("user", one)]
    p3 = session.turn(three, None, "calibrate", sampling).stats.prompt_tokens
    sizes.per_word = max(0.5, (p1 - p0) / 40)
    sizes.per_turn = max(1.0, (p3 - p1 - 80 * sizes.per_word) / 2)
    sizes.base = max(0.0, p0 - sizes.per_turn)
    print(f"tokens: {sizes.per_word:.2f} per word, {sizes.per_turn:.1f} per turn of the template, "
          f"{sizes.base:.0f} to start")


def build_chat(seed: int, sizes: Sizes) -> list[ChatMessage]:
    """A user/assistant/…/user chat of about ``sizes.chat_tokens`` tokens (user turns ~100
    tokens, assistant turns ~200)."""
    rng = random.Random(seed)
    chat: list[ChatMessage] = []
    total = sizes.base
    while True:
        role: Role = "user" if len(chat) % 2 == 0 else "assistant"
        want = 100 if role == "user" else 200
        if role == "user" and total + want + sizes.per_turn > sizes.chat_tokens - 20:
            want = max(20, int(sizes.chat_tokens - total - sizes.per_turn))
        chat.append(ChatMessage(role, text(rng, sizes.words(want))))
        total += want + sizes.per_turn
        if role == "user" and total >= sizes.chat_tokens - 30:
            return chat


@dataclass
class ModeResult:
    """The scenarios' turns in one mode (with or without the cache)."""

    turns: dict[str, Turn] = field(default_factory=dict)
    next_turns: list[Turn] = field(default_factory=list)
    overflow: list[Turn] = field(default_factory=list)
    before_overflow: Turn | None = None
    all_turns: list[Turn] = field(default_factory=list)
    disk_bytes: int = 0
    disk_tokens: int = 0
    disk_files: int = 0
    read_rate: float | None = None  # bytes/s reading the cache files out of the page cache
    early_drops: list[str] = field(default_factory=list)


def evict_from_page_cache(folder: Path) -> int:
    """Write the cache files out and drop them from the page cache (their pages only); count."""
    count = 0
    for path in folder.rglob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    count += 1
            finally:
                os.close(fd)
    return count


def cold_read_rate(folder: Path) -> float | None:
    """Bytes per second reading the cache files after dropping them from the page cache."""
    evict_from_page_cache(folder)
    size = 0
    started = time.perf_counter()
    for path in folder.rglob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError), path.open("rb", buffering=0) as file:
            while chunk := file.read(1 << 22):
                size += len(chunk)
    seconds = time.perf_counter() - started
    return size / seconds if size and seconds > 0 else None


def disk_usage(folder: Path) -> tuple[int, int, int]:
    """(bytes, tokens, files) of the cache's entry files."""
    usage = folder_usage(folder)
    return usage.bytes, usage.tokens, usage.files


def run_mode(mode: str, session: Session, chat_a: list[ChatMessage], chat_b: list[ChatMessage],
             sizes: Sizes, args: argparse.Namespace) -> ModeResult:
    """All scenarios in one mode; ``chat_a``/``chat_b`` are copied, not changed."""
    result = ModeResult()
    rng = random.Random(1234)  # the same turns in both modes
    a, b = list(chat_a), list(chat_b)

    def turn(chat: list[ChatMessage], user: str | None, label: str, *,
             filling: bool = False) -> Turn:
        done = session.turn(chat, user, label)
        dropped = done.stats.dropped_messages > 0
        if filling and dropped:
            done.label = f"overflow {len(result.overflow) + 1}"
        elif dropped:
            result.early_drops.append(label)
        show(done, mode)
        result.all_turns.append(done)
        return done

    def short() -> str:
        return text(rng, sizes.words(sizes.next_user_tokens))

    info = session.start()
    print(f"{mode}: engine load {info.load_seconds:.2f} s, n_ctx {info.n_ctx}", flush=True)
    result.turns["B cold"] = turn(b, None, "B, first evaluation")
    result.turns["A cold"] = turn(a, None, "A, first evaluation")
    for i in range(args.next_turns):
        result.next_turns.append(turn(a, short(), f"A, next turn {i + 1}"))
    result.turns["switch B"] = turn(b, short(), "switch to B")
    result.turns["back A"] = turn(a, short(), "back to A")
    started = time.perf_counter()
    session.close()
    if session.options.prompt_cache_dir is not None:
        evicted = evict_from_page_cache(session.options.prompt_cache_dir)
        print(f"  {mode:<7} {evicted} cache files evicted from the page cache")
    session.start()
    print(f"  {mode:<7} engine restarted in {time.perf_counter() - started:.2f} s", flush=True)
    result.turns["restart"] = turn(a, short(), "A after restart")
    result.before_overflow = result.turns["restart"]  # until a fill turn fits
    fill = 0
    while len(result.overflow) < args.after_overflow and fill < 200:
        fill += 1
        label = f"overflow {len(result.overflow) + 1}" if result.overflow else f"fill {fill}"
        done = turn(a, text(rng, sizes.words(sizes.long_user_tokens)), label, filling=True)
        if result.overflow or done.stats.dropped_messages > 0:
            result.overflow.append(done)
        else:
            result.before_overflow = done
    session.close()
    if session.options.prompt_cache_dir is not None:
        result.disk_bytes, result.disk_tokens, result.disk_files = \
            disk_usage(session.options.prompt_cache_dir)
        result.read_rate = cold_read_rate(session.options.prompt_cache_dir)
    return result


def llama_bench(binary: Path, model: Path, threads: int, tokens: int, reps: int,
                flash_attn: bool) -> dict[str, object] | None:
    """llama.cpp's own tg figure (``None`` with a reason printed when it cannot run)."""
    if not binary.is_file():
        print(f"llama-bench: {binary} is missing; native comparison skipped")
        return None
    command = [str(binary), "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(threads),
               "-r", str(reps), "-ngl", "0", "-fa", "on" if flash_attn else "off", "-o", "json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"llama-bench failed to run: {error}")
        return None
    try:
        rows = json.loads(done.stdout)
        row: dict[str, object] = rows[0]
    except (ValueError, IndexError, KeyError, TypeError):
        print(f"llama-bench gave no result (exit {done.returncode}): "
              f"{(done.stderr or done.stdout).strip()[-600:]}")
        return None
    return row


def decode_speed(args: argparse.Namespace, model: Path,
                 log_path: Path) -> tuple[list[float], list[float] | None]:
    """Engine decode tok/s and llama-bench tg tok/s (``None``: no llama-bench), back to back:
    ``args.decode_rounds`` rounds of ``args.decode_reps`` engine replies and llama-bench with as
    many repetitions, in alternating order."""
    options = LoadOptions(model_path=model, n_ctx=args.n_ctx, n_threads=args.threads)
    sampling = SamplingOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=args.decode_tokens,
                               ignore_eos=True)
    engine: list[float] = []
    native: list[float] | None = []
    session = Session(log_path, options, sampling)
    session.start()
    rng = random.Random(99)
    try:
        session.turn([ChatMessage("user", "Warm up.")], None, "warm up")
        for r in range(args.decode_rounds):
            for side in ("engine", "native") if r % 2 == 0 else ("native", "engine"):
                if side == "engine":
                    for _ in range(args.decode_reps):
                        done = session.turn([ChatMessage("user", text(rng, 12))], None, "decode")
                        assert done.stats.completion_tokens == args.decode_tokens, done.stats
                        engine.append(done.stats.decode_tokens_per_s)
                        print(f"  round {r + 1} engine     : {engine[-1]:6.2f} tok/s "
                              f"({args.decode_tokens} tokens)", flush=True)
                    continue
                if native is None:
                    continue
                row = llama_bench(args.llama_bench, model, args.threads, args.decode_tokens,
                                  args.decode_reps, options.flash_attn)
                if row is None:
                    native = None
                    continue
                samples = row.get("samples_ts")
                values = [float(v) for v in samples] if isinstance(samples, list) else \
                    [float(str(row.get("avg_ts", "nan")))]
                native += values
                print(f"  round {r + 1} llama-bench: " + ", ".join(f"{v:6.2f}" for v in values)
                      + f" tok/s (tg{args.decode_tokens}, build {row.get('build_commit')}, "
                      f"backends {row.get('backends')}, flash_attn {row.get('flash_attn')})",
                      flush=True)
    finally:
        session.close()
    return engine, native


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.1f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(without: ModeResult, with_: ModeResult, info: ModelInfo | None) -> list[bool]:
    """The table, the figures and the goals (one bool per goal)."""
    def median_ttft(turns: Sequence[Turn]) -> float | None:
        return statistics.median(t.ttft for t in turns) if turns else None

    rows: list[tuple[str, Turn | None, Turn | None]] = [
        ("B, first evaluation", without.turns.get("B cold"), with_.turns.get("B cold")),
        ("A, first evaluation", without.turns.get("A cold"), with_.turns.get("A cold")),
    ]
    rows += [(t.label, t, w) for t, w in zip(without.next_turns, with_.next_turns, strict=False)]
    rows += [("switch to B", without.turns.get("switch B"), with_.turns.get("switch B")),
             ("back to A (after B)", without.turns.get("back A"), with_.turns.get("back A")),
             ("A after engine restart", without.turns.get("restart"), with_.turns.get("restart")),
             ("A, last turn before overflow", without.before_overflow, with_.before_overflow)]
    rows += [(f"overflow {i + 1} (dropped turns)", t, w)
             for i, (t, w) in enumerate(zip(without.overflow, with_.overflow, strict=False))]
    print()
    print(f"{'TTFT (engine), ms':<30} {'without cache':>26} {'with cache':>26} {'without/':>9}")
    print(f"{'':<30} {'ttft':>8} {'prompt':>7} {'cached':>7}   {'ttft':>8} {'prompt':>7} "
          f"{'cached':>7}   {'with':>7}  restore (with cache)")
    for label, t, w in rows:
        left = f"{ms(t.ttft):>8} {t.stats.prompt_tokens:>7} {t.stats.cached_tokens:>7}" if t \
            else f"{'-':>24}"
        right = f"{ms(w.ttft):>8} {w.stats.prompt_tokens:>7} {w.stats.cached_tokens:>7}" if w \
            else f"{'-':>24}"
        r = ratio(t.ttft if t else None, w.ttft if w else None)
        print(f"{label:<30} {left}   {right}   {r:>7}  {w.restored if w else ''}")
    next_with, next_without = median_ttft(with_.next_turns), median_ttft(without.next_turns)
    print(f"{'median next turn in A':<30} {ms(next_without):>8}{'':>16}   {ms(next_with):>8}"
          f"{'':>16}   {ratio(next_without, next_with):>7}")
    for result, mode in ((without, "without"), (with_, "with")):
        if result.next_turns:
            evaluated = [t.stats.prompt_tokens - t.stats.cached_tokens for t in result.next_turns]
            print(f"next turn in A, {mode} cache: {statistics.median(evaluated):.0f} prompt tokens "
                  f"evaluated per turn (the previous reply's text as re-tokenized, the new user "
                  f"turn)")
        if result.early_drops:
            print(f"WARNING ({mode} cache): turns were dropped before the overflow scenario, in "
                  f"{', '.join(result.early_drops)}: use a larger --n-ctx or a smaller chat")

    # Save cost.
    print()
    saves = [t for t in with_.all_turns if t.save_s is not None]
    save_fracs = [t.save_s / t.wall_s for t in saves if t.save_s is not None and t.wall_s > 0]
    next_saves = [t.save_s / t.wall_s for t in with_.next_turns
                  if t.save_s is not None and t.wall_s > 0]
    if saves:
        save_times = [t.save_s for t in saves if t.save_s is not None]
        print(f"save (state to RAM, from the engine log): median "
              f"{statistics.median(save_times):.3f} s, max {max(save_times):.3f} s over "
              f"{len(saves)} replies; as a fraction of the "
              f"turn's wall time: median {statistics.median(save_fracs) * 100:.1f} %, max "
              f"{max(save_fracs) * 100:.1f} %")
    else:
        print("save: no 'prompt cache: kept' lines in the engine log (did the wording change?)")
    wall_with = [t.wall_s for t in with_.next_turns]
    wall_without = [t.wall_s for t in without.next_turns]
    if wall_with and wall_without:
        print(f"next turn in A, wall time per turn: without cache "
              f"{statistics.median(wall_without):.2f} s, with {statistics.median(wall_with):.2f} s"
              f" (+ the save after it)")

    # Disk and KV sizes.
    kv_per_token: float | None = None
    kept = [t for t in saves if t.saved_tokens]
    if kept:
        kv_per_token = statistics.median(t.saved_bytes / t.saved_tokens for t in kept)
    kv_buffer = sum(size for _, kind, size in info.buffers if kind == "KV") if info else 0
    print(f"KV bytes per token: {kv_per_token or 0:,.0f} (sequence state / its tokens)"
          + (f", {kv_buffer / info.n_ctx:,.0f} (llama.cpp's KV buffer / n_ctx)"
             if info and kv_buffer else ""))
    if with_.disk_tokens:
        per_1000 = with_.disk_bytes / with_.disk_tokens * 1000
        print(f"disk: {with_.disk_files} cache files, {with_.disk_bytes / 1e6:.1f} MB for "
              f"{with_.disk_tokens} tokens = {per_1000 / 1e6:.2f} MB per 1,000 tokens")
    else:
        print("disk: no cache files found")
    restores = [t for t in with_.all_turns if t.restored]
    set_rate = None
    if restores and sum(t.restore_s for t in restores) > 0:
        set_rate = sum(t.restore_bytes for t in restores) / sum(t.restore_s for t in restores)
        print(f"restore into llama.cpp (llama_state_seq_set_data, from the engine log): "
              f"{set_rate / 1e6:.0f} MB/s")
    if with_.read_rate:
        print(f"reading the cache files out of the page cache (posix_fadvise DONTNEED first): "
              f"{with_.read_rate / 1e6:.0f} MB/s (a virtual machine's host may still cache them)")
    mixtral_bytes = 3000 * MIXTRAL_KV_PER_TOKEN
    restore_s = sum(mixtral_bytes / rate for rate in (set_rate, with_.read_rate) if rate)
    print(f"Mixtral-8x7B: {MIXTRAL_KV_PER_TOKEN // 1024} KiB of f16 KV per token, a 3,000-token "
          f"chat is {mixtral_bytes / 2**20:.0f} MiB on disk"
          + (f", read and restored in ~{restore_s:.1f} s at the rates above" if restore_s else ""))
    for speed in (6, 30):
        saved = 3000 / speed - restore_s
        print(f"  returning to a 3,000-token chat at {speed} tok/s prompt evaluation: "
              f"{3000 / speed / 60:.1f} min without the cache, {saved / 60:.1f} min saved")

    # Goals.
    print()
    goals: list[bool] = []

    def goal(ok: bool, what: str) -> None:
        goals.append(ok)
        print(f"{verdict(ok)}  {what}")

    for key, name in (("back A", "after a switch"), ("restart", "after a restart")):
        t, w = without.turns.get(key), with_.turns.get(key)
        if t and w and next_with:
            goal(w.ttft <= 2 * next_with,
                 f"{name}: TTFT {ms(w.ttft)} ms <= 2x the next turn's {ms(next_with)} ms")
            work = (t.stats.prompt_tokens - t.stats.cached_tokens,
                    w.stats.prompt_tokens - w.stats.cached_tokens)
            goal(t.ttft >= 20 * w.ttft,
                 f"{name}: {ratio(t.ttft, w.ttft)} faster than without the cache (goal >= 20x; "
                 f"{ms(t.ttft)} ms without; prompt tokens evaluated: {work[0]} without, "
                 f"{work[1]} with)")
    before = with_.before_overflow
    if before and with_.overflow:
        worst = max(t.ttft for t in with_.overflow)
        goal(worst <= 2 * before.ttft,
             f"after overflow: worst of {len(with_.overflow)} turns {ms(worst)} ms <= 2x the last "
             f"turn before ({before.label}: {ms(before.ttft)} ms); all: "
             + ", ".join(ms(t.ttft) for t in with_.overflow)
             + "; prompt tokens evaluated: "
             + ", ".join(str(t.stats.prompt_tokens - t.stats.cached_tokens)
                         for t in with_.overflow))
    elif not with_.overflow:
        print("MISS  after overflow: the context never overflowed")
        goals.append(False)
    if next_saves:
        worst_save = max(next_saves)
        goal(worst_save <= 0.05, f"saving: at most {worst_save * 100:.1f} % of a next turn's wall "
             f"time (goal <= 5 %; all replies: max {max(save_fracs) * 100:.1f} %)")
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the benchmark model)")
    parser.add_argument("--n-ctx", type=int, help="context (default 4096; --quick 2048)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chat-tokens", type=int,
                        help="size of chats A and B to start with (default 2600; --quick 1000)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: smaller chats and context, fewer turns and rounds")
    parser.add_argument("--llama-bench", type=Path, default=LLAMA_BENCH,
                        help="llama.cpp's llama-bench binary (skipped when missing)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (engine logs, cache files)")
    args = parser.parse_args()
    args.n_ctx = args.n_ctx or (2048 if args.quick else 4096)
    args.next_turns = 1 if args.quick else 3
    args.after_overflow = 2 if args.quick else 5
    args.decode_tokens = 64 if args.quick else 128
    args.decode_rounds = 1 if args.quick else 3
    args.decode_reps = 1 if args.quick else 3
    chat_tokens = args.chat_tokens or (1000 if args.quick else 2600)
    sizes = Sizes(chat_tokens=chat_tokens, next_user_tokens=30,
                  long_user_tokens=100 if args.quick else 150)
    model = args.model.resolve() if args.model else ensure_model()
    work = Path(tempfile.mkdtemp(prefix="mixtral-desk-cache-bench-"))
    print(f"model {model} ({model.stat().st_size / 1e9:.2f} GB), n_ctx {args.n_ctx}, "
          f"{args.threads} threads, replies of 16 tokens, work folder {work}")
    sampling = SamplingOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=16,
                               ignore_eos=True)
    base = LoadOptions(model_path=model, n_ctx=args.n_ctx, n_threads=args.threads)
    started = time.perf_counter()
    try:
        calibration = Session(work / "engine-calibrate.log", base, sampling)
        calibration.start()
        try:
            calibrate(calibration, sizes)
        finally:
            calibration.close()
        chat_a, chat_b = build_chat(1, sizes), build_chat(2, sizes)
        print(f"chats: A {len(chat_a)} turns, B {len(chat_b)} turns, ~{chat_tokens} tokens each")
        print("\nwithout the cache (prompt_cache_dir=None):")
        without = run_mode("without", Session(work / "engine-without.log", base, sampling),
                           chat_a, chat_b, sizes, args)
        cache_dir = work / "prompt-cache"
        with_options = base.model_copy(update={"prompt_cache_dir": cache_dir})
        print(f"\nwith the cache ({cache_dir}, default budgets):")
        session = Session(work / "engine-with.log", with_options, sampling)
        with_ = run_mode("with", session, chat_a, chat_b, sizes, args)
        goals = report(without, with_, session.info)
        print(f"\ndecode: engine vs llama.cpp's llama-bench, {args.decode_tokens} tokens, greedy, "
              f"{args.threads} threads, back to back")
        engine, native = decode_speed(args, model, work / "engine-decode.log")
        if engine:
            print(f"engine decode median {statistics.median(engine):.2f} tok/s")
        if engine and native:
            decode_ratio = statistics.median(engine) / statistics.median(native)
            print(f"llama-bench tg{args.decode_tokens} median "
                  f"{statistics.median(native):.2f} tok/s")
            ok = decode_ratio >= 0.95
            goals.append(ok)
            print(f"{verdict(ok)}  decode: engine/llama-bench {decode_ratio:.3f} (goal >= 0.95)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{sum(goals)}/{len(goals)} goals met; {time.perf_counter() - started:.0f} s in all; "
          f"load average now {load:.2f} on {os.cpu_count()} CPUs (other work skews the figures)")
    return 0 if all(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
