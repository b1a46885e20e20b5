#!/usr/bin/env bash
# One-shot GPU check of llama-cpp-python on the device machine (an H100/H200, no network).
#
# Device command:  bash packaging/gpu_check.sh      carry: [".gpucheck"]      timeout_s: 600
#
# .gpucheck/ (ignored by git, prepared on the dev machine) holds:
#   llama-cpp-python-0.3.36/  the sdist, trimmed (no models/docs/tests/examples, unused backends)
#   wheels/                   pure-Python wheels the device image lacks (gguf, diskcache)
# Builds only the libraries the Python package loads (libllama + libggml*, CUDA for sm_90, no
# FlashAttention kernels), puts them next to the package's Python files, then runs
# bench/gpu_check.py. Everything worth reading lands in $OUT (5 files): env.txt, build.log,
# check.log, gpu_check.json, llama_logs.txt.
#
# Dry run without CUDA (here):  OUT=/tmp/x PYTHON=.venv/bin/python PREBUILT_LIBS=<dir with the
#   lib*.so* of a CPU build> CHECK_ARGS="--cpu-only --small" bash packaging/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
REPO=$(pwd)
SRC=$REPO/.gpucheck/llama-cpp-python-0.3.36
BUILD=/tmp/lcp-build
SITE=/tmp/lcp-site
MODEL=/tmp/gpu_check_bench.gguf
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-585}            # the whole script, inside the call's 600 s
CHECK_RESERVE_S=${CHECK_RESERVE_S:-110}  # kept back from the build for the check (~60 s needed)
CHECK_ARGS=${CHECK_ARGS:-}         # e.g. "--cpu-only --small" for a dry run
PREBUILT_LIBS=${PREBUILT_LIBS:-}   # dry run: take lib*.so* from here instead of building

# shellcheck source=packaging/gpu_common.sh
source "$REPO/packaging/gpu_common.sh"

phase "environment"
gpu_find_cuda
gpu_env_report "$OUT/env.txt"

phase "install wheels"
rm -rf "$SITE"; mkdir -p "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$REPO"/.gpucheck/wheels/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=$SITE

# The benchmark model (~0.7 GB) is written on one core while the build runs on the others.
MODEL_PID=
if [[ " $CHECK_ARGS " != *" --small "* ]]; then
    rm -f "$MODEL" "$MODEL.part"
    gpu_write_bench_model "$MODEL" > "$OUT/check.log" 2>&1 &
    MODEL_PID=$!
fi

if [ -n "$PREBUILT_LIBS" ]; then
    BUILD=$PREBUILT_LIBS
else
    phase "configure (CUDA, sm_90 only)"
    # Options (all checked against the vendored llama.cpp's CMake files):
    #  LLAVA_BUILD=OFF              no libmtmd (only the llava/mtmd chat handlers load it, lazily)
    #  LLAMA_BUILD_{TESTS,TOOLS,EXAMPLES,SERVER}=OFF, LLAMA_OPENSSL=OFF
    #  GGML_CUDA_FA=OFF             FlashAttention kernels compile to empty stubs (the biggest
    #                               saving); attention then runs without FA (Llama's default)
    #  GGML_CUDA_FA_QUANTS=f16-f16  fewest fattn-vec instance files
    #  GGML_CUDA_COMPRESSION_MODE=none, GGML_CUDA_NCCL=OFF, GGML_CCACHE=OFF
    # and only the `llama` target is built (ggml, ggml-base, ggml-cpu, ggml-cuda come with it;
    # the common library that pip's build adds is not loaded by the Python package).
    # A build folder left by an earlier call on the same (still warm) machine is reused: ninja
    # goes on where a timed-out build stopped.
    # Built the way users build it: pip + scikit-build-core with CMAKE_ARGS (no network here,
    # so no build isolation). A hand-made cmake build of only the `llama` target segfaulted in
    # llama_model_load_from_file on the first try (2026-11-27), so the official path is used.
    [ -n "$NVCC" ] && export CUDACXX=$NVCC
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_CUDA_FA=OFF \
-DGGML_CUDA_FA_QUANTS=f16-f16 -DGGML_CUDA_COMPRESSION_MODE=none -DGGML_CUDA_NCCL=OFF \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_SERVER=OFF ${CUDA_HOME:+-DCUDAToolkit_ROOT=$CUDA_HOME}"
    export CMAKE_BUILD_PARALLEL_LEVEL=$(( $(nproc) + 2 ))
    limit=$(( TOTAL_S - CHECK_RESERVE_S - SECONDS ))
    phase "build: pip install (scikit-build-core) with CMAKE_ARGS=$CMAKE_ARGS, limit ${limit}s"
    timeout "$limit" "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir \
        --target "$SITE" -v "$SRC" > "$OUT/build.log" 2>&1
    rc=$?
    grep -E "CUDA Toolkit|ARCHITECTURES|Including CUDA" "$OUT/build.log" | head -5
    if [ $rc -ne 0 ]; then
        echo "build FAILED or timed out (rc=$rc; 124 = timeout) after ${SECONDS}s"
        grep -E "error|Error" "$OUT/build.log" | head -20
        tail -40 "$OUT/build.log"
        exit 1
    fi
    phase "build done ($(grep -c 'Building CUDA object' "$OUT/build.log") CUDA objects compiled)"
fi

phase "the llama_cpp package"
if [ -n "$PREBUILT_LIBS" ]; then
    mkdir -p "$SITE/llama_cpp/lib"
    cp -r "$SRC"/llama_cpp/. "$SITE/llama_cpp/"
    find "$BUILD" -name 'lib*.so*' \( -type f -o -type l \) -exec cp -a {} "$SITE/llama_cpp/lib/" \;
fi
ls -la "$SITE/llama_cpp/lib"
gpu_cuda_library_path
if [ -e "$SITE/llama_cpp/lib/libggml-cuda.so" ]; then
    ldd "$SITE/llama_cpp/lib/libggml-cuda.so" | grep -E "cuda|cublas|not found"
fi
"$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "from", llama_cpp.__file__)' \
    || exit 1

if [ -n "$MODEL_PID" ]; then
    wait "$MODEL_PID" && [ -f "$MODEL" ] && CHECK_ARGS="$CHECK_ARGS --model $MODEL"
    cat "$OUT/check.log"
fi
limit=$(( TOTAL_S - SECONDS )); [ "$limit" -lt 60 ] && limit=60
phase "bench/gpu_check.py $CHECK_ARGS (limit ${limit}s)"
# shellcheck disable=SC2086
timeout "$limit" "$PY" bench/gpu_check.py --out "$OUT" $CHECK_ARGS 2>&1 | tee -a "$OUT/check.log"
rc=${PIPESTATUS[0]}
phase "finished (check rc=$rc)"
ls -la "$OUT"
exit "$rc"
