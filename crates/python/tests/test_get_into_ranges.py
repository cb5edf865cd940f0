"""MooncakeDistributedStore.get_into_ranges: byte ranges of several objects
copied into registered buffers, answered range by range with the same nesting
as the request; anything outside the object or the registered buffer, and
malformed range lists, are refused without writing."""

from __future__ import annotations

import ctypes


def registered(store, n: int, fill: int = ord(".")):
    buf = (ctypes.c_ubyte * n)()
    ctypes.memset(buf, fill, n)
    assert store.register_buffer(ctypes.addressof(buf), n) == 0
    return buf


def test_ranges_of_two_objects_into_two_buffers(store, unique):
    k1, k2 = unique("left"), unique("right")
    v1, v2 = bytes(range(65, 65 + 40)), bytes(range(97, 97 + 26)) * 2
    assert store.put(k1, v1) == 0 and store.put(k2, v2) == 0
    b0, b1 = registered(store, 24), registered(store, 24)
    p0, p1 = ctypes.addressof(b0), ctypes.addressof(b1)

    got = store.get_into_ranges(
        [p0, p1],
        [[k1, k2], [k2]],
        [[[0, 10], [16]], [[2]]],   # where in the buffer
        [[[5, 38], [0]], [[50]]],   # where in the object
        [[[3, 2], [8]], [[2]]],     # how many bytes
    )
    assert got == [[[3, 2], [8]], [[2]]]
    assert bytes(b0[0:3]) == v1[5:8] and bytes(b0[10:12]) == v1[38:40]
    assert bytes(b0[16:24]) == v2[0:8]
    assert bytes(b1[2:4]) == v2[50:52]
    assert bytes(b0[3:10]) == b"." * 7 and bytes(b1[:2]) == b".."  # untouched around the ranges


def test_bad_ranges_are_refused_and_write_nothing(store, unique):
    key = unique("obj")
    value = b"0123456789"
    assert store.put(key, value) == 0
    buf = registered(store, 8)
    p = ctypes.addressof(buf)

    # object overrun, buffer overrun, negative offset, offset beyond 64 bits
    assert store.get_into_ranges([p], [[key]], [[[0, 6, 0, 0]]], [[[8, 0, -1, 1 << 64]]], [[[4, 4, 1, 1]]]) == [
        [[-600, -600, -600, -600]]
    ]
    # range lists of different lengths: one refusal for the key; no ranges: empty answer
    assert store.get_into_ranges([p], [[key, key]], [[[0], []]], [[[0, 1], []]], [[[2], []]]) == [[[-600], []]]
    # outer lists of different lengths
    assert store.get_into_ranges([p], [[key]], [], [], []) == [[[-600]]]
    assert bytes(buf) == b"." * 8


def test_missing_key_fails_alone(store, unique):
    key = unique("present")
    assert store.put(key, b"abcdef") == 0
    buf = registered(store, 8)
    p = ctypes.addressof(buf)
    got = store.get_into_ranges([p], [[unique("absent"), key]], [[[0], [4]]], [[[0], [2]]], [[[2], [3]]])
    assert got[0][0][0] < 0 and got[0][1] == [3]
    assert bytes(buf[4:7]) == b"cde" and bytes(buf[0:2]) == b".."


def test_unregistered_memory_is_never_written(store, unique):
    key = unique("obj")
    assert store.put(key, b"xyz") == 0
    buf = registered(store, 8)
    p = ctypes.addressof(buf)
    assert store.unregister_buffer(p) == 0
    assert store.get_into_ranges([p], [[key]], [[[0]]], [[[0]]], [[[3]]]) == [[[-600]]]
    assert bytes(buf) == b"." * 8


def test_ranges_of_a_striped_object_read_only_their_bytes(make_store, unique):
    # 40 MiB with the master's 16 MiB max slice: three stripes of ~13.3 MiB; the
    # reader has no segment of its own, so every range crosses the Transfer Engine.
    writer = make_store()
    reader = make_store(global_segment_size=0)
    key = unique("striped")
    size = 40 << 20
    value = bytes((i * 7 + (i >> 16)) % 251 for i in range(size))
    assert writer.put(key, value) == 0
    b1 = -(-size // 3)  # first stripe boundary (near-equal chunks, the longer first)
    b2 = b1 + size // 3
    buf = registered(reader, 1 << 20)
    p = ctypes.addressof(buf)
    spans = [(b1 - 100, 200), (b1, 50), (b2 - 10, 10), (b2 - 4096, 300_000), (size - 7, 7), (5, 0), (size, 0)]
    dst = [0, 160_000, 320_000, 400_000, 720_000, 800_000, 800_000]  # disjoint
    got = reader.get_into_ranges([p], [[key]], [[dst]], [[[s for s, _ in spans]]], [[[n for _, n in spans]]])
    assert got == [[[n for _, n in spans]]]
    covered = bytearray(len(buf))
    for (src, n), d in zip(spans, dst):
        assert bytes(buf[d:d + n]) == value[src:src + n], (src, n)
        covered[d:d + n] = b"\x01" * n
    assert all(buf[i] == ord(".") for i in range(len(buf)) if not covered[i])

    # Past the end (even by one byte, or a zero-length range beyond it) is refused.
    before = bytes(buf)
    assert reader.get_into_ranges([p], [[key]], [[[0, 0]]], [[[size - 3, size + 1]]], [[[4, 0]]]) == [[[-600, -600]]]
    assert bytes(buf) == before
