# Shared by packaging/gpu_check.sh and packaging/gpu_fit_check.sh (sourced, not run).
#
# gpu_find_cuda         sets NVCC and CUDA_HOME (empty where there is no CUDA compiler)
# gpu_env_report FILE   GPU, CUDA, build tools, Python and machine into FILE (and stdout)
# gpu_write_bench_model PATH
#                       writes core/gguf/synthetic.py's ~0.7 GB BENCH model (with data) to PATH,
#                       unless it is there; run it in the background while the build runs
# gpu_cuda_library_path adds CUDA_HOME's libraries to LD_LIBRARY_PATH
# Expects PY (the Python to use) and SECONDS (bash's) to be set.

phase() { echo; echo "=== [$(date +%T) +${SECONDS}s] $*"; }

gpu_find_cuda() {
    NVCC=$(command -v nvcc || true)
    [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
    [ -z "$NVCC" ] && NVCC=$(ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
    CUDA_HOME=$( [ -n "$NVCC" ] && dirname "$(dirname "$(readlink -f "$NVCC")")" )
}

gpu_env_report() {
    {
        nvidia-smi || echo "nvidia-smi failed"
        nvidia-smi --query-gpu=name,memory.total,memory.used,memory.free,driver_version \
            --format=csv || true
        echo "nvcc: ${NVCC:-none}  CUDA_HOME: ${CUDA_HOME:-none}"
        [ -n "$NVCC" ] && "$NVCC" --version | tail -2
        [ -n "$CUDA_HOME" ] && ls "$CUDA_HOME" "$CUDA_HOME"/lib64/libcublas* 2>&1 | head -20
        cmake --version | head -1; echo "ninja $(ninja --version)"; gcc --version | head -1
        "$PY" --version
        "$PY" -c 'import numpy, jinja2; print("numpy", numpy.__version__, "jinja2", jinja2.__version__)'
        echo "cpus $(nproc)"; free -g | head -2; df -h /tmp | tail -1
    } 2>&1 | tee "$1"
}

gpu_write_bench_model() {
    "$PY" - "$1" <<'EOF'
import importlib.util, os, sys, time
if os.path.exists(sys.argv[1]):
    sys.exit(0)
spec = importlib.util.spec_from_file_location("synthetic", "core/gguf/synthetic.py")
module = importlib.util.module_from_spec(spec)
sys.modules["synthetic"] = module
spec.loader.exec_module(module)
start = time.perf_counter()
module.write_synthetic_model(sys.argv[1] + ".part", module.BENCH)
os.replace(sys.argv[1] + ".part", sys.argv[1])
print(f"benchmark model written in {time.perf_counter() - start:.1f} s (during the build)")
EOF
}

gpu_cuda_library_path() {
    if [ -n "$CUDA_HOME" ]; then
        export LD_LIBRARY_PATH=$CUDA_HOME/lib64:$CUDA_HOME/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
}
