"""GPU memory on the data path (torch CUDA tensors): store put_from/get_into and
batches on device memory across two processes, mixed host/device batches,
put_tensor/get_tensor of CUDA tensors, and TransferEngine *_on_cuda. Every
result is checked byte for byte. Skipped where torch or a CUDA device is
missing (CI); scripts/gpu-check.sh runs it on a GPU machine."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from conftest import free_port, run_python  # noqa: E402
from mooncake.engine import TransferEngine  # noqa: E402

MiB = 1 << 20

READER = r"""
import json, sys, torch
from mooncake.store import MooncakeDistributedStore
args, keys, size = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
s = MooncakeDistributedStore()
assert s.setup(*args) == 0
bufs = [torch.zeros(size, dtype=torch.uint8, device="cuda") for _ in keys]
for b in bufs:
    assert s.register_buffer(b.data_ptr(), size) == 0
got = s.batch_get_into(keys, [b.data_ptr() for b in bufs], [size] * len(keys))
sums = [int(b.to(torch.int64).sum()) for b in bufs]
print("got", json.dumps(got, separators=(",", ":")), json.dumps(sums, separators=(",", ":")), flush=True)
for b in bufs:
    s.unregister_buffer(b.data_ptr())
s.close()
"""


def pattern(n: int, seed: int) -> "torch.Tensor":
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)


def test_device_put_from_then_get_into_in_another_process(cluster, make_store, unique):
    s = make_store(global_segment_size=256 * MiB)
    n = 8 * MiB + 123
    keys = [unique(f"dev{i}") for i in range(3)]
    srcs = [pattern(n, i).cuda() for i in range(3)]
    for t in srcs:
        assert s.register_buffer(t.data_ptr(), n) == 0
    assert s.put_from(keys[0], srcs[0].data_ptr(), n) == 0
    assert s.batch_put_from(keys[1:], [t.data_ptr() for t in srcs[1:]], [n, n]) == [0, 0]
    proc = run_python(READER, json.dumps(list(cluster.client_args())), json.dumps(keys), str(n))
    out, err = proc.communicate(timeout=120)
    line = [l for l in out.splitlines() if l.startswith("got ")]
    assert line, err
    _, codes, sums = line[0].split(" ", 2)
    assert json.loads(codes) == [n] * 3
    assert json.loads(sums) == [int(t.to(torch.int64).sum()) for t in srcs]
    # And back into device memory here, byte for byte.
    dst = torch.zeros(n, dtype=torch.uint8, device="cuda")
    assert s.register_buffer(dst.data_ptr(), n) == 0
    for k, t in zip(keys, srcs):
        assert s.get_into(k, dst.data_ptr(), n) == n
        assert torch.equal(dst, t)
    for t in srcs + [dst]:
        assert s.unregister_buffer(t.data_ptr()) == 0


def test_mixed_host_and_device_batch(make_store, unique):
    s = make_store(global_segment_size=128 * MiB)
    n = 3 * MiB + 5
    host = pattern(n, 7)              # CPU tensor
    dev = pattern(n, 8).cuda()
    for t in (host, dev):
        assert s.register_buffer(t.data_ptr(), n) == 0
    keys = [unique("h"), unique("d")]
    assert s.batch_put_from(keys, [host.data_ptr(), dev.data_ptr()], [n, n]) == [0, 0]
    # Read them crosswise: the host object into device memory and vice versa.
    h2 = torch.zeros(n, dtype=torch.uint8)
    d2 = torch.zeros(n, dtype=torch.uint8, device="cuda")
    for t in (h2, d2):
        assert s.register_buffer(t.data_ptr(), n) == 0
    assert s.batch_get_into(keys, [d2.data_ptr(), h2.data_ptr()], [n, n]) == [n, n]
    assert torch.equal(d2.cpu(), host)
    assert torch.equal(h2, dev.cpu())
    # Plain get of an object written from device memory.
    assert s.get(keys[1]) == bytes(dev.cpu().numpy().tobytes())


def test_put_tensor_and_get_tensor_of_cuda_tensors(store, unique):
    t = torch.randn(64, 33, device="cuda", dtype=torch.float16)
    k = unique("tensor")
    assert store.put_tensor(k, t) == 0
    got = store.get_tensor(k)
    # As the reference: the tensor comes back on the CPU, same dtype and shape.
    assert got.dtype == t.dtype and tuple(got.shape) == tuple(t.shape)
    assert torch.equal(got, t.cpu())


def test_transfer_engine_on_cuda_and_topology(cluster):
    a, b = TransferEngine(), TransferEngine()
    na, nb = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    assert a.initialize(na, cluster.metadata_url, "tcp", "") == 0
    assert b.initialize(nb, cluster.metadata_url, "tcp", "") == 0
    topo = json.loads(a.get_local_topology())
    assert "cuda:0" in topo and "cpu:0" in topo
    n = 16 * MiB + 9
    src = pattern(n, 3).cuda()
    dst = torch.zeros(n, dtype=torch.uint8, device="cuda")
    back = torch.zeros(n, dtype=torch.uint8, device="cuda")
    assert a.register_memory(src.data_ptr(), n) == 0
    assert a.register_memory(back.data_ptr(), n) == 0
    assert b.register_memory(dst.data_ptr(), n, "cuda:0") == 0
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        src.add_(1)  # queued work the transfer must wait for
    assert a.transfer_write_on_cuda(nb, src.data_ptr(), dst.data_ptr(), n, stream.cuda_stream) == 0
    torch.cuda.synchronize()
    assert torch.equal(dst, src)
    assert a.batch_transfer_read_on_cuda(nb, [back.data_ptr()], [dst.data_ptr()], [n], 0) == 0
    assert torch.equal(back, src)
    # Host memory is not device memory.
    host = torch.zeros(4096, dtype=torch.uint8)
    assert a.register_memory(host.data_ptr(), 4096, "cuda:0") != 0
    for e, t in ((a, src), (a, back), (b, dst)):
        assert e.unregister_memory(t.data_ptr()) == 0
