"""Replica descriptors as the reference's Python API shows them
(``get_replica_desc`` / ``batch_get_replica_desc``).

Every replica of this store is a memory replica, complete when listed; a
striped replica has one ``Descriptor`` per piece (``buffer_descriptors``), the
first of which is ``buffer_descriptor``.
"""

from __future__ import annotations

import enum
from typing import List, Sequence, Tuple


class ReplicaStatus(enum.IntEnum):
    UNDEFINED = 0
    INITIALIZED = 1
    PROCESSING = 2
    COMPLETE = 3
    REMOVED = 4
    FAILED = 5


class Descriptor:
    """One buffer of a replica: ``size``, ``buffer_address``, ``transport_endpoint``
    (the segment holding it)."""

    def __init__(self, size: int = 0, buffer_address: int = 0, transport_endpoint: str = "") -> None:
        self.size = size
        self.buffer_address = buffer_address
        self.transport_endpoint = transport_endpoint

    def __repr__(self) -> str:
        return (
            f"<Descriptor size={self.size} buffer_address={self.buffer_address} "
            f"transport_endpoint={self.transport_endpoint}>"
        )


class MemoryDescriptor:
    def __init__(self, buffers: List[Descriptor]) -> None:
        self.buffer_descriptors = buffers
        self.buffer_descriptor = buffers[0] if buffers else Descriptor()


class DiskDescriptor:
    """Present for compatibility: this store keeps no disk replicas."""

    def __init__(self, file_path: str = "", object_size: int = 0) -> None:
        self.file_path = file_path
        self.object_size = object_size


class ReplicaDescriptor:
    """A complete memory replica of an object."""

    def __init__(self, memory: MemoryDescriptor) -> None:
        self.status = ReplicaStatus.COMPLETE
        self.type = "MEMORY"
        self._memory = memory

    def is_memory_replica(self) -> bool:
        return True

    def is_disk_replica(self) -> bool:
        return False

    def is_local_disk_replica(self) -> bool:
        return False

    def get_memory_descriptor(self) -> MemoryDescriptor:
        return self._memory

    def get_disk_descriptor(self) -> DiskDescriptor:
        raise RuntimeError("not a disk replica")

    @property
    def segments(self) -> List[str]:
        return [d.transport_endpoint for d in self._memory.buffer_descriptors]

    def __repr__(self) -> str:
        return f"<ReplicaDescriptor MEMORY COMPLETE {self._memory.buffer_descriptors}>"


def describe(pieces: Sequence[Tuple[str, int, int]]) -> ReplicaDescriptor:
    """A descriptor from the native rows ``(segment, address, length)``."""
    return ReplicaDescriptor(MemoryDescriptor([Descriptor(n, a, s) for (s, a, n) in pieces]))
