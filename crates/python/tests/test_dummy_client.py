"""Dummy-client mode: `setup_dummy(mem_pool_size, local_buffer_size,
server_address)` attaches to a `mooncake real-client` process, and the whole
store API works through it. Buffers from `alloc_from_mem_pool` live in shared
memory the real client maps (zero-copy); other registered buffers are copied
through the local socket; an unreachable or dead real client gives negative
codes, never a hang."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from conftest import _tcp_open, free_port, mooncake_bin, remove_when_unleased, stop, wait_until
from mooncake.store import MooncakeDistributedStore

RPC_FAIL = -900
INVALID_PARAMS = -600
BUFFER_OVERFLOW = -10


def start_real_client(cluster, log: Path) -> tuple:
    port = free_port()
    cmd = [
        mooncake_bin(), "real-client", "--host=127.0.0.1", f"--port={port}",
        f"--master_server_address={cluster.master_addr}", f"--metadata_server={cluster.metadata_url}",
        "--global_segment_size=64MiB", "--local_buffer_size=16MiB",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or _tcp_open(port), 30.0, "the real client to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"real-client exited with {proc.returncode}:\n{log.read_text()}")
    except BaseException:
        stop(proc)
        raise
    return proc, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def real_client(cluster, tmp_path_factory):
    proc, addr = start_real_client(cluster, tmp_path_factory.mktemp("real") / "real-client.log")
    try:
        yield addr
    finally:
        stop(proc)


@pytest.fixture
def dummy(real_client):
    s = MooncakeDistributedStore()
    assert s.setup_dummy(16 << 20, 16 << 20, real_client) == 0
    yield s
    s.close()


def pool_buffer(store, n: int) -> int:
    p = store.alloc_from_mem_pool(n)
    assert p != 0
    return p


def test_unreachable_real_client_is_a_negative_code():
    s = MooncakeDistributedStore()
    assert s.setup_dummy(1 << 20, 1 << 20, f"127.0.0.1:{free_port()}") == RPC_FAIL
    # Not set up: operations fail cleanly.
    assert s.put("k", b"v") < 0
    assert s.get("k") == b""
    assert s.alloc_from_mem_pool(4096) == 0


def test_plain_operations(dummy, store, unique):
    k = unique("a")
    assert dummy.put(k, b"hello" * 1000) == 0
    assert dummy.get(k) == b"hello" * 1000
    assert store.get(k) == b"hello" * 1000, "the real cluster sees what the dummy put"
    assert dummy.put(k, b"other") == 0, "an existing key is kept, as with setup()"
    assert dummy.get(k) == b"hello" * 1000
    assert dummy.upsert(k, b"new") == 0 and dummy.get(k) == b"new"
    assert dummy.get(unique("missing")) == b""
    assert dummy.is_exist(k) == 1 and dummy.is_exist(unique("missing")) == 0
    assert dummy.get_size(k) == 3
    assert dummy.get_size(unique("missing")) == -704

    keys = [unique(f"b{i}") for i in range(5)]
    vals = [bytes([i]) * (100_000 + i) for i in range(5)]
    assert dummy.put_batch(keys, vals) == 0
    assert dummy.get_batch(keys + [unique("missing")]) == vals + [b""]
    assert dummy.batch_is_exist(keys + [unique("missing")]) == [1] * 5 + [0]
    assert dummy.put_parts(unique("p"), b"ab", b"cd") == 0 and dummy.get(unique("p")) == b"abcd"
    other = unique("from-real")
    assert store.put(other, b"xyz") == 0
    assert dummy.get(other) == b"xyz", "the dummy sees what a real client put"

    assert remove_when_unleased(dummy, k) == 0 and dummy.is_exist(k) == 0
    assert dummy.remove_by_regex("^" + unique("b") + "[0-4]$", True) == 5
    assert dummy.batch_is_exist(keys) == [0] * 5
    assert dummy.health_check() == 0
    assert dummy.get_hostname() != ""


def test_zero_copy_through_the_shared_pool(dummy, store, unique):
    n = 1 << 20
    src = pool_buffer(dummy, 4 * n)
    dst = pool_buffer(dummy, 4 * n)
    keys = [unique(f"z{i}") for i in range(4)]
    for i in range(4):
        ctypes.memset(src + i * n, 0x41 + i, n)
    assert dummy.put_from(keys[0], src, n) == 0
    assert dummy.batch_put_from(keys[1:], [src + i * n for i in range(1, 4)], [n] * 3) == [0, 0, 0]
    assert store.get(keys[2]) == b"C" * n
    assert dummy.get_into(keys[0], dst, n) == n
    assert ctypes.string_at(dst, n) == b"A" * n
    assert dummy.batch_get_into(keys, [dst + i * n for i in range(4)], [n] * 4) == [n] * 4
    for i in range(4):
        assert ctypes.string_at(dst + i * n, n) == bytes([0x41 + i]) * n
    # Too small a destination; a range that leaves the pool buffer.
    assert dummy.get_into(keys[0], dst, n - 1) == BUFFER_OVERFLOW
    assert dummy.get_into(keys[0], dst + 3 * n + 1, n) == INVALID_PARAMS
    # Byte ranges.
    got = dummy.get_into_ranges([dst], [[keys[1]]], [[[0, 8]]], [[[10, n - 4]]], [[[4, 4]]])
    assert got == [[[4, 4]]]
    assert ctypes.string_at(dst, 4) == b"BBBB"
    assert dummy.upsert_from(keys[0], src + n, n) == 0 and store.get(keys[0]) == b"B" * n
    assert dummy.free_to_mem_pool(src) == 0
    assert dummy.free_to_mem_pool(src) == INVALID_PARAMS
    assert dummy.put_from(unique("after-free"), src, n) == INVALID_PARAMS, "freed pool memory is unregistered"
    # The pool is finite.
    assert dummy.alloc_from_mem_pool(64 << 20) == 0


def test_registered_memory_outside_the_pool_is_copied(dummy, unique):
    n = 300_000
    src = (ctypes.c_ubyte * n)()
    dst = (ctypes.c_ubyte * n)()
    ctypes.memset(src, 7, n)
    ps, pd = ctypes.addressof(src), ctypes.addressof(dst)
    k = unique("heap")
    assert dummy.put_from(k, ps, n) == INVALID_PARAMS, "unregistered memory is refused"
    assert dummy.register_buffer(ps, n) == 0 and dummy.register_buffer(pd, n) == 0
    assert dummy.put_from(k, ps, n) == 0
    assert dummy.get_into(k, pd, n) == n
    assert bytes(dst) == bytes(src)
    assert dummy.unregister_buffer(pd) == 0
    assert dummy.get_into(k, pd, n) == INVALID_PARAMS


def test_tensors(dummy, unique):
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    k = unique("t")
    assert dummy.put_tensor(k, a) == 0
    b = dummy.get_tensor(k)
    assert b.dtype == a.dtype and b.shape == a.shape and (b == a).all()
    ks = [unique("t1"), unique("t2")]
    assert dummy.batch_put_tensor(ks, [a, a * 2]) == [0, 0]
    got = dummy.batch_get_tensor(ks)
    assert (got[1] == a * 2).all()


def test_close_and_setup_again(real_client, unique):
    s = MooncakeDistributedStore()
    assert s.setup_dummy(1 << 20, 0, real_client) == 0
    k = unique("k")
    assert s.put(k, b"v") == 0, "plain values go to the real client's staging buffer"
    assert s.close() == 0
    assert s.get(k) == b"" and s.put(k, b"w") < 0
    assert s.setup_dummy(1 << 20, 0, real_client) == 0
    assert s.get(k) == b"v"
    s.close()


def test_dead_real_client_gives_negative_codes(cluster, tmp_path, unique):
    proc, addr = start_real_client(cluster, tmp_path / "real-client.log")
    s = MooncakeDistributedStore()
    try:
        assert s.setup_dummy(1 << 20, 0, addr) == 0
        assert s.put(unique("k"), b"v") == 0
        # SIGTERM: the real client unmounts its segment on the way out, so
        # the session's shared cluster keeps no dead segment behind.
        proc.terminate()
        proc.wait(timeout=10)
        assert s.put(unique("k2"), b"v") == RPC_FAIL
        assert s.get(unique("k")) == b""
        assert s.is_exist(unique("k")) < 0
        assert s.health_check() == 2
    finally:
        s.close()
        stop(proc)


def test_remove_all_through_the_dummy(dummy, store, unique):
    keys = [unique(f"r{i}") for i in range(3)]
    assert dummy.put_batch(keys, [b"x" * 10] * 3) == 0
    assert store.remove_all(True) >= 0  # whatever earlier tests left
    assert dummy.put_batch(keys, [b"y" * 10] * 3) == 0
    assert dummy.remove_all(True) == 3
    assert dummy.batch_is_exist(keys) == [0, 0, 0]
    assert store.batch_is_exist(keys) == [0, 0, 0]


def test_large_plain_values_use_the_staging_area(real_client, unique):
    s = MooncakeDistributedStore()
    assert s.setup_dummy(1 << 20, 24 << 20, real_client) == 0
    small = MooncakeDistributedStore()
    assert small.setup_dummy(1 << 20, 0, real_client) == 0
    try:
        k = unique("big")
        value = bytes(range(256)) * (80 << 10)  # 20 MiB: more than one frame
        assert small.put(k, value) == INVALID_PARAMS, "no staging area: too large for the socket"
        assert s.put(k, value) == 0
        assert s.get(k) == value
        assert small.get(k) == b"", "too large to come back without a staging area"
        assert remove_when_unleased(s, k) == 0
    finally:
        small.close()
        s.close()


def test_sglang_standalone_multi_buffer_pages(dummy, store, unique):
    """SGLang's standalone mode: the host KV pool comes from
    MooncakeHostMemAllocator (or the dummy's shared pool), is registered on the
    dummy, and pages move with the multi-buffer calls."""
    from mooncake.store import MooncakeHostMemAllocator

    layer = 4096
    alloc = MooncakeHostMemAllocator()
    host = alloc.alloc(4 * layer)
    assert host and dummy.register_buffer(host, 4 * layer) == 0
    pool = pool_buffer(dummy, 4 * layer)
    pages = [unique("page-a"), unique("page-b")]
    data = [bytes([i + 1]) * layer for i in range(4)]
    for i, d in enumerate(data):
        ctypes.memmove(host + i * layer, d, layer)
    # Page a = layers 0 and 2 (host memory: copied), page b = layers 1 and 3 (pool).
    ctypes.memmove(pool, data[1], layer)
    ctypes.memmove(pool + layer, data[3], layer)
    assert dummy.batch_put_from_multi_buffers(
        pages, [[host, host + 2 * layer], [pool, pool + layer]], [[layer, layer]] * 2) == [0, 0]
    # Another client (setup, not dummy) reads them whole; the dummy scatters them back.
    assert store.get(pages[0]) == data[0] + data[2]
    assert dummy.batch_get_into_multi_buffers(
        pages, [[pool + 2 * layer, host + 3 * layer], [host, host + layer]], [[layer, layer]] * 2) == [2 * layer] * 2
    assert ctypes.string_at(pool + 2 * layer, layer) == data[0]
    assert ctypes.string_at(host + 3 * layer, layer) == data[2]
    assert ctypes.string_at(host, 2 * layer) == data[1] + data[3]
    # Too little room: refused, nothing written.
    before = ctypes.string_at(host, layer)
    assert dummy.batch_get_into_multi_buffers([pages[0]], [[host]], [[layer]])[0] < 0
    assert ctypes.string_at(host, layer) == before
    assert dummy.unregister_buffer(host) == 0 and alloc.free(host) == 0
