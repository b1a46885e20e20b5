"""The planner's chain of placements: attention first, then experts, the boundary layer split
tensor by tensor; more VRAM never moves attention back to the CPU nor predicts a slower plan; the
override patterns keep exactly the tensors the plan counts in RAM, for merged, fused
(``ffn_gate_up_exps``), per-expert and shared-expert (``ffn_*_shexp``) layouts; a real load with a
split layer."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import gguf
import pytest

from mixtral_desk.core.cpu_speed import CpuSpeed
from mixtral_desk.core.engine import ChatMessage, EngineHost, LoadOptions, SamplingOptions
from mixtral_desk.core.engine.placement import cpu_moe_patterns
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.model_layout import ModelLayout, layout_from_facts
from mixtral_desk.core.planner import Machine, Plan, apply_plan, plan_offload, simulated_machine
from mixtral_desk.core.units import GiB, MiB
from tests.mixtral_header import (
    MIXTRAL_KV,
    N_EMBD,
    N_EXPERT,
    N_FF,
    N_VOCAB,
    TensorSpec,
    mixtral_q4_k_m_tensors,
    n_bytes,
    write_header_model,
    write_mixtral_q4_k_m,
)

Q = gguf.GGMLQuantizationType
#: A CPU as this project's 2-core test machine measured it (for plans with measured rates).
MEASURED_CPU = CpuSpeed(bandwidth_one=28e9, bandwidth_all=32e9, threads=2, flops=185e9)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs sparse files")


@pytest.fixture(scope="module")
def mixtral_facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    return inspect_model(write_mixtral_q4_k_m(tmp_path_factory.mktemp("mx") / "mixtral.gguf"))


def fused_moe_tensors(n_layers: int = 24, e: int = 2048, f: int = 768, x: int = 64,
                      shared: int = 2816, v: int = 32000) -> list[TensorSpec]:
    """A Qwen2-MoE / DeepSeek-style header: gate and up fused in ``ffn_gate_up_exps`` (as newer
    llama.cpp conversions write it), a shared expert used by every token, Q4_K experts."""
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q4_K)]
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (e,), Q.F32), (p + "attn_q.weight", (e, e), Q.Q4_K),
                    (p + "attn_k.weight", (512, e), Q.Q8_0),
                    (p + "attn_v.weight", (512, e), Q.Q8_0),
                    (p + "attn_output.weight", (e, e), Q.Q4_K),
                    (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "ffn_gate_inp.weight", (x, e), Q.F32),
                    (p + "ffn_gate_up_exps.weight", (x, 2 * f, e), Q.Q4_K),
                    (p + "ffn_down_exps.weight", (x, e, f), Q.Q4_K),
                    (p + "ffn_gate_inp_shexp.weight", (e,), Q.F32),
                    (p + "ffn_gate_shexp.weight", (shared, e), Q.Q4_K),
                    (p + "ffn_up_shexp.weight", (shared, e), Q.Q4_K),
                    (p + "ffn_down_shexp.weight", (e, shared), Q.Q4_K)]
    return [*tensors, ("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q6_K)]


FUSED_KV = {
    "general.name": "fused-moe", "qwen2moe.context_length": 32768, "qwen2moe.block_count": 24,
    "qwen2moe.embedding_length": 2048, "qwen2moe.feed_forward_length": 5632,
    "qwen2moe.expert_feed_forward_length": 768,
    "qwen2moe.expert_shared_feed_forward_length": 2816,
    "qwen2moe.attention.head_count": 16, "qwen2moe.attention.head_count_kv": 4,
    "qwen2moe.expert_count": 64, "qwen2moe.expert_used_count": 4,
}


def per_expert_tensors(n_layers: int = 32) -> list[TensorSpec]:
    """Mixtral as TheBloke's Dec-2023 conversions stored it: one tensor per expert."""
    tensors: list[TensorSpec] = []
    for name, shape, qtype in mixtral_q4_k_m_tensors():
        m = re.match(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight", name)
        if not m:
            tensors.append((name, shape, qtype))
            continue
        tensors += [(f"blk.{m.group(1)}.ffn_{m.group(2)}.{x}.weight", tuple(shape[1:]), qtype)
                    for x in range(N_EXPERT)]
    return tensors


@pytest.fixture(scope="module")
def fused_facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    path = tmp_path_factory.mktemp("fused") / "fused-moe.gguf"
    return inspect_model(write_header_model(path, fused_moe_tensors(), FUSED_KV,
                                            arch="qwen2moe", vocab=32000))


@pytest.fixture(scope="module")
def per_expert_facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    path = tmp_path_factory.mktemp("pe") / "mixtral-per-expert.gguf"
    return inspect_model(write_header_model(path, per_expert_tensors(), MIXTRAL_KV,
                                            vocab=N_VOCAB))


def sweep(facts: ModelFacts, *, ctx: int, ram: int, cpu: CpuSpeed | None = None,
          steps: Sequence[int] = range(0, 81), vendor: str = "nvidia",
          gpu_name: str = "RTX 4090") -> list[tuple[Machine, Plan]]:
    """Plans for 0 … 80 GiB of VRAM at 1 GiB steps."""
    model = memory_model_from_facts(facts, ctx)
    layout = layout_from_facts(facts)
    plans = []
    for vram in steps:
        machine = simulated_machine(ram=ram, vram=vram * GiB, gpu_name=gpu_name, vendor=vendor,
                                    unified_memory=vendor == "apple", cpu=cpu)
        plans.append((machine, plan_offload(model, machine, layout=layout)))
    return plans


def assert_monotonic(plans: list[tuple[Machine, Plan]]) -> None:
    """More VRAM: never a slower prediction, never fewer layers' attention on the GPU (nor fewer
    GPU layers), and never a plan that stops fitting."""
    for (_, before), (machine, after) in itertools.pairwise(plans):
        where = f"{machine.vram_bytes / GiB:.0f} GiB: {after.explanation}"
        assert after.tokens_per_s >= before.tokens_per_s - 1e-9, where
        assert after.attention_gpu_layers >= before.attention_gpu_layers, where
        assert after.n_gpu_layers >= before.n_gpu_layers, where
        assert after.fits or not before.fits, where
        if after.fits:
            assert after.vram_bytes <= machine.vram_budget
            assert after.ram_bytes <= machine.ram_budget or machine.unified_memory


# --- more VRAM is never worse ---------------------------------------------------------------------

@pytest.mark.parametrize(("ctx", "ram", "cpu"), [
    (4096, 64 * GiB, None), (32768, 64 * GiB, None), (4096, 20 * GiB, None),
    (4096, 64 * GiB, MEASURED_CPU), (32768, 24 * GiB, MEASURED_CPU),
])
def test_mixtral_vram_sweep_is_monotonic(mixtral_facts: ModelFacts, ctx: int, ram: int,
                                         cpu: CpuSpeed | None) -> None:
    plans = sweep(mixtral_facts, ctx=ctx, ram=ram, cpu=cpu)
    assert_monotonic(plans)
    verdicts = [plan.verdict for _, plan in plans]
    assert verdicts[-1] == "gpu" and "gpu+cpu-experts" in verdicts
    # Once all 32 layers' attention is on the GPU, it stays there.
    first_full = next(i for i, (_, p) in enumerate(plans) if p.attention_gpu_layers == 32)
    assert all(p.attention_gpu_layers == 32 for _, p in plans[first_full:])
    # The boundary layer is split tensor by tensor somewhere along the way.
    assert any(p.cpu_moe_tensors for _, p in plans)


def test_apple_unified_memory_sweep_is_monotonic(mixtral_facts: ModelFacts) -> None:
    assert_monotonic(sweep(mixtral_facts, ctx=8192, ram=64 * GiB, steps=range(0, 61, 2),
                           vendor="apple", gpu_name="Apple M2 Max"))


def test_fused_and_shared_expert_sweep_is_monotonic(fused_facts: ModelFacts) -> None:
    plans = sweep(fused_facts, ctx=8192, ram=32 * GiB, steps=range(0, 17))
    assert_monotonic(plans)
    assert any(p.cpu_moe_tensors for _, p in plans)


def test_the_issue_case_attention_stays_on_the_gpu(mixtral_facts: ModelFacts) -> None:
    """#14: with all 33 layers on the GPU at 4 GiB, 8 GiB moved two whole layers back to the CPU
    (a bandwidth-only score of the whole search). Now, from the VRAM where all attention fits
    (8 GiB for Q4_K_M at 32 k context: 4 GiB of KV cache, 2 GiB of compute buffer), it stays on
    the GPU and more VRAM goes to experts."""
    plans = [plan for _, plan in sweep(mixtral_facts, ctx=32768, ram=64 * GiB,
                                       steps=range(4, 25))]
    first = next(i for i, p in enumerate(plans) if p.attention_gpu_layers == 32)
    assert 0 < first <= 4 and 0 < plans[0].attention_gpu_layers < 32
    for plan in plans[first:]:
        assert plan.n_gpu_layers == 33 and plan.attention_gpu_layers == 32, plan.explanation
    experts_in_ram = [p.n_cpu_moe for p in plans[first:]]
    assert experts_in_ram == sorted(experts_in_ram, reverse=True) and experts_in_ram[-1] < 16


# --- the split boundary layer -------------------------------------------------------------------

def overridden_by_patterns(facts: ModelFacts, plan: Plan) -> list[str]:
    """The header's tensors that the engine's override patterns for ``plan`` keep in RAM."""
    patterns = cpu_moe_patterns(plan.n_cpu_moe, max_entries=4095, partial=plan.cpu_moe_tensors)
    return [t.name for t in facts.tensors if any(re.search(p, t.name) for p in patterns)]


def assert_patterns_match_the_plan(facts: ModelFacts, plan: Plan) -> None:
    """The patterns move exactly the tensors the plan counts, and the GPU's model buffer is the
    bytes of every other tensor but the input embedding."""
    moved = overridden_by_patterns(facts, plan)
    assert len(moved) == plan.overridden_tensors
    assert not [name for name in moved if "shexp" in name or "gate_inp" in name]
    if plan.n_gpu_layers > plan.n_layers:
        on_gpu = sum(t.n_bytes for t in facts.tensors
                     if t.name not in moved and not t.name.startswith("token_embd."))
        assert on_gpu == plan.gpu_weight_bytes


@pytest.mark.parametrize("vram_gib", [5, 9, 13, 17, 21, 25])
def test_split_layer_patterns_match_the_plan(mixtral_facts: ModelFacts, fused_facts: ModelFacts,
                                             per_expert_facts: ModelFacts, vram_gib: int) -> None:
    for facts in (mixtral_facts, fused_facts, per_expert_facts):
        model = memory_model_from_facts(facts, 4096)
        machine = simulated_machine(ram=64 * GiB, vram=vram_gib * GiB, gpu_name="RTX 4090")
        plan = plan_offload(model, machine, layout=layout_from_facts(facts))
        assert plan.fits
        assert_patterns_match_the_plan(facts, plan)
        options = apply_plan(LoadOptions(model_path=facts.path), plan)
        assert (options.n_cpu_moe, options.cpu_moe_tensors) == (plan.n_cpu_moe,
                                                                plan.cpu_moe_tensors)


def test_splitting_uses_the_last_gib(mixtral_facts: ModelFacts) -> None:
    """With the boundary layer split tensor by tensor the plan uses VRAM that whole layers leave
    empty, and is never slower; somewhere it keeps fewer expert tensors in RAM."""
    model = memory_model_from_facts(mixtral_facts, 4096)
    layout = layout_from_facts(mixtral_facts)
    fewer_tensors = 0
    for vram in range(4 * 1024, 27 * 1024, 256):
        machine = simulated_machine(ram=64 * GiB, vram=vram * MiB, gpu_name="RTX 4090")
        split = plan_offload(model, machine, layout=layout)
        whole = plan_offload(model, machine)
        assert split.tokens_per_s >= whole.tokens_per_s
        assert split.vram_bytes >= whole.vram_bytes
        assert not whole.cpu_moe_tensors
        fewer_tensors += split.overridden_tensors < whole.overridden_tensors
        if split.cpu_moe_tensors:
            assert split.overridden_tensors == 3 * split.n_cpu_moe + len(split.cpu_moe_tensors)
            assert f"layer {split.n_cpu_moe} split: its " in split.explanation
    assert fewer_tensors > 10


def test_layouts_know_their_kinds(mixtral_facts: ModelFacts, fused_facts: ModelFacts,
                                  per_expert_facts: ModelFacts) -> None:
    expert = n_bytes((N_EXPERT, N_FF, N_EMBD), Q.Q4_K)
    mixtral = layout_from_facts(mixtral_facts)
    assert mixtral.layers[0] == (("up", expert, 1), ("gate", expert, 1), ("down", expert, 1))
    # Equal kinds: one split per size; up goes to the GPU first, then gate (llama.cpp's order).
    assert [(s.in_ram, s.ram_bytes) for s in mixtral.splits(0)] == [
        (("gate", "down"), 2 * expert), (("down",), expert)]
    per_expert = layout_from_facts(per_expert_facts)
    assert per_expert.layers[5] == (("up", expert, 8), ("gate", expert, 8), ("down", expert, 8))
    fused = layout_from_facts(fused_facts)
    gate_up = n_bytes((64, 2 * 768, 2048), Q.Q4_K)
    down = n_bytes((64, 2048, 768), Q.Q4_K)
    assert fused.layers[0] == (("gate_up", gate_up, 1), ("down", down, 1))
    assert [s.in_ram for s in fused.splits(0)] == [("gate_up",), ("down",)]
    assert fused.splits(99) == () and mixtral.kind_bytes(99, ("up",)) == (0, 0)
    # Shared experts are dense: they count with the attention, never with the experts.
    model = memory_model_from_facts(fused_facts, 4096)
    shared = sum(t.n_bytes for t in fused_facts.tensors
                 if t.name.startswith("blk.0.") and "shexp" in t.name)
    assert shared > 0 and model.layers[0].experts == gate_up + down
    assert model.layers[0].dense == sum(t.n_bytes for t in fused_facts.tensors
                                        if t.name.startswith("blk.0.")) - gate_up - down
    # Mixtral Q4_K_M: about 1.8 weights per byte; attention 2 × 32 heads × (128 + 128) FLOPs.
    assert 1.7 < mixtral.shape.params_per_byte < 1.85
    assert mixtral.shape.attention_flops == 2 * 32 * 256
    assert mixtral.shape.width == 4096 and mixtral.shape.matmul_scale == pytest.approx(4 ** 0.2)


def test_dense_layers_of_an_moe_model_plan_too(tmp_path: Path) -> None:
    """A model whose first layer has no experts (DeepSeek's dense first layers): the chain steps
    over it and the patterns still match the plan."""
    tensors = [t for t in mixtral_q4_k_m_tensors()
               if not re.match(r"blk\.0\.ffn_(gate|up|down)_exps", t[0])]
    tensors += [("blk.0.ffn_gate.weight", (N_FF, N_EMBD), Q.Q4_K),
                ("blk.0.ffn_up.weight", (N_FF, N_EMBD), Q.Q4_K),
                ("blk.0.ffn_down.weight", (N_EMBD, N_FF), Q.Q4_K)]
    facts = inspect_model(write_header_model(tmp_path / "dense0.gguf", tensors, MIXTRAL_KV,
                                             vocab=N_VOCAB))
    assert layout_from_facts(facts).layers[0] == ()
    for vram in (6, 12, 30):
        machine = simulated_machine(ram=64 * GiB, vram=vram * GiB, gpu_name="RTX 4090")
        plan = plan_offload(memory_model_from_facts(facts, 4096), machine,
                            layout=layout_from_facts(facts))
        assert_patterns_match_the_plan(facts, plan)


def test_a_512_layer_header_plans_with_splits(tmp_path: Path) -> None:
    from tests.core.test_header_checks import many_layers

    facts = inspect_model(many_layers(tmp_path / "512.gguf", 512))
    layout = layout_from_facts(facts)
    assert len(layout.layers) == 512 and len(layout.splits(0)) == 2
    machine = simulated_machine(ram=64 * GiB, vram=2 * GiB, gpu_name="RTX 4060")
    plan = plan_offload(memory_model_from_facts(facts, 4096), machine, layout=layout)
    assert plan.n_layers == 512 and plan.fits and plan.verdict in ("gpu", "gpu+cpu-experts")


def test_a_layout_is_optional(mixtral_facts: ModelFacts) -> None:
    """Without a header's layout (a catalog entry) whole layers only, and the same chain."""
    model = memory_model_from_facts(mixtral_facts, 4096)
    machine = simulated_machine(ram=64 * GiB, vram=12 * GiB, gpu_name="RTX 3060")
    plain = plan_offload(model, machine)
    assert plain.cpu_moe_tensors == () and plain.verdict == "gpu+cpu-experts"
    assert plan_offload(model, machine, layout=ModelLayout(())).cpu_moe_tensors == ()


# --- the engine loads a split layer ---------------------------------------------------------------

def test_engine_keeps_the_split_layers_tensors_in_ram(tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    with EngineHost(log) as engine:
        info = engine.load(LoadOptions(model_path=tiny_model, n_cpu_moe=1,
                                       cpu_moe_tensors=("gate", "down"), n_ctx=256))
        assert info.overridden_tensors == 5
        events = list(engine.chat([ChatMessage("user", "Hi")],
                                  SamplingOptions(temperature=0.0, max_tokens=4, seed=1)))
        assert events
    lines = [ln for ln in log.read_text().splitlines() if "buffer type overridden to CPU" in ln]
    assert {ln.split("tensor ")[1].split(" ")[0] for ln in lines} == {
        "blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight",
        "blk.1.ffn_gate_exps.weight", "blk.1.ffn_down_exps.weight"}


def test_load_options_refuse_an_unknown_kind(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="cpu_moe_tensors"):
        LoadOptions(model_path=tiny_model, cpu_moe_tensors=("shexp",))  # type: ignore[arg-type]


def test_plan_says_the_split_layer_has_no_flag(mixtral_facts: ModelFacts) -> None:
    """The boundary layer's split has no command-line flag: the Flags line says what the flags
    leave out, instead of offering them as the same plan."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "mixtral_desk", "plan", "--model",
                             str(mixtral_facts.path), "--vram", "20GiB", "--ram", "64GiB"],
                            capture_output=True, text=True, timeout=120, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    plan = next(line for line in result.stdout.splitlines() if line.startswith("Plan:"))
    flags = next(line for line in result.stdout.splitlines() if line.startswith("Flags:"))
    assert "split: its gate+down experts in RAM" in plan
    assert flags.endswith("--cpu-moe 10, and the boundary layer's gate/down experts in RAM: only "
                          "chat --gpu-layers auto places those")


def test_gpu_layers_count_the_output_layer_first(mixtral_facts: ModelFacts) -> None:
    """llama.cpp (load_tensors: ``i_gpu_start = L + 1 - g``) puts the output layer on the GPU
    first, then the last g-1 repeating layers: ``-ngl 1`` offloads the output layer alone."""
    from mixtral_desk.core.planner import evaluate

    model = memory_model_from_facts(mixtral_facts, 4096)
    machine = simulated_machine(ram=64 * GiB, vram=80 * GiB)
    overhead = machine.gpu_overhead + model.compute_bytes
    one = evaluate(model, machine, 1)
    assert one.gpu_weight_bytes == model.output_bytes
    assert one.vram_bytes == model.output_bytes + overhead
    two = evaluate(model, machine, 2)
    last = model.layers[-1]
    assert two.gpu_weight_bytes == model.output_bytes + last.dense + last.experts
    assert two.vram_bytes == two.gpu_weight_bytes + last.kv + overhead
    every = evaluate(model, machine, -1)
    assert evaluate(model, machine, 33).gpu_weight_bytes == every.gpu_weight_bytes
