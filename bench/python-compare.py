#!/usr/bin/env python3
"""Our `mooncake` Python module vs the reference's, in one run, same machine,
same workload, same topology; prints a table of throughputs and ratios.

Topology (per implementation): its own master with the embedded HTTP
metadata server; a *holder* process that mounts the memory segment; a
*client* process (no segment of its own) that runs, from Python:
  * put then get of distinct keys, values of 4 KiB .. 4 MiB;
  * batch_get_into of 64 x 256 KiB pages into one registered buffer.

Both implementations are asked for protocol "tcp" with default settings;
ours reads a same-host segment through shared memory by default (that is
part of the design being compared), the reference goes through its tcp
transport.

Usage:
  bench/python-compare.py [--seconds 2] [--rounds 2] [--out bench/out/python-compare.json]
    --ours-python .venv/bin/python     (with a release wheel installed:
        .venv/bin/maturin build --release -m crates/python/Cargo.toml -o target/wheels
        .venv/bin/pip install --force-reinstall target/wheels/mooncake_rs-*.whl)
    --ref-python .venv-ref/bin/python  (pip install mooncake-transfer-engine-non-cuda numpy;
        --setup-ref creates it)
    --mooncake target/release/mooncake (our binary, for `mooncake master`)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20]
PAGES, PAGE = 64, 256 << 10
HOLDER_SEGMENT = 1536 << 20
CLIENT_BUFFER = 256 << 20


# ---------------------------------------------------------------- worker side ----

def worker(role: str, cfg: dict) -> None:
    from mooncake.store import MooncakeDistributedStore

    s = MooncakeDistributedStore()
    seg = HOLDER_SEGMENT if role == "holder" else 0
    buf = 16 << 20 if role == "holder" else CLIENT_BUFFER
    rc = s.setup("127.0.0.1", cfg["metadata"], seg, buf, "tcp", "", cfg["master"])
    if rc != 0:
        print(json.dumps({"error": f"setup {rc}"}), flush=True)
        sys.exit(1)
    if role == "holder":
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.read()
        s.close()
        return
    out = {"put": {}, "get": {}}
    secs = cfg["seconds"]
    for size in SIZES:
        value = os.urandom(size)
        # Bounded by time, by count, and by the segment's room (half of it).
        max_ops = max(8, (HOLDER_SEGMENT // 2) // size)
        keys, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < secs and len(keys) < max_ops:
            k = f"bench-{size}-{len(keys)}"
            if s.put(k, value) != 0:
                break
            keys.append(k)
        put_t = time.perf_counter() - t0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < secs and n < 100_000:
            got = s.get(keys[n % len(keys)])
            if len(got) != size:
                raise RuntimeError(f"get returned {len(got)} bytes, wanted {size}")
            n += 1
        get_t = time.perf_counter() - t0
        out["put"][size] = {"ops": len(keys) / put_t, "gbps": len(keys) * size / put_t / 1e9}
        out["get"][size] = {"ops": n / get_t, "gbps": n * size / get_t / 1e9}
        s.remove_all(True)
    import ctypes

    keys = [f"page-{i}" for i in range(PAGES)]
    if s.put_batch(keys, [os.urandom(PAGE) for _ in range(PAGES)]) != 0:
        raise RuntimeError("put_batch of pages failed")
    mem = (ctypes.c_ubyte * (PAGES * PAGE))()
    base = ctypes.addressof(mem)
    if s.register_buffer(base, PAGES * PAGE) != 0:
        raise RuntimeError("register_buffer failed")
    ptrs = [base + i * PAGE for i in range(PAGES)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs and n < 100_000:
        res = s.batch_get_into(keys, ptrs, [PAGE] * PAGES)
        if res != [PAGE] * PAGES:
            raise RuntimeError(f"batch_get_into: {res[:4]}...")
        n += 1
    dt = time.perf_counter() - t0
    out["batch_get_into"] = {"batches": n / dt, "gbps": n * PAGES * PAGE / dt / 1e9}
    s.unregister_buffer(base)
    s.remove_all(True)
    s.close()
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------- orchestrator side ----

def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def wait_port(port: int, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def run_impl(name: str, python: str, master_cmd: list, rpc: int, meta: int, seconds: float) -> dict:
    env = dict(os.environ)
    env.pop("MOONCAKE_CONFIG_PATH", None)
    master = subprocess.Popen(master_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    holder = None
    try:
        wait_port(rpc)
        wait_port(meta)
        cfg = json.dumps({"master": f"127.0.0.1:{rpc}", "metadata": f"http://127.0.0.1:{meta}/metadata",
                          "seconds": seconds})
        me = str(Path(__file__).resolve())
        holder = subprocess.Popen([python, me, "--worker", "holder", cfg], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        line = holder.stdout.readline()
        if not json.loads(line or "{}").get("ready"):
            raise RuntimeError(f"{name}: holder did not start: {line!r}")
        res = subprocess.run([python, me, "--worker", "client", cfg], stdout=subprocess.PIPE, text=True,
                             env=env, timeout=60 + 20 * seconds * (2 * len(SIZES) + 1))
        if res.returncode != 0:
            raise RuntimeError(f"{name}: client failed ({res.returncode}): {res.stdout[-500:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        if holder is not None:
            holder.stdin.close()
            try:
                holder.wait(timeout=20)
            except subprocess.TimeoutExpired:
                holder.kill()
        master.terminate()
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()


def best(runs: list) -> dict:
    """Per workload, the run with the highest throughput."""
    out = {"put": {}, "get": {}}
    for op in ("put", "get"):
        for size in runs[0][op]:
            out[op][size] = max((r[op][size] for r in runs), key=lambda x: x["gbps"])
    out["batch_get_into"] = max((r["batch_get_into"] for r in runs), key=lambda x: x["gbps"])
    return out


def human(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--ours-python", default=str(REPO / ".venv" / "bin" / "python"))
    ap.add_argument("--ref-python", default=str(REPO / ".venv-ref" / "bin" / "python"))
    ap.add_argument("--mooncake", default=str(REPO / "target" / "release" / "mooncake"))
    ap.add_argument("--setup-ref", action="store_true", help="create the reference venv if missing")
    ap.add_argument("--rounds", type=int, default=2, help="runs per implementation (best kept)")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "python-compare.json"))
    a = ap.parse_args()

    if a.setup_ref and not Path(a.ref_python).exists():
        venv = Path(a.ref_python).parents[1]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mooncake-transfer-engine-non-cuda", "numpy"],
                       check=True)
    ref_master = Path(a.ref_python).parent / "mooncake_master"

    def ours() -> dict:
        rpc, meta = free_port(), free_port()
        return run_impl(
            "ours", a.ours_python,
            [a.mooncake, "master", "--rpc_address=127.0.0.1", f"--rpc_port={rpc}",
             "--enable_http_metadata_server=true", "--http_metadata_server_host=127.0.0.1",
             f"--http_metadata_server_port={meta}", "--metrics_host=127.0.0.1", "--metrics_port=0"],
            rpc, meta, a.seconds)

    def reference() -> dict:
        rpc, meta = free_port(), free_port()
        return run_impl(
            "reference", a.ref_python,
            [str(ref_master), f"--rpc_port={rpc}", "--enable_http_metadata_server=true",
             "--http_metadata_server_host=127.0.0.1", f"--http_metadata_server_port={meta}",
             f"--metrics_port={free_port()}"],
            rpc, meta, a.seconds)

    # Alternate the order each round and keep each workload's best figure, so a
    # burst of unrelated load on the machine does not decide a ratio.
    runs = {"ours": [], "reference": []}
    for i in range(a.rounds):
        order = [("ours", ours), ("reference", reference)]
        for name, fn in order if i % 2 == 0 else reversed(order):
            runs[name].append(fn())
    results = {name: best(rs) for name, rs in runs.items()}
    results["rounds"] = runs

    o, r = results["ours"], results["reference"]
    print(f"{'workload':<28}{'ours':>14}{'reference':>14}{'ratio':>8}")
    for op in ("put", "get"):
        for size in SIZES:
            ko, kr = o[op][str(size)], r[op][str(size)]
            print(f"{op + ' ' + human(size):<28}{ko['gbps']:>10.3f} GB/s{kr['gbps']:>9.3f} GB/s"
                  f"{ko['gbps'] / kr['gbps']:>7.2f}x")
    bo, br = o["batch_get_into"], r["batch_get_into"]
    print(f"{'batch_get_into 64x256KiB':<28}{bo['gbps']:>10.3f} GB/s{br['gbps']:>9.3f} GB/s"
          f"{bo['gbps'] / br['gbps']:>7.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
