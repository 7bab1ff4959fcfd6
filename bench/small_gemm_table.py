#!/usr/bin/env python3
"""bench/small_gemm_table.py: the tables of docs/PERFORMANCE.md's "Small products: libxsmm vs Eigen" section from
one bench_small_gemm JSON file (run with --benchmark_repetitions and --benchmark_report_aggregates_only: medians;
a run without repetitions works too). Ratios only between numbers of that one process.

Usage: python3 bench/small_gemm_table.py bench/results/bench_small_gemm.json
"""

import json
import sys

BACKENDS = ["eigen_f32", "xsmm_f32", "xsmm_bf16", "xsmm_bf16_vnni", "eigen_bf16", "amx_bf16"]


def load(path):
    """{name: entry} with the median aggregate (or the single run) of each benchmark, and the context."""
    data = json.loads(open(path).read())
    runs = {}
    for b in data["benchmarks"]:
        agg = b.get("aggregate_name")
        if agg not in (None, "median"):
            continue
        name = b["run_name"].removesuffix("/real_time")
        runs[name] = b
    return runs, data["context"]


def gflops(entry):
    return None if entry is None or "FLOP/s" not in entry else entry["FLOP/s"] / 1e9


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main(path):
    runs, ctx = load(path)
    print(f"<!-- {path}: {ctx.get('date', '?')}, host {ctx.get('host_name', '?')}, "
          f"{ctx.get('gla_gemm_backend', '?')}, load average {ctx.get('load_avg', '?')} -->\n")
    y1 = gflops(runs.get("yardstick/onednn_sgemm_1024/threads:1"))
    y2 = gflops(runs.get("yardstick/onednn_sgemm_1024/threads:2"))
    print(f"Yardstick: oneDNN `dnnl_sgemm` 1024³ f32: {fmt(y1)} GFLOP/s on 1 thread, {fmt(y2)} on 2.\n")
    products = []
    for name in runs:
        if name.startswith("small/"):
            _, prod, layout, _ = name.split("/")
            if (prod, layout) not in products:
                products.append((prod, layout))
    head = "| product m×n×k | layout | " + " | ".join(BACKENDS) + " | xsmm_f32 ÷ eigen_f32 | xsmm_bf16 ÷ eigen_bf16 | xsmm_f32 ÷ oneDNN 1T | amx_bf16 ÷ xsmm_f32 |"
    print(head)
    print("| --- | --- |" + " ---: |" * (len(BACKENDS) + 4))
    for prod, layout in products:
        g = {b: gflops(runs.get(f"small/{prod}/{layout}/{b}")) for b in BACKENDS}
        ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
        cells = [fmt(g[b]) for b in BACKENDS]
        cells += [fmt(ratio(g["xsmm_f32"], g["eigen_f32"]), ".2f"), fmt(ratio(g["xsmm_bf16"], g["eigen_bf16"]), ".2f"),
                  fmt(ratio(g["xsmm_f32"], y1), ".2f"), fmt(ratio(g["amx_bf16"], g["xsmm_f32"]), ".2f")]
        print(f"| {prod.replace('_', ' ')} | {layout} | " + " | ".join(cells) + " |")
    print("\nlibxsmm kernels alone, instruction peaks, N³ products (one thread):\n")
    print("| benchmark | GFLOP/s | G instr/s |")
    print("| --- | ---: | ---: |")
    for name, entry in runs.items():
        if name.split("/")[0] in ("kernel_only", "isa", "square"):
            ips = entry.get("instr/s")
            print(f"| {name} | {fmt(gflops(entry))} | {fmt(None if ips is None else ips / 1e9, '.2f')} |")
    print("\nPer-call cost of a 4×4×4 float product (CPU ns per call):\n")
    print("| call | ns |")
    print("| --- | ---: |")
    for name, entry in runs.items():
        if name.startswith("overhead/"):
            print(f"| {name.removeprefix('overhead/')} | {entry['cpu_time']:.1f} |")
    cores = [e["cores"] for n, e in runs.items() if n.startswith("small/") and "cores" in e]
    if cores:
        print(f"\n`cores` (process CPU ÷ wall time) of the small products: {min(cores):.2f}–{max(cores):.2f}; "
              "yardstick: " + ", ".join(f"{e['cores']:.2f}" for n, e in runs.items()
                                          if n.startswith("yardstick/") and "cores" in e))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/bench_small_gemm.json")
