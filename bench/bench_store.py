"""Conversation store figures on a large database: listing, search, appending, streaming saves,
backups and salvage.

Builds (once, then reuses) a store with 10,000 conversations and 1,000,000 messages, then times
the operations the app does most, through the public :class:`Store` API. Prints figures next to
their targets; asserts nothing. The backup figures: the time to back up, the longest step of
the copy, and the longest a streaming save waited meanwhile (goal: none over 50 ms). The salvage
figures: the time to salvage a copy with one damaged page of messages, and the share of messages
recovered (without a backup to fill in).

    python bench/bench_store.py                      # default database under the temp folder
    python bench/bench_store.py --db /path/big.sqlite3 --rebuild
    python bench/bench_store.py --conversations 1000 --messages 100000   # a quick run
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from mixtral_desk.core.store import Store, new_id
from mixtral_desk.core.store.backups import Backup, take_backup
from mixtral_desk.core.store.recovery import recover
from mixtral_desk.core.store.search import cjk_index_text

SEED = 20240501
QUERIES = {
    "common word": "sorolen",
    "rare word": "quantization",
    "two words": "dragon lisbon",
    "two common words": "sorolen ka",
    "prefix": "quant*",
    "prefix of the top word": "sor*",
    "phrase": '"mixtral experts"',
    "chinese": "周树人",
}
PLANTED = {  # words planted in a few messages so that the rare queries have something to find
    "quantization": 0.0005,
    "dragon": 0.002,
    "lisbon": 0.002,
    "mixtral experts": 0.001,
    "鲁迅为什么打周树人": 0.0002,
}


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    syllables = ["ka", "lo", "ren", "so", "mi", "tar", "ven", "qui", "po", "la", "zu", "ne",
                 "dor", "fi", "gan", "he", "jo", "bri", "mus", "te"]
    words = {"sorolen"}
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    ordered = sorted(words)
    ordered.remove("sorolen")
    return ["sorolen", *ordered]  # the first word is the most frequent (Zipf)


def build(path: Path, conversations: int, messages: int) -> float:
    """Create the database at ``path``; return seconds taken."""
    started = time.perf_counter()
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    Store.open(path).close()  # schema, through the real migrations
    rng = random.Random(SEED)
    words = vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    per_conversation = messages // conversations
    now_ms = int(time.time() * 1000)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -200000")
    conn.execute("BEGIN")

    def text(count: int) -> str:
        chosen = rng.choices(words, cum_weights=cumulative, k=count)
        for planted, share in PLANTED.items():
            if rng.random() < share:
                chosen.insert(rng.randrange(len(chosen) + 1), planted)
        return " ".join(chosen).capitalize() + "."

    conversation_rows = []
    message_rows: list[tuple[object, ...]] = []
    for number in range(conversations):
        conversation_id = new_id()
        start = now_ms - rng.randint(0, 2 * 365 * 86_400_000)
        parent = None
        stamp = start
        for turn in range(per_conversation):
            message_id = new_id()
            stamp += rng.randint(1_000, 120_000)
            role = "user" if turn % 2 == 0 else "assistant"
            content = text(rng.randint(5, 30) if role == "user" else rng.randint(20, 90))
            stats = (json.dumps({"prompt_tokens": 40 * turn, "completion_tokens": 60,
                                 "ttft_s": 0.4, "tokens_per_s": 14.0, "finish_reason": "stop"})
                     if role == "assistant" else None)
            message_rows.append((message_id, conversation_id, parent, role, content, "complete",
                                 stamp, stamp, "mixtral" if role == "assistant" else None, stats,
                                 cjk_index_text(content)))
            parent = message_id
        title = text(rng.randint(2, 6))[:60]
        conversation_rows.append((conversation_id, title, cjk_index_text(title), start, stamp,
                                  "mixtral", None, '{"temperature": 0.7}', int(number % 97 == 0),
                                  int(number % 13 == 0), parent))
        if len(message_rows) >= 50_000 or number == conversations - 1:
            conn.executemany(
                "INSERT INTO conversations (id, title, title_cjk, created_at, updated_at, model, "
                "system_prompt, settings, pinned, archived, active_leaf_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", conversation_rows)
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, "
                "created_at, updated_at, model, stats, search_cjk) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", message_rows)
            conversation_rows.clear()
            message_rows.clear()
            print(f"  {number + 1:>6} conversations, {time.perf_counter() - started:6.1f} s",
                  flush=True)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


def timed(function: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds for each of ``runs`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(name: str, times: list[float], target_ms: float | None) -> None:
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) >= 20 else max(times)
    target = f"target < {target_ms:g} ms" if target_ms is not None else ""
    verdict = "" if target_ms is None else ("ok" if median < target_ms else "SLOW")
    print(f"{name:<34} median {median:8.2f} ms   p95 {p95:8.2f} ms   {target:<18} {verdict}")


def streaming_text() -> Iterator[str]:
    text = ""
    while True:
        text += "and then the reply grows by a few more words "
        yield text


def measure(path: Path) -> None:
    started = time.perf_counter()
    store = Store.open(path)
    print(f"{'open (with crash recovery)':<34} {(time.perf_counter() - started) * 1000:8.2f} ms")
    try:
        print(f"database: {store.count_conversations(include_archived=True):,} conversations, "
              f"{path.stat().st_size / 1e6:,.0f} MB\n")
        report("list newest 50 conversations", timed(store.list_conversations, 50), 50)
        report("list page 10 (offset 450)", timed(lambda: store.list_conversations(offset=450),
                                                  50), 50)
        some = store.list_conversations(limit=1)[0]
        report("active branch (100 messages)", timed(lambda: store.active_branch(some.id), 50),
               None)
        for label, query in QUERIES.items():
            hits = len(store.search(query))
            report(f"search {label} ({hits} hits)", timed(partial(store.search, query), 10), 100)

        conversation = store.create_conversation("bench scratch")
        report("append a message (+FTS, +touch)",
               timed(lambda: store.add_message(conversation.id, "user",
                                               "a new question about lisbon and dragons"), 200), 5)
        reply = store.add_message(conversation.id, "assistant", "", status="streaming")
        growing = streaming_text()
        report("update_message while streaming",
               timed(lambda: store.update_message(reply.id, content=next(growing)), 200), 5)
        report("update_message status only",
               timed(lambda: store.update_message(reply.id, status="streaming"), 200), 5)
        store.delete_conversation(conversation.id)
    finally:
        store.close()


def measure_backup(path: Path) -> None:
    """Back up while the store saves a streaming reply every 20 ms; report the stalls."""
    store = Store.open(path)
    try:
        started = time.perf_counter()
        problems = store.check()
        print(f"{'quick_check (before writes/backups)':<34} "
              f"{(time.perf_counter() - started) * 1000:8.0f} ms   "
              f"{problems[0] if problems else 'sound'}")
        conversation = store.create_conversation("bench backup")
        reply = store.add_message(conversation.id, "assistant", "", status="streaming")
        growing = streaming_text()
        steps: list[float] = []
        last = [time.perf_counter()]

        def step(_remaining: int, _total: int) -> None:
            now = time.perf_counter()
            steps.append((now - last[0]) * 1000)
            last[0] = now

        done = threading.Event()
        taken: list[Backup] = []

        def back_up() -> None:
            last[0] = time.perf_counter()
            taken.append(take_backup(path, budget_bytes=10**12, progress=step))
            done.set()

        waits: list[float] = []
        started = time.perf_counter()
        worker = threading.Thread(target=back_up)
        worker.start()
        while not done.is_set():
            before = time.perf_counter()
            store.update_message(reply.id, content=next(growing))
            waits.append((time.perf_counter() - before) * 1000)
            time.sleep(0.02)
        worker.join()
        seconds = time.perf_counter() - started
        print(f"{'backup (online API, own snapshot)':<34} {seconds * 1000:8.0f} ms   "
              f"{len(steps)} steps, longest {max(steps):.1f} ms, "
              f"{taken[0].size / 1e6:,.0f} MB")
        verdict = "ok" if max(waits) < 50 else "SLOW"
        print(f"{'longest save wait during backup':<34} {max(waits):8.2f} ms   "
              f"({len(waits)} saves; goal < 50 ms)  {verdict}")
        store.delete_conversation(conversation.id)
        taken[0].path.unlink()
    finally:
        store.close()


def measure_salvage(path: Path) -> None:
    """Damage one page of messages in a copy, then salvage it; report time and share."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-salvage-"))
    try:
        copy = scratch / "conversations.sqlite3"
        source = sqlite3.connect(path)
        target = sqlite3.connect(copy)
        source.backup(target)
        target.close()
        source.close()
        with Store.open(copy) as store:
            total = store.count_messages()
        size = copy.stat().st_size
        page = (size // 2) // 4096
        with copy.open("r+b") as file:
            file.seek(page * 4096)
            file.write(random.Random(SEED).randbytes(4096))
        started = time.perf_counter()
        report_ = recover(copy)
        seconds = time.perf_counter() - started
        print(f"{'salvage after one damaged page':<34} {seconds * 1000:8.0f} ms   "
              f"recovered {report_.messages:,} of {total:,} messages "
              f"({report_.messages / max(total, 1):.4%})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=None,
                        help="database to build/reuse (default: under the temp folder)")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true", help="build even if cached")
    args = parser.parse_args()
    path = args.db or (Path(tempfile.gettempdir()) / "mixtral-desk-bench"
                       / f"store-{args.conversations}x{args.messages}.sqlite3")
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = path.with_name(path.name + ".built")
    if args.rebuild or not marker.exists() or not path.exists():
        marker.unlink(missing_ok=True)
        print(f"building {path} ({args.conversations:,} conversations, "
              f"{args.messages:,} messages)")
        seconds = build(path, args.conversations, args.messages)
        marker.write_text(f"{seconds:.1f}\n", encoding="utf-8")
        print(f"built in {seconds:.1f} s\n")
    else:
        print(f"reusing {path} (built in {marker.read_text(encoding='utf-8').strip()} s)\n")
    measure(path)
    print()
    measure_backup(path)
    measure_salvage(path)


if __name__ == "__main__":
    main()
