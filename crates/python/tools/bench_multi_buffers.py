"""Multi-buffer loads vs a contiguous batch_get_into plus a scatter copy, on a local
master (started here on free loopback ports) with two clients over tcp.

    MOONCAKE_BIN=target/debug/mooncake .venv/bin/python crates/python/tools/bench_multi_buffers.py
"""
import ctypes, os, socket, subprocess, sys, time
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
rpc, meta = free_port(), free_port()
m = subprocess.Popen([os.environ["MOONCAKE_BIN"], "master", "--rpc_address=127.0.0.1", f"--rpc_port={rpc}",
    "--enable_http_metadata_server=true", "--http_metadata_server_host=127.0.0.1", f"--http_metadata_server_port={meta}",
    "--metrics_host=127.0.0.1", "--metrics_port=0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", rpc), 0.2).close(); break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)
    from mooncake.store import MooncakeDistributedStore
    url = f"http://127.0.0.1:{meta}/metadata"
    w, r = MooncakeDistributedStore(), MooncakeDistributedStore()
    assert w.setup("127.0.0.1", url, 512 << 20, 64 << 20, "tcp", "", f"127.0.0.1:{rpc}") == 0
    assert r.setup("127.0.0.1", url, 512 << 20, 64 << 20, "tcp", "", f"127.0.0.1:{rpc}") == 0
    KEYS, LAYERS, BLK = 32, 32, 16 << 10
    src = [(ctypes.c_ubyte * (KEYS * BLK))() for _ in range(LAYERS)]
    dst = [(ctypes.c_ubyte * (KEYS * BLK))() for _ in range(LAYERS)]
    stage = (ctypes.c_ubyte * (KEYS * LAYERS * BLK))()
    for b in src + dst + [stage]:
        assert w.register_buffer(ctypes.addressof(b), ctypes.sizeof(b)) == 0 if b in src else True
        assert r.register_buffer(ctypes.addressof(b), ctypes.sizeof(b)) == 0
    for l, b in enumerate(src):
        ctypes.memset(b, l + 1, ctypes.sizeof(b))
    keys = [f"bench-{i}" for i in range(KEYS)]
    addrs = lambda bufs, k: [ctypes.addressof(b) + k * BLK for b in bufs]
    assert w.batch_put_from_multi_buffers(keys, [addrs(src, k) for k in range(KEYS)], [[BLK] * LAYERS] * KEYS) == [0] * KEYS
    def multi():
        got = r.batch_get_into_multi_buffers(keys, [addrs(dst, k) for k in range(KEYS)], [[BLK] * LAYERS] * KEYS)
        assert got == [BLK * LAYERS] * KEYS
    def staged():
        base = ctypes.addressof(stage)
        got = r.batch_get_into(keys, [base + k * LAYERS * BLK for k in range(KEYS)], [LAYERS * BLK] * KEYS)
        assert got == [BLK * LAYERS] * KEYS
        for k in range(KEYS):
            for l in range(LAYERS):
                ctypes.memmove(ctypes.addressof(dst[l]) + k * BLK, base + (k * LAYERS + l) * BLK, BLK)
    total = KEYS * LAYERS * BLK
    for name, fn in (("batch_get_into_multi_buffers", multi), ("batch_get_into contiguous + memmove scatter", staged)):
        fn()
        t = []
        for _ in range(10):
            t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
        t.sort()
        print(f"{name}: median {t[5]*1e3:.1f} ms, {total / t[5] / 2**30:.2f} GiB/s for {KEYS} keys x {LAYERS} layers x {BLK >> 10} KiB")
    w.close(); r.close()
finally:
    m.terminate(); m.wait()
