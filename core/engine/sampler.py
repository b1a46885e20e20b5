"""llama.cpp's native sampler chain for one reply, so that no sampling runs in Python per token.

The chain is the one ``llama_cpp.Llama.generate`` builds (so a seed gives the same reply as
before): repetition penalty over the last 64 tokens, then greedy for temperature 0, else top-k,
top-p, min-p, temperature and a seeded draw. ``llama_sampler_sample`` applies the chain to the
last evaluated token's logits and accepts the drawn token (the penalty then counts it).

Imported only by the engine process (it imports ``llama_cpp``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import llama_cpp

from .options import SamplingOptions

PENALTY_LAST_N = 64  # llama_cpp.Llama's last_n_tokens_size


class NativeSampler:
    """A ``llama_sampler`` chain for ``sampling``, freed on :meth:`close` (or leaving a ``with``).
    """

    def __init__(self, sampling: SamplingOptions, seed: int, n_vocab: int) -> None:
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        self._chain: Any = llama_cpp.llama_sampler_chain_init(params)
        add = llama_cpp.llama_sampler_chain_add
        add(self._chain, llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature == 0.0:
            add(self._chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(self._chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(self._chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(self._chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(self._chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
            add(self._chain, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any) -> int:
        """Draw the next token from the logits of the last token ``ctx`` evaluated."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, -1))

    def close(self) -> None:
        """Free the chain; idempotent."""
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __enter__(self) -> NativeSampler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
