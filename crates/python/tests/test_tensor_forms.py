"""Tensor API forms beyond put_tensor/get_tensor (numpy here; torch tensors take
the same paths): zero-copy put_tensor_from / get_tensor_into over registered
memory laid out [header][data], tensor-parallel shards, publish and upsert
batches."""

from __future__ import annotations

import ctypes

import numpy as np


def test_get_tensor_into_is_a_view_of_the_buffer(store, unique):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    key = unique("t")
    assert store.put_tensor(key, a) == 0
    buf = (ctypes.c_ubyte * 4096)()
    assert store.register_buffer(ctypes.addressof(buf), 4096) == 0
    got = store.get_tensor_into(key, ctypes.addressof(buf), 4096)
    assert got.dtype == a.dtype and got.shape == a.shape and (got == a).all()
    # A view: the tensor reads the registered memory itself.
    assert got.__array_interface__["data"][0] >= ctypes.addressof(buf)
    # Round trip of the same layout through put_tensor_from.
    n = store.get_size(key)
    key2 = unique("t2")
    assert store.put_tensor_from(key2, ctypes.addressof(buf), n) == 0
    assert (store.get_tensor(key2) == a).all()
    assert store.get_tensor_into(unique("missing"), ctypes.addressof(buf), 4096) is None
    assert store.batch_get_tensor_into([key, key2], [ctypes.addressof(buf)] * 2, [2048, 2048])[1].shape == (2, 3, 4)


def test_tensor_parallel_shards(store, unique):
    a = np.arange(70, dtype=np.int64).reshape(7, 10)
    key = unique("w")
    assert store.put_tensor_with_tp(key, a, tp_size=3, split_dim=0) == 0
    shards = [store.get_tensor_with_tp(key, tp_rank=r, tp_size=3, split_dim=0) for r in range(3)]
    assert [s.shape for s in shards] == [(3, 10), (3, 10), (1, 10)]
    assert (np.concatenate(shards, axis=0) == a).all()
    key_c = unique("cols")
    assert store.batch_put_tensor_with_tp([key_c], [a], tp_size=2, split_dim=1) == [0]
    (left,) = store.batch_get_tensor_with_tp([key_c], tp_rank=0, tp_size=2, split_dim=1)
    assert (left == a[:, :5]).all()
    assert (store.get_tensor(key_c + "_tp_1") == a[:, 5:]).all()
    assert store.get_tensor(key_c) is None  # only the shards are stored
    whole = unique("whole")
    assert store.put_tensor_with_tp(whole, a) == 0 and (store.get_tensor_with_tp(whole) == a).all()


def test_publish_and_upsert_batches(store, unique):
    from mooncake.store import ReplicateConfig

    k1, k2 = unique("p1"), unique("p2")
    cfg = ReplicateConfig()
    assert store.batch_pub_tensor([k1, k2], [np.ones(3), np.zeros(2)], cfg) == [0, 0]
    assert store.batch_upsert_tensor([k1, k2], [np.full(4, 7.0), np.full(1, 9.0)]) == [0, 0]
    t1, t2 = store.batch_get_tensor([k1, k2])
    assert (t1 == 7.0).all() and t1.shape == (4,) and (t2 == 9.0).all()
    assert store.batch_upsert_tensor([k1], []) == [-600]


def test_tensor_parallel_zero_copy_forms(store, unique):
    a = np.arange(40, dtype=np.float64).reshape(4, 10)
    src_key, key = unique("src"), unique("sharded")
    assert store.put_tensor(src_key, a) == 0
    buf = (ctypes.c_ubyte * 8192)()
    p = ctypes.addressof(buf)
    assert store.register_buffer(p, 8192) == 0
    n = store.get_into(src_key, p, 8192)
    # The buffer holds [header][data]: shard it straight from there.
    assert store.put_tensor_with_tp_from(key, p, n, tp_size=2, split_dim=1) == 0
    out = (ctypes.c_ubyte * 4096)()
    q = ctypes.addressof(out)
    assert store.register_buffer(q, 4096) == 0
    right = store.get_tensor_with_tp_into(key, q, 4096, tp_rank=1, tp_size=2, split_dim=1)
    assert (right == a[:, 5:]).all()
    (left,) = store.batch_get_tensor_with_tp_into([key], [q], [4096], tp_rank=0, tp_size=2, split_dim=1)
    assert (left == a[:, :5]).all()
    assert store.put_tensor_with_tp_from(unique("bad"), p, 3, tp_size=2) == -600
    assert store.batch_put_tensor_with_tp_from([key], [p], []) == [-600]


def test_safetensors_round_trip(store, unique, tmp_path):
    import json
    import struct

    cases = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.array([-1, 2, 3], dtype=np.int64),
        "bool": np.array([True, False, True]),
        "u8": np.arange(5, dtype=np.uint8),
    }
    for name, a in cases.items():
        key = unique(name)
        assert store.put_tensor(key, a) == 0
        path = tmp_path / f"{name}.safetensors"
        assert store.save_tensor_to_safetensor(key, str(path)) == 0
        # The file is standard safetensors: header length, JSON header, data.
        blob = path.read_bytes()
        (n,) = struct.unpack_from("<Q", blob)
        header = json.loads(blob[8:8 + n])
        assert header[key]["shape"] == list(a.shape) and len(blob) == 8 + n + a.nbytes
        other = unique(name + "-back")
        got = store.load_tensor_from_safetensor(other, str(path))  # not in file: first tensor
        assert got.dtype == a.dtype and (got == a).all()
        assert (store.get_tensor(other) == a).all()
    assert store.save_tensor_to_safetensor(unique("missing"), str(tmp_path / "x")) == -704
    assert store.load_tensor_from_safetensor(unique("k"), str(tmp_path / "nope")) is None
