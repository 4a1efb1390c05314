#!/usr/bin/env python3
"""Turns the measurements of bench/run.sh (round, scenario, variant, JSON per line) into the
markdown table of issue 7: medians over the rounds, ratios to the baseline of the same run,
the target and whether it is met."""
import argparse
import datetime
import json
import statistics
import sys

p = argparse.ArgumentParser()
p.add_argument("results")
for flag in ["rounds", "duration", "warmup", "idle-conns", "load-before", "load-after",
             "elapsed", "commit", "rustc", "cpu", "kernel"]:
    p.add_argument("--" + flag, default="?")
a = p.parse_args()

runs = {}  # (scenario, variant) -> [(round, json)]
for line in open(a.results):
    rnd, scenario, variant, blob = line.rstrip("\n").split("\t", 3)
    try:
        data = json.loads(blob)
    except json.JSONDecodeError:
        data = {"errors": 1, "first_error": "unparsable output: " + blob[:200]}
    runs.setdefault((scenario, variant), []).append((int(rnd), data))

PEERS = ["raw", "duplex", "tungstenite", "fastwebsockets"]
IDLE = a.idle_conns


def values(scenario, variant, metric):
    """Per-round values of a metric, or None for a round that had errors."""
    out = {}
    for rnd, data in runs.get((scenario, variant), []):
        out[rnd] = data.get(metric) if data.get("errors", 1) == 0 else None
    return out


def errors(scenario, variant):
    return [d.get("first_error", "?") for _, d in runs.get((scenario, variant), [])
            if d.get("errors", 1) != 0]


def median(scenario, variant, metric):
    vals = [v for v in values(scenario, variant, metric).values() if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "µs":
        return f"{v:,.0f} µs" if v >= 100 else f"{v:,.1f} µs"
    if unit == "B":
        return f"{v:,.0f} B"
    return f"{v:,.0f} ns" if v >= 100 else f"{v:,.1f} ns"


# (label, scenario, metric, unit, [(column, variant)], (subject, base) or None, op, target)
ROWS = []
for sc, label in [("pp16", "Echo ping-pong, 100 conns, 16 B"),
                  ("pp1k", "Echo ping-pong, 100 conns, 1 KiB"),
                  ("pp64k", "Echo ping-pong, 100 conns, 64 KiB")]:
    ROWS.append((label, "server CPU per message", sc, "cpu_ns_per_op", "ns",
                 [(c, c) for c in PEERS], ("duplex", "raw"), "<=", 1.05))
ROWS.append(("One connection, 16 B", "p99 round trip", "lat16", "p99_us", "µs",
             [(c, c) for c in PEERS], ("duplex", "raw"), "<=", 1.10))
ROWS.append(("Pipelined echo, 100 conns × 16 in flight, 64 B", "messages per second", "pipe64",
             "per_sec", "/s", [(c, c) for c in PEERS], ("duplex", "raw"), ">=", 0.90))
ROWS.append(("Pipelined echo, 100 conns × 16 in flight, 64 B", "server CPU per message",
             "pipe64", "cpu_ns_per_op", "ns", [(c, c) for c in PEERS], ("duplex", "raw"),
             "<=", 1.10))
ROWS.append(("Handshakes (open, upgrade, clean close; raw: connect, the server closes), 16 workers",
             "per second", "hs", "per_sec", "/s", [(c, c) for c in PEERS],
             ("duplex", "raw"), ">=", 0.90))
ROWS.append(("Handshakes", "server CPU per handshake", "hs", "cpu_ns_per_op", "ns",
             [(c, c) for c in PEERS], None, None, None))
ROWS.append((f"Idle, {IDLE} connections, no extension", "RSS over baseline per conn", "idle",
             "bytes_per_conn", "B", [(c, c) for c in PEERS], ("duplex", None), "<=", 1024))
ROWS.append((f"Idle, {IDLE} connections, permessage-deflate negotiated",
             "RSS over baseline per conn", "idle", "bytes_per_conn", "B",
             [("duplex", "duplex-deflate")], ("duplex-deflate", None), "<=", 2048))
ROWS.append(("permessage-deflate echo, 100 conns, 1 KiB JSON-like text",
             "server CPU per message; ratio to the same echo uncompressed", "deflate",
             "cpu_ns_per_op", "ns", [("duplex", "duplex-deflate")],
             ("duplex-deflate", "duplex"), "<=", 2.5))
ROWS.append(("TLS (rustls) echo, 100 conns, 1 KiB",
             "server CPU per message; ratio to plaintext", "tls", "cpu_ns_per_op", "ns",
             [("duplex", "duplex-tls")], ("duplex-tls", "duplex"), "<=", 1.6))
for sc, n in [("fan1k", "1,000"), ("fan10k", a.idle_conns if a.idle_conns != "10000" else "10,000")]:
    if not any(k[0] == sc for k in runs):
        continue
    cols = [(c, c) for c in PEERS]
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (raw room)", "deliveries per second", sc,
                 "per_sec", "/s", cols, ("duplex", "raw"), ">=", 0.95))
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (raw room)", "p99 publish to deliver", sc,
                 "p99_us", "µs", cols, ("duplex", "raw"), "<=", 1.10))
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (raw room)", "server CPU per delivery", sc,
                 "cpu_ns_per_op", "ns", cols, ("duplex", "raw"), None, None))
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (duplex.v1)", "deliveries per second", sc,
                 "per_sec", "/s", [("raw", "raw"), ("duplex", "duplex-v1")],
                 ("duplex-v1", "raw"), ">=", 0.95))
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (duplex.v1)", "p99 publish to deliver", sc,
                 "p99_us", "µs", [("raw", "raw"), ("duplex", "duplex-v1")],
                 ("duplex-v1", "raw"), "<=", 1.10))
    ROWS.append((f"Fan-out, 100 B to {n} subscribers (duplex.v1)", "server CPU per delivery",
                 sc, "cpu_ns_per_op", "ns", [("raw", "raw"), ("duplex", "duplex-v1")],
                 ("duplex-v1", "raw"), None, None))

print(f"# duplex against raw TCP and the Rust peers (bench/run.sh)\n")
print(f"* date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
      f"commit {a.commit}; {a.rustc}")
print(f"* machine: {a.cpu}, Linux {a.kernel}; server pinned to core 0, load generator to core 1")
print(f"* load average (1/5/15 min) before: {a.load_before}, after: {a.load_after} "
      f"(the machine is shared)")
print(f"* {a.rounds} interleaved round(s), each run {a.warmup} s warm-up + {a.duration} s "
      f"measured; {a.elapsed} s in all; figures are medians over the rounds")
ticks = sorted(d["server_ticks"] for v in runs.values() for _, d in v if "server_ticks" in d)
if ticks:
    print(f"* server CPU per measured run: {ticks[0]} to {ticks[-1]} clock ticks (median "
          f"{statistics.median(ticks):.0f}); one tick is 1/100 s, so the CPU figures resolve "
          f"to {100 / ticks[0]:.1f} % at worst")
print("* ratio: duplex's median over the base's median (raw TCP unless said); range: the "
      "same ratio round by round\n")
print("| scenario | figure | raw TCP | duplex | tokio-tungstenite | fastwebsockets "
      "| ratio (range) | target | met |")
print("|---|---|---:|---:|---:|---:|---:|---|---|")
notes = []
for label, figure, sc, metric, unit, cols, cmp, op, target in ROWS:
    if not any(k[0] == sc for k in runs):
        continue
    cells = {}
    for col, variant in cols:
        m = median(sc, variant, metric)
        cells[col] = fmt(m, unit)
        errs = errors(sc, variant)
        if errs:
            cells[col] += f" ({len(errs)} failed)"
            notes.append(f"{sc}/{variant}: {errs[0]}")
    ratio_cell, met = "", ""
    if cmp is not None and cmp[1] not in (None, "raw"):
        # A base other than raw TCP: show it beside the subject in the duplex column.
        cells["duplex"] += f" (base {fmt(median(sc, cmp[1], metric), unit)})"
    if cmp is not None:
        subject, base = cmp
        s = median(sc, subject, metric)
        if base is None:  # an absolute target
            if op is not None and s is not None:
                met = "yes" if s <= target else "**no**"
            ratio_cell = "–"
            target_cell = f"≤ {target} B"
        else:
            b = median(sc, base, metric)
            sv, bv = values(sc, subject, metric), values(sc, base, metric)
            per_round = [sv[r] / bv[r] for r in sv if sv.get(r) and bv.get(r)]
            if s is not None and b:
                r = s / b
                rng = f" ({min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else ""
                ratio_cell = f"{r:.2f}×{rng}"
                if op == "<=":
                    met = "yes" if r <= target else "**no**"
                elif op == ">=":
                    met = "yes" if r >= target else "**no**"
            target_cell = f"{op.replace('<=', '≤').replace('>=', '≥')} {target}×" if op else "–"
    else:
        target_cell = "–"
    if errors(sc, cmp[0]) if cmp else False:
        met = "**no** (errors)"
    row = [label, figure] + [cells.get(c, "–") for c in PEERS] + [ratio_cell or "–",
                                                                 target_cell, met or "–"]
    print("| " + " | ".join(row) + " |")
if notes:
    print("\nErrors:\n")
    for n in dict.fromkeys(notes):
        print(f"* {n}")
