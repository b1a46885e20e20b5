"""Keep the expert tensors of MoE layers in CPU memory (llama.cpp's ``--n-cpu-moe``).

llama.cpp's ``llama_model_params.tensor_buft_overrides`` is a NULL-terminated array of
``{const char *pattern; ggml_backend_buffer_type_t buft;}``: tensors whose name matches a pattern
(``std::regex_search``) are allocated in that buffer type. llama-cpp-python declares the field as
a plain ``void *`` and never sets it, so :class:`TensorOverrides` builds the array with ctypes; the
worker points the field at it while the model loads (see ``worker._patched_model_params``).

Patterns cover the GGUF layouts of MoE models: merged 3-D experts (``blk.3.ffn_up_exps.weight``),
gate and up fused in one tensor (``blk.3.ffn_gate_up_exps.weight``, newer conversions) and the
per-expert tensors of early conversions (``blk.3.ffn_up.5.weight``). Shared experts
(``ffn_up_shexp``) and the router (``ffn_gate_inp``) are used by every token and never match: they
stay with the layer's attention. One layer may be split tensor by tensor (:data:`EXPERT_KINDS`):
a pattern naming only layer N's ``ffn_down`` keeps its down experts in RAM and its gate and up
experts on the GPU, the way llama.cpp's ``--fit`` fills the last of the VRAM. llama.cpp logs one
debug line per matched tensor ("... buffer type overridden to CPU").
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class TensorBuftOverride(ctypes.Structure):
    """``struct llama_model_tensor_buft_override``."""

    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


#: The kinds of expert tensors a layer may have, in the order llama.cpp's ``--fit`` moves them to
#: the GPU (up first, down last); ``gate_up`` is gate and up fused in one tensor.
EXPERT_KINDS: tuple[str, ...] = ("up", "gate", "gate_up", "down")
_ALL_KINDS = "gate_up|gate|up|down"  # gate_up before gate: the longer name first


def expert_pattern(layer: int, kinds: Sequence[str] = EXPERT_KINDS) -> str:
    """The regex matching layer ``layer``'s expert tensors of ``kinds`` (default: all of them).

    Raises:
        ValueError: a kind is not one of :data:`EXPERT_KINDS`, or none is given.
    """
    return rf"blk\.{layer}\.ffn_({_kinds(kinds)})(_exps|\.\d+)\."


def _kinds(kinds: Sequence[str]) -> str:
    unknown = [kind for kind in kinds if kind not in EXPERT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"expert tensor kinds must be some of {EXPERT_KINDS}, not {kinds!r}")
    if set(kinds) >= set(EXPERT_KINDS):
        return _ALL_KINDS
    return "|".join(kind for kind in ("gate_up", "gate", "up", "down") if kind in kinds)


def cpu_moe_patterns(n_cpu_moe: int, max_entries: int | None = None,
                     partial: Sequence[str] = ()) -> list[str]:
    """One pattern per layer 0 … ``n_cpu_moe - 1`` (like llama.cpp's CLI), then one for the
    ``partial`` kinds of layer ``n_cpu_moe`` (the boundary layer split tensor by tensor); the
    whole layers become a single combined pattern when the list would exceed ``max_entries``
    (``llama_max_tensor_buft_overrides() - 1``), so the list never has more than
    max(2, ``max_entries``) patterns.

    Raises:
        ValueError: ``n_cpu_moe`` is negative, or ``partial`` names an unknown kind.
    """
    if n_cpu_moe < 0:
        raise ValueError("n_cpu_moe must be >= 0")
    tail = [expert_pattern(n_cpu_moe, partial)] if partial else []
    if max_entries is not None and n_cpu_moe + len(tail) > max_entries and n_cpu_moe > 1:
        layers = "|".join(str(i) for i in range(n_cpu_moe))
        return [rf"blk\.({layers})\.ffn_({_ALL_KINDS})(_exps|\.\d+)\.", *tail]
    return [expert_pattern(i) for i in range(n_cpu_moe)] + tail


@dataclass
class TensorOverrides:
    """A NULL-terminated ctypes array of overrides and the pattern bytes it points into.

    Keep the object alive for as long as llama.cpp may read the array (the model load).
    """

    patterns: list[str]
    buft: int
    _encoded: list[bytes] = field(default_factory=list, repr=False)
    _array: ctypes.Array[TensorBuftOverride] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.buft:
            raise ValueError("buffer type pointer is NULL")
        self._encoded = [p.encode("ascii") for p in self.patterns]
        array = (TensorBuftOverride * (len(self._encoded) + 1))()
        for i, pattern in enumerate(self._encoded):
            array[i].pattern = pattern
            array[i].buft = self.buft
        array[len(self._encoded)].pattern = None  # the terminator: pattern NULL
        array[len(self._encoded)].buft = None
        self._array = array

    @property
    def address(self) -> int:
        """The array's address, for ``llama_model_params.tensor_buft_overrides``."""
        assert self._array is not None
        return ctypes.addressof(self._array)

    def __len__(self) -> int:
        return len(self.patterns)


def _shared_library_names(stem: str) -> list[str]:
    if sys.platform == "win32":
        return [f"{stem}.dll"]
    if sys.platform == "darwin":
        return [f"lib{stem}.dylib"]
    return [f"lib{stem}.so"]


def _llama_cpp_lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def cpu_buffer_type() -> int:
    """Address of ``ggml_backend_cpu_buffer_type()`` from the libggml-cpu bundled with llama_cpp.

    Falls back to ggml's device API (the CPU device's default buffer type) for builds whose CPU
    backend is a dynamically loaded variant.

    Raises:
        OSError: neither library nor function can be found.
    """
    lib_dir = _llama_cpp_lib_dir()
    for name in _shared_library_names("ggml-cpu"):
        candidate = lib_dir / name
        if candidate.exists():
            lib = ctypes.CDLL(str(candidate))
            fn = lib.ggml_backend_cpu_buffer_type
            fn.restype = ctypes.c_void_p
            fn.argtypes = []
            address = fn()
            if address:
                return int(address)
    for name in _shared_library_names("ggml"):
        candidate = lib_dir / name
        if candidate.exists():
            ggml = ctypes.CDLL(str(candidate))
            by_type = ggml.ggml_backend_dev_by_type
            by_type.restype = ctypes.c_void_p
            by_type.argtypes = [ctypes.c_int]
            device = by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
            buffer_type = ggml.ggml_backend_dev_buffer_type
            buffer_type.restype = ctypes.c_void_p
            buffer_type.argtypes = [ctypes.c_void_p]
            if device and (address := buffer_type(device)):
                return int(address)
    raise OSError(f"cannot find ggml's CPU buffer type in {lib_dir}")


def cpu_moe_overrides(n_cpu_moe: int, buft: int | None = None, max_entries: int | None = None,
                      partial: Sequence[str] = ()) -> TensorOverrides:
    """Overrides that keep the experts of layers 0 … ``n_cpu_moe - 1``, and the ``partial``
    kinds of layer ``n_cpu_moe``, in CPU memory.

    ``buft`` defaults to :func:`cpu_buffer_type` (which loads llama.cpp's libraries).

    Raises:
        ValueError: ``n_cpu_moe`` is negative, or ``partial`` names an unknown kind.
        OSError: the CPU buffer type cannot be found.
    """
    patterns = cpu_moe_patterns(n_cpu_moe, max_entries, partial)
    return TensorOverrides(patterns, buft if buft is not None else cpu_buffer_type())
