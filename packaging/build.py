#!/usr/bin/env python3
"""Build the Mixtral Desk bundle for the OS this runs on (PyInstaller, one-folder bundle).

    python3 packaging/build.py [--dist DIR] [--current-env] [--venv DIR] [--no-archive]

By default a clean virtual environment is made in a temporary folder, the project is installed
into it **non-editable** (``pip install .`` — llama-cpp-python comes from pip's wheel cache after
the first build) together with PyInstaller, and ``packaging/mixtral-desk.spec`` is run there.
``--current-env`` skips the new environment and uses the running interpreter's, which must have
mixtral-desk installed non-editable and PyInstaller installed. ``--venv DIR`` keeps (and reuses)
the build environment in DIR.

Results in DIST (default ``dist/`` at the repository root):

* Linux: ``mixtral-desk/`` (run ``mixtral-desk/mixtral-desk``; ``install.sh`` inside adds the
  menu entry and icon) and ``mixtral-desk-VERSION-linux-ARCH.tar.gz``.
* Windows: ``mixtral-desk/mixtral-desk.exe`` (+ ``mixtral-desk-cli.exe``); then the Inno Setup
  installer when ``iscc`` is on PATH (packaging/windows/mixtral-desk.iss).
* macOS: ``Mixtral Desk.app``, unsigned; ``packaging/macos/sign.sh`` signs, notarises and makes the
  .dmg.

Exit code 0 on success; the last line printed is the bundle's path.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "mixtral-desk.spec"
NAME = "mixtral-desk"
PYINSTALLER = "pyinstaller>=6.10,<7"
LINUX_EXTRAS = {  # source in packaging/ -> name at the top of the Linux bundle folder
    "linux/mixtral-desk.desktop": "mixtral-desk.desktop",
    "linux/install.sh": "install.sh",
    "icons/mixtral-desk-256.png": "mixtral-desk.png",
    "icons/mixtral-desk.svg": "mixtral-desk.svg",
}


def _run(command: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=cwd)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _prepare_venv(venv: Path, python: str, cmake_args: str | None) -> Path:
    """A virtual environment with the project (non-editable) and PyInstaller; its python.

    ``cmake_args``: rebuild llama-cpp-python from source with these flags (a GPU build) instead
    of taking pip's cached wheel.
    """
    interpreter = _venv_python(venv)
    reused = interpreter.exists()
    if not reused:
        _run([python, "-m", "venv", str(venv)])
    pip = [str(interpreter), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", "--upgrade", "pip"])
    _run([*pip, "install", "--quiet", str(ROOT), PYINSTALLER])
    if reused:  # the same version number: pip kept the old copy, so replace it with this source
        _run([*pip, "install", "--quiet", "--no-deps", "--force-reinstall", str(ROOT)])
    if cmake_args:
        version = subprocess.run(
            [str(interpreter), "-c", "from importlib.metadata import version;"
             "print(version('llama-cpp-python'))"],
            capture_output=True, text=True, check=True).stdout.strip()
        print(f"+ CMAKE_ARGS={cmake_args!r} (llama-cpp-python {version} from source)", flush=True)
        subprocess.run([*pip, "install", "--no-cache-dir", "--force-reinstall", "--no-deps",
                        "--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}"],
                       check=True, env={**os.environ, "CMAKE_ARGS": cmake_args})
    return interpreter


def _check_current_env(python: str) -> None:
    """Refuse an environment PyInstaller cannot freeze: an editable install, no PyInstaller."""
    probe = ("import importlib.util, json, pathlib;"
             "spec = importlib.util.find_spec('mixtral_desk');"
             "core = importlib.util.find_spec('mixtral_desk.core');"
             "pi = importlib.util.find_spec('PyInstaller');"
             "print(json.dumps([spec and spec.origin, core and core.origin, bool(pi)]))")
    import json

    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=tempfile.gettempdir())
    origin, core_origin, has_pyinstaller = json.loads(result.stdout)
    if not has_pyinstaller:
        raise SystemExit(f"--current-env: PyInstaller is not installed; run "
                         f"{python} -m pip install '{PYINSTALLER}'")
    if origin is None or core_origin is None:
        raise SystemExit("--current-env: mixtral-desk is not installed in this environment")
    for found in (origin, core_origin):
        if ROOT in Path(found).resolve().parents:
            raise SystemExit("--current-env: mixtral-desk is installed editable (from the source "
                             "tree); PyInstaller needs a real install: pip install . "
                             "(or leave out --current-env)")


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _link_duplicates(bundle: Path) -> int:
    """Turn ``libX.so`` into a symlink to an identical ``libX.so.0`` (PyInstaller copies both).

    llama_cpp opens ``libllama.so`` with ctypes while the dynamic linker looks for the SONAME
    ``libllama.so.0``: both names must exist, one copy is enough. Returns the bytes saved.
    """
    saved = 0
    for folder in {p.parent for p in bundle.rglob("*.so.*")}:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        for short in names:
            longer = [n for n in names if n.startswith(short + ".") and n[len(short) + 1:][:1]
                      .isdigit()]
            for target in longer:
                if filecmp.cmp(folder / short, folder / target, shallow=False):
                    saved += (folder / short).stat().st_size
                    (folder / short).unlink()
                    (folder / short).symlink_to(target)
                    break
    return saved


def _strip_libpython(bundle: Path) -> int:
    """Drop libpython's debug symbols (pyenv builds carry ~18 MB); returns the bytes saved.

    Only libpython: ``strip`` breaks libraries that auditwheel patched (numpy's OpenBLAS).
    """
    strip = shutil.which("strip")
    saved = 0
    for lib in bundle.rglob("libpython3*.so*"):
        if strip is None or lib.is_symlink() or not lib.is_file():
            continue
        before = lib.stat().st_size
        subprocess.run([strip, "--strip-debug", str(lib)], check=True)
        saved += before - lib.stat().st_size
    return saved


def _finish_linux(bundle: Path, dist: Path, version: str, archive: bool) -> Path | None:
    saved = _strip_libpython(bundle)
    if saved:
        print(f"libpython's debug symbols stripped: {saved / 1e6:.1f} MB saved")
    saved = _link_duplicates(bundle)
    if saved:
        print(f"duplicate shared libraries made symlinks: {saved / 1e6:.1f} MB saved")
    for source, name in LINUX_EXTRAS.items():
        shutil.copy2(HERE / source, bundle / name)
    (bundle / "install.sh").chmod(0o755)
    if not archive:
        return None
    tarball = dist / f"{NAME}-{version}-linux-{platform.machine()}.tar.gz"
    print(f"+ tar czf {tarball.name}", flush=True)
    with tarfile.open(tarball, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=NAME)
    return tarball


def _finish_windows(dist: Path, version: str) -> Path | None:
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    if iscc is None:
        print("Inno Setup's iscc is not on PATH: the installer was not made "
              "(see packaging/README.md)")
        return None
    _run([iscc, f"/DAppVersion={version}", f"/DDistDir={dist}", f"/O{dist}",
          str(HERE / "windows" / "mixtral-desk.iss")])
    return dist / f"{NAME}-{version}-setup.exe"


def main(argv: list[str] | None = None) -> int:
    """Build; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist",
                        help="where the bundle goes (default: dist/ in the repository)")
    parser.add_argument("--current-env", action="store_true",
                        help="use this interpreter's environment instead of a clean venv")
    parser.add_argument("--venv", type=Path, help="make (or reuse) the build venv here")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that makes the build venv (default: this one)")
    parser.add_argument("--no-archive", action="store_true", help="Linux: skip the tarball")
    parser.add_argument("--llama-cmake-args", metavar="FLAGS",
                        help="build llama-cpp-python from source with these CMake flags, e.g. "
                             "'-DGGML_METAL=on' or '-DGGML_CUDA=on' (default: pip's cached wheel)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    dist = args.dist.resolve()
    dist.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mixtral-desk-build-") as temp:
        work = Path(temp)
        if args.current_env:
            _check_current_env(sys.executable)
            python = Path(sys.executable)
        else:
            python = _prepare_venv((args.venv or work / "venv").resolve(), args.python,
                                   args.llama_cmake_args)
        version = subprocess.run(
            [str(python), "-c", "from importlib.metadata import version;"
             "print(version('mixtral-desk'))"],
            capture_output=True, text=True, check=True, cwd=work).stdout.strip()
        # cwd is the temporary folder, so that the repository's packaging/ folder never shadows
        # the ``packaging`` library that the spec imports.
        _run([str(python), "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
              "--distpath", str(dist), "--workpath", str(work / "pyinstaller"), str(SPEC)],
             cwd=work)

    bundle = dist / ("Mixtral Desk.app" if sys.platform == "darwin" else NAME)
    extra: Path | None = None
    if sys.platform.startswith("linux"):
        extra = _finish_linux(bundle, dist, version, not args.no_archive)
    elif sys.platform == "win32":
        extra = _finish_windows(dist, version)
    backends = sorted({p.name for p in bundle.rglob("*ggml*")
                       if p.is_file() and not p.is_symlink()})
    print("llama.cpp libraries in the bundle:", ", ".join(backends) or "NONE")
    if sys.platform == "darwin" and platform.machine() == "arm64" and not any(
            "metal" in name for name in backends):
        print("warning: no Metal backend in the bundle; rebuild with "
              "--llama-cmake-args=-DGGML_METAL=on", file=sys.stderr)
    size_mb = _folder_size(bundle) / 1e6
    print(f"built Mixtral Desk {version} in {time.monotonic() - started:.0f} s: "
          f"{size_mb:.0f} MB unpacked")
    if extra is not None and extra.exists():
        print(f"{extra.name}: {extra.stat().st_size / 1e6:.0f} MB")
    print(bundle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
