"""Mooncake Store client (``from mooncake.store import MooncakeDistributedStore, ReplicateConfig``).

Same names, arguments, defaults and return codes as the reference's module:
0 (or a byte count) on success, a negative error code on failure, ``b""`` from
``get`` of a missing key. ``setup`` takes the positional form, a config dict
(sizes as ints or strings such as "16MB"), or nothing (then
``MOONCAKE_CONFIG_PATH`` / ``MOONCAKE_*`` environment variables).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Any, Dict, List, Optional

from mooncake import _ranges, _safetensors, _tensor
from mooncake._mooncake import MooncakeDistributedStore as _NativeStore
from mooncake._mooncake import ObjectDataType, ReplicateConfig, SoftPinAction
from mooncake._replicas import (
    Descriptor,
    DiskDescriptor,
    MemoryDescriptor,
    ReplicaDescriptor,
    ReplicaStatus,
    describe,
)
from mooncake._host_mem import MooncakeHostMemAllocator, bind_to_numa_node, get_alloc_func_addr, get_free_func_addr
from mooncake.buffer_pool import (
    BufferLease,
    BufferLeaseView,
    BufferPool,
    RegisteredBufferLease,
    RegisteredBufferLeaseView,
    RegisteredBufferPool,
)
from mooncake.mooncake_config import MooncakeConfig

__all__ = [
    "MooncakeDistributedStore",
    "ReplicateConfig",
    "SoftPinAction",
    "ObjectDataType",
    "BufferHandle",
    "BufferPool",
    "RegisteredBufferPool",
    "BufferLease",
    "RegisteredBufferLease",
    "BufferLeaseView",
    "RegisteredBufferLeaseView",
    "MooncakeHostMemAllocator",
    "ReplicaDescriptor",
    "ReplicaStatus",
    "MemoryDescriptor",
    "DiskDescriptor",
    "Descriptor",
    "bind_to_numa_node",
    "get_alloc_func_addr",
    "get_free_func_addr",
]

# The reference exports its enums' values at module level too.
for _enum in (ObjectDataType, ReplicaStatus):
    for _name in dir(_enum):
        if _name.isupper():
            globals()[_name] = getattr(_enum, _name)
del _enum, _name

_log = logging.getLogger("mooncake")

_INVALID_PARAMS = -600


class BufferHandle(bytes):
    """An object's bytes (``get_buffer``); supports the buffer protocol."""

    def size(self) -> int:
        return len(self)


def _dict_args(config: Dict[str, Any]) -> Dict[str, Any]:
    def pick(*names: str, default: Any = None) -> Any:
        for n in names:
            if n in config and config[n] is not None:
                return config[n]
        return default

    return dict(
        local_hostname=pick("local_hostname", default=os.getenv("LOCAL_HOSTNAME", "localhost")),
        metadata_server=pick(
            "metadata_server", default=os.getenv("MC_METADATA_SERVER", "http://127.0.0.1:8080/metadata")
        ),
        global_segment_size=pick("global_segment_size", default=3200 * 1024 * 1024),
        local_buffer_size=pick("local_buffer_size", default=512 * 1024 * 1024),
        protocol=pick("protocol", default="tcp"),
        rdma_devices=pick("rdma_devices", "device_name", default=""),
        master_server_addr=pick(
            "master_server_addr", "master_server_address", default=os.getenv("MOONCAKE_MASTER", "127.0.0.1:50051")
        ),
        # None: MC_CLUSTER_TOKEN / MOONCAKE_CLUSTER_TOKEN_FILE (read natively).
        cluster_token=pick("cluster_token"),
        insecure=bool(pick("insecure", default=False)),
    )


# Every store set up in this process, closed at interpreter exit so a process
# that never calls close() still unmounts its segment at once (the master does
# not have to wait for its heartbeat to lapse, and puts are not placed there).
_open_stores: "weakref.WeakSet[MooncakeDistributedStore]" = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for s in list(_open_stores):
        try:
            s._close_bounded(2.0)
        except Exception:  # exit goes on whatever one store does
            pass


class MooncakeDistributedStore(_NativeStore):
    """A store client: put/get objects by key, zero-copy into registered memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        _open_stores.add(self)

    def setup(self, *args: Any, **kwargs: Any) -> int:
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            return self._setup_positional(**_dict_args(args[0]))
        if not args and set(kwargs) == {"config"} and isinstance(kwargs["config"], dict):
            return self._setup_positional(**_dict_args(kwargs["config"]))
        if not args and not kwargs:
            try:
                cfg = MooncakeConfig.load_from_env()
            except (ValueError, OSError) as e:
                _log.warning("setup: %s", e)
                return _INVALID_PARAMS
            return self._setup_positional(**_dict_args(cfg.as_dict()))
        return self._setup_positional(*args, **kwargs)

    def init_all(self, protocol: str, device_name: str, mount_segment_size: int) -> int:
        """Set up from the environment with this protocol, device and segment size."""
        try:
            base = MooncakeConfig.load_from_env().as_dict()
        except (ValueError, OSError):
            base = {}
        args = _dict_args(base)
        args.update(protocol=protocol, rdma_devices=device_name, global_segment_size=mount_segment_size)
        return self._setup_positional(**args)

    # ---- buffers (registration is tracked natively) ----------------------------------
    def get_into_ranges(self, buffer_ptrs, keys, dst_offsets, src_offsets, sizes) -> List[List[List[int]]]:
        """Copy byte ranges of objects into registered buffers, moving only those bytes
        (see ``mooncake._ranges``)."""
        return _ranges.get_into_ranges(self._read_ranges, buffer_ptrs, keys, dst_offsets, src_offsets, sizes)

    def get_buffer(self, key: str) -> Optional[BufferHandle]:
        data = self.get(key)
        return BufferHandle(data) if data else None

    def batch_get_buffer(self, keys: List[str]) -> List[Optional[BufferHandle]]:
        return [BufferHandle(d) if d else None for d in self.get_batch(list(keys))]

    # ---- replicas -------------------------------------------------------------------
    def get_replica_desc(self, key: str) -> List[ReplicaDescriptor]:
        """The complete replicas of ``key`` (empty when it does not exist)."""
        return self.batch_get_replica_desc([key]).get(key, [])

    def batch_get_replica_desc(self, keys: List[str]) -> Dict[str, List[ReplicaDescriptor]]:
        """``{key: [ReplicaDescriptor, ...]}`` for the keys that exist."""
        keys = list(keys)
        out: Dict[str, List[ReplicaDescriptor]] = {}
        for k, (rc, reps) in zip(keys, self._replica_lists(keys)):
            if rc == 0:
                out[k] = [describe(pieces) for pieces in reps]
        return out

    def batch_replica_clear(self, keys: List[str], segment_name: str = "") -> List[str]:
        """Drop the objects of ``keys`` whose read lease has expired and return
        those dropped. With ``segment_name``, only objects whose every replica
        lies on that segment are dropped (clearing one replica of several is not
        supported; such keys are left and not returned)."""
        keys = list(keys)
        if not keys:
            return []
        if segment_name:
            lists = self._replica_lists(keys)
            keys = [
                k
                for k, (rc, reps) in zip(keys, lists)
                if rc == 0
                and reps
                and all(seg == segment_name for pieces in reps for (seg, _, _) in pieces)
            ]
            # Asking for replicas leased them; the lease check was the caller's
            # (expired before this call), so the objects go regardless.
            return [k for k in keys if self.remove(k, True) == 0]
        return [k for k in keys if self.remove(k, False) == 0]

    # ---- tensors (numpy arrays or torch tensors; dtype and shape round-trip) ----------
    def put_tensor(self, key: str, tensor: Any, config: Optional[ReplicateConfig] = None) -> int:
        header, data = _tensor.encode(tensor)
        return self.put_parts(key, header, data, config=config)

    def upsert_tensor(self, key: str, tensor: Any, config: Optional[ReplicateConfig] = None) -> int:
        header, data = _tensor.encode(tensor)
        return self.upsert_parts(key, header, data, config=config)

    def get_tensor(self, key: str) -> Any:
        blob = self.get(key)
        return _tensor.decode(blob) if blob else None

    def batch_put_tensor(self, keys: List[str], tensors_list: List[Any], config: Optional[ReplicateConfig] = None) -> List[int]:
        if len(keys) != len(tensors_list):
            return [_INVALID_PARAMS] * len(keys)
        return [self.put_tensor(k, t, config) for k, t in zip(keys, tensors_list)]

    def batch_get_tensor(self, keys: List[str]) -> List[Any]:
        return _tensor.decode_many(self.get_batch(list(keys)))

    def batch_upsert_tensor(self, keys: List[str], tensors_list: List[Any], config: Optional[ReplicateConfig] = None) -> List[int]:
        if len(keys) != len(tensors_list):
            return [_INVALID_PARAMS] * len(keys)
        return [self.upsert_tensor(k, t, config) for k, t in zip(keys, tensors_list)]

    # Publishing: a put (or upsert) with the caller's replication settings.
    def pub_tensor(self, key: str, tensor: Any, config: Optional[ReplicateConfig] = None) -> int:
        return self.put_tensor(key, tensor, config)

    def batch_pub_tensor(self, keys: List[str], tensors_list: List[Any], config: Optional[ReplicateConfig] = None) -> List[int]:
        return self.batch_put_tensor(keys, tensors_list, config)

    def upsert_pub_tensor(self, key: str, tensor: Any, config: Optional[ReplicateConfig] = None) -> int:
        return self.upsert_tensor(key, tensor, config)

    def batch_upsert_pub_tensor(self, keys: List[str], tensors_list: List[Any], config: Optional[ReplicateConfig] = None) -> List[int]:
        return self.batch_upsert_tensor(keys, tensors_list, config)

    # Zero-copy forms: registered buffers laid out [header][tensor bytes], the
    # layout put_tensor stores and get_tensor_into reads back.
    def put_tensor_from(self, key: str, buffer_ptr: int, size: int) -> int:
        return self.put_from(key, buffer_ptr, size)

    def batch_put_tensor_from(self, keys: List[str], buffer_ptrs: List[int], sizes: List[int]) -> List[int]:
        return self.batch_put_from(list(keys), list(buffer_ptrs), list(sizes))

    def upsert_tensor_from(self, key: str, buffer_ptr: int, size: int) -> int:
        return self.upsert_from(key, buffer_ptr, size)

    def batch_upsert_tensor_from(self, keys: List[str], buffer_ptrs: List[int], sizes: List[int]) -> List[int]:
        return self.batch_upsert_from(list(keys), list(buffer_ptrs), list(sizes))

    def get_tensor_into(self, key: str, buffer_ptr: int, size: int) -> Any:
        """Read a stored tensor into registered memory; the tensor returned is a
        view of that memory (None when the key is missing or does not fit)."""
        return self.batch_get_tensor_into([key], [buffer_ptr], [size])[0]

    def batch_get_tensor_into(self, keys: List[str], buffer_ptrs: List[int], sizes: List[int]) -> List[Any]:
        import ctypes

        out: List[Any] = []
        for n, ptr in zip(self.batch_get_into(list(keys), list(buffer_ptrs), list(sizes)), buffer_ptrs):
            if n <= 0:
                out.append(None)
                continue
            out.append(_tensor.decode_view((ctypes.c_ubyte * n).from_address(ptr)))
        return out

    # Tensor parallelism: the tensor is cut along split_dim into tp_size shards,
    # stored as "{key}_tp_{rank}"; a reader fetches only its own shard.
    def put_tensor_with_tp(self, key: str, tensor: Any, tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> int:
        return self.pub_tensor_with_tp(key, tensor, None, tp_rank, tp_size, split_dim)

    def pub_tensor_with_tp(self, key: str, tensor: Any, config: Optional[ReplicateConfig] = None,
                           tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> int:
        if tp_size <= 1:
            return self.put_tensor(key, tensor, config)
        for r, shard in enumerate(_tensor.chunk(tensor, tp_size, split_dim)):
            rc = self.put_tensor(f"{key}_tp_{r}", shard, config)
            if rc != 0:
                return rc
        return 0

    def batch_put_tensor_with_tp(self, keys: List[str], tensors_list: List[Any], tp_rank: int = 0,
                                 tp_size: int = 1, split_dim: int = 0) -> List[int]:
        if len(keys) != len(tensors_list):
            return [_INVALID_PARAMS] * len(keys)
        return [self.put_tensor_with_tp(k, t, tp_rank, tp_size, split_dim) for k, t in zip(keys, tensors_list)]

    def batch_pub_tensor_with_tp(self, keys: List[str], tensors_list: List[Any], config: Optional[ReplicateConfig] = None,
                                 tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> List[int]:
        if len(keys) != len(tensors_list):
            return [_INVALID_PARAMS] * len(keys)
        return [self.pub_tensor_with_tp(k, t, config, tp_rank, tp_size, split_dim) for k, t in zip(keys, tensors_list)]

    def get_tensor_with_tp(self, key: str, tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> Any:
        if tp_size <= 1:
            return self.get_tensor(key)
        return self.get_tensor(f"{key}_tp_{tp_rank}")

    # ---- safetensors files ----------------------------------------------------------
    def save_tensor_to_safetensor(self, key: str, file_name: Optional[str] = None) -> int:
        """Write the tensor stored under ``key`` to a safetensors file (named
        ``key`` when ``file_name`` is None). 0, or a negative code."""
        tensor = self.get_tensor(key)
        if tensor is None:
            _log.warning("save_tensor_to_safetensor(%s): no tensor under this key", key)
            return -704
        try:
            _safetensors.write(file_name or key, key, tensor)
        except (OSError, ValueError) as e:
            _log.warning("save_tensor_to_safetensor(%s): %s", key, e)
            return _INVALID_PARAMS
        return 0

    def load_tensor_from_safetensor(self, key: Optional[str] = None, file_name: Optional[str] = None) -> Any:
        """Read a tensor from a safetensors file and store it under ``key`` (the
        file name when None); the tensor, or None on failure."""
        if file_name is None:
            _log.warning("load_tensor_from_safetensor: file_name is required")
            return None
        store_key = key if key is not None else file_name
        try:
            _, tensor = _safetensors.read(file_name, key)
        except (OSError, ValueError, KeyError) as e:
            _log.warning("load_tensor_from_safetensor(%s): %s", file_name, e)
            return None
        rc = self.upsert_tensor(store_key, tensor)
        if rc != 0:
            _log.warning("load_tensor_from_safetensor(%s): storing it failed (%d)", store_key, rc)
            return None
        return tensor

    @staticmethod
    def _shard_key(key: str, tp_rank: int, tp_size: int) -> str:
        return key if tp_size <= 1 else f"{key}_tp_{tp_rank}"

    def get_tensor_with_tp_into(self, key: str, buffer_ptr: int, size: int, tp_rank: int = 0,
                                tp_size: int = 1, split_dim: int = 0) -> Any:
        """This rank's shard read into registered memory (a view of it, or None)."""
        return self.get_tensor_into(self._shard_key(key, tp_rank, tp_size), buffer_ptr, size)

    def batch_get_tensor_with_tp_into(self, base_keys: List[str], buffer_ptrs: List[int], sizes: List[int],
                                      tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> List[Any]:
        keys = [self._shard_key(k, tp_rank, tp_size) for k in base_keys]
        return self.batch_get_tensor_into(keys, buffer_ptrs, sizes)

    def put_tensor_with_tp_from(self, key: str, buffer_ptr: int, size: int, tp_rank: int = 0,
                                tp_size: int = 1, split_dim: int = 0) -> int:
        """Shard a tensor laid out [header][data] in registered memory and store
        the shards (as put_tensor_with_tp; the shards are copied)."""
        import ctypes

        if tp_size <= 1:
            return self.put_tensor_from(key, buffer_ptr, size)
        tensor = _tensor.decode_view((ctypes.c_ubyte * size).from_address(buffer_ptr)) if size > 0 else None
        if tensor is None:
            return _INVALID_PARAMS
        return self.put_tensor_with_tp(key, tensor, tp_rank, tp_size, split_dim)

    def batch_put_tensor_with_tp_from(self, base_keys: List[str], buffer_ptrs: List[int], sizes: List[int],
                                      tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> List[int]:
        if not (len(base_keys) == len(buffer_ptrs) == len(sizes)):
            return [_INVALID_PARAMS] * len(base_keys)
        return [
            self.put_tensor_with_tp_from(k, p, n, tp_rank, tp_size, split_dim)
            for k, p, n in zip(base_keys, buffer_ptrs, sizes)
        ]

    def batch_get_tensor_with_tp(self, keys: List[str], tp_rank: int = 0, tp_size: int = 1, split_dim: int = 0) -> List[Any]:
        if tp_size <= 1:
            return self.batch_get_tensor(keys)
        return self.batch_get_tensor([f"{k}_tp_{tp_rank}" for k in keys])
