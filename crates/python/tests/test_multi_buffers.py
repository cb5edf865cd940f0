"""Objects laid over several registered buffers (what vLLM's and SGLang's
connectors call on every save and load): batch_put_from_multi_buffers gathers
a key's buffers into one object, batch_get_into_multi_buffers scatters it back,
the get-session form reads byte ranges; unregistered buffers and malformed
lists are refused per key without writing."""

from __future__ import annotations

import ctypes
import os

from conftest import remove_when_unleased


def registered(store, n: int, fill: int = ord(".")):
    buf = (ctypes.c_ubyte * n)()
    ctypes.memset(buf, fill, n)
    assert store.register_buffer(ctypes.addressof(buf), n) == 0
    return buf


def addr(buf, off: int = 0) -> int:
    return ctypes.addressof(buf) + off


def test_put_gathers_and_get_scatters(store, unique):
    # One "block" per key made of three "layers" at different places of one buffer.
    src = registered(store, 3 * 4096)
    layers = [os.urandom(1000), os.urandom(3000), os.urandom(10)]
    offs = [0, 4096, 8192]
    for data, off in zip(layers, offs):
        ctypes.memmove(addr(src, off), data, len(data))
    k1, k2 = unique("b1"), unique("b2")
    ptrs = [addr(src, o) for o in offs]
    sizes = [len(d) for d in layers]
    assert store.batch_put_from_multi_buffers([k1, k2], [ptrs, ptrs[:1]], [sizes, sizes[:1]]) == [0, 0]
    assert store.get(k1) == b"".join(layers)
    assert store.get(k2) == layers[0]

    # Scatter into differently cut buffers: 2500 + 1600 (+ spare room).
    dst = registered(store, 8192)
    got = store.batch_get_into_multi_buffers([k1], [[addr(dst, 0), addr(dst, 4096)]], [[2500, 4000]])
    whole = b"".join(layers)
    assert got == [len(whole)]
    assert bytes(dst[0:2500]) == whole[:2500]
    assert bytes(dst[4096:4096 + len(whole) - 2500]) == whole[2500:]
    assert bytes(dst[4096 + len(whole) - 2500:4200]) == b"." * (4200 - 4096 - len(whole) + 2500)
    assert bytes(dst[2500:4096]) == b"." * (4096 - 2500)  # the gap is untouched


def test_existing_key_keeps_value_and_upsert_replaces(store, unique):
    buf = registered(store, 64)
    ctypes.memmove(addr(buf), b"A" * 32 + b"B" * 32, 64)
    key = unique("k")
    assert store.batch_put_from_multi_buffers([key], [[addr(buf), addr(buf, 32)]], [[4, 4]]) == [0]
    assert store.batch_put_from_multi_buffers([key], [[addr(buf, 32)]], [[8]]) == [0]
    assert store.get(key) == b"AAAABBBB"
    assert remove_when_unleased(store, key) == 0 or True  # lease from the get above
    key2 = unique("k2")
    assert store.put(key2, b"old") == 0
    assert store.batch_upsert_from_multi_buffers([key2], [[addr(buf, 30), addr(buf, 40)]], [[3, 2]]) == [0]
    assert store.get(key2) == b"AABBB"


def test_bad_requests_fail_alone_and_write_nothing(store, unique):
    buf = registered(store, 32)
    ctypes.memmove(addr(buf), b"x" * 32, 32)
    unreg = (ctypes.c_ubyte * 32)()
    good, bad_ptr, bad_len = unique("good"), unique("unregistered"), unique("lengths")
    rc = store.batch_put_from_multi_buffers(
        [good, bad_ptr, bad_len],
        [[addr(buf)], [addr(buf), ctypes.addressof(unreg)], [addr(buf)]],
        [[8], [4, 4], [4, 4]],
    )
    assert rc == [0, -600, -600]
    assert store.is_exist(bad_ptr) == 0 and store.is_exist(bad_len) == 0
    # Outer lists of different lengths: every key refused.
    assert store.batch_put_from_multi_buffers([good, bad_ptr], [[addr(buf)]], [[8]]) == [-600, -600]

    dst = registered(store, 16)
    # Too little room (object 8 bytes, buffers 3 + 4), a missing key, a good read.
    got = store.batch_get_into_multi_buffers(
        [good, unique("missing"), good],
        [[addr(dst), addr(dst, 8)], [addr(dst)], [addr(dst, 8)]],
        [[3, 4], [16], [8]],
    )
    assert got[0] < 0 and got[1] == -704 and got[2] == 8
    assert bytes(dst[0:8]) == b"." * 8 and bytes(dst[8:16]) == b"x" * 8


def test_get_session_reads_ranges(store, unique):
    key = unique("layered")
    value = bytes(range(256)) * 16  # 4096 bytes
    assert store.put(key, value) == 0
    dst = registered(store, 256)
    missing = unique("missing")
    assert store.batch_get_session_start([key, missing]) == [0, -704]
    got = store.batch_get_into_multi_buffer_ranges(
        [key, missing],
        [[addr(dst), addr(dst, 100)], [addr(dst)]],
        [[10, 20], [4]],
        [[1000, 4000], [0]],
    )
    assert got == [30, -600]
    assert bytes(dst[0:10]) == value[1000:1010]
    assert bytes(dst[100:120]) == value[4000:4020]
    # Past the object's end: refused, nothing written.
    assert store.batch_get_into_multi_buffer_ranges([key], [[addr(dst, 200)]], [[20]], [[4090]]) == [-600]
    assert bytes(dst[200:220]) == b"." * 20
    assert store.batch_get_session_end([key]) == 0
    # Outside a session: refused.
    assert store.batch_get_into_multi_buffer_ranges([key], [[addr(dst)]], [[1]], [[0]]) == [-600]


def test_soft_pin_ttl_without_enable_is_refused(store, unique):
    from mooncake.store import ReplicateConfig, SoftPinAction

    key = unique("pin")
    cfg = ReplicateConfig()
    cfg.soft_pin_ttl_ms = 1000
    assert store.put(key, b"v", cfg) == -600
    assert store.upsert(key, b"v", cfg) == -600
    cfg.soft_pin_action = SoftPinAction.DISABLE
    assert store.upsert(key, b"v", cfg) == -600
    assert store.is_exist(key) == 0
    cfg.soft_pin_action = SoftPinAction.ENABLE
    assert store.put(key, b"v", cfg) == 0


def test_replica_descriptors_and_clear(make_store, unique, cluster):
    import time

    from mooncake.store import ReplicateConfig

    a, b = make_store(), make_store()
    key, other = unique("rep"), unique("other")
    cfg = ReplicateConfig()
    cfg.replica_num = 2
    assert a.put(key, b"x" * 100, cfg) == 0
    assert a.put(other, b"y" * 10) == 0
    descs = a.batch_get_replica_desc([key, unique("missing")])
    assert list(descs) == [key]
    reps = descs[key]
    assert len(reps) == 2 and all(r.is_memory_replica() and not r.is_disk_replica() for r in reps)
    segs = {r.get_memory_descriptor().buffer_descriptor.transport_endpoint for r in reps}
    assert segs == {a.get_hostname(), b.get_hostname()}
    assert sum(d.size for d in reps[0].get_memory_descriptor().buffer_descriptors) == 100
    assert a.get_replica_desc(unique("missing")) == []

    # Leased (just read): nothing cleared; after the lease: cleared, the other key stays.
    assert a.batch_replica_clear([key]) == []
    time.sleep(cluster.lease_ttl_ms / 1000 + 0.2)
    assert a.batch_replica_clear([key, unique("missing")]) == [key]
    assert a.is_exist(key) == 0 and a.is_exist(other) == 1
    # A segment holding no replica of the key clears nothing.
    assert a.batch_replica_clear([other], segment_name="nowhere:1") == []
    assert a.is_exist(other) == 1


def test_put_session_writes_ranges_then_publishes(make_store, unique):
    store, reader = make_store(), make_store()
    src = registered(store, 4096)
    layers = [os.urandom(1024) for _ in range(4)]
    for i, data in enumerate(layers):
        ctypes.memmove(addr(src, i * 1024), data, 1024)
    key, dropped, missing = unique("layers"), unique("dropped"), unique("never-started")
    assert store.batch_put_session_start([key, dropped], [4096, 100]) == [0, 0]
    assert reader.is_exist(key) == 0  # nothing visible before the end call
    # Layers arrive out of order, two per call; one range past the end is refused.
    assert store.batch_put_from_multi_buffer_ranges(
        [key, missing], [[addr(src, 3072), addr(src, 1024)], [addr(src)]], [[1024, 1024], [8]], [[3072, 1024], [0]]
    ) == [2048, -600]
    assert store.batch_put_from_multi_buffer_ranges([key], [[addr(src, 4000)]], [[96]], [[4050]]) == [-600]
    assert store.batch_put_from_multi_buffer_ranges(
        [key], [[addr(src), addr(src, 2048)]], [[1024, 1024]], [[0, 2048]]
    ) == [2048]
    assert store.batch_put_session_end([key, missing]) == [0, -600]
    assert reader.get(key) == b"".join(layers)
    # A revoked session never becomes visible and its key can be put again.
    assert store.batch_put_session_revoke([dropped]) == [0]
    assert reader.is_exist(dropped) == 0
    assert store.put(dropped, b"later") == 0 and reader.get(dropped) == b"later"
    # An existing key cannot start a session.
    assert store.batch_put_session_start([key], [10])[0] < 0


def test_large_buffers_move_zero_copy_and_small_ones_staged(store, unique):
    # Both ways a setup() client moves multi-buffer objects: buffers averaging
    # 64 KiB or more go to the engine in place (scatter-gather), smaller ones
    # through the staging buffer; the bytes must be the same either way.
    for sizes in ([100 << 10, 200 << 10, 70 << 10], [3000, 1, 4096, 20000]):
        total = sum(sizes)
        src = registered(store, total + 4096 * len(sizes))
        dst = registered(store, total + 4096 * len(sizes))
        offs, off = [], 0
        for n in sizes:
            offs.append(off)
            off += n + 4096  # gaps between the buffers
        data = os.urandom(total)
        pos = 0
        for o, n in zip(offs, sizes):
            ctypes.memmove(addr(src, o), data[pos:pos + n], n)
            pos += n
        key = unique(f"objs-{len(sizes)}")
        assert store.batch_put_from_multi_buffers([key], [[addr(src, o) for o in offs]], [sizes]) == [0]
        assert store.get(key) == data
        got = store.batch_get_into_multi_buffers([key], [[addr(dst, o) for o in offs]], [sizes])
        assert got == [total]
        pos = 0
        for o, n in zip(offs, sizes):
            assert bytes(dst[o:o + n]) == data[pos:pos + n]
            assert bytes(dst[o + n:o + n + 4096]) == b"." * 4096  # gaps untouched
            pos += n
