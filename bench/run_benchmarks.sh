#!/usr/bin/env bash
# bench/run_benchmarks.sh: one benchmark session (every bench_* executable at 1 and 2 OpenMP threads) writing
# bench/results/<bench>_t<threads>.json, then the tables of docs/PERFORMANCE.md via summarize.py.
# Usage: bench/run_benchmarks.sh [build-dir (default build-bench)] [extra Google Benchmark flags...]
# GLA_BENCHES="bench_backward ..." runs only those executables (default: all of them, ≈ 4 min).
# Needs Google Benchmark (Debian/Ubuntu: libbenchmark-dev). The build directory is configured with
# GLA_BUILD_BENCHMARKS=ON (a new one with benchmarks only, like the "bench" preset) and the benchmarks are
# brought up to date before they run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build-bench}"
shift || true
if [ -f "$build/CMakeCache.txt" ]; then
  cmake -S "$here/.." -B "$build" -DGLA_BUILD_BENCHMARKS=ON >/dev/null
else
  cmake -S "$here/.." -B "$build" -DCMAKE_BUILD_TYPE=Release -DGLA_BUILD_BENCHMARKS=ON -DGLA_BUILD_TESTS=OFF \
    -DGLA_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$build" --target gla_benchmarks -j2
out="$here/results"
mkdir -p "$out"
for t in 1 2; do
  for b in ${GLA_BENCHES:-bench_gemm bench_chunk bench_fused_recurrent bench_reference bench_backward}; do
    # Interleaved repetitions: a burst of load from elsewhere hits the kernel and its GEMM ceiling alike.
    OMP_NUM_THREADS=$t "$build/bench/$b" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_enable_random_interleaving=true \
      --benchmark_out="$out/${b}_t$t.json" --benchmark_out_format=json "$@"
  done
done
python3 "$here/summarize.py" "$out"
