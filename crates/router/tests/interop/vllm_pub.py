# Interop check for tests/events.rs: a pyzmq + msgspec publisher laid out
# like vLLM's KV events (tagged structs, map encoding, 3-frame messages,
# ROUTER replay), hashing blocks with pickle+sha256 as vLLM's default does.
import hashlib, pickle, sys, time
import msgspec, zmq

class Batch(msgspec.Struct, omit_defaults=True, gc=False):
    ts: float
    events: list
    data_parallel_rank: int | None = None

class Ev(msgspec.Struct, omit_defaults=True, gc=False, tag=True):
    pass

class BlockStored(Ev):
    block_hashes: list
    parent_block_hash: int | None
    token_ids: list
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list | None = None

pub_port, rep_port, n_blocks = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
none = hashlib.sha256(pickle.dumps("vllm-none-hash", protocol=pickle.HIGHEST_PROTOCOL)).digest()
tokens = list(range(1000, 1000 + 16 * n_blocks))
digests, parent = [], none
for b in range(n_blocks):
    d = hashlib.sha256(pickle.dumps((parent, tuple(tokens[16*b:16*b+16]), None), protocol=pickle.HIGHEST_PROTOCOL)).digest()
    digests.append(d); parent = d
ints = [int.from_bytes(d, "big") & ((1 << 64) - 1) for d in digests]
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB); pub.bind(f"tcp://127.0.0.1:{pub_port}")
rep = ctx.socket(zmq.ROUTER); rep.bind(f"tcp://127.0.0.1:{rep_port}")
enc = msgspec.msgpack.Encoder()
# seq 0 is published before anyone subscribes (lost live): replay must bring it.
payload = enc.encode(Batch(ts=time.time(), events=[BlockStored(block_hashes=ints, parent_block_hash=None,
          token_ids=tokens, block_size=16, lora_id=None, medium="GPU", lora_name=None)], data_parallel_rank=0))
buf = [(0, payload)]
pub.send_multipart((b"", (0).to_bytes(8, "big"), payload))
print("hashes", ints[0], ints[-1], flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    if rep.poll(100):
        cid, _, start = rep.recv_multipart()
        s = int.from_bytes(start, "big")
        for seq, p in buf:
            if seq >= s:
                rep.send_multipart((cid, b"", seq.to_bytes(8, "big"), p))
        rep.send_multipart((cid, b"", (-1).to_bytes(8, "big", signed=True), b""))
        print("replayed from", s, flush=True)
