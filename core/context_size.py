"""The context length a model gets unless the user chose one: the longest that fits this machine.

A laptop with 16 GB and a 4 GB model can afford a long context; the same laptop with Mixtral cannot.
So the default is measured, not fixed: the planner (:mod:`mixtral_desk.core.planner`) is asked for
each candidate length, longest first, whether the weights, the KV cache of that length and the
compute buffers fit the memory available now — and the first that fits wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .memory_model import memory_model_from_facts
from .planner import plan_offload

if TYPE_CHECKING:
    from .gguf.model_file import ModelFacts
    from .planner import Machine

#: The lengths tried, longest first. Longer contexts than 32k are possible but slow to fill on a
#: laptop; a user who wants one sets it.
CANDIDATES: Final = (32768, 16384, 8192, 4096, 2048)
#: The context used when even the shortest candidate does not fit (the load then says why).
MINIMUM: Final = 2048
#: The training length assumed for a header that does not give one.
UNKNOWN_TRAINED: Final = 4096


def trained_context(facts: ModelFacts) -> int:
    """The model's training context, or :data:`UNKNOWN_TRAINED` when the header does not give
    one. The header's value is checked when it is read (at most 16M tokens, see
    :mod:`.gguf.hparams`); this never returns less than 1."""
    return facts.context_length if facts.context_length > 0 else UNKNOWN_TRAINED


def automatic_context(facts: ModelFacts, machine: Machine, *, kv_type: str = "f16",
                      flash_attn: bool = False) -> int:
    """The longest context (≤ the model's training length and ≤ 32k) that fits ``machine``.

    The training length itself is tried first when it is below 32k and not one of the candidates.
    Returns the shortest candidate (or the training length, if shorter) when nothing fits; so
    the result is never above the training length nor :data:`CANDIDATES`' longest.
    Raises nothing.
    """
    cap = min(trained_context(facts), CANDIDATES[0])
    lengths = sorted({n for n in (*CANDIDATES, cap) if n <= cap}, reverse=True)
    for n_ctx in lengths:
        model = memory_model_from_facts(facts, n_ctx, kv_type, flash_attn=flash_attn)
        if plan_offload(model, machine).fits:
            return n_ctx
    return min(MINIMUM, cap)
