"""What the installed llama.cpp can do; imported in the engine process only (it loads llama.cpp).

The ggml backend/device registry is not wrapped by llama-cpp-python, so it is read through ctypes
from the bundled libggml; where that fails (an unusual build) the device list stays empty and the
backends fall back to what ``llama_print_system_info()`` names.
"""

from __future__ import annotations

import ctypes
from typing import Any

from .events import BackendInfo
from .placement import _llama_cpp_lib_dir, _shared_library_names


def _ggml_registry() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(backend names, "device: description" strings) from ggml's registry; empty on failure."""
    lib: Any = None
    for name in _shared_library_names("ggml"):
        path = _llama_cpp_lib_dir() / name
        if path.exists():
            lib = ctypes.CDLL(str(path))
            break
    if lib is None:
        return (), ()
    try:
        for fn, res, args in (
            ("ggml_backend_reg_count", ctypes.c_size_t, []),
            ("ggml_backend_reg_get", ctypes.c_void_p, [ctypes.c_size_t]),
            ("ggml_backend_reg_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("ggml_backend_dev_count", ctypes.c_size_t, []),
            ("ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
            ("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("ggml_backend_dev_description", ctypes.c_char_p, [ctypes.c_void_p]),
        ):
            getattr(lib, fn).restype = res
            getattr(lib, fn).argtypes = args
        backends = tuple(
            lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode("utf-8", "replace")
            for i in range(lib.ggml_backend_reg_count()))
        devices = []
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            name = lib.ggml_backend_dev_name(dev).decode("utf-8", "replace")
            desc = (lib.ggml_backend_dev_description(dev) or b"").decode("utf-8", "replace")
            devices.append(f"{name}: {desc}" if desc else name)
        return backends, tuple(devices)
    except (AttributeError, OSError, ValueError):
        return (), ()


def collect_backend_info() -> BackendInfo:
    """Ask the loaded llama.cpp library (imports ``llama_cpp``)."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    backends, devices = _ggml_registry()
    if not backends:
        names = [part.split(":")[0].strip() for part in system_info.split("|") if ":" in part]
        backends = tuple(dict.fromkeys(n for n in names if n and " " not in n and n.isupper()))
    # GPU backends first, the CPU last, as llama.cpp lists devices.
    backends = tuple(sorted(backends, key=lambda b: b == "CPU"))
    return BackendInfo(
        backends=backends or ("CPU",),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=system_info,
        llama_cpp_version=str(getattr(llama_cpp, "__version__", "unknown")),
        devices=devices,
    )
