"""The context length a model gets unless the user chose one, and why.

A long context costs memory twice over: its KV cache, and a compute buffer that grows with it
(Mixtral at 32k: 4 GiB + 2 GiB). Since the engine shifts a full context instead of evaluating it
again, a shorter window costs little in use. So the automatic context is modest and leaves the
rest of the system room to breathe:

* **Headroom.** The plan for a context must leave :func:`ram_headroom` of RAM free —
  max(2 GiB, 15 % of the machine's total RAM) — after the model (weights, KV cache, compute
  buffers, as the planner counts them) and the engine process. On a GPU the plan is made with
  :func:`vram_headroom` — max(512 MiB, 5 % of the free VRAM) — left unused, on top of the
  planner's own margin (a plan that leans on RAM instead is what is checked).
* **8k by default.** :data:`DEFAULT_CONTEXT` (8,192 tokens) is chosen when it leaves the
  headroom free.
* **Longer only when memory is plentiful:** the longest candidate above 8k (up to 32k, or the
  model's training length if shorter) whose plan leaves **twice** the headroom free — and, on a
  GPU, keeps as many layers and experts there as the 8k plan: a longer window never moves
  weights to RAM, which would slow every token.
* **Shorter when memory is tight:** the longest candidate below 8k that leaves the headroom; if
  none does, the shortest (:data:`MINIMUM`), and the load says so.

Without "Automatic" GPU layers the placement set by hand is what a context is judged by (its VRAM
must leave the VRAM headroom too).

:func:`choose_context` returns a :class:`ContextChoice`: the length, a :class:`ContextReason` and
the figures behind it; :meth:`ContextChoice.text` is the one sentence both front ends show
("context 8,192 tokens: the default; 16,384 would leave 5.6 GiB free, less than twice the 3.5 GiB
kept for the system": Mixtral-8x7B Q2_K on a 23.5 GiB machine with 22 GiB available).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from .i18n import tr
from .memory_model import memory_model_from_facts
from .planner import RAM_PROCESS_OVERHEAD, plan_for_settings, plan_offload
from .units import GiB, MiB, format_memory

if TYPE_CHECKING:
    from .gguf.model_file import ModelFacts
    from .planner import Machine, Plan

#: The lengths tried, longest first. Longer contexts than 32k are possible but slow to fill on a
#: laptop; a user who wants one sets it.
CANDIDATES: Final = (32768, 16384, 8192, 4096, 2048)
#: The context chosen when it leaves the headroom free; longer ones need twice the headroom.
DEFAULT_CONTEXT: Final = 8192
#: The context used when even the shortest candidate does not leave the headroom (the load then
#: says why).
MINIMUM: Final = 2048
#: The training length assumed for a header that does not give one.
UNKNOWN_TRAINED: Final = 4096
#: RAM kept free for the rest of the system: max(2 GiB, 15 % of the total RAM).
RAM_HEADROOM_MIN: Final = 2 * GiB
RAM_HEADROOM_SHARE: Final = 0.15
#: VRAM left unused by the plan a context is judged by: max(512 MiB, 5 % of the free VRAM).
VRAM_HEADROOM_MIN: Final = 512 * MiB
VRAM_HEADROOM_SHARE: Final = 0.05
#: A context longer than :data:`DEFAULT_CONTEXT` must leave this many times the headroom free.
PLENTIFUL_FACTOR: Final = 2


class ContextReason(str, Enum):
    """Why a context length was chosen (the values are stable: ``plan --json`` shows them)."""

    #: The user set the length (the settings, ``--ctx``).
    SET = "set"
    #: Longer than the default: its plan leaves twice the headroom free.
    PLENTIFUL = "plentiful"
    #: The default, :data:`DEFAULT_CONTEXT`: it leaves the headroom, longer ones not twice that.
    DEFAULT = "default"
    #: The model's training length, shorter than the default, leaves the headroom.
    TRAINED = "trained"
    #: Shorter than the default: the longest that leaves the headroom.
    MOST_THAT_FITS = "most-that-fits"
    #: Even the shortest leaves less than the headroom (it fits, just).
    TIGHT = "tight"
    #: The model does not fit this machine even with the shortest.
    TOO_LARGE = "too-large"


@dataclass(frozen=True)
class ContextChoice:
    """A context length and why it was chosen.

    ``headroom``: the RAM kept free for the system (bytes; 0 for :attr:`ContextReason.SET`);
    ``free``: the RAM the plan for ``n_ctx`` leaves free (``None``: not planned, or it does not
    fit); ``longer``/``longer_free``: the next longer length that was passed over and the RAM it
    would leave free (``None``: it would not fit at all); ``longer_slower``: it was passed over
    because its plan would move weights from the GPU to RAM, not for want of RAM.
    """

    n_ctx: int
    reason: ContextReason
    headroom: int = 0
    free: int | None = None
    longer: int | None = None
    longer_free: int | None = None
    longer_slower: bool = False

    def why(self) -> str:
        """The reason as a clause: ``the default; 16,384 would leave 4.2 GiB free, …``."""
        values = {"headroom": format_memory(self.headroom),
                  "free": format_memory(max(0, self.free or 0)),
                  "longer": format(self.longer or 0, ","),
                  "longer_free": format_memory(max(0, self.longer_free or 0))}
        reason = self.reason
        if reason is ContextReason.SET:
            return tr("as set, not chosen automatically")
        if reason is ContextReason.PLENTIFUL:
            return tr("memory is plentiful, {free} stays free, at least twice the {headroom} "
                      "kept for the system", **values)
        if reason is ContextReason.TRAINED:
            return tr("the model's training length, which leaves {free} free", **values)
        if reason is ContextReason.DEFAULT and self.longer is None:
            return tr("the default", **values)
        if reason is ContextReason.DEFAULT and self.longer_slower:
            return tr("the default; {longer} would move weights from the GPU to RAM, slowing "
                      "every token", **values)
        if reason is ContextReason.DEFAULT and self.longer_free is None:
            return tr("the default; {longer} would not fit in memory", **values)
        if reason is ContextReason.DEFAULT:
            return tr("the default; {longer} would leave {longer_free} free, less than twice "
                      "the {headroom} kept for the system", **values)
        if reason is ContextReason.MOST_THAT_FITS and self.longer_free is None:
            return tr("the most that leaves {headroom} free for the system; {longer} would not "
                      "fit in memory", **values)
        if reason is ContextReason.MOST_THAT_FITS:
            return tr("the most that leaves {headroom} free for the system; {longer} would "
                      "leave {longer_free}", **values)
        if reason is ContextReason.TIGHT:
            return tr("the shortest offered, and even it leaves only {free} free, less than the "
                      "{headroom} kept for the system", **values)
        return tr("the shortest offered; the model does not fit this machine's memory even "
                  "with it", **values)

    def text(self) -> str:
        """The sentence both front ends show: ``context 8,192 tokens: the default; …``."""
        return tr("context {tokens} tokens: {why}", tokens=format(self.n_ctx, ","),
                  why=self.why())

    def to_json_dict(self) -> dict[str, Any]:
        """The choice as JSON-safe values (``reason``: a :class:`ContextReason` value)."""
        return {"n_ctx": self.n_ctx, "reason": self.reason.value,
                "headroom_bytes": self.headroom, "free_bytes": self.free,
                "longer": self.longer, "longer_free_bytes": self.longer_free,
                "longer_slower": self.longer_slower,
                "text": self.text()}


def set_context(n_ctx: int) -> ContextChoice:
    """The choice for a length the user set. Raises nothing."""
    return ContextChoice(n_ctx, ContextReason.SET)


def trained_context(facts: ModelFacts) -> int:
    """The model's training context, or :data:`UNKNOWN_TRAINED` when the header does not give
    one. The header's value is checked when it is read (at most 16M tokens, see
    :mod:`.gguf.hparams`); this never returns less than 1."""
    return facts.context_length if facts.context_length > 0 else UNKNOWN_TRAINED


def ram_headroom(ram_total: int) -> int:
    """RAM kept free for the rest of the system: max(2 GiB, 15 % of ``ram_total``)."""
    return max(RAM_HEADROOM_MIN, int(ram_total * RAM_HEADROOM_SHARE))


def vram_headroom(vram_bytes: int) -> int:
    """VRAM a context's plan leaves unused: max(512 MiB, 5 % of the free ``vram_bytes``); 0
    without a GPU."""
    if vram_bytes <= 0:
        return 0
    return max(VRAM_HEADROOM_MIN, int(vram_bytes * VRAM_HEADROOM_SHARE))


def _ram_left(plan: Plan, machine: Machine) -> int:
    """The available RAM the plan leaves free (the engine process counted; unified memory
    counts the GPU's share too)."""
    used = plan.ram_bytes + RAM_PROCESS_OVERHEAD
    if machine.unified_memory:
        used += plan.vram_bytes
    return machine.ram_bytes - used


def _keeps_placement(longer: Plan, default: Plan | None) -> bool:
    """Whether ``longer`` puts as much on the GPU as ``default`` (no fewer layers, no more
    layers whose experts stay in RAM): a longer window that costs no decode speed."""
    if default is None:
        return True
    return (longer.n_gpu_layers >= default.n_gpu_layers
            and longer.n_cpu_moe <= default.n_cpu_moe)


class _Planner:
    """The plans of one model on one machine, by context length (each made once)."""

    def __init__(self, facts: ModelFacts, machine: Machine, kv_type: str, flash_attn: bool,
                 placement: tuple[int, int] | None) -> None:
        self.facts, self.machine, self.placement = facts, machine, placement
        self.kv_type, self.flash_attn = kv_type, flash_attn
        self.max_vram = max(0, machine.vram_bytes - vram_headroom(machine.vram_bytes))
        self.plans: dict[int, tuple[Plan | None, int | None]] = {}

    def plan(self, n_ctx: int) -> tuple[Plan | None, int | None]:
        """The plan for ``n_ctx`` and the RAM it leaves free; ``(None, None)`` when it does not
        fit (a placement set by hand: when it needs more than the VRAM less its headroom)."""
        if n_ctx not in self.plans:
            self.plans[n_ctx] = self._plan(n_ctx)
        return self.plans[n_ctx]

    def _plan(self, n_ctx: int) -> tuple[Plan | None, int | None]:
        machine = self.machine
        model = memory_model_from_facts(self.facts, n_ctx, self.kv_type,
                                        flash_attn=self.flash_attn)
        if self.placement is not None:
            plan = plan_for_settings(model, machine, *self.placement)
            if machine.has_gpu and plan.vram_bytes > self.max_vram:
                return None, None
        else:
            plan = plan_offload(model, machine, max_vram=self.max_vram)
            if not plan.fits:
                return None, None
        return plan, _ram_left(plan, machine)

    def free(self, n_ctx: int) -> int | None:
        """The RAM the plan for ``n_ctx`` leaves free (``None``: it does not fit)."""
        return self.plan(n_ctx)[1]

    def leaves(self, n_ctx: int, needed: int) -> bool:
        """Whether the plan for ``n_ctx`` fits and leaves ``needed`` bytes of RAM free."""
        left = self.free(n_ctx)
        return left is not None and left >= needed


def choose_context(facts: ModelFacts, machine: Machine, *, ram_total: int | None = None,
                   kv_type: str = "f16", flash_attn: bool = False,
                   gpu_layers: int | None = None, cpu_moe: int = 0) -> ContextChoice:
    """The automatic context for ``facts`` on ``machine`` (see the module's rules), with why.

    ``ram_total``: the machine's total RAM, for the headroom (default: ``machine.ram_bytes``,
    as for a simulated machine). ``gpu_layers``/``cpu_moe``: a placement set by hand (the memory
    it needs is what counts); ``None``: the planner's best placement, and then on a GPU a
    context longer than the default must also keep the default's placement (as many layers and
    experts on the GPU): a longer window never costs decode speed by default. The result is
    never above the training length nor :data:`CANDIDATES`' longest. Raises nothing.
    """
    headroom = ram_headroom(machine.ram_bytes if ram_total is None else ram_total)
    placement = None if gpu_layers is None else (gpu_layers, cpu_moe)
    plans = _Planner(facts, machine, kv_type, flash_attn, placement)
    trained = trained_context(facts)
    cap = min(trained, CANDIDATES[0])
    lengths = sorted({n for n in (*CANDIDATES, cap) if n <= cap}, reverse=True)
    default = min(DEFAULT_CONTEXT, cap)

    longer = [n for n in lengths if n > default]
    slower = False  # the last longer length passed over would move weights off the GPU
    for n_ctx in longer:
        slower = False
        if plans.leaves(n_ctx, PLENTIFUL_FACTOR * headroom):
            plan, default_plan = plans.plan(n_ctx)[0], plans.plan(default)[0]
            if placement is not None or plan is None or _keeps_placement(plan, default_plan):
                return ContextChoice(n_ctx, ContextReason.PLENTIFUL, headroom,
                                     plans.free(n_ctx))
            slower = True
    passed = longer[-1] if longer else None
    for n_ctx in (n for n in lengths if n <= default):
        if plans.leaves(n_ctx, headroom):
            if n_ctx < default:
                reason = ContextReason.MOST_THAT_FITS
            elif n_ctx == trained:
                reason = ContextReason.TRAINED
            else:
                reason = ContextReason.DEFAULT
            return ContextChoice(n_ctx, reason, headroom, plans.free(n_ctx), passed,
                                 None if passed is None else plans.free(passed), slower)
        passed, slower = n_ctx, False
    shortest = min(MINIMUM, cap)
    left = plans.free(shortest)
    reason = ContextReason.TOO_LARGE if left is None or left < 0 else ContextReason.TIGHT
    return ContextChoice(shortest, reason, headroom, left)


def automatic_context(facts: ModelFacts, machine: Machine, *, kv_type: str = "f16",
                      flash_attn: bool = False, ram_total: int | None = None) -> int:
    """The length of :func:`choose_context` (kept for callers that need no reason)."""
    return choose_context(facts, machine, ram_total=ram_total, kv_type=kv_type,
                          flash_attn=flash_attn).n_ctx
