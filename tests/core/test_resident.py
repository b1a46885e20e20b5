"""What the engine holds resident and what stays mapped: llama.cpp's repack rules, the planned
split of Mixtral-shaped headers, the plan-versus-actual check, and real loads — a small file of
mixed tensor types (fast) and a full-size sparse Mixtral-8x7B Q2_K (slow, ~16 GB of RAM)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mixtral_desk.core.engine import EngineHost, LoadOptions
from mixtral_desk.core.engine.logs import EngineLog
from mixtral_desk.core.gguf.model_file import inspect_model
from mixtral_desk.core.memory_model import MemoryModel, memory_model_from_facts
from mixtral_desk.core.planner import plan_for_settings, simulated_machine
from mixtral_desk.core.repack import (
    NO_REPACK,
    CPUFeatures,
    extra_buffer,
    features_from_cpuinfo,
    features_from_sysctl,
    features_from_system_info,
    weight_op,
)
from mixtral_desk.core.resident import (
    RamSplit,
    actual_ram,
    build_facts,
    compare_ram_with_actual,
)
from mixtral_desk.core.units import GiB, MiB
from tests.mixtral_header import (
    LOADABLE_KV,
    MIXTRAL_KV,
    N_EMBD,
    N_EXPERT,
    N_FF,
    Q,
    TensorSpec,
    mixtral_q4_k_m_tensors,
    n_bytes,
    write_header_model,
    write_mixtral_q2_k,
    write_mixtral_q4_k_m,
)

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed")
needs_sparse = pytest.mark.skipif(sys.platform == "win32", reason="needs sparse files")

# This machine's llama.cpp build (llama-cpp-python 0.3.36, -march=native on an AMD EPYC).
EPYC = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
        "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | "
        "OPENMP = 1 | REPACK = 1 | ")
AVX2 = CPUFeatures(frozenset({"AVX2", "REPACK"}))
AVX512 = CPUFeatures(frozenset({"AVX2", "AVX512", "REPACK"}))
APPLE_M2 = CPUFeatures(frozenset({"NEON", "DOTPROD", "MATMUL_INT8", "REPACK"}))
ARM_DOTPROD = CPUFeatures(frozenset({"NEON", "DOTPROD", "REPACK"}))
AMX = CPUFeatures(frozenset({"AVX2", "AVX512", "AVX512_VNNI", "AMX_INT8", "REPACK"}))


# --- the CPU's features -------------------------------------------------------------------------

def test_features_from_the_builds_system_info() -> None:
    epyc = features_from_system_info(EPYC)
    assert epyc is not None and epyc.source == "llama.cpp"
    assert epyc.has("AVX2", "AVX512", "REPACK") and not epyc.has("NEON")
    arm = features_from_system_info(
        "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | "
        "MATMUL_INT8 = 1 | DOTPROD = 1 | SVE_CNT = 0 | ACCELERATE = 1 | REPACK = 1 |")
    assert arm is not None and arm.has("NEON", "DOTPROD", "MATMUL_INT8", "REPACK")
    assert features_from_system_info("") is None


def test_features_of_a_native_build_from_the_cpu() -> None:
    x86 = features_from_cpuinfo("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f "
                                "avx512_vnni\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert x86.flags == {"AVX2", "AVX512", "AVX512_VNNI", "REPACK"}
    arm = features_from_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm sve\n")
    assert arm.flags == {"NEON", "DOTPROD", "MATMUL_INT8", "SVE", "REPACK"}
    assert features_from_cpuinfo("processor\t: 0\nflags\t\t: fpu sse2\n").flags == frozenset()
    mac = features_from_sysctl({"hw.optional.AdvSIMD": "1", "hw.optional.arm.FEAT_DotProd": "1",
                                "hw.optional.arm.FEAT_I8MM": "0"})
    assert mac.flags == {"NEON", "DOTPROD", "REPACK"} and features_from_sysctl({}).flags == set()


# --- llama.cpp's rules --------------------------------------------------------------------------

def test_which_weights_the_cpu_backend_repacks() -> None:
    attn, exps, embd = (4096, 4096), (4096, 14336, 8), (4096, 32000)

    def buf(qtype: str, shape: tuple[int, ...], f: CPUFeatures, name: str = "blk.0.attn_q.weight"
            ) -> str | None:
        return extra_buffer(qtype, shape, weight_op(name, shape), f)

    assert buf("Q2_K", attn, AVX512) == "CPU_REPACK" and buf("Q2_K", attn, AVX2) is None
    assert buf("Q4_K", exps, AVX2, "blk.0.ffn_up_exps.weight") == "CPU_REPACK"
    for qtype in ("Q3_K", "Q5_K", "Q6_K", "Q8_0", "F16", "F32"):
        assert buf(qtype, attn, AVX512) is None, qtype
    for qtype in ("Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0"):
        assert buf(qtype, attn, APPLE_M2) == "CPU_REPACK", qtype
    assert buf("Q2_K", attn, APPLE_M2) is None and buf("Q3_K", attn, APPLE_M2) is None
    # The embedding is read by row (GET_ROWS): never repacked; the output matrix is.
    assert buf("Q4_K", embd, AVX2, "token_embd.weight") is None
    assert buf("Q4_K", embd, AVX2, "output.weight") == "CPU_REPACK"
    # Rows must divide into the layout's blocks: 8, or 4 for NEON's Q4_0 layouts.
    assert buf("Q4_K", (4096, 300), AVX2) is None
    assert buf("Q4_0", (4096, 300), AVX2) is None and buf("Q4_0", (4096, 300), APPLE_M2)
    assert buf("Q4_0", (4096, 300), ARM_DOTPROD) == "CPU_REPACK"
    # A build without repacking, norms, routers in F32, biases.
    assert buf("Q4_K", attn, NO_REPACK) is None
    assert buf("F32", (4096,), AVX512, "blk.0.attn_norm.weight") is None
    # AMX (2-D matrix multiplications of its types) comes before REPACK; experts stay REPACK.
    assert buf("Q4_K", attn, AMX) == "AMX" and buf("Q8_0", attn, AMX) == "AMX"
    assert buf("Q4_K", exps, AMX, "blk.0.ffn_up_exps.weight") == "CPU_REPACK"


def test_weight_ops() -> None:
    assert weight_op("token_embd.weight", (4096, 32000)) == "GET_ROWS"
    assert weight_op("blk.3.ffn_down_exps.weight", (14336, 4096, 8)) == "MUL_MAT_ID"
    assert weight_op("blk.3.attn_k.weight", (4096, 1024)) == "MUL_MAT"
    assert weight_op("blk.3.ffn_gate_inp.weight", (4096, 8)) == "MUL_MAT"
    assert weight_op("blk.3.ffn_norm.weight", (4096,)) == "OTHER"
    assert weight_op("blk.3.attn_q.bias", (4096,)) == "OTHER"


# --- the planned split of a Mixtral-8x7B Q4_K_M header ------------------------------------------

@pytest.fixture(scope="module")
def q4_k_m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if sys.platform == "win32":
        pytest.skip("needs sparse files")
    return write_mixtral_q4_k_m(tmp_path_factory.mktemp("mx") / "mixtral-q4_k_m.gguf")


def _model(path: Path, features: CPUFeatures, **kwargs: bool) -> MemoryModel:
    return memory_model_from_facts(inspect_model(path), 4096, "f16", features=features, **kwargs)


def _bytes(tensors: list[TensorSpec], *types: Q) -> int:
    return sum(n_bytes(shape, q) for name, shape, q in tensors
               if q in types and not name.startswith("token_embd"))


def test_q4_k_m_on_avx2_holds_its_q4_k_weights_resident(q4_k_m: Path) -> None:
    model = _model(q4_k_m, AVX2)
    cpu = model.ram_split()
    tensors = mixtral_q4_k_m_tensors()
    assert cpu.copied_bytes == cpu.weight_bytes == _bytes(tensors, Q.Q4_K)  # 24.2 GiB
    assert cpu.kv_bytes == model.kv_bytes and cpu.compute_bytes == model.compute_bytes
    assert cpu.output_bytes == 32000 * 4
    assert cpu.resident_bytes == cpu.copied_bytes + model.kv_bytes + model.compute_bytes + 128000
    # The mapping spans the whole data (the embedding comes first, the output last) ...
    assert cpu.mapped_bytes == pytest.approx(model.weight_bytes, abs=64 * 1024)
    # ... but inference reads only what was not copied: embedding, Q8_0 attention, Q6_K output.
    assert cpu.mapped_read_bytes == model.weight_bytes - cpu.copied_bytes
    assert cpu.mapped_read_bytes < 500 * MiB
    # Where the bytes are changes; how many there are does not: the planner's RAM figure.
    plan = plan_for_settings(model, simulated_machine(ram=64 * GiB), 0, 0)
    assert cpu.working_set_bytes == plan.ram_bytes + cpu.output_bytes
    assert plan.ram_split == cpu


def test_q4_k_m_split_by_cpu_and_load_options(q4_k_m: Path) -> None:
    avx2 = _model(q4_k_m, AVX2).ram_split()
    plain = _model(q4_k_m, NO_REPACK).ram_split()
    assert plain.copied_bytes == 0 and plain.resident_bytes < 1 * GiB
    assert plain.mapped_read_bytes == plain.mapped_bytes == avx2.mapped_bytes
    assert plain.working_set_bytes == avx2.working_set_bytes
    apple = _model(q4_k_m, APPLE_M2).ram_split()  # Q4_K, Q8_0 and Q6_K all repacked
    assert apple.mapped_read_bytes == n_bytes((32000, N_EMBD), Q.Q4_K) + 32 * 2 * N_EMBD * 4 \
        + N_EMBD * 4 + 32 * N_EXPERT * N_EMBD * 4  # the embedding, norms and routers
    no_mmap = _model(q4_k_m, AVX2, use_mmap=False).ram_split()
    assert no_mmap.mapped_bytes == no_mmap.mapped_read_bytes == 0
    assert no_mmap.resident_bytes == avx2.working_set_bytes
    locked = _model(q4_k_m, AVX2, use_mlock=True).ram_split()
    assert locked.locked and locked.resident_bytes == avx2.resident_bytes + avx2.mapped_bytes
    assert locked.working_set_bytes == locked.resident_bytes
    cuda = _model(q4_k_m, AVX2, gpu_host_buffers=True).ram_split()  # CUDA builds repack nothing
    assert cuda.copied_bytes == 0 and cuda.working_set_bytes == avx2.working_set_bytes


def test_q4_k_m_split_for_gpu_placements(q4_k_m: Path) -> None:
    model = _model(q4_k_m, AVX2)
    embd = n_bytes((32000, N_EMBD), Q.Q4_K)
    all_gpu = model.ram_split(-1, 0)
    assert all_gpu.weight_bytes == 0 and all_gpu.mapped_bytes == embd
    assert all_gpu.kv_bytes == 0 and all_gpu.compute_bytes == 0
    experts = 3 * n_bytes((N_EXPERT, N_FF, N_EMBD), Q.Q4_K)
    four = model.ram_split(-1, 4)  # experts of layers 0-3 in RAM, copied into CPU_REPACK
    assert four.copied_bytes == 4 * experts and four.compute_bytes == model.compute_bytes
    assert four.mapped_read_bytes == four.mapped_bytes == embd  # copied experts are not mapped
    plain = _model(q4_k_m, NO_REPACK).ram_split(-1, 4)  # mapped: from the embedding on, the
    assert plain.mapped_bytes > embd + 4 * experts     # span takes in layers 0-3 whole
    partial = model.ram_split(28, 0)  # layers 0-3 and the output layer on the CPU
    assert partial.kv_bytes == 4 * model.layers[0].kv
    assert partial.mapped_bytes == pytest.approx(model.weight_bytes, rel=0.01)


def test_a_per_expert_file_is_not_mapped(tmp_path: Path) -> None:
    tensors: list[TensorSpec] = []
    for name, shape, qtype in mixtral_q4_k_m_tensors():
        if "_exps." not in name:
            tensors.append((name, shape, qtype))
            continue
        base = name.replace("_exps.weight", "")
        tensors += [(f"{base}.{e}.weight", shape[1:], qtype) for e in range(N_EXPERT)]
    model = _model(write_header_model(tmp_path / "old.gguf", tensors, MIXTRAL_KV, vocab=32000),
                   AVX2)
    split = model.ram_split()
    assert split.mapped_bytes == 0 and split.weight_bytes == model.weight_bytes
    assert split.resident_bytes == split.working_set_bytes


# --- plan versus actual -------------------------------------------------------------------------

def _split(**values: int | bool) -> RamSplit:
    base: dict[str, int | bool] = {"weight_bytes": 14 * GiB, "copied_bytes": 14 * GiB,
                                   "kv_bytes": 64 * MiB, "compute_bytes": 200 * MiB,
                                   "output_bytes": 0, "mapped_bytes": 15 * GiB,
                                   "mapped_read_bytes": 1 * GiB, "locked": False}
    return RamSplit(**{**base, **values})  # type: ignore[arg-type]


def test_compare_resident_and_mapped_with_llama_cpps_buffers() -> None:
    buffers = (("CPU_Mapped", "model", 15 * GiB), ("CPU_REPACK", "model", 14 * GiB),
               ("CPU", "output", 0), ("CPU", "KV", 64 * MiB), ("CPU", "compute", 230 * MiB))
    assert actual_ram(buffers) == {"mapped": 15 * GiB, "model": 14 * GiB, "KV": 64 * MiB,
                                   "compute": 230 * MiB, "output": 0}
    assert compare_ram_with_actual(_split(), buffers) == []
    assert compare_ram_with_actual(_split(), ()) == []  # no buffer lines: nothing to say
    short = compare_ram_with_actual(_split(weight_bytes=10 * GiB, mapped_bytes=12 * GiB),
                                    buffers)
    assert len(short) == 2 and "10.3 GiB resident" in short[0] and "14.3 GiB" in short[0]
    assert "12.0 GiB of the file mapped" in short[1] and "15.0 GiB" in short[1]
    # Locked: the mapping counts as resident on both sides.
    assert compare_ram_with_actual(_split(locked=True), buffers) == []
    # A GPU plan: weights and KV in RAM are compared, the host compute buffer is not.
    gpu = (("CUDA0", "model", 10 * GiB), ("CPU_Mapped", "model", 15 * GiB),
           ("CPU_REPACK", "model", 14 * GiB), ("CUDA_Host", "compute", 20 * MiB),
           ("CUDA0", "KV", 1 * GiB))
    gpu_plan = _split(kv_bytes=0, compute_bytes=1 * GiB)
    assert compare_ram_with_actual(gpu_plan, gpu, cpu_only=False) == []
    assert compare_ram_with_actual(gpu_plan, gpu) != []


# --- real loads ---------------------------------------------------------------------------------

def _mixed_types_model(path: Path) -> Path:
    """2 layers of E=256, F=512, 4 experts, each weight of another type; 300-row output."""
    e, f, x, kv, v = 256, 512, 4, 128, 300
    types = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.Q4_0, Q.IQ4_NL]
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q2_K)]
    for i in range(2):
        p, t = f"blk.{i}.", types[4 * i:4 * i + 4]
        tensors += [(p + "attn_norm.weight", (e,), Q.F32), (p + "attn_q.weight", (e, e), t[0]),
                    (p + "attn_k.weight", (kv, e), t[1]), (p + "attn_v.weight", (kv, e), t[2]),
                    (p + "attn_output.weight", (e, e), t[3]), (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "ffn_gate_inp.weight", (x, e), Q.F32),
                    (p + "ffn_gate_exps.weight", (x, f, e), t[0]),
                    (p + "ffn_down_exps.weight", (x, e, f), t[1]),
                    (p + "ffn_up_exps.weight", (x, f, e), t[2])]
    tensors += [("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q4_K)]
    kv_pairs = {**MIXTRAL_KV, **LOADABLE_KV, "llama.embedding_length": e,
                "llama.block_count": 2, "llama.feed_forward_length": f,
                "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                "llama.expert_count": x, "llama.rope.dimension_count": 64}
    return write_header_model(path, tensors, kv_pairs, vocab=v)


ROUNDING = 8 * 1024  # llama.cpp logs MiB with two decimals


@needs_llama
def test_planned_split_matches_llama_cpp_on_mixed_types(tmp_path: Path) -> None:
    path = _mixed_types_model(tmp_path / "mixed.gguf")
    facts = inspect_model(path)
    with EngineHost(tmp_path / "engine.log") as host:
        features, host_buffers = build_facts(host.backend_info())
        for mmap, mlock in ((True, False), (False, False)):
            info = host.load(LoadOptions(model_path=path, n_ctx=256, n_threads=1,
                                         use_mmap=mmap, use_mlock=mlock))
            model = memory_model_from_facts(facts, 256, features=features, use_mmap=mmap,
                                            use_mlock=mlock, gpu_host_buffers=host_buffers)
            split, actual = model.ram_split(), actual_ram(info.buffers)
            assert actual["model"] == pytest.approx(split.weight_bytes, abs=2 * ROUNDING)
            assert actual["mapped"] == pytest.approx(split.mapped_bytes, abs=ROUNDING)
            assert actual["KV"] == split.kv_bytes
            if mmap and features.repacks and not host_buffers:
                assert 0 < split.copied_bytes < split.mapped_read_bytes
    log = (tmp_path / "engine.log").read_text()
    if "REPACK" in features.flags and "AVX512" in features.flags:
        for repacked in ("blk.0.attn_q.weight with q2_K", "blk.0.attn_v.weight with q4_K",
                         "blk.1.ffn_up_exps.weight with q4_0", "blk.1.attn_output.weight with "
                         "iq4_nl"):
            assert repacked in log


@needs_llama
@needs_sparse
@pytest.mark.slow
def test_full_size_mixtral_q2_k_resident_and_mapped_as_planned(tmp_path: Path) -> None:
    """The 15.8 GB Q2_K (sparse: a megabyte on disk) through the real engine, CPU only."""
    path = write_mixtral_q2_k(tmp_path / "mixtral-8x7b-instruct-q2_k.gguf")
    assert path.stat().st_size > 15_000_000_000
    assert path.stat().st_blocks * 512 < 64 * MiB  # really sparse
    facts = inspect_model(path)
    try:
        with EngineHost(tmp_path / "engine.log") as host:
            features, host_buffers = build_facts(host.backend_info())
            info = host.load(LoadOptions(model_path=path, n_ctx=512, n_threads=2))
            model = memory_model_from_facts(facts, 512, features=features,
                                            gpu_host_buffers=host_buffers)
            split = model.ram_split()
            plan = plan_for_settings(model, simulated_machine(ram=64 * GiB), 0, 0)
            actual = actual_ram(info.buffers)
            resident = sum(actual.values()) - actual["mapped"]
            print(f"\nfeatures {features.describe()}; llama.cpp buffers {info.buffers}\n"
                  f"planned resident {split.resident_bytes} (copied {split.copied_bytes}, KV "
                  f"{split.kv_bytes}, compute {split.compute_bytes}), actual {resident}\n"
                  f"planned mapped {split.mapped_bytes}, actual {actual['mapped']}\n"
                  f"planner RAM {plan.ram_bytes}, working set {split.working_set_bytes}")
            assert split.resident_bytes == pytest.approx(resident, rel=0.05)
            assert split.mapped_bytes == pytest.approx(actual["mapped"], rel=0.05)
            assert plan.ram_split == split
            from mixtral_desk.core.planner import compare_with_actual

            assert compare_with_actual(plan, info) == []
            if "AVX512" in features.flags and not host_buffers:  # Q2_K is repacked
                assert split.copied_bytes > 14 * GiB * 0.9 and resident > 13 * GiB
    finally:
        path.unlink()


def test_engine_log_collects_the_cpu_buffers() -> None:
    """The lines of the full-size Q2_K load above, as llama.cpp logged them."""
    log = EngineLog(None)
    log.write(2, "load_tensors:   CPU_Mapped model buffer size = 15052.65 MiB\n"
                 "load_tensors:   CPU_REPACK model buffer size = 14280.00 MiB\n"
                 "llama_context:        CPU  output buffer size =     0.12 MiB\n"
                 "llama_kv_cache:        CPU KV buffer size =    64.00 MiB\n"
                 "sched_reserve:        CPU compute buffer size =   205.01 MiB\n"
                 "~llama_context:        CPU compute buffer size is 205.0078 MiB, matches "
                 "expectation of 205.0078 MiB\n")
    assert actual_ram(log.buffers) == {
        "mapped": round(15052.65 * MiB), "model": round(14280.00 * MiB), "KV": 64 * MiB,
        "compute": round(205.01 * MiB), "output": round(0.12 * MiB)}
