#!/usr/bin/env python3
"""Prints the criterion results under a directory as Markdown rows with ratios to duplex.

    cargo bench -p duplex-bench -- --noplot
    python3 duplex-bench/criterion_table.py target/criterion

Reads each benchmark's `new/estimates.json` and reports the *median* (criterion's point
estimate of the median of the samples), its throughput, and its ratio to the `duplex` row of
the same group and input: above 1.00 means slower than duplex. Only ratios from the same run
are meaningful on a shared, noisy machine.
"""
import json, os, sys, collections
root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = collections.OrderedDict()
for dirpath, dirs, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    b = json.load(open(os.path.join(dirpath, "benchmark.json")))
    e = json.load(open(os.path.join(dirpath, "estimates.json")))
    med = e["median"]["point_estimate"]  # ns
    lo = e["median"]["confidence_interval"]["lower_bound"]
    hi = e["median"]["confidence_interval"]["upper_bound"]
    group, func, val = b["group_id"], b["function_id"], b["value_str"]
    if val is None:  # deflate: "compress_1KiB/duplex" style ids
        group, func, val = "deflate", func.split("/")[-1], func.split("/")[0]
    tp = (b.get("throughput") or {}).get("Bytes")
    rows.setdefault((group, val), {})[func] = (med, lo, hi, tp)
def fmt_t(ns):
    if ns < 1000: return "%.1f ns" % ns
    if ns < 1e6: return "%.2f µs" % (ns/1e3)
    return "%.2f ms" % (ns/1e6)
def fmt_tp(tp, ns):
    if not tp: return ""
    gibs = tp / ns * 1e9 / 2**30
    return "%.2f GiB/s" % gibs if gibs >= 1 else "%.0f MiB/s" % (gibs*1024)
out = []
for (group, val), funcs in sorted(rows.items()):
    base = funcs.get("duplex")
    for func, (med, lo, hi, tp) in sorted(funcs.items(), key=lambda kv: (kv[0] != "duplex", kv[0])):
        ratio = "%.2f" % (med / base[0]) if base else "-"
        out.append("| %s | %s | %s | %s | %s | %s |" % (group, val, func, fmt_t(med), fmt_tp(tp, med), ratio))
print("\n".join(out))
