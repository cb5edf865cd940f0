#!/usr/bin/env python3
"""Turn compare-reference.sh's raw JSON lines into bench/out/transfer.json and a
markdown table with ratios against the targets of issue 2."""
import argparse
import json
import platform
import time


def size(b):
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= n and b % n == 0:
            return f"{b // n} {unit}"
    return f"{b} B"


def gbps(rec):
    if rec.get("result"):
        return rec["result"].get("throughput_gbps")
    return rec.get("gbps")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("json_out")
    ap.add_argument("md_out")
    ap.add_argument("--command", default="bench/compare-reference.sh")
    a = ap.parse_args()
    recs = [json.loads(l) for l in open(a.raw) if l.strip()]

    def find(kind, who, **kw):
        hits = [r for r in recs if r["kind"] == kind and r["who"] == who and all(r.get(k) == v for k, v in kw.items())]
        return hits[-1] if hits else None

    rows = []

    def row(test, config, ours_rec, base_name, base_val, target):
        ours = gbps(ours_rec) if ours_rec else None
        res = (ours_rec or {}).get("result") or {}
        ratio = ours / base_val if ours and base_val else None
        rows.append({
            "test": test, "config": config, "ours_gbps": ours,
            "latency_p50_us": res.get("latency_p50_us"), "latency_p99_us": res.get("latency_p99_us"),
            "baseline": base_name, "baseline_gbps": base_val, "ratio": ratio, "target_ratio": target,
            "met": (ratio is not None and ratio >= target) if target else None,
        })

    # iperf3 runs twice (start and end); the machine limit is the better run.
    iperf2 = max((r["gbps"] for r in recs if r["kind"] == "iperf3" and r.get("streams") == 2 and r["gbps"]), default=None)
    for r in [r for r in recs if r["kind"] == "tcp" and r["who"] == "ours"]:
        ref = find("tcp", "reference", block=r["block"], threads=r["threads"], op=r["op"])
        target = 2.0 if (r["block"] == 65536 or r["threads"] == 2) else 1.0
        cfg = f'{r["op"]} {size(r["block"])} x{r["threads"]} thr'
        row("tcp", cfg, r, "reference tcp", gbps(ref) if ref else None, target)
        if r["block"] == 1048576 and r["op"] == "write":
            row("tcp", cfg, r, "iperf3 2 streams", iperf2, 0.9)
    for r in [r for r in recs if r["kind"] == "shm" and r["who"] == "ours"]:
        m = find("memcpy", "machine", block=r["block"], threads=r["threads"])
        row("shm", f'{r["op"]} {size(r["block"])} x{r["threads"]} thr', r, "memcpy", gbps(m) if m else None, 0.7)
    for r in [r for r in recs if r["kind"] == "file" and r["who"] == "ours"]:
        f = find("fio", "machine", op=r["op"], threads=r["threads"])
        direct = ((r.get("result") or {}).get("direct_io"))
        cfg = f'{r["op"]} {size(r["block"])} x{r["threads"]} thr' + ("" if direct else " (buffered)")
        qd = f.get("iodepth") if f else None
        row("file", cfg, r, f'fio direct {r["op"]} qd {qd}', gbps(f) if f else None, 0.7)

    machine = {
        "memcpy_gbps": {f'{size(r["block"])} x{r["threads"]}': gbps(r) for r in recs if r["kind"] == "memcpy"},
        "iperf3_gbps": {str(s): max(r["gbps"] for r in recs if r["kind"] == "iperf3" and r["streams"] == s)
                        for s in sorted({r["streams"] for r in recs if r["kind"] == "iperf3"})},
        "fio_direct_gbps": {f'{r["op"]} qd {r.get("iodepth")}': r["gbps"] for r in recs if r["kind"] == "fio"},
        "reference_tcp_gbps": {f'{r["op"]} {size(r["block"])} x{r["threads"]}': r["gbps"] for r in recs if r["kind"] == "tcp" and r["who"] == "reference"},
    }
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
           "command": a.command, "machine": machine, "rows": rows, "raw": recs}
    json.dump(doc, open(a.json_out, "w"), indent=2)

    f = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
    lines = [f"Measured {doc['when']} with `{a.command}`.", "",
             "Machine limits in the same run: memcpy "
             + ", ".join(f"{k}: {f(v)} GB/s" for k, v in machine["memcpy_gbps"].items())
             + "; iperf3 loopback " + ", ".join(f"{k} stream(s): {f(v)} GB/s" for k, v in machine["iperf3_gbps"].items())
             + "; fio direct " + ", ".join(f"{k}: {f(v)} GB/s" for k, v in machine["fio_direct_gbps"].items()) + ".", "",
             "| transport | config (batch as run) | ours GB/s | p50 / p99 µs | baseline | baseline GB/s | ratio | target | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = "n/a" if r["latency_p50_us"] is None else f'{r["latency_p50_us"]} / {r["latency_p99_us"]}'
        met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
        lines.append(f'| {r["test"]} | {r["config"]} | {f(r["ours_gbps"])} | {lat} | {r["baseline"]} | '
                     f'{f(r["baseline_gbps"])} | {f(r["ratio"])}x | ≥ {r["target_ratio"]}x | {met} |')
    open(a.md_out, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
