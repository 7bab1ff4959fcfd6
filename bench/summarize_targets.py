#!/usr/bin/env python3
"""Turns bench_targets JSON (a quiet run and, optionally, a run with GLA_BENCH_BUSY=1) into the targets table of
docs/PERFORMANCE.md. Every ratio compares numbers from the same process.

Usage: bench/summarize_targets.py results/bench_targets.json [results/bench_targets_busy.json]
"""
import json
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        rows[name] = b
    return data.get("context", {}), rows


def ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def get(rows, name):
    return rows.get(name)


def main():
    ctx, rows = load(sys.argv[1])
    busy = load(sys.argv[2])[1] if len(sys.argv) > 2 else None
    out = []
    host = ctx.get("host_name", "?")
    out.append(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz ({host}); "
               f"load average at start {ctx.get('load_avg', '?')}; {ctx.get('gla_compiler', '')}.")
    out.append("")
    out.append("| target | measured (1 thread / 2 threads) | goal | met |")
    out.append("| --- | --- | --- | --- |")

    def gemm_rate(t):
        b = get(rows, f"yardstick/sgemm_1024/threads:{t}")
        return b["FLOP/s"] if b else None

    for case in ("prefill", "long"):
        for op in ("chunk_gla", "fused_chunk_gla"):
            vals = []
            for t in (1, 2):
                b, g = get(rows, f"{op}/{case}/fp32/threads:{t}"), gemm_rate(t)
                vals.append(b["FLOP/s"] / g if b and g else None)
            ok = vals[1] is not None and vals[1] >= 0.55
            out.append(f"| {op} {case} fp32, useful FLOP/s ÷ f32 GEMM 1024³ | {fmt(vals[0])} / {fmt(vals[1])} | "
                       f"≥ 0.55 (2 threads) | {'yes' if ok else 'no'} |")
    for case in ("prefill", "long"):
        for op in ("chunk_gla", "fused_chunk_gla"):
            vals = []
            for t in (1, 2):
                f32, bf = get(rows, f"{op}/{case}/fp32/threads:{t}"), get(rows, f"{op}/{case}/bf16/threads:{t}")
                vals.append(ms(f32) / ms(bf) if f32 and bf else None)
            ok = vals[1] is not None and vals[1] >= 1.7
            out.append(f"| {op} {case}: fp32 time ÷ bf16 time | {fmt(vals[0])} / {fmt(vals[1])} | ≥ 1.7 | "
                       f"{'yes' if ok else 'no'} |")
    vals = []
    for t in (1, 2):
        d, y = get(rows, f"fused_recurrent_gla/decode/fp32/threads:{t}"), get(rows, f"yardstick/state_pass/decode/threads:{t}")
        vals.append(ms(d) / ms(y) if d and y else None)
    ok = vals[1] is not None and vals[1] <= 1.3
    out.append(f"| fused_recurrent_gla decode B8 H16 K=V=128 ÷ one read+write pass over the state | "
               f"{fmt(vals[0])} / {fmt(vals[1])} | ≤ 1.3 | {'yes' if ok else 'no'} |")
    for case in ("b1h1", "varlen"):
        for op in ("chunk_gla", "fused_chunk_gla", "fused_recurrent_gla"):
            one, two = get(rows, f"{op}/{case}/fp32/threads:1"), get(rows, f"{op}/{case}/fp32/threads:2")
            r = ms(one) / ms(two) if one and two else None
            ok = r is not None and r >= 1.6
            out.append(f"| {op} {case}: 1-thread time ÷ 2-thread time | {fmt(r)} | ≥ 1.6 | {'yes' if ok else 'no'} |")
    for bwd, fwd, goal in (("chunk_gla_backward", "chunk_gla", 2.5),
                           ("chunk_gla_backward_from_states", "chunk_gla_keep_states", 2.5),
                           ("fused_recurrent_gla_backward", "fused_recurrent_gla", 3.0)):
        vals = []
        for t in (1, 2):
            b, f = get(rows, f"{bwd}/prefill/fp32/threads:{t}"), get(rows, f"{fwd}/prefill/fp32/threads:{t}")
            vals.append(ms(b) / ms(f) if b and f else None)
        ok = vals[1] is not None and vals[1] <= goal
        out.append(f"| {bwd} ÷ {fwd}, prefill | {fmt(vals[0])} / {fmt(vals[1])} | ≤ {goal} | {'yes' if ok else 'no'} |")
    # A training step either way: the states kept by the forward and taken by the backward, or recomputed.
    vals = []
    for t in (1, 2):
        parts = [get(rows, f"{n}/prefill/fp32/threads:{t}") for n in
                 ("chunk_gla_keep_states", "chunk_gla_backward_from_states", "chunk_gla", "chunk_gla_backward")]
        vals.append((ms(parts[0]) + ms(parts[1])) / (ms(parts[2]) + ms(parts[3])) if all(parts) else None)
    out.append(f"| chunk_gla forward + backward, prefill: states kept ÷ states recomputed | "
               f"{fmt(vals[0])} / {fmt(vals[1])} | (no goal) | — |")
    if busy:
        for name in ("chunk_gla/prefill/fp32", "fused_chunk_gla/prefill/fp32", "fused_recurrent_gla/decode/fp32"):
            one, two = get(busy, f"{name}/threads:1"), get(busy, f"{name}/threads:2")
            r = ms(two) / ms(one) if one and two else None
            ok = r is not None and r <= 1.0
            out.append(f"| {name} with one core busy: 2-thread time ÷ 1-thread time | {fmt(r)} | ≤ 1.0 | "
                       f"{'yes' if ok else 'no'} |")
    out.append("")
    out.append("| benchmark | ms | GFLOP/s | faults/iter | cores |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for name, b in sorted(rows.items()):
        flops = b.get("FLOP/s")
        out.append(f"| {name} | {fmt(ms(b), '.3f')} | {fmt(flops / 1e9 if flops else None, '.1f')} | "
                   f"{fmt(b.get('faults/iter'), '.0f')} | {fmt(b.get('cores'), '.2f')} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
