"""mooncake.p2p against a real metadata server (the master's embedded HTTP
one): numpy arrays, bytearrays and torch tensors shared between three nodes
of one process, each over its own transfer engine and tcp."""

import numpy as np
import pytest

from mooncake.p2p import P2PStore


def test_register_get_list_delete(cluster, unique):
    name = unique("p2p")
    meta = cluster.metadata_url
    with P2PStore(meta) as seed, P2PStore(meta) as r1, P2PStore(meta) as r2, P2PStore(meta) as r3:
        a = np.random.default_rng(1).integers(0, 255, size=3 << 20, dtype=np.uint8)
        b = np.arange(1 << 18, dtype=np.float32)
        info = seed.register(name, [a, b], max_shard_size=512 << 10)
        assert info["size"] == a.nbytes + b.nbytes
        assert info["shards"] == 8

        # One flat buffer: the bytes of both parts in order.
        flat = np.empty(info["size"], dtype=np.uint8)
        rep = r1.get_replica(name, [flat])
        assert rep["bytes"] == info["size"]
        assert flat[: a.nbytes].tobytes() == a.tobytes()
        assert flat[a.nbytes:].view(np.float32).tolist() == b.tolist()

        # Another layout: a bytearray and an array like the original.
        x, y = bytearray(a.nbytes), np.empty_like(b)
        r2.get_replica(name, [x, y])
        assert bytes(x) == a.tobytes() and np.array_equal(y, b)

        listing = seed.list(name)
        assert [o["name"] for o in listing] == [name]
        assert listing[0]["complete_holders"] == 3

        # Bad input: clear Python exceptions, nothing changes.
        with pytest.raises(KeyError):
            r3.get_replica(unique("missing"), [flat])
        with pytest.raises(ValueError, match="too small"):
            r3.get_replica(name, [np.empty(1024, dtype=np.uint8)])
        with pytest.raises(ValueError, match="already"):
            r3.register(name, [a])
        with pytest.raises(ValueError):
            r3.delete_replica(name)
        assert seed.list(name)[0]["complete_holders"] == 3

        r1.delete_replica(name)
        assert seed.list(name)[0]["holders"] == 2
        seed.unregister(name)
        assert seed.list(name) == []


def test_torch_cpu_tensors(cluster, unique):
    torch = pytest.importorskip("torch")
    name = unique("p2p-torch")
    meta = cluster.metadata_url
    with P2PStore(meta) as seed, P2PStore(meta) as reader:
        w = torch.randn(256, 1024)
        seed.register(name, [w], max_shard_size=256 << 10)
        out = torch.empty_like(w)
        reader.get_replica(name, [out])
        assert torch.equal(out, w)
        seed.unregister(name)
