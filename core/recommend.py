"""The first-run recommendation: which catalog entry to download on this machine.

"Which quant should I get?" is the first question in every anchor app's forum. The answer here
comes from the offload planner (:mod:`.planner`) working on each entry's figures for the memory
available now: of the entries that fit and that it expects to answer at a readable speed, the
biggest model (then the biggest, least-quantized file) wins; when none is that fast, the fastest
that fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .catalog import Catalog, CatalogEntry
from .planner import Machine, Plan, plan_for_catalog_entry

#: Tokens per second below which a reply is painful to read as it streams.
READABLE_TOKENS_PER_S: Final = 5.0


@dataclass(frozen=True)
class Recommendation:
    """The entry to suggest, its plan on this machine, and whether it is ``readable`` (expected
    at ``READABLE_TOKENS_PER_S`` or faster)."""

    entry: CatalogEntry
    plan: Plan
    readable: bool


def recommend(catalog: Catalog, machine: Machine) -> Recommendation | None:
    """The entry to suggest for ``machine``, or ``None`` when no entry fits. Raises nothing."""
    fitting = [(entry, plan) for entry in catalog
               if (plan := plan_for_catalog_entry(entry, machine)).fits]
    if not fitting:
        return None
    readable = [(e, p) for e, p in fitting if p.tokens_per_s >= READABLE_TOKENS_PER_S]
    if readable:
        entry, plan = max(readable, key=lambda pair: (pair[0].parameters, pair[0].size_bytes,
                                                      pair[0].recommended))
        return Recommendation(entry, plan, readable=True)
    entry, plan = max(fitting, key=lambda pair: pair[1].tokens_per_s)
    return Recommendation(entry, plan, readable=False)
