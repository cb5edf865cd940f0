#!/usr/bin/env python3
"""Drive the reference Mooncake Store (MooncakeDistributedStore over tcp) the way the
reference measurement describes: a holder process mounts the segment; a measuring
process with segment 0 times put / get / is_exist loops, DURATION seconds per figure.

  ref_store_bench.py hold  MASTER METADATA SEGMENT_BYTES        (mounts, prints READY, sleeps)
  ref_store_bench.py run   MASTER METADATA SIZES DURATION       (prints a JSON array)
  ref_store_bench.py exist MASTER METADATA CLIENTS DURATION     (CLIENTS processes doing is_exist)

Rows have the fields of `mooncake bench store --json`.
"""
import json
import multiprocessing as mp
import os
import sys
import time

from mooncake.store import MooncakeDistributedStore


def store(master, metadata, segment, local_buffer):
    s = MooncakeDistributedStore()
    rc = s.setup("127.0.0.1", metadata, segment, local_buffer, "tcp", "", master)
    if rc != 0:
        raise SystemExit(f"setup failed: {rc}")
    return s


def row(op, size, clients, lat_ns, errors, secs):
    lat = sorted(lat_ns)
    def pct(p):
        if not lat:
            return 0.0
        i = min(len(lat), max(1, int(-(-len(lat) * p // 1)))) - 1
        return lat[i] / 1000.0
    n = len(lat)
    return {
        "op": op, "value_size": size, "clients": clients, "transport": "tcp",
        "ops": n, "errors": errors, "seconds": secs, "ops_per_s": n / secs,
        "throughput_gbps": (0 if op == "exist" else n * size) / secs / 1e9,
        "latency_p50_us": pct(0.5), "latency_p99_us": pct(0.99),
    }


def timed(fn, duration):
    lat, errors, i = [], 0, 0
    t_end = time.perf_counter() + duration
    start = time.perf_counter()
    while time.perf_counter() < t_end:
        t = time.perf_counter_ns()
        ok = fn(i)
        if ok:
            lat.append(time.perf_counter_ns() - t)
        else:
            errors += 1
        i += 1
    return lat, errors, time.perf_counter() - start


def run(master, metadata, sizes, duration):
    s = store(master, metadata, 0, 512 << 20)
    rows = []
    for size in sizes:
        s.remove_all()
        value = bytes((i % 251 for i in range(size)))
        keys = []
        def put(i):
            k = f"ref-{size}-{i}"
            ok = s.put(k, value) == 0
            if ok:
                keys.append(k)
                if len(keys) > 64:
                    keys.pop(0)
            return ok
        rows.append(row("put", size, 1, *timed(put, duration)))
        ks = list(keys) or ["missing"]
        rows.append(row("get", size, 1, *timed(lambda i: len(s.get(ks[i % len(ks)])) == size, duration)))
        rows.append(row("exist", size, 1, *timed(lambda i: s.is_exist(ks[i % len(ks)]) == 1, duration)))
    s.remove_all()
    print(json.dumps(rows, indent=1))


def exist_worker(args):
    master, metadata, duration, idx = args
    s = store(master, metadata, 0, 16 << 20)
    k = f"exist-{idx}"
    s.put(k, b"x" * 4096)
    lat, errors, secs = timed(lambda i: s.is_exist(k) == 1, duration)
    return lat, errors, secs


def exist(master, metadata, clients, duration):
    with mp.Pool(clients) as pool:
        parts = pool.map(exist_worker, [(master, metadata, duration, i) for i in range(clients)])
    lat = [x for p in parts for x in p[0]]
    errors = sum(p[1] for p in parts)
    secs = max(p[2] for p in parts)
    print(json.dumps([row("exist", 4096, clients, lat, errors, secs)], indent=1))


def main():
    cmd, master, metadata = sys.argv[1:4]
    if cmd == "hold":
        s = store(master, metadata, int(sys.argv[4]), 16 << 20)
        print("READY", flush=True)
        while True:
            time.sleep(3600)
    elif cmd == "run":
        run(master, metadata, [int(x) for x in sys.argv[4].split(",")], float(sys.argv[5]))
    elif cmd == "exist":
        exist(master, metadata, int(sys.argv[4]), float(sys.argv[5]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
