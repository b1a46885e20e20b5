#!/usr/bin/env bash
# Issue #14's GPU check in ONE device call: CUDA build of the vendored llama.cpp (llama-bench,
# llama-fit-params, and the libraries llama-cpp-python loads), then bench/gpu_fit_check.py
# ((a) our plan, (b) whole layers, (c) llama.cpp's fit, on a simulated 24 GiB card, full-size
# sparse Mixtral-8x7B Q4_K_M) and bench/repro_ngl0.py (the n_gpu_layers=0 segfault's suspects).
#
# Prepare (dev machine, once; in the checkout the device tool sends, /work/main):
#     bash packaging/gpu_fit_prepare.sh          (makes .gpucheck/, ~30 MiB; prints the total)
# Device command:  bash packaging/gpu_fit_check.sh      carry: [".gpucheck"]      timeout_s: 600
#
# Time plan (16 cores, the H200 machine; limits in seconds from the script's start, TOTAL_S=585):
#     0-  15  environment, wheels; in the background: the sparse Q4_K_M (<1 s) and the ~0.7 GB
#             BENCH model with data that bench/gpu_check.py crashed on (for the reproducer)
#    15-  35  cmake configure (Ninja, CUDA sm_90 only, FA kernels off, tools on, server off)
#    35-~230  ninja llama-bench llama-fit-params: ggml-cuda dominates (`ninja llama` took 153 s
#             on 2026-11-27 with these options; common + 2 tools build beside it); cut at 330
#   ~235      llama-cpp-python = the sdist's llama_cpp/ + these libraries (no second build)
#   ~240-510  gpu_fit_check.py: llama-fit-params (~10 s), then (a), (b), (c), (c') with
#             llama-bench -p 512 -n 128 -r 2 (~40-80 s each: load 26 GB sparse, warm-up, runs);
#             it starts no configuration after DEADLINE (TOTAL_S - REPRO_S), (c') first to go
#   ~510-585  repro_ngl0.py: 7 cases, one process each, 60 s cap each (usually ~5 s)
# A rerun on the same warm machine reuses the build folder (ninja goes on where it stopped).
#
# Files in $OUT (the device returns at most 8): env.txt, build.log, run.log, gpu_fit_check.json,
# gpu_fit_check.md, llama_bench_logs.txt, repro_ngl0.json.
#
# Dry run without CUDA (here): DRY_RUN=1 OUT=/tmp/x PYTHON=.venv/bin/python \
#     PREBUILT=<a CPU build folder of the same llama.cpp, with bin/llama-bench> \
#     bash packaging/gpu_fit_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_fit_out}
mkdir -p "$OUT"
REPO=$(pwd)
SRC=$REPO/.gpucheck/llama-cpp-python-0.3.36
LLAMA_SRC=$SRC/vendor/llama.cpp
BUILD=${PREBUILT:-/tmp/lcp-fit-build}
SITE=/tmp/lcp-fit-site
WORK=${WORK:-/tmp/gpu-fit}
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-}
TOTAL_S=${TOTAL_S:-585}
BUILD_END_S=${BUILD_END_S:-330}   # the build must be done by then, or the measurement is skipped
REPRO_S=${REPRO_S:-75}            # kept for the reproducer at the end
mkdir -p "$WORK"
exec > >(tee -a "$OUT/run.log") 2>&1

# shellcheck source=packaging/gpu_common.sh
source "$REPO/packaging/gpu_common.sh"

phase "environment"
gpu_find_cuda
gpu_env_report "$OUT/env.txt" > /dev/null
lscpu | grep -E "Model name|Flags" | cut -c1-300 >> "$OUT/env.txt"
head -30 "$OUT/env.txt"

phase "wheels"
rm -rf "$SITE"; mkdir -p "$SITE"
if [ -z "$DRY_RUN" ]; then  # the wheels are for the device's Python 3.12
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        "$REPO"/.gpucheck/wheels/*.whl || { echo "wheel install failed"; exit 1; }
fi
export PYTHONPATH=$SITE:$REPO

phase "models (background)"
Q4=$WORK/mixtral-8x7b-q4_k_m.gguf
SMALL=$WORK/gpu_check_bench.gguf
rm -f "$Q4"
gpu_write_bench_model "$SMALL" > "$WORK/models.log" 2>&1 &
MODEL_PID=$!

if [ -z "$DRY_RUN" ] && [ -z "${PREBUILT:-}" ]; then
    phase "configure (CUDA sm_90, FA kernels off, tools on, server off)"
    # Options checked against the vendored llama.cpp's CMake files (tools/CMakeLists.txt: cli
    # and server only with LLAMA_BUILD_SERVER; llama-cli is the server's context in this
    # version, so --fit is measured through llama-bench's -fitt, which calls the same
    # common_fit_params, and llama-fit-params prints the arguments fit picks).
    [ -n "$NVCC" ] && export CUDACXX=$NVCC
    cmake -S "$LLAMA_SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_CUDA_FA=OFF \
        -DGGML_CUDA_FA_QUANTS=f16-f16 -DGGML_CUDA_COMPRESSION_MODE=none -DGGML_CUDA_NCCL=OFF \
        -DGGML_CCACHE=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_MTMD=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF ${CUDA_HOME:+-DCUDAToolkit_ROOT=$CUDA_HOME} \
        > "$OUT/build.log" 2>&1 || { echo "configure FAILED"; tail -40 "$OUT/build.log"; exit 1; }
    grep -E "CUDA Toolkit|CUDA_ARCHITECTURES|Including CUDA" "$OUT/build.log" | head -5
    limit=$(( BUILD_END_S - SECONDS ))
    phase "build: ninja llama-bench llama-fit-params llama (limit ${limit}s)"
    timeout "$limit" ninja -C "$BUILD" -j $(( $(nproc) + 2 )) llama-bench llama-fit-params llama \
        >> "$OUT/build.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "build FAILED or timed out (rc=$rc; 124 = timeout) after ${SECONDS}s"
        grep -E "error|Error" "$OUT/build.log" | head -20; tail -30 "$OUT/build.log"
        exit 1
    fi
    phase "build done ($(grep -c '\.cu\.o' "$OUT/build.log") CUDA objects)"
fi
BENCH_BIN=$BUILD/bin/llama-bench
FIT_BIN=$BUILD/bin/llama-fit-params
ls -la "$BUILD/bin" | grep -E "llama-|lib" | head -20

phase "the llama_cpp package: the sdist's Python files + these libraries"
mkdir -p "$SITE/llama_cpp/lib"
cp -r "$SRC"/llama_cpp/. "$SITE/llama_cpp/"
find "$BUILD/bin" "$BUILD/src" "$BUILD/ggml" -maxdepth 3 -name 'lib*.so*' \( -type f -o -type l \) \
    -exec cp -a {} "$SITE/llama_cpp/lib/" \; 2>/dev/null
gpu_cuda_library_path
[ -e "$SITE/llama_cpp/lib/libggml-cuda.so" ] && ldd "$SITE/llama_cpp/lib/libggml-cuda.so" \
    | grep -E "cudart|cublas|not found"
"$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "gpu offload:",
llama_cpp.llama_supports_gpu_offload()); print(llama_cpp.llama_print_system_info().decode())'

DEADLINE=$(( $(date +%s) + TOTAL_S - REPRO_S - SECONDS ))
phase "bench/gpu_fit_check.py (no configuration starts after +$(( TOTAL_S - REPRO_S ))s)"
if [ -n "$DRY_RUN" ]; then
    "$PY" bench/gpu_fit_check.py --out "$OUT" --model "$Q4" --dry-run --cpu-bench "$BENCH_BIN"
else
    "$PY" bench/gpu_fit_check.py --out "$OUT" --model "$Q4" --llama-bench "$BENCH_BIN" \
        --fit-params "$FIT_BIN" --threads "$(nproc)" --deadline "$DEADLINE"
fi
echo "gpu_fit_check rc=$?"

wait "$MODEL_PID"; cat "$WORK/models.log"
limit=$(( TOTAL_S - SECONDS - 5 )); [ "$limit" -lt 20 ] && limit=20
phase "bench/repro_ngl0.py (limit ${limit}s)"
timeout "$limit" "$PY" bench/repro_ngl0.py --out "$OUT" --model "$SMALL" \
    --llama-bench "$BENCH_BIN" --timeout 60
phase "finished"
ls -la "$OUT"
