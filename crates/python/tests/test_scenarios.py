"""Usage as the serving frameworks' Mooncake connectors drive the API.

* vLLM-style: a prefill process stores page-sized KV blocks keyed by prefix
  hash; a decode process asks which leading blocks exist and fetches them
  in one batch.
* SGLang-HiCache-style: each side has one registered host KV pool; pages go
  out with batch_put_from and come back with batch_get_into straight into
  (scattered) pool slots, after an existence check that limits the fetch to
  the hit prefix.
"""

from __future__ import annotations

import ctypes
import hashlib
import random

from conftest import run_python

PAGE = 64 << 10      # one KV page: 16 tokens x 2 (K,V) x 8 heads x 128 dims x fp16
TOKENS_PER_PAGE = 16


def prefix_keys(model: str, tokens: list, rank: int = 0) -> list:
    """One key per full page: a hash chained over every token so far."""
    keys, h = [], hashlib.sha256(model.encode())
    for p in range(len(tokens) // TOKENS_PER_PAGE):
        h.update(repr(tokens[p * TOKENS_PER_PAGE:(p + 1) * TOKENS_PER_PAGE]).encode())
        keys.append(f"{model}@{rank}@{h.hexdigest()[:32]}")
    return keys


def page_bytes(key: str) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (PAGE // len(seed) + 1))[:PAGE]


PREFILL = r"""
import sys, json
from mooncake.store import MooncakeDistributedStore
args = json.loads(sys.argv[1])
s = MooncakeDistributedStore()
assert s.setup(*args["setup"]) == 0
import hashlib
def page(k):
    seed = hashlib.sha256(k.encode()).digest()
    return (seed * (%d // len(seed) + 1))[:%d]
keys = args["keys"]
for i in range(0, len(keys), 8):
    chunk = keys[i:i + 8]
    assert s.put_batch(chunk, [page(k) for k in chunk]) == 0
print("stored", len(keys), flush=True)
sys.stdin.read()
s.close()
""" % (PAGE, PAGE)


def test_vllm_style_prefix_reuse_across_processes(cluster, make_store, unique):
    model = unique("llama")
    prompt = [random.randrange(32000) for _ in range(TOKENS_PER_PAGE * 12 + 5)]
    keys = prefix_keys(model, prompt)
    import json

    producer = run_python(PREFILL, json.dumps({"setup": list(cluster.client_args()), "keys": keys[:9]}))
    try:
        assert producer.stdout.readline().split() == ["stored", "9"], producer.stderr.read()
        decode = make_store()
        # A second request shares the first 9 pages of the prompt, then diverges.
        follow_up = prompt[: TOKENS_PER_PAGE * 9] + [1, 2, 3] * 20
        want = prefix_keys(model, follow_up)
        exists = decode.batch_is_exist(want)
        hit = next((i for i, e in enumerate(exists) if e != 1), len(exists))
        assert hit == 9 and exists[:9] == [1] * 9
        pages = decode.get_batch(want[:hit])
        assert [len(p) for p in pages] == [PAGE] * hit
        assert all(p == page_bytes(k) for p, k in zip(pages, want))
        # The decode side stores the new pages; the next lookup hits them all.
        new = want[hit:]
        assert decode.put_batch(new, [page_bytes(k) for k in new]) == 0
        assert decode.batch_is_exist(want) == [1] * len(want)
    finally:
        producer.stdin.close()
        producer.wait(timeout=30)


class HostPool:
    """A registered pinned-host-memory KV pool of fixed-size pages."""

    def __init__(self, store, pages: int):
        self.store = store
        self.mem = (ctypes.c_ubyte * (pages * PAGE))()
        self.base = ctypes.addressof(self.mem)
        assert store.register_buffer(self.base, pages * PAGE) == 0

    def slot(self, i: int) -> int:
        return self.base + i * PAGE

    def write(self, i: int, data: bytes) -> None:
        ctypes.memmove(self.slot(i), data, len(data))

    def read(self, i: int) -> bytes:
        return bytes(self.mem[i * PAGE:(i + 1) * PAGE])

    def close(self) -> None:
        assert self.store.unregister_buffer(self.base) == 0


def test_sglang_hicache_style_zero_copy_pages(make_store, unique):
    writer, reader = make_store(), make_store()
    wpool, rpool = HostPool(writer, 64), HostPool(reader, 64)
    keys = prefix_keys(unique("qwen"), list(range(TOKENS_PER_PAGE * 48)))
    # K and V pages per prefix entry, as HiCache's page-first layout stores them.
    kv_keys = [f"{k}_{part}" for k in keys for part in ("k", "v")][:64]
    for i, k in enumerate(kv_keys):
        wpool.write(i, page_bytes(k))
    # Backup to the store: one zero-copy batch from the host pool.
    rc = writer.batch_put_from(kv_keys, [wpool.slot(i) for i in range(64)], [PAGE] * 64)
    assert rc == [0] * 64
    # Prefetch on the reader: existence first, then only the hit prefix.
    probe = kv_keys[:40] + [f"{unique('absent')}_{i}" for i in range(8)]
    hits = reader.batch_is_exist(probe)
    n = hits.index(0)
    assert n == 40
    slots = random.sample(range(64), n)          # free slots come in any order
    got = reader.batch_get_into(probe[:n], [rpool.slot(s) for s in slots], [PAGE] * n)
    assert got == [PAGE] * n
    for k, s in zip(probe[:n], slots):
        assert rpool.read(s) == page_bytes(k)
    # A page already backed up is skipped by the writer's next backup round.
    again = writer.batch_put_from(kv_keys[:4], [wpool.slot(i) for i in range(4)], [PAGE] * 4)
    assert again == [0] * 4
    wpool.close()
    rpool.close()
