"""Our own transfer loop: Range requests from the bytes on disk, retries, a stall watchdog, hashing.

One call of :func:`transfer_file` brings one file's ``.part`` up to its full size:

* it continues from the bytes already on disk (their sha256 state is rebuilt once by reading them);
  a sidecar ``<name>.part.json`` says which remote file those bytes belong to, so a part from
  another commit or file is never continued;
* before every (re)connection it asks the Hub where the file is (signed URLs expire);
* connection errors, resets, truncated bodies, stalls (no byte for ``stall_timeout`` seconds),
  5xx, 408, 429 and expired URLs are retried with exponential backoff (``Retry-After`` honoured);
  the retry budget counts failures in a row without progress;
* the bytes are written and hashed on a second thread while the next ones arrive, so
  verification needs no second pass and costs no throughput;
* a full disk truncates the part to the bytes known good and raises :class:`DiskFullError`.

Verification (size and sha256) happens at the end; renaming to the final name is the caller's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx2

from ..atomic_write import write_atomic
from ..errors import UserText
from ..i18n import N_, tr
from ..network import OfflineError
from .errors import (
    DiskFullError,
    DownloadInterrupted,
    HubUnavailableError,
    NetworkError,
    VerificationError,
)
from .hub import FileLocation

_REHASH_CHUNK = 8 * 1024 * 1024
_BUFFERS = 4
# Bytes go to the writer thread in batches (few wake-ups), at least every 50 ms (progress).
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_SECONDS = 0.05
_RETRY_STATUS = frozenset({403, 408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a transfer tries. ``stall_timeout``: seconds without a byte before reconnecting."""

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    stall_timeout: float = 30.0
    connect_timeout: float = 20.0


NoticeKind = Literal["retrying", "stalled", "restarted"]


@dataclass(frozen=True)
class TransferNotice:
    """Something the user should know about a transfer that goes on.

    ``kind``: ``retrying`` (a connection failed; next try in ``delay`` s), ``stalled`` (no byte
    for the stall timeout; reconnecting in ``delay`` s) or ``restarted`` (the server ignored the
    Range request, so the file starts again from zero). ``attempt`` counts failures in a row.
    """

    kind: NoticeKind
    reason: str
    attempt: int = 0
    delay: float = 0.0


class Control:
    """Pause/cancel for a running transfer, safe to use from any thread."""

    def __init__(self, poll_interval: float = 0.5) -> None:
        self._event = threading.Event()
        self._reason: str | None = None
        self._poll_interval = poll_interval

    @property
    def reason(self) -> str | None:
        return self._reason

    def request(self, reason: str) -> None:
        """Ask the transfer to stop with ``reason`` (``paused`` or ``cancelled``)."""
        if self._reason is None or reason == "cancelled":
            self._reason = reason
        self._event.set()

    def check(self) -> None:
        """Raises DownloadInterrupted when a stop was requested."""
        if self._reason is not None:
            raise DownloadInterrupted(self._reason)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking early to raise DownloadInterrupted on pause/cancel."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._event.wait(min(left, self._poll_interval))


# --- the part file and its sidecar ---------------------------------------------------------------

def sidecar_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def prepare_part(part: Path, identity: dict[str, Any], size: int) -> int:
    """Make ``part`` ready to continue and return how many bytes it already holds.

    A part without a sidecar, with a sidecar for another file (other sha256 or size), or longer
    than the file, is started again from zero.

    Raises:
        OSError: the folder cannot be written.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(part)
    try:
        known = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = None
    have = part.stat().st_size if part.exists() else 0
    if known != identity or have > size:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        write_atomic(side, json.dumps(identity))
        have = 0
    part.touch()
    return have


def remove_part(part: Path) -> None:
    """Delete a part and its sidecar (missing files are fine)."""
    for path in (part, sidecar_path(part)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def rebuild_hash(part: Path, length: int, control: Control) -> Any:
    """The sha256 state of the first ``length`` bytes of ``part`` (read once, on resume)."""
    digest = hashlib.sha256()
    with part.open("rb") as handle:
        left = length
        while left:
            control.check()
            chunk = handle.read(min(_REHASH_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest


# --- writing and hashing on a second thread -------------------------------------------------------

class _Sink:
    """Appends bytes to the part and hashes them on its own thread.

    The reading thread copies chunks into a few reused 4 MiB buffers (no allocation, no page
    faults) and hands each full buffer — or a partial one every 50 ms, for live progress — to
    the writer, which writes and hashes it in two calls that run without the GIL.
    ``done`` is the number of bytes both written and hashed; after :meth:`drain` it is exact.
    """

    def __init__(self, part: Path, done: int, digest: Any,
                 on_bytes: Callable[[int], None]) -> None:
        self.part = part
        self.done = done
        self.digest = digest
        self._on_bytes = on_bytes
        self._fd = os.open(part, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        os.ftruncate(self._fd, done)
        os.lseek(self._fd, done, os.SEEK_SET)
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(_BUFFERS):
            self._free.put(bytearray(_BATCH_BYTES))
        self._queue: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._current: bytearray | None = None
        self._fill = 0
        self._submitted = time.monotonic()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="download-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self._write(item[0], item[1])
            except BaseException as error:  # handed to the reading thread
                self.error = error
            finally:
                if item is not None:
                    self._free.put(item[0])
                self._queue.task_done()

    def _write(self, buffer: bytearray, length: int) -> None:
        # On an error (a full disk) nothing of this buffer is hashed; drain() cuts the file back.
        with memoryview(buffer) as whole, whole[:length] as data:
            view = data
            while view:
                view = view[os.write(self._fd, view):]
            self.digest.update(data)
        self.done += length
        self._on_bytes(self.done)

    def feed(self, chunk: bytes) -> None:
        """Take bytes from the network (reading thread only).

        Raises:
            DiskFullError, OSError: a previous write failed.
        """
        if self.error is not None:
            self.drain()
        view = memoryview(chunk)
        while view:
            if self._current is None:
                self._current, self._fill = self._free.get(), 0
            n = min(len(view), _BATCH_BYTES - self._fill)
            self._current[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == _BATCH_BYTES:
                self.flush()
        if time.monotonic() - self._submitted >= _BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Hand what was fed so far to the writer."""
        if self._current is not None and self._fill:
            self._queue.put((self._current, self._fill))
            self._current = None
        self._submitted = time.monotonic()

    def drain(self) -> None:
        """Write everything fed; re-raise a write error (ENOSPC → DiskFullError)."""
        self.flush()
        self._queue.join()
        error, self.error = self.error, None
        if error is None:
            return
        os.ftruncate(self._fd, self.done)  # drop a half-written buffer: keep what is hashed
        os.lseek(self._fd, self.done, os.SEEK_SET)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(N_(
                "The disk is full while writing {file} ({done} bytes kept). Free some space, "
                "then resume."), file=self.part.name, done=self.done) from error
        raise error

    def restart(self) -> None:
        """Forget everything: the server sent the whole file instead of the missing range."""
        self.drain()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.done = 0
        self.digest = hashlib.sha256()

    def close(self) -> None:
        """Stop the writer (what was fed but not drained is dropped) and close the file."""
        if self._current is not None:
            self._free.put(self._current)
            self._current = None
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)


# --- the loop -------------------------------------------------------------------------------------

class _RetryableError(Exception):
    """A failure worth another try; ``reason`` says what it was (a phrase, translated where it
    is shown, or the technical text of an error)."""

    def __init__(self, reason: str | UserText, retry_after: float | None = None,
                 stalled: bool = False) -> None:
        self.reason = reason
        self.retry_after = retry_after
        self.stalled = stalled
        super().__init__(reason.english() if isinstance(reason, UserText) else reason)


def transfer_file(*, part: Path, size: int, sha256: str | None,
                  locate: Callable[[], FileLocation], client: httpx2.Client, control: Control,
                  policy: RetryPolicy, on_bytes: Callable[[int], None],
                  on_notice: Callable[[TransferNotice], None] | None = None) -> str:
    """Download into ``part`` (prepared by :func:`prepare_part`) until it has ``size`` bytes.

    ``on_bytes(done)`` is called on the writer thread with the bytes on disk after each chunk.
    Returns the sha256 hex digest of the complete part.

    Raises:
        DownloadInterrupted: ``control`` asked to pause or cancel (the part is kept).
        NetworkError: ``policy.max_attempts`` failures in a row without progress.
        VerificationError: the complete file has the wrong size or sha256 (the part is kept for
            the caller to delete).
        DiskFullError: the disk filled up; the part holds only whole, hashed bytes.
        Hub errors from ``locate`` (gated, not found …): not retried.
    """
    done = part.stat().st_size
    digest = rebuild_hash(part, done, control)
    on_bytes(done)
    sink = _Sink(part, done, digest, on_bytes)
    failures = 0
    try:
        while sink.done < size:
            control.check()
            before = sink.done
            try:
                received = _one_request(sink, size, locate, client, control, policy, on_notice)
                sink.drain()
                if not received and sink.done < size:
                    raise _RetryableError(UserText(N_("the server ended the response without "
                                                      "data")))
            except _RetryableError as problem:
                sink.drain()
                failures = 1 if sink.done > before else failures + 1
                if failures >= policy.max_attempts:
                    raise NetworkError(N_(
                        "Download of {file} keeps failing ({reason}); {done} of {size} bytes "
                        "are kept. Resume it when the connection is better."),
                        file=part.name.removesuffix(".part"), reason=problem.reason,
                        done=sink.done, size=size) from problem
                delay = problem.retry_after if problem.retry_after is not None else min(
                    policy.max_delay, policy.base_delay * 2 ** (failures - 1))
                delay *= 1 + random.uniform(0, 0.1)
                if on_notice is not None:
                    kind: NoticeKind = "stalled" if problem.stalled else "retrying"
                    on_notice(TransferNotice(kind, str(problem.reason), failures, delay))
                control.sleep(delay)
        sink.drain()
        result = sink.digest.hexdigest()
        done = sink.done
    finally:
        sink.close()
    _verify(part, size, sha256, done, result)
    return str(result)


def _verify(part: Path, size: int, sha256: str | None, done: int, result: str) -> None:
    name = part.name.removesuffix(".part")
    actual = part.stat().st_size
    if actual != size or done != size:
        raise VerificationError(N_("{file} has {actual} bytes but the Hub says {size}; the "
                                   "download is corrupt. Download it again."), name,
                                file=name, actual=actual, size=size)
    if sha256 is not None and result != sha256:
        raise VerificationError(N_(
            "{file} is corrupt: its sha256 is {actual}… but the Hub says {expected}…. "
            "The bad data was discarded; download it again."), name,
            file=name, actual=result[:12], expected=sha256[:12])


def _one_request(sink: _Sink, size: int, locate: Callable[[], FileLocation],
                 client: httpx2.Client, control: Control, policy: RetryPolicy,
                 on_notice: Callable[[TransferNotice], None] | None) -> int:
    """One GET from the bytes on disk; returns how many bytes it brought."""
    try:
        where = locate()
    except OfflineError:
        raise  # Offline mode was switched on: stop now, keep the bytes
    except HubUnavailableError as error:
        raise _RetryableError(error.user_message) from error
    headers = dict(where.headers)
    start = sink.done
    if start:
        headers["Range"] = f"bytes={start}-"
    timeout = httpx2.Timeout(policy.stall_timeout, connect=policy.connect_timeout)
    try:
        with client.stream("GET", where.url, headers=headers, timeout=timeout,
                           follow_redirects=True) as response:
            _check_status(response, start, size, sink, on_notice)
            expected = size - sink.done
            received = 0
            try:
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if received > expected:
                        raise NetworkError(N_("The download server sent more bytes than the "
                                              "file has."))
                    sink.feed(chunk)
                    control.check()
            finally:  # the bytes that arrived before a failure are good: keep them
                sink.flush()
            return received
    except httpx2.TimeoutException as error:
        stalled = isinstance(error, httpx2.ReadTimeout)
        seconds = format(policy.stall_timeout, "g")
        raise _RetryableError(UserText(N_("no data for {seconds} s"), seconds=seconds)
                              if stalled else
                              UserText(N_("timed out connecting ({reason})"), reason=error),
                              stalled=stalled) from error
    except httpx2.TransportError as error:
        raise _RetryableError(f"{type(error).__name__}: {error}") from error  # technical


def _check_status(response: httpx2.Response, start: int, size: int, sink: _Sink,
                  on_notice: Callable[[TransferNotice], None] | None) -> None:
    status = response.status_code
    if status == 416 and start >= size:  # pragma: no cover - the loop stops before that
        return
    if status in _RETRY_STATUS or status == 416:
        raise _RetryableError(UserText(N_("the server answered {status}"), status=status),
                              _retry_after(response))
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        if content_range.startswith(f"bytes {start}-"):
            return
    if status in (200, 206):  # the Range was ignored or answered wrongly: start over
        if start:
            sink.restart()
            if on_notice is not None:
                on_notice(TransferNotice("restarted",
                                         tr("the server ignored the resume request")))
        if status == 206:
            got = response.headers.get("Content-Range")
            raise _RetryableError(UserText(N_("unexpected Content-Range {range}"), range=got))
        return
    raise NetworkError(N_("The download server answered {status} {reason}."),
                       status=status, reason=response.reason_phrase)


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, min(float(value), 300.0)) if value else None
    except ValueError:
        return None
