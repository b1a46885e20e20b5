"""PyInstaller hook for Mixtral Desk itself: its data files and the metadata it reads.

``mixtral_desk.__version__`` and ``doctor`` read distribution metadata with importlib.metadata,
so the ``.dist-info`` folders travel along.
"""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

# The catalog and the compiled translations (the package build compiled the .po files).
datas = collect_data_files("mixtral_desk", includes=["models.toml", "**/locale/*/LC_MESSAGES/*.mo"])
for _name in ("mixtral-desk", "gguf", "huggingface_hub", "pydantic", "platformdirs",
              "PySide6-Essentials"):
    datas += copy_metadata(_name)
# The window is imported with importlib (the CLI works without Qt), the engine worker only by
# the spawned process: collect every module of the app.
hiddenimports = collect_submodules("mixtral_desk")
