"""PyInstaller hook for llama-cpp-python (there is none in pyinstaller-hooks-contrib).

llama_cpp loads ``llama_cpp/lib/lib{llama,ggml*,mtmd}.so`` (``.dylib``, ``.dll``) with ctypes from
``Path(llama_cpp.__file__).parent / "lib"``, so PyInstaller's import analysis never sees them:
collect them to the same relative folder. ``llama_cpp.server`` (FastAPI/uvicorn) is not used.
"""

from PyInstaller.utils.hooks import collect_dynamic_libs, copy_metadata

binaries = collect_dynamic_libs("llama_cpp")
datas = copy_metadata("llama-cpp-python")
excludedimports = ["llama_cpp.server"]
