#!/usr/bin/env bash
# Prepare .gpucheck/ on the development machine for packaging/gpu_fit_check.sh (issue #14).
#
# Run from the repository root that the device tool sends (the session's checkout, /work/main):
#     bash packaging/gpu_fit_prepare.sh [SDIST_DIR]
# SDIST_DIR: the unpacked llama-cpp-python 0.3.36 sdist (default /work/llama-bench/llama_cpp_python-0.3.36;
# a build/ folder inside its vendored llama.cpp is left out).
#
# .gpucheck/ (ignored by git through .gitignore, carried with carry: [".gpucheck"]) then holds:
#   llama-cpp-python-0.3.36/  the sdist, trimmed: no models/docs/tests/examples/web UI/server, no
#                             backends but CPU and CUDA; everything CMake needs to configure the
#                             vendored llama.cpp with tools on and the server off
#   wheels/                   the pure-Python (and cp312 pydantic-core) wheels the device image
#                             lacks: gguf, diskcache, pydantic, pydantic-core, annotated-types,
#                             typing-inspection, typing-extensions (pydantic needs >= 4.16),
#                             platformdirs (the planner's imports; versions of
#                             this .venv)
# and the script prints the size of everything the device call would send (limit 64 MiB).
# Needs the network once (pip download); rerunning reuses what is there.
set -euo pipefail
REPO=$(pwd)
SDIST=${1:-/work/llama-bench/llama_cpp_python-0.3.36}
DEST=$REPO/.gpucheck
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
mkdir -p "$DEST/wheels"

echo "== trimmed sdist from $SDIST"
V=./vendor/llama.cpp
rm -rf "$DEST/llama-cpp-python-0.3.36"; mkdir -p "$DEST/llama-cpp-python-0.3.36"
excludes=("$V/build" "$V/models" "$V/docs" "$V/media" "$V/benches" "$V/tests" "$V/examples"
          "$V/gguf-py" "$V/conversion" "$V/.git*" "$V/tools/ui" "$V/tools/server" "$V/tools/cli"
          ./.git ./examples ./docs ./tests ./docker)
for backend in virtgpu cann openvino webgpu et metal hexagon sycl vulkan opencl zdnn zendnn musa; do
    excludes+=("$V/ggml/src/ggml-$backend")
done
tar -C "$SDIST" --anchored "${excludes[@]/#/--exclude=}" -cf - . \
    | tar -C "$DEST/llama-cpp-python-0.3.36" -xf -
du -sh "$DEST/llama-cpp-python-0.3.36"

echo "== wheels (Python 3.12, the device image's)"
pkgs=()
for name in gguf diskcache pydantic pydantic_core annotated_types typing_inspection \
        typing_extensions platformdirs; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
    pkgs+=("$name==$version")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST/wheels" "${pkgs[@]}"
ls -la "$DEST/wheels"

echo "== what the device call sends (tracked + untracked-not-ignored + .gpucheck)"
tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
carried=$(du -sb "$DEST" | cut -f1)
total=$(( tree + carried ))
echo "working tree $(( tree / 1048576 )) MiB + .gpucheck $(( carried / 1048576 )) MiB = $(( total / 1048576 )) MiB (limit 64 MiB)"
[ "$total" -lt $(( 64 * 1048576 )) ] || { echo "TOO LARGE for one device call"; exit 1; }
