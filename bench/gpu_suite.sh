#!/usr/bin/env bash
# One command for a machine with a GPU and no network (torch, nvcc, cmake, ninja, scikit-build-core, pytest,
# transformers present): build from source for the GPU found, run the GPU tests, run every benchmark, and write
# bench/results/<date>-<gpu>.md plus a JSON lines file beside it.
#
#   bash bench/gpu_suite.sh [all|build|test|bench|sanitize|quick|profile] [--dry-run]
#
# Stages: build (pip install --no-build-isolation for this GPU's arch only), test (pytest -m gpu),
# bench (bench/*.py), sanitize (compute-sanitizer memcheck + racecheck over the GPU kernel tests; not in `all`),
# quick (a time-boxed build + GPU tests + the headline benchmark shapes, for short leases: about 6 minutes on an
# H100 with 16 cores; every result is written to OUT_DIR as soon as it exists), profile (Nsight Compute over one
# launch of each tensor-core kernel and path, bench/profile_kernels.py: stall reasons, occupancy, hottest lines).
# --dry-run: the same code paths on tiny shapes on the CPU (emulator), with the installed package and no build;
# results go to a temporary directory, not bench/results. CI runs it (make test).
# Environment: PYTHON (default python3), OUT_DIR (where to copy logs/results too, e.g. the device tool's $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
stage=all
dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    all|build|test|bench|sanitize|quick|profile) stage=$arg ;;
    *) echo "usage: $0 [all|build|test|bench|sanitize|quick|profile] [--dry-run]" >&2; exit 2 ;;
  esac
done

gpu_name() { $PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-') if torch.cuda.is_available() else 'cpu')"; }

stage_build() {
  if [ $dry = 1 ]; then
    $PY -c "import qwen35_native as q; print('installed:', q.build_info())"
    return
  fi
  local cap
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '.')
  case "$cap" in 90) arch=90a ;; *) arch=$cap ;; esac
  echo "== build for sm_$arch"
  QWEN35_CUDA_ARCHS=$arch CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip install --no-build-isolation --no-deps --force-reinstall . 2>&1 | tail -n 20
  $PY -c "import qwen35_native as q; print('installed:', q.build_info())"
}

stage_test() {
  local marker=gpu
  echo "== pytest -m $marker"
  $PY -m pytest -m $marker -q -p no:cacheprovider tests "${@}"
}

stage_bench() {
  local outdir jsonl name
  if [ $dry = 1 ]; then outdir=$(mktemp -d); else outdir=bench/results; mkdir -p "$outdir"; fi
  name="$(date +%Y-%m-%d)-$(gpu_name)"
  jsonl="$outdir/$name.jsonl"
  : > "$jsonl"
  for script in bench/[a-z]*.py; do
    [ "$script" = bench/profile_kernels.py ] && continue   # a profiling driver (stage profile), not a benchmark
    echo "== $script"
    $PY "$script" --json "$jsonl" $([ $dry = 1 ] && echo --dry-run) \
      || echo "!! $script failed" | tee -a "$outdir/$name.failures"
  done
  $PY bench/_render.py "$jsonl" > "$outdir/$name.md"
  echo "== results: $outdir/$name.md"
  cat "$outdir/$name.md"
  $PY bench/_compare_paths.py "$jsonl" | tee "$outdir/$name-paths.txt"
  if [ -n "${OUT_DIR:-}" ]; then cp "$outdir/$name".* "$OUT_DIR"/ 2>/dev/null || true; fi
  if [ -f "$outdir/$name.failures" ]; then return 1; fi
}

stage_sanitize() {
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool"
    compute-sanitizer --tool $tool --error-exitcode 1 $PY -m pytest -m gpu -q -x -p no:cacheprovider tests/kernels
  done
}

# Nsight Compute over bench/profile_kernels.py (one measured launch per kernel and path; about 2 minutes): the
# details page (speed of light, occupancy, warp states, scheduler) and each kernel's hottest source lines.
stage_profile() {
  if [ $dry = 1 ]; then
    $PY bench/profile_kernels.py --dry-run; $PY bench/_profile_decode_step.py --dry-run
    $PY bench/_profile_decode_step.py --dry-run --prefill 32; return
  fi
  local out=${OUT_DIR:-bench/results}
  mkdir -p "$out"
  # first, without ncu: one engine decode step kernel by kernel (torch.profiler)
  { $PY bench/_profile_decode_step.py || echo "!! decode-step profile failed"
    $PY bench/_profile_decode_step.py --prefill 1024 || echo "!! prefill-step profile failed"; } 2>/dev/null \
    | tee "$out/decode-step-kernels.txt"
  command -v ncu > /dev/null || { echo "!! ncu not found"; return 1; }
  ncu --clock-control none --profile-from-start off --nvtx --import-source yes \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section SourceCounters -f -o "$out/profile" $PY bench/profile_kernels.py > "$out/profile.log" 2>&1 \
    || { tail -n 20 "$out/profile.log"; return 1; }
  ncu -i "$out/profile.ncu-rep" --page details > "$out/profile-details.txt" 2>&1 || true
  grep -E "^  [a-z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issued Ipc|No Eligible|Warp Cycles Per Issued" "$out/profile-details.txt" | head -n 120 || true
  $PY bench/_ncu_hotspots.py "$out/profile.ncu-rep" | tee "$out/profile-hotspots.txt"
}

# Headline shapes of PERF_TARGETS.md only, each step under its own time limit and all of them inside
# QUICK_BUDGET seconds (default 540: a 10-minute device command with room for the copy back). The order is
# the order of value: build, every kernel against its reference (self-check, Hopper kernels included), the
# GPU tests, then the benchmarks whose numbers we have never had; the rest gets what time is left.
# It writes 8 files into OUT_DIR (build, self-check and test logs, junit.xml, the results .jsonl / .md / -paths.txt,
# decode-step-kernels.txt): the most the device tool brings back; a step that adds one must fold it into another.
stage_quick() {
  local out=${OUT_DIR:-bench/results} jsonl start=$SECONDS budget=${QUICK_BUDGET:-540}
  mkdir -p "$out"
  jsonl="$out/quick-$(gpu_name).jsonl"
  : > "$jsonl"
  # seconds for a step: its own limit, or what is left of the budget (less 10 s to render), whichever is less
  limit() { local left=$(( budget - (SECONDS - start) - 10 )); [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
  timeout 240 bash "$0" build $([ $dry = 1 ] && echo --dry-run) > "$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; return 1; }
  tail -n 2 "$out/build.log"
  echo "== built in $(( SECONDS - start )) s"
  timeout 120 $PY -m qwen35_native.cli self-check 2>&1 | tee "$out/self-check.log" || echo "!! self-check failed"
  # several workers: the emulator-vs-hardware twins are CPU-bound; a per-test limit so one hung kernel
  # costs one test, not the stage
  local per_test=""
  $PY -c "import pytest_timeout" 2>/dev/null && per_test="--timeout 90"
  timeout "$(limit 150)" $PY -m pytest -m gpu -q -p no:cacheprovider -n "${QUICK_TEST_WORKERS:-6}" \
      $per_test --junitxml="$out/junit.xml" tests > "$out/test.log" 2>&1 \
    || echo "!! pytest -m gpu failed or timed out (rc $?): $out/test.log"
  tail -n 25 "$out/test.log"
  local q="--json $jsonl"
  [ $dry = 1 ] && q="$q --dry-run"
  run_bench() {
    local t; t=$(limit "$1"); shift
    if [ "$t" -lt 15 ]; then echo "!! no time left for $1"; return; fi
    echo "== $* (limit $t s)"; timeout "$t" $PY "$@" $q 2>&1 | tail -n 40 || echo "!! $1 failed or timed out"
  }
  run_bench 30 bench/ceilings.py
  run_bench 80 bench/gdn.py --configs 397b-tp8 397b-tp1 --seqsets 1x32768 1x8192 --batches 1 512 --reps 5 --no-fla
  run_bench 90 bench/attention.py --prefill 8192 --batch 1 64 --context 32768
  run_bench 90 bench/moe.py --shapes 397b-tp8 397b-tp1 --tokens 1 64 8192 --reps 10
  run_bench 45 bench/linear.py --configs 35b-a3b 397b-tp8 --tokens 1 8 64 --step-tokens 1 8 64 --reps 20
  run_bench 90 bench/e2e.py --configs 35b-a3b --batches 1 8 --prompts 1024 --time-budget 60 --no-hf
  local t; t=$(limit 100)
  if [ "$t" -ge 20 ]; then  # where a decode step's and a prefill step's time goes, kernel by kernel
    echo "== bench/_profile_decode_step.py (limit $t s)"
    # one decode step, then one 1024-token prefill step, into the same file (the tool brings back 8 files)
    { timeout $((t / 2)) $PY bench/_profile_decode_step.py $([ $dry = 1 ] && echo --dry-run) \
        || echo "!! decode-step profile failed or timed out"
      timeout $((t / 2)) $PY bench/_profile_decode_step.py --prefill 1024 $([ $dry = 1 ] && echo --dry-run) \
        || echo "!! prefill-step profile failed or timed out"; } > "$out/decode-step-kernels.txt" 2>/dev/null
    cat "$out/decode-step-kernels.txt"
  fi
  run_bench 40 bench/norm.py --tokens 1 8192 --hidden 4096
  # flash-linear-attention side by side (when importable) last: its first calls compile and autotune (~1-2 min)
  run_bench 150 bench/gdn.py --configs 397b-tp8 --seqsets 1x32768 --parts prefill --reps 5
  $PY bench/_render.py "$jsonl" > "${jsonl%.jsonl}.md" && echo "== results: ${jsonl%.jsonl}.md"
  echo "== our paths side by side (bench/_compare_paths.py)"
  $PY bench/_compare_paths.py "$jsonl" | tee "${jsonl%.jsonl}-paths.txt"
  echo "== quick stage: $(( SECONDS - start )) s"
}

case $stage in
  quick) stage_quick ;;
  all) stage_build; stage_test; stage_bench; if [ $dry = 1 ]; then stage_profile; fi ;;
  build) stage_build ;;
  test) stage_test ;;
  bench) stage_bench ;;
  sanitize) stage_sanitize ;;
  profile) stage_profile ;;
esac
