"""The live sequence: what llama.cpp's KV cache holds for sequence 0, kept in step with it.

The worker drives ``llama_decode`` itself (rather than ``Llama.generate``) so that it can restore
cached states and shift the context; :class:`LiveSequence` is the one place that changes the KV
cache, and it keeps :attr:`LiveSequence.tokens` (and the :class:`~.context_shift.Layout` they are
in) equal to what the cache holds after every call, including an aborted or failed decode
(llama.cpp leaves the ubatches it finished; their positions say how far it got).

Imported only by the engine process (it imports ``llama_cpp``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp

from .context_shift import PLAIN, Layout

DECODE_ABORTED = 2  # llama_decode's return value when the abort callback stopped it


class DecodeError(Exception):
    """``llama_decode`` failed; :attr:`code` is its return value (2: aborted, 1: no room)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode returned {code}")
        self.code = code

    @property
    def aborted(self) -> bool:
        """Whether the abort callback stopped it (a stop request)."""
        return self.code == DECODE_ABORTED


class LiveSequence:
    """Sequence 0 of a llama.cpp context (``ctx``) and the tokens its KV cache holds.

    ``n_batch``: the most tokens one ``llama_decode`` call takes.
    """

    def __init__(self, ctx: Any, model: Any, n_batch: int) -> None:
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_batch = max(1, n_batch)
        self.n_swa = int(llama_cpp.llama_model_n_swa(model))
        self.tokens: list[int] = []
        self.layout: Layout = PLAIN
        self._one = (llama_cpp.llama_token * 1)()
        self._one_batch = llama_cpp.llama_batch_get_one(self._one, 1)

    # --- what the cache holds ------------------------------------------------------------------

    def positions(self) -> tuple[int, int]:
        """The smallest and largest position held (-1, -1 when empty)."""
        return (int(llama_cpp.llama_memory_seq_pos_min(self.memory, 0)),
                int(llama_cpp.llama_memory_seq_pos_max(self.memory, 0)))

    def window_kept(self, prefix: int) -> bool:
        """Whether the cache still holds what a prefix of ``prefix`` tokens needs.

        A sliding-window (SWA) model's cache keeps only the last window of positions in its SWA
        layers; a prefix is usable only when the window before it is still there (llama-server's
        rule: the smallest position kept ≤ max(0, prefix - n_swa)).
        """
        first = self.positions()[0]
        return 0 <= first <= max(0, prefix - self.n_swa)

    def can_shift(self) -> bool:
        """Whether tokens can be removed from the middle and the rest moved down: the model's
        cache allows it (``llama_memory_can_shift``) and nothing was slid out of a window."""
        return bool(llama_cpp.llama_memory_can_shift(self.memory)) and self.positions()[0] == 0

    # --- changing it ---------------------------------------------------------------------------

    def clear(self) -> None:
        """Empty the sequence."""
        llama_cpp.llama_memory_seq_rm(self.memory, 0, -1, -1)
        self.tokens = []
        self.layout = PLAIN

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` tokens (all of them are dropped when llama.cpp cannot cut)."""
        if count <= 0 or not llama_cpp.llama_memory_seq_rm(self.memory, 0, count, -1):
            self.clear()
            return
        del self.tokens[count:]

    def shift(self, start: int, count: int, layout: Layout) -> None:
        """Remove ``count`` tokens at position ``start`` and move the rest down by ``count``;
        the result is in ``layout``. The caller checked :meth:`can_shift` (llama.cpp aborts the
        process otherwise)."""
        end = start + count
        llama_cpp.llama_memory_seq_rm(self.memory, 0, start, end)
        llama_cpp.llama_memory_seq_add(self.memory, 0, end, -1, -count)
        del self.tokens[start:end]
        self.layout = layout

    def _resync(self) -> None:
        """After a failed decode: keep the tokens whose positions the cache now holds."""
        last = self.positions()[1]
        del self.tokens[last + 1:]

    def evaluate(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` (at least one), ``n_batch`` at a time; the logits of the last one
        are then ready for sampling.

        Raises:
            DecodeError: llama.cpp failed or was aborted; the tokens it finished stay.
        """
        for start in range(0, len(tokens), self.n_batch):
            chunk = list(tokens[start:start + self.n_batch])
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            self.tokens += chunk
            code = int(llama_cpp.llama_decode(
                self.ctx, llama_cpp.llama_batch_get_one(array, len(chunk))))
            if code != 0:
                self._resync()
                raise DecodeError(code)

    def append(self, token: int) -> None:
        """Evaluate one sampled token (the decoding loop's fast path).

        Raises:
            DecodeError: as :meth:`evaluate`.
        """
        self._one[0] = token
        self.tokens.append(token)
        code = int(llama_cpp.llama_decode(self.ctx, self._one_batch))
        if code != 0:
            self._resync()
            raise DecodeError(code)

    # --- states --------------------------------------------------------------------------------

    def state_size(self) -> int:
        """The bytes :meth:`read_state` would return (at most)."""
        return int(llama_cpp.llama_state_seq_get_size(self.ctx, 0))

    def read_state(self) -> bytes | None:
        """The sequence's state (``llama_state_seq_get_data``), or None when it cannot be read."""
        size = self.state_size()
        if size <= 0:
            return None
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(self.ctx, buffer, size, 0))
        if written <= 0 or written > size:
            return None
        return ctypes.string_at(buffer, written)

    def write_state(self, state: bytes, tokens: Sequence[int], layout: Layout) -> bool:
        """Replace the sequence with a saved state of ``tokens``; ``False`` (and empty) when
        llama.cpp refuses it or it does not hold exactly ``len(tokens)`` positions."""
        self.clear()
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        read = int(llama_cpp.llama_state_seq_set_data(self.ctx, buffer, len(state), 0))
        if read == 0 or self.positions()[1] != len(tokens) - 1:
            self.clear()
            return False
        self.tokens = list(tokens)
        self.layout = layout
        return True
