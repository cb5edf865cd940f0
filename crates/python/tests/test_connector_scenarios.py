"""One request's save and load as the serving frameworks' store connectors
drive the API today (our own replay of their call sequences):

* vLLM MooncakeStoreConnector: the KV cache is one registered tensor per layer;
  a key is one block across every layer. Save: batch_is_exist to skip stored
  blocks, then batch_put_from_multi_buffers with one address per layer. Load
  (another instance, other block ids): batch_is_exist for the hit prefix, then
  batch_get_into_multi_buffers, each result checked against the bytes expected.
* SGLang HiCache, layer-wise loading: a host pool laid out layer-first; pages
  saved with batch_put_from_multi_buffers, loaded one layer at a time inside a
  get session (batch_get_into_multi_buffer_ranges with per-layer offsets).
* LMCache-style staging: buffers from a BufferPool, put_from / get_into.
"""

from __future__ import annotations

import ctypes
import hashlib

LAYERS = 4
BLOCK = 8 << 10  # bytes of one block in one layer


def block_bytes(key: str, layer: int) -> bytes:
    seed = hashlib.sha256(f"{key}/{layer}".encode()).digest()
    return (seed * (BLOCK // len(seed) + 1))[:BLOCK]


class KvCache:
    """One registered buffer per layer, `blocks` blocks each (vLLM's layout)."""

    def __init__(self, store, blocks: int):
        self.layers = [(ctypes.c_ubyte * (blocks * BLOCK))() for _ in range(LAYERS)]
        for t in self.layers:
            assert store.register_buffer(ctypes.addressof(t), blocks * BLOCK) == 0

    def addrs(self, block_id: int) -> list:
        return [ctypes.addressof(t) + block_id * BLOCK for t in self.layers]

    def write(self, block_id: int, key: str) -> None:
        for l, t in enumerate(self.layers):
            ctypes.memmove(ctypes.addressof(t) + block_id * BLOCK, block_bytes(key, l), BLOCK)

    def read(self, block_id: int, layer: int) -> bytes:
        return bytes(self.layers[layer][block_id * BLOCK:(block_id + 1) * BLOCK])


def test_vllm_store_connector_save_and_load(make_store, unique):
    from mooncake.store import ReplicateConfig

    prefill, decode = make_store(), make_store()
    keys = [unique(f"model@tp0@{i:04x}") for i in range(6)]
    src = KvCache(prefill, blocks=8)
    block_ids = [3, 0, 5, 1, 7, 2]
    for b, k in zip(block_ids, keys):
        src.write(b, k)
    rc = ReplicateConfig()
    rc.replica_num = 1

    # Save, twice: the second pass finds every block stored and puts nothing.
    for _ in range(2):
        exists = prefill.batch_is_exist(keys)
        todo = [i for i, e in enumerate(exists) if e != 1]
        if todo:
            res = prefill.batch_put_from_multi_buffers(
                [keys[i] for i in todo], [src.addrs(block_ids[i]) for i in todo],
                [[BLOCK] * LAYERS for _ in todo], rc)
            assert res == [0] * len(todo)
    assert prefill.batch_is_exist(keys) == [1] * len(keys)

    # Load on the decode side: the first 4 blocks hit (a 5th key was never saved).
    wanted = keys[:4] + [unique("model@tp0@never")]
    exists = decode.batch_is_exist(wanted)
    hit = next((i for i, e in enumerate(exists) if e != 1), len(wanted))
    assert hit == 4
    dst = KvCache(decode, blocks=8)
    dst_ids = [6, 4, 2, 0]
    got = decode.batch_get_into_multi_buffers(
        wanted[:hit], [dst.addrs(b) for b in dst_ids], [[BLOCK] * LAYERS] * hit)
    assert got == [BLOCK * LAYERS] * hit
    for b, k in zip(dst_ids, wanted[:hit]):
        for l in range(LAYERS):
            assert dst.read(b, l) == block_bytes(k, l)


def test_sglang_hicache_layer_wise_load(make_store, unique):
    writer, reader = make_store(), make_store()
    pages = [unique(f"page-{i}") for i in range(3)]
    src = KvCache(writer, blocks=4)
    for i, k in enumerate(pages):
        src.write(i, k)
    assert writer.batch_put_from_multi_buffers(
        pages, [src.addrs(i) for i in range(3)], [[BLOCK] * LAYERS] * 3) == [0, 0, 0]

    dst = KvCache(reader, blocks=4)
    slots = [2, 3, 0]
    assert reader.batch_get_session_start(pages) == [0, 0, 0]
    for layer in range(LAYERS):  # one call per layer as the model runs
        got = reader.batch_get_into_multi_buffer_ranges(
            pages, [[dst.addrs(s)[layer]] for s in slots], [[BLOCK]] * 3, [[layer * BLOCK]] * 3)
        assert got == [BLOCK] * 3
        for s, k in zip(slots, pages):
            assert dst.read(s, layer) == block_bytes(k, layer)
            if layer + 1 < LAYERS:
                assert dst.read(s, layer + 1) == bytes(BLOCK)  # later layers not loaded yet
    assert reader.batch_get_session_end(pages) == 0


def test_buffer_pool_staging_round_trip(make_store, unique):
    from mooncake.buffer_pool import BufferPool

    store = make_store()
    pool = BufferPool(store, min_size_class=4096, alignment=4096)
    key = unique("chunk")
    payload = hashlib.sha256(b"lmcache").digest() * 1000
    with pool.acquire(len(payload)) as out:
        out.buffer[:] = payload
        assert store.put_from(key, out.ptr, out.size) == 0
    with pool.acquire(len(payload) + 100) as back:
        assert store.get_into(key, back.ptr, back.size) == len(payload)
        view = back.buffer
        assert bytes(view[:len(payload)]) == payload
        del view
    pool.close()
