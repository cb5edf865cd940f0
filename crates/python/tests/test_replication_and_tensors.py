"""Replicated puts that survive their writer, and tensor put/get with dtype
and shape round-trips (numpy always; torch when installed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import remove_when_unleased
from mooncake.store import MooncakeDistributedStore, ReplicateConfig


def test_batch_forms_accept_a_replicate_config(make_store, unique):
    a, _b = make_store(), make_store()
    c = ReplicateConfig()
    c.replica_num = 2
    keys = [unique(f"r{i}") for i in range(3)]
    assert a.put_batch(keys=keys, values=[b"1", b"2", b"3"], config=c) == 0
    assert a.get_batch(keys) == [b"1", b"2", b"3"]
    for k in keys:
        assert remove_when_unleased(a, k) == 0


def test_two_replicas_outlive_the_writer(cluster, make_store, unique):
    writer = MooncakeDistributedStore()
    assert writer.setup(*cluster.client_args()) == 0
    other = make_store()
    c = ReplicateConfig()
    c.replica_num = 2
    k = unique("survivor")
    data = os.urandom(300_000)
    assert writer.put(key=k, value=data, config=c) == 0
    assert writer.get(k) == data
    assert writer.close() == 0       # its segment leaves the pool
    assert other.get(k) == data, "the replica on the other segment still serves"
    assert writer.setup(*cluster.client_args()) == 0
    assert writer.get(k) == data
    assert remove_when_unleased(writer, k) == 0
    writer.close()


NUMPY_CASES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(24, dtype=np.int64).reshape(2, 3, 4),
    np.array([True, False, True]),
    np.linspace(0, 1, 7, dtype=np.float16),
    (np.arange(6) + 1j).astype(np.complex64).reshape(2, 3),
    np.array(3.5, dtype=np.float64),          # 0-d
    np.zeros((0, 5), dtype=np.uint8),         # empty
    np.arange(100, dtype=np.int32)[::3],      # non-contiguous view
]


@pytest.mark.parametrize("i", range(len(NUMPY_CASES)))
def test_numpy_round_trip(store, unique, i):
    a = NUMPY_CASES[i]
    k = unique("np")
    assert store.put_tensor(k, a) == 0
    b = store.get_tensor(k)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_tensor_batches_and_missing_keys(store, unique):
    keys = [unique(f"t{i}") for i in range(3)]
    arrays = [np.random.rand(4, i + 1).astype(np.float32) for i in range(3)]
    assert store.batch_put_tensor(keys, arrays) == [0, 0, 0]
    out = store.batch_get_tensor(keys + [unique("missing")])
    for a, b in zip(arrays, out):
        np.testing.assert_array_equal(a, b)
    assert out[3] is None
    assert store.get_tensor(unique("missing")) is None
    assert store.batch_put_tensor(keys, arrays[:1]) == [-600] * 3
    up = np.ones((2, 2), dtype=np.int8)
    assert store.upsert_tensor(keys[0], up) == 0
    np.testing.assert_array_equal(store.get_tensor(keys[0]), up)


def test_torch_round_trip(store, unique):
    torch = pytest.importorskip("torch")
    cases = [
        torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float32),
        torch.tensor([1, 2, 3, 4], dtype=torch.int32),
        torch.tensor([True, False, False, True]),
        torch.rand(1000),
        torch.arange(8, dtype=torch.int64).reshape(2, 2, 2),
        torch.randn(3, 5).to(torch.bfloat16),
    ]
    for i, t in enumerate(cases):
        k = unique(f"torch{i}")
        assert store.put_tensor(k, t) == 0
        r = store.get_tensor(k)
        assert isinstance(r, torch.Tensor)
        assert r.dtype == t.dtype and r.shape == t.shape
        assert torch.equal(r, t)
