#!/usr/bin/env python3
"""bench/summarize.py: turns the Google Benchmark JSON files of one session (bench/results/<bench>_t<threads>.json,
run with --benchmark_repetitions and --benchmark_report_aggregates_only) into the markdown tables of
docs/PERFORMANCE.md. Medians throughout; ratios only between numbers of the same process."""

import json
import sys
from pathlib import Path


def load(path):
    """{run_name: {aggregate: entry}} of one JSON file, plus its context."""
    data = json.loads(path.read_text())
    runs = {}
    for b in data["benchmarks"]:
        runs.setdefault(b["run_name"], {})[b.get("aggregate_name", "single")] = b
    return runs, data["context"]


def median(runs, name):
    r = runs.get(name + "/real_time")
    return None if r is None else r.get("median", r.get("single"))


def cv(runs, name):
    r = runs.get(name + "/real_time", {}).get("cv")
    return None if r is None else r["real_time"]


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def si(x):
    """1.23e4 → 12.3k, for rates."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def print_backward(runs, threads):
    """The backward of each operator next to its forward from the same process (bench_backward)."""
    if not any(("bench_backward", t) in runs for t in threads):
        return
    ops = ["chunk_gla", "fused_chunk_gla", "fused_recurrent_gla"]
    for shape in ["prefill", "decode", "long"]:
        print(f"\n#### backward, {shape} (bench_backward)\n")
        head, rule = "| operator |", "| --- |"
        for t in threads:
            head += (f" fwd ms ({t}T) | bwd ms ({t}T) | bwd ÷ fwd ({t}T) | bwd tokens/s ({t}T) |"
                     f" bwd GFLOP/s ({t}T) |")
            rule += " ---: | ---: | ---: | ---: | ---: |"
        print(head)
        print(rule)
        for op in ops:
            row = f"| {op} |"
            for t in threads:
                r = runs.get(("bench_backward", t), {})
                f, b = median(r, f"{op}/{shape}"), median(r, f"{op}_backward/{shape}")
                row += (f" {fmt(f and f['real_time'], '.3g')} | {fmt(b and b['real_time'], '.3g')} |"
                        f" {fmt(b['real_time'] / f['real_time'] if (f and b) else None, '.2f')} |"
                        f" {si(b['tokens/s']) if b else '—'} | {fmt(b and b['FLOP/s'] / 1e9, '.3g')} |")
            print(row)


def main(results_dir):
    d = Path(results_dir)
    threads = sorted({int(p.stem.rsplit("_t", 1)[1]) for p in d.glob("*_t*.json")})
    files = {(p.stem.rsplit("_t", 1)[0], int(p.stem.rsplit("_t", 1)[1])): p for p in d.glob("*_t*.json")}
    runs = {key: load(p)[0] for key, p in files.items()}

    ops = [("chunk_gla", "bench_chunk"), ("fused_chunk_gla", "bench_chunk"),
           ("fused_recurrent_gla", "bench_fused_recurrent")]
    for shape in ["prefill", "decode", "long"]:
        print(f"\n#### {shape}\n")
        head = "| operator |"
        rule = "| --- |"
        for t in threads:
            head += f" ms ({t}T) | tokens/s ({t}T) | GFLOP/s ({t}T) | ÷ GEMM mix ({t}T) |"
            rule += " ---: | ---: | ---: | ---: |"
        print(head)
        print(rule)
        for op, bench in ops:
            row = f"| {op} |"
            for t in threads:
                r = runs.get((bench, t), {})
                m = median(r, f"{op}/{shape}")
                mix = median(r, f"gemm_chunk/mix/{shape}")
                if m is None:
                    row += " — | — | — | — |"
                    continue
                ratio = m["FLOP/s"] / mix["FLOP/s"] if (mix and op != "fused_recurrent_gla") else None
                row += (f" {m['real_time']:.3g} | {si(m['tokens/s'])} | {m['FLOP/s'] / 1e9:.3g} |"
                        f" {fmt(ratio, '.2f')} |")
            print(row)
        for t in threads:
            mix = median(runs.get(("bench_chunk", t), {}), f"gemm_chunk/mix/{shape}")
            if mix:
                print(f"\nGEMM mix at {shape}, {t} thread(s), same process: {mix['FLOP/s'] / 1e9:.3g} GFLOP/s "
                      f"({mix['real_time']:.3g} ms)", end="")
        print()

    print("\n#### Eigen GEMM (bench_gemm)\n")
    head, rule = "| product | shape |", "| --- | --- |"
    for t in threads:
        head += f" GFLOP/s ({t}T) | cv ({t}T) |"
        rule += " ---: | ---: |"
    print(head)
    print(rule)
    names = sorted({n.rsplit("/real_time", 1)[0] for t in threads for n in runs.get(("bench_gemm", t), {})})
    for n in names:
        parts = n.split("/")
        row = f"| {'/'.join(parts[:-1]) if len(parts) > 2 else parts[0]} | {parts[-1]} |"
        for t in threads:
            r = runs.get(("bench_gemm", t), {})
            m = median(r, n)
            row += f" {fmt(m and m['FLOP/s'] / 1e9, '.3g')} | {fmt(cv(r, n), '.1%')} |"
        print(row)

    print("\n#### Reference vs chunk_gla (bench_reference, shape small)\n")
    head, rule = "| operator |", "| --- |"
    for t in threads:
        head += f" ms ({t}T) | GFLOP/s ({t}T) | chunk_gla speed-up ({t}T) |"
        rule += " ---: | ---: | ---: |"
    print(head)
    print(rule)
    for op in ["naive_recurrent_gla<double>", "naive_recurrent_gla<float>", "chunk_gla", "gemm_chunk/mix"]:
        row = f"| {op} |"
        for t in threads:
            r = runs.get(("bench_reference", t), {})
            m, c = median(r, f"{op}/small"), median(r, "chunk_gla/small")
            row += (f" {fmt(m and m['real_time'], '.3g')} | {fmt(m and m['FLOP/s'] / 1e9, '.3g')} |"
                    f" {fmt(m['real_time'] / c['real_time'] if (m and c and not op.startswith('gemm')) else None, '.1f')} |")
        print(row)
    for t in threads:
        r = runs.get(("bench_reference", t), {})
        c, mix = median(r, "chunk_gla/small"), median(r, "gemm_chunk/mix/small")
        if c and mix:
            print(f"\nchunk_gla ÷ GEMM mix at small, {t} thread(s), same process: {c['FLOP/s'] / mix['FLOP/s']:.2f}", end="")
    print()

    print_backward(runs, threads)

    print("\n#### Noise: coefficient of variation of the repetitions; process CPU time ÷ wall time (\"cores\")\n")
    for (bench, t), r in sorted(runs.items()):
        worst = max(((cv(r, n.rsplit("/real_time", 1)[0]) or 0), n) for n in r)
        cores = [m["cores"] for n in r if (m := r[n].get("median")) and "cores" in m]
        line = f"- {bench} at {t} thread(s): worst cv {worst[0]:.1%} ({worst[1].rsplit('/real_time', 1)[0]})"
        if cores:
            line += f"; cores between {min(cores):.2f} and {max(cores):.2f}"
        print(line)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
