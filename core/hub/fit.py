"""Whether a Hub file fits this machine, before a byte of it is downloaded.

For each quant entry the header of every part is read by HTTP Range
(:func:`~..gguf.remote_header.read_remote_facts_at`: a few hundred kilobytes, two requests per
part), then the planner (:func:`~..planner.plan_offload`) places it on this machine exactly as
``mixtral-desk plan`` does — experts in RAM, attention and the KV cache in VRAM — with the context
a load would choose. The result is a :class:`FitVerdict`: the verdict, the expected decode speed
and the context, or for a model too large, by how much.

Headers are kept in a :class:`HeaderCache` keyed by endpoint, repository, commit and file set, so
a repository viewed again (or scrolled back to) costs no request. :class:`FitChecker` reads at
most :data:`MAX_PARALLEL` headers at a time, and stops taking new ones when cancelled.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Final

from ..downloads.hub import HubClient
from ..errors import DeskError, UserText
from ..gguf.merge_experts import is_per_expert
from ..gguf.model_file import ModelFacts
from ..gguf.remote_header import read_remote_facts_at
from ..i18n import N_, tr
from ..model_layout import layout_from_facts
from ..plan_inputs import context_for, memory_model_for
from ..planner import Machine, evaluate, plan_offload
from ..units import format_memory
from .quants import QuantFile

#: Headers read at the same time (each is two small requests per part).
MAX_PARALLEL: Final = 6
#: Header sets kept in memory (a Mixtral header's facts are a few hundred kilobytes).
CACHE_ENTRIES: Final = 256
#: First bytes asked for: a Llama/Mixtral header (32k-token vocabulary) fits; larger grow 4×.
FIRST_READ: Final = 1024 * 1024

#: The planner's verdicts in a few words (translated where shown).
VERDICT_WORDS: Final = {"gpu": N_("fits on the GPU"),
                        "gpu+cpu-experts": N_("fits: GPU, experts in RAM"),
                        "partial": N_("fits: part on the GPU"),
                        "cpu": N_("fits: CPU only"),
                        "too-large": N_("too large")}

CacheKey = tuple[str, str, str, tuple[str, ...]]


class HeaderCache:
    """Remote headers' :class:`ModelFacts` by (endpoint, repository, commit, files); thread-safe,
    least recently used dropped first. ``hits``/``misses`` count look-ups."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._data: OrderedDict[CacheKey, ModelFacts] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> ModelFacts | None:
        with self._lock:
            facts = self._data.get(key)
            if facts is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return facts

    def put(self, key: CacheKey, facts: ModelFacts) -> None:
        with self._lock:
            self._data[key] = facts
            self._data.move_to_end(key)
            while len(self._data) > self._entries:
                self._data.popitem(last=False)


@dataclass(frozen=True)
class FitVerdict:
    """What the planner says of one entry on this machine.

    ``verdict``: the planner's verdict, or ``"unknown"`` when the header could not be read
    (``problem`` says why). ``tokens_per_s``/``n_ctx``: the predicted decode speed and the
    context a load would choose (for a model that fits). ``over_by``: for ``too-large``, how many
    bytes more than this machine's usable memory the smallest placement needs.
    ``needs_conversion``: the file stores one tensor per expert (a Mixtral conversion from before
    April 2024), which llama.cpp loads only after ``merge-experts`` (or the window's Convert).
    """

    verdict: str
    tokens_per_s: float | None = None
    n_ctx: int | None = None
    over_by: int | None = None
    problem: UserText | None = None
    name: str | None = None
    needs_conversion: bool = False

    @property
    def fits(self) -> bool:
        return self.verdict not in ("too-large", "unknown")

    def summary(self) -> str:
        """One line in the current language: "fits on the GPU · about 42 tok/s · 8,192 tokens",
        "too large by 12.3 GB", or why it is not known."""
        if self.problem is not None:
            return tr("unknown: {reason}", reason=str(self.problem))
        if self.verdict == "too-large":
            text = tr("too large by {amount}", amount=format_memory(self.over_by or 0))
        else:
            words = (tr(VERDICT_WORDS[self.verdict]) if self.verdict in VERDICT_WORDS
                     else self.verdict)
            text = tr("{verdict} · about {speed} tok/s · {tokens} tokens", verdict=words,
                      speed=format(self.tokens_per_s or 0, ".1f"),
                      tokens=format(self.n_ctx or 0, ","))
        if self.needs_conversion:
            return tr("{verdict} · old layout (one tensor per expert): convert it after "
                      "downloading", verdict=text)
        return text

    def to_json_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "tokens_per_s": None if self.tokens_per_s is None
                else round(self.tokens_per_s, 2), "n_ctx": self.n_ctx, "over_by": self.over_by,
                "problem": self.problem.english() if self.problem is not None else None,
                "needs_conversion": self.needs_conversion}


def verdict_for_facts(facts: ModelFacts, machine: Machine, ram_total: int | None = None,
                      ) -> FitVerdict:
    """The verdict for a model's header facts on ``machine`` (the settings' KV type and context
    rule, as a load would use them). Raises nothing for facts a header gave."""
    context = context_for(facts, None, None, machine, ram_total)
    model = memory_model_for(facts, None, None, machine, context)
    plan = plan_offload(model, machine, layout=layout_from_facts(facts))
    name = facts.name or facts.path.name
    old_layout = is_per_expert(t.name for t in facts.tensors)
    if plan.fits:
        return FitVerdict(plan.verdict, plan.tokens_per_s, plan.n_ctx, name=name,
                          needs_conversion=old_layout)
    need = evaluate(model, machine, 0, 0).ram_bytes
    have = machine.ram_budget + (machine.vram_budget if machine.has_gpu
                                 and not machine.unified_memory else 0)
    return FitVerdict("too-large", over_by=max(0, need - have), n_ctx=plan.n_ctx, name=name,
                      needs_conversion=old_layout)


class FitChecker:
    """Fit verdicts for the entries of repositories on one endpoint, for one machine.

    ``cache`` may be shared between checkers (the window keeps one for the session).
    """

    def __init__(self, hub: HubClient, machine: Machine, *, cache: HeaderCache | None = None,
                 ram_total: int | None = None, first_read: int = FIRST_READ) -> None:
        self.hub, self.machine = hub, machine
        self.cache = cache if cache is not None else HeaderCache()
        self.ram_total = ram_total
        self.first_read = first_read

    def facts(self, repo_id: str, commit: str, entry: QuantFile) -> ModelFacts:
        """The entry's header facts, from the cache or read by Range.

        Raises:
            RemoteHeaderError, GGUFError: as :func:`~..gguf.remote_header.read_remote_facts_at`.
        """
        key: CacheKey = (self.hub.endpoint, repo_id, commit, entry.files)
        facts = self.cache.get(key)
        if facts is None:
            facts = read_remote_facts_at(self.hub, repo_id, commit, entry.files,
                                         first_read=self.first_read, keep_tokens=False)
            self.cache.put(key, facts)
        return facts

    def verdict(self, repo_id: str, commit: str, entry: QuantFile) -> FitVerdict:
        """The entry's verdict; a header that cannot be read gives ``"unknown"`` with the
        reason (Offline mode, refused, not GGUF). Raises nothing for a user's error."""
        try:
            facts = self.facts(repo_id, commit, entry)
        except DeskError as error:
            return FitVerdict("unknown", problem=error.user_message)
        return verdict_for_facts(facts, self.machine, self.ram_total)

    def verdicts(self, repo_id: str, commit: str, entries: Iterable[QuantFile], *,
                 on_verdict: Callable[[QuantFile, FitVerdict], object] | None = None,
                 cancelled: threading.Event | None = None) -> dict[str, FitVerdict]:
        """Verdicts by entry name, :data:`MAX_PARALLEL` at a time; ``on_verdict`` is called (on
        a worker thread) as each arrives. Entries not started when ``cancelled`` is set are left
        out. Raises nothing for a user's error."""
        out: dict[str, FitVerdict] = {}
        todo = list(entries)
        if not todo:
            return out

        def one(entry: QuantFile) -> tuple[QuantFile, FitVerdict] | None:
            if cancelled is not None and cancelled.is_set():
                return None
            return entry, self.verdict(repo_id, commit, entry)

        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo)),
                                thread_name_prefix="mixtral-desk-fit") as pool:
            for future in as_completed([pool.submit(one, e) for e in todo]):
                result = future.result()
                if result is None:
                    continue
                entry, verdict = result
                out[entry.name] = verdict
                if on_verdict is not None:
                    on_verdict(entry, verdict)
        return out
