#!/usr/bin/env bash
# One prepared GPU check for the fused Triton water-filling kernel (issue 8), sized for a lent machine: about 6
# minutes, 8.5 at most (each step has a timeout).  Run from anywhere:  bash benchmarks/device_check.sh
#   1. the CUDA tests: tests/test_triton.py on the GPU (not the interpreter) and test_solver.py's CUDA test;
#   2. the Table 6 sweep (kernel, torch path, Algorithm 3, memory floor);  3. the Table 5 overhead protocol.
# Writes to $OUT (default /tmp/ssd_device_out): device_check.log, tests_cuda.xml, table6_triton.json, table5_overhead.json.
# The machine's own python3 has torch, triton, numba, hypothesis, pandas and pytest; a missing package can travel
# as wheels in .whl/ (installed here into /tmp/site when present).  cvxpy is not there: the oracle tests skip.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/ssd_device_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
export SSD_CACHE_DIR="${SSD_CACHE_DIR:-/tmp/ssd_cache}" NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba_cache}"
unset TRITON_INTERPRET
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/device_check.log"
start=$(date +%s)
step() { echo "[device_check] $1 after $(( $(date +%s) - start )) s" | tee -a "$LOG"; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
  "$PY" -c "import sys, torch, triton, numba; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda',
torch.version.cuda, torch.cuda.get_device_name(), 'triton', triton.__version__, 'numba', numba.__version__)"
  "$PY" -c "import ssdlib.solver.triton_kernel as st; print('triton_available:', st.triton_available())"
} 2>&1 | tee "$LOG"

rc=0
step "tests"
timeout 170 "$PY" -m pytest tests/test_triton.py "tests/test_solver.py::test_cuda_matches_numba" -q -rs \
  -p no:cacheprovider --durations=5 --junitxml="$OUT/tests_cuda.xml" 2>&1 | tee -a "$LOG" || rc=1
step "table6"
timeout 170 "$PY" benchmarks/bench_gpu.py table6 --out "$OUT/table6_triton.json" 2>&1 | tee -a "$LOG" || rc=1
step "table5"
timeout 170 "$PY" benchmarks/bench_gpu.py table5 --out "$OUT/table5_overhead.json" 2>&1 | tee -a "$LOG" || rc=1
step "done (rc=$rc)"
exit $rc
