#!/usr/bin/env bash
# One command for a machine with a GPU and no network (torch, nvcc, cmake, ninja, scikit-build-core, pytest,
# transformers present): build from source for the GPU found, run the GPU tests, run every benchmark, and write
# bench/results/<date>-<gpu>.md plus a JSON lines file beside it.
#
#   bash bench/gpu_suite.sh [all|build|test|bench|sanitize|quick] [--dry-run]
#
# Stages: build (pip install --no-build-isolation for this GPU's arch only), test (pytest -m gpu),
# bench (bench/*.py), sanitize (compute-sanitizer memcheck + racecheck over the GPU kernel tests; not in `all`),
# quick (a time-boxed build + GPU tests + the headline benchmark shapes, for short leases: about 6 minutes on an
# H100 with 16 cores; every result is written to OUT_DIR as soon as it exists).
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
    all|build|test|bench|sanitize|quick) stage=$arg ;;
    *) echo "usage: $0 [all|build|test|bench|sanitize|quick] [--dry-run]" >&2; exit 2 ;;
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
    echo "== $script"
    $PY "$script" --json "$jsonl" $([ $dry = 1 ] && echo --dry-run) \
      || echo "!! $script failed" | tee -a "$outdir/$name.failures"
  done
  $PY bench/_render.py "$jsonl" > "$outdir/$name.md"
  echo "== results: $outdir/$name.md"
  cat "$outdir/$name.md"
  if [ -n "${OUT_DIR:-}" ]; then cp "$outdir/$name".* "$OUT_DIR"/ 2>/dev/null || true; fi
  if [ -f "$outdir/$name.failures" ]; then return 1; fi
}

stage_sanitize() {
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool"
    compute-sanitizer --tool $tool --error-exitcode 1 $PY -m pytest -m gpu -q -x -p no:cacheprovider tests/kernels
  done
}

# Headline shapes of PERF_TARGETS.md only, each benchmark under its own time limit.
stage_quick() {
  local out=${OUT_DIR:-bench/results} jsonl
  mkdir -p "$out"
  jsonl="$out/quick-$(gpu_name).jsonl"
  : > "$jsonl"
  timeout 240 bash "$0" build $([ $dry = 1 ] && echo --dry-run) > "$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; return 1; }
  tail -n 2 "$out/build.log"
  # every kernel family against its reference, the Hopper kernels included (seconds): the first verdict
  timeout 120 $PY -m qwen35_native.cli self-check 2>&1 | tee "$out/self-check.log" || echo "!! self-check failed"
  timeout 150 $PY -m pytest -m gpu -q -p no:cacheprovider --junitxml="$out/junit.xml" tests > "$out/test.log" 2>&1 \
    || echo "!! pytest -m gpu failed or timed out (rc $?): $out/test.log"
  tail -n 25 "$out/test.log"
  local q="--json $jsonl"
  [ $dry = 1 ] && q="$q --dry-run"
  run_bench() { local limit=$1; shift; echo "== $*"; timeout "$limit" $PY "$@" $q 2>&1 | tail -n 40 || echo "!! $1 failed or timed out"; }
  run_bench 40 bench/ceilings.py
  run_bench 40 bench/norm.py --tokens 1 8192 --hidden 4096
  run_bench 90 bench/gdn.py --configs 397b-tp8 397b-tp1 --seqsets 1x32768 1x8192 --batches 1 512 --reps 5
  run_bench 90 bench/attention.py --prefill 8192 --batch 1 64 --context 32768
  run_bench 90 bench/moe.py --shapes 397b-tp8 397b-tp1 --tokens 1 64 8192 --reps 10
  run_bench 90 bench/e2e.py --configs 35b-a3b --batches 1 8 --prompts 1024 --time-budget 60 --no-hf
  $PY bench/_render.py "$jsonl" > "${jsonl%.jsonl}.md" && echo "== results: ${jsonl%.jsonl}.md"
}

case $stage in
  quick) stage_quick ;;
  all) stage_build; stage_test; stage_bench ;;
  build) stage_build ;;
  test) stage_test ;;
  bench) stage_bench ;;
  sanitize) stage_sanitize ;;
esac
