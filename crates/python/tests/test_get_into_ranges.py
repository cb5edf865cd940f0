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

    # object overrun, buffer overrun, negative offset
    assert store.get_into_ranges([p], [[key]], [[[0, 6, 0]]], [[[8, 0, -1]]], [[[4, 4, 1]]]) == [
        [[-600, -600, -600]]
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
