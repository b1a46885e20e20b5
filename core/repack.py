"""Which weights llama.cpp's CPU backend copies out of the file into memory of its own.

llama.cpp memory-maps a GGUF file and leaves most CPU weights in the mapping (its ``CPU_Mapped``
buffer: file-backed pages that the kernel may evict and read again). But the CPU backend has
"extra" buffer types that lay a weight out anew for faster kernels, and a weight placed in one
of them is *copied* into anonymous memory at load time (``CPU_REPACK``, ``AMX``, ``KLEIDIAI``):
memory the process holds whatever the mapping does. Which weights those are depends on the
weight's type, shape and use and on the CPU features the build was compiled for.

The rules below follow the llama.cpp vendored by llama-cpp-python 0.3.36
(``ggml/src/ggml-cpu/repack.cpp`` ``ggml_repack_get_optimal_repack_type`` and the
``extra_buffer_type::supports_op`` of repack, ``amx/amx.cpp`` and ``kleidiai/kleidiai.cpp``;
``src/llama-model-loader.cpp`` ``select_weight_buft`` picks the first buffer type in the list
AMX → KleidiAI → REPACK → CPU that supports the weight's operation):

- ``CPU_REPACK``: matrix multiplications only — 2-D weights of ``MUL_MAT`` and 3-D merged experts
  of ``MUL_MAT_ID`` — never the token embedding (``GET_ROWS``), norms or biases. By type:
  Q4_0 (AVX2, or SVE with 256-bit vectors and i8mm, or NEON with i8mm or dotprod; VXE), Q4_K
  (AVX2; NEON with i8mm or dotprod), Q2_K (AVX-512), Q5_K / Q6_K / Q8_0 / Q1_0 (NEON with i8mm or
  dotprod), IQ4_NL (AVX2; NEON with dotprod), MXFP4 (AVX2; NEON with dotprod) — each only when
  the weight's row count (``ne[1]``) is a multiple of 8 (4 for the NEON/VXE 4-row layouts).
  RISC-V vector kernels (256-bit, ``zvfh``) are not modelled. Everything else (Q3_K, Q5_K and
  Q6_K on x86, F16, F32 …) stays in the mapping.
- ``AMX`` (a build with AMX-INT8 and AVX512-VNNI): 2-D ``MUL_MAT`` weights of type Q4_0, Q4_1,
  Q8_0 (row length a multiple of 32), Q4_K, Q5_K, Q6_K, IQ4_XS (multiple of 256) or F16 (16), with
  a row count that is a multiple of 32. Not measured here (no such CPU); its packed size is taken
  as the tensor's size.
- ``KLEIDIAI`` (ARM builds with ``GGML_CPU_KLEIDIAI``, off by default): 2-D Q4_0 / Q8_0 weights
  of ``MUL_MAT`` or ``GET_ROWS``. Not measured here; size taken as the tensor's size.

A llama.cpp build with a GPU backend (CUDA, Vulkan …) puts CPU weights in the GPU's pinned "host"
buffer type first; with mmap on that becomes the plain mapped CPU buffer, so such builds repack
nothing (llama.cpp's ``no_host`` option, which we do not set, would change that). Metal has no
host buffer type, so Apple Silicon repacks like any ARM CPU.

The CPU features come, best, from the build itself (``llama_print_system_info()``, see
:func:`features_from_system_info`: ``AVX2 = 1 | AVX512 = 1 | … | REPACK = 1``); without the
engine, from this CPU (``/proc/cpuinfo`` flags, or ``sysctl`` on macOS), assuming a build for
the native CPU (llama-cpp-python's default ``-march=native``) with repacking compiled in.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ExtraBuffer = Literal["CPU_REPACK", "AMX", "KLEIDIAI"]
WeightOp = Literal["MUL_MAT", "MUL_MAT_ID", "GET_ROWS", "OTHER"]

#: Tensors llama.cpp reads by row (``GET_ROWS``): the input layer's embeddings.
_GET_ROWS_PREFIXES = ("token_embd.", "token_types.", "position_embd.")

# /proc/cpuinfo flags (x86 "flags", ARM "Features") → llama.cpp's feature names.
_LINUX_FLAGS: Mapping[str, str] = {
    "avx2": "AVX2", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI", "amx_int8": "AMX_INT8",
    "asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "MATMUL_INT8", "sve": "SVE",
}
# macOS sysctl names (value 1 = present) → llama.cpp's feature names.
_SYSCTL_FLAGS: Mapping[str, str] = {
    "hw.optional.AdvSIMD": "NEON", "hw.optional.arm.FEAT_DotProd": "DOTPROD",
    "hw.optional.arm.FEAT_I8MM": "MATMUL_INT8", "hw.optional.avx2_0": "AVX2",
    "hw.optional.avx512f": "AVX512",
}
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class CPUFeatures:
    """The CPU features llama.cpp's CPU backend was built for, named as its system info names
    them (``AVX2``, ``AVX512``, ``NEON``, ``DOTPROD``, ``MATMUL_INT8``, ``SVE``, ``AMX_INT8``,
    ``AVX512_VNNI``, ``KLEIDIAI``, ``REPACK`` …). ``sve_cnt``: SVE vector bytes (0 unknown).
    ``source``: ``"llama.cpp"`` (the build's own system info), ``"cpuinfo"``, ``"sysctl"`` or
    ``"none"`` (nothing known: nothing is assumed repacked)."""

    flags: frozenset[str] = frozenset()
    sve_cnt: int = 0
    source: str = "none"

    def has(self, *names: str) -> bool:
        """Whether every feature in ``names`` is present."""
        return all(name in self.flags for name in names)

    @property
    def repacks(self) -> bool:
        """Whether the build has any extra (copying) CPU buffer type at all."""
        return self.has("REPACK") or self.has("KLEIDIAI") or self.has("AMX_INT8", "AVX512_VNNI")

    def describe(self) -> str:
        """``AVX2 AVX512 REPACK (llama.cpp)``: the features that matter here, and their source."""
        shown = sorted(self.flags & {"AVX2", "AVX512", "NEON", "DOTPROD", "MATMUL_INT8", "SVE",
                                     "AMX_INT8", "KLEIDIAI", "REPACK", "VXE"})
        return f"{' '.join(shown) or '-'} ({self.source})"


#: No extra buffer types: every CPU weight stays in the mapping (a build without repacking).
NO_REPACK = CPUFeatures()


def features_from_system_info(text: str) -> CPUFeatures | None:
    """The CPU features in ``llama_print_system_info()``'s text (``CPU : SSE3 = 1 | AVX2 = 1 |
    … | REPACK = 1 |``, possibly after other backends' sections); None when it names no CPU
    feature. Raises nothing."""
    flags: set[str] = set()
    sve_cnt = 0
    for part in text.split("|"):
        key, sep, value = part.rpartition("=")
        if not sep:
            continue
        name = key.split(":")[-1].strip().upper()
        value = value.strip()
        if name == "SVE_CNT":
            sve_cnt = int(value) if value.isdigit() else 0
        elif value == "1" and re.fullmatch(r"[A-Z0-9_]+", name):
            flags.add(name)
    if not flags:
        return None
    return CPUFeatures(frozenset(flags), sve_cnt, "llama.cpp")


def features_from_cpuinfo(text: str) -> CPUFeatures:
    """The features of a native build on the CPU that ``/proc/cpuinfo`` (``text``) describes:
    the ``flags`` (x86) or ``Features`` (ARM) of its first processor, with repacking assumed
    compiled in (llama.cpp's default). SVE's vector length is not in cpuinfo (left unknown).
    Raises nothing."""
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(_LINUX_FLAGS[f] for f in value.split() if f in _LINUX_FLAGS)
            break
    if "AVX512" in found or "NEON" in found or "AVX2" in found:
        found.add("REPACK")
    return CPUFeatures(frozenset(found), 0, "cpuinfo")


def features_from_sysctl(values: Mapping[str, str]) -> CPUFeatures:
    """The features of a native build on a Mac from ``sysctl`` values (``{"hw.optional.arm.
    FEAT_DotProd": "1", …}``), repacking assumed compiled in. Raises nothing."""
    found = {feature for key, feature in _SYSCTL_FLAGS.items()
             if values.get(key, "").strip() == "1"}
    if found:
        found.add("REPACK")
    return CPUFeatures(frozenset(found), 0, "sysctl")


def _sysctl(name: str) -> str:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


@functools.cache
def detect_cpu_features() -> CPUFeatures:
    """This CPU's features as a native llama.cpp build would use them (cached; the CPU does not
    change). Linux reads ``/proc/cpuinfo``, macOS asks ``sysctl``; elsewhere, or when that
    fails, :data:`NO_REPACK`. Raises nothing."""
    system = platform.system()
    if system == "Linux":
        try:
            return features_from_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
        except OSError:
            return NO_REPACK
    if system == "Darwin":
        return features_from_sysctl({key: _sysctl(key) for key in _SYSCTL_FLAGS})
    return NO_REPACK


def weight_op(name: str, shape: tuple[int, ...]) -> WeightOp:
    """The operation llama.cpp uses a weight in, as far as buffer types care: the embeddings are
    read by row, a 3-D merged expert tensor is a ``MUL_MAT_ID``, another 2-D ``.weight`` a
    ``MUL_MAT``; norms, biases and the rest ``OTHER``."""
    if name.startswith(_GET_ROWS_PREFIXES):
        return "GET_ROWS"
    if not name.endswith(".weight"):
        return "OTHER"
    dims = len(shape)
    while dims > 1 and shape[dims - 1] == 1:  # ggml_n_dims ignores trailing 1s
        dims -= 1
    if dims == 3 and "_exps." in name:
        return "MUL_MAT_ID"
    return "MUL_MAT" if dims == 2 else "OTHER"


def _repack_layouts(ggml_type: str, f: CPUFeatures) -> tuple[int, ...]:
    """The row multiples of the layouts ``ggml_repack_get_optimal_repack_type`` tries for
    ``ggml_type`` on ``f``, in its order (empty: none). The first that divides the row count
    wins, as in llama.cpp, so an 8-row layout that does not fit falls through to a 4-row one."""
    neon = f.has("NEON")
    i8mm = neon and f.has("MATMUL_INT8")
    dot = neon and f.has("DOTPROD")
    avx2 = f.has("AVX2")
    chain: list[tuple[bool, int]] = []
    if ggml_type == "Q4_0":
        sve256 = f.has("SVE", "MATMUL_INT8") and f.sve_cnt == 32
        chain = [(avx2 or sve256, 8), (i8mm, 4), (dot, 4), (f.has("VXE"), 4)]
    elif ggml_type == "Q4_K":
        chain = [(avx2, 8), (i8mm, 8), (dot, 8)]
    elif ggml_type == "Q2_K":
        chain = [(f.has("AVX512"), 8)]
    elif ggml_type in ("Q5_K", "Q6_K"):
        chain = [(i8mm, 8), (dot, 8)]
    elif ggml_type in ("IQ4_NL", "MXFP4"):
        chain = [(avx2, 8), (dot, 4)]
    elif ggml_type in ("Q8_0", "Q1_0"):
        chain = [(i8mm, 4), (dot, 4)]
    return tuple(rows for ok, rows in chain if ok)


def _amx(ggml_type: str, shape: tuple[int, ...], op: WeightOp, f: CPUFeatures) -> bool:
    align = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256,
             "IQ4_XS": 256, "F16": 16}.get(ggml_type)
    return (f.has("AMX_INT8", "AVX512_VNNI") and op == "MUL_MAT" and align is not None
            and len(shape) >= 2 and shape[0] % align == 0 and shape[1] % 32 == 0)


def extra_buffer(ggml_type: str, shape: tuple[int, ...], op: WeightOp,
                 features: CPUFeatures) -> ExtraBuffer | None:
    """The extra CPU buffer type a CPU weight of ``ggml_type`` and GGUF ``shape`` (``ne[0]``
    first) used in ``op`` goes to on a build with ``features``, or None when it stays in the
    ordinary CPU buffer (the mapping, with mmap on). Raises nothing."""
    if op not in ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS") or len(shape) < 2:
        return None
    if _amx(ggml_type, shape, op, features):
        return "AMX"
    if (features.has("KLEIDIAI") and ggml_type in ("Q4_0", "Q8_0") and op != "MUL_MAT_ID"
            and len(shape) == 2):
        return "KLEIDIAI"
    if not features.has("REPACK") or op == "GET_ROWS":
        return None
    rows = shape[1]
    for multiple in _repack_layouts(ggml_type, features):
        if rows % multiple == 0:
            return "CPU_REPACK"
    return None


__all__ = ["NO_REPACK", "CPUFeatures", "ExtraBuffer", "WeightOp", "detect_cpu_features",
           "extra_buffer", "features_from_cpuinfo", "features_from_sysctl",
           "features_from_system_info", "weight_op"]
