"""Client configuration from a JSON file (``MOONCAKE_CONFIG_PATH``) or from
``MOONCAKE_*`` environment variables, with the reference's field names.

File keys: local_hostname, metadata_server, global_segment_size,
local_buffer_size (ints or strings such as "16MB"), protocol, device_name,
master_server_address. Environment: MOONCAKE_MASTER, MOONCAKE_LOCAL_HOSTNAME,
MOONCAKE_TE_META_DATA_SERVER (or MC_METADATA_SERVER), MOONCAKE_PROTOCOL,
MOONCAKE_DEVICE, MOONCAKE_GLOBAL_SEGMENT_SIZE, MOONCAKE_LOCAL_BUFFER_SIZE.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from mooncake._mooncake import parse_size

DEFAULT_GLOBAL_SEGMENT_SIZE = 3200 * 1024 * 1024
DEFAULT_LOCAL_BUFFER_SIZE = 1024 * 1024 * 1024


def _size(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must be non-negative, got {value}")
        return value
    return parse_size(str(value))


@dataclass
class MooncakeConfig:
    local_hostname: str
    metadata_server: str
    global_segment_size: int
    local_buffer_size: int
    protocol: str
    device_name: Optional[str]
    master_server_address: str

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, str) or not self.protocol.strip():
            raise ValueError(f"protocol must be a non-empty string, got {self.protocol!r}")
        self.protocol = self.protocol.strip().lower()
        for name in ("local_hostname", "metadata_server", "master_server_address"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "MooncakeConfig":
        missing = [k for k in ("local_hostname", "metadata_server", "master_server_address") if k not in d]
        if missing:
            raise ValueError(f"missing config field(s): {', '.join(missing)}")
        return MooncakeConfig(
            local_hostname=d["local_hostname"],
            metadata_server=d["metadata_server"],
            global_segment_size=_size(d.get("global_segment_size"), DEFAULT_GLOBAL_SEGMENT_SIZE),
            local_buffer_size=_size(d.get("local_buffer_size"), DEFAULT_LOCAL_BUFFER_SIZE),
            protocol=d.get("protocol", "tcp"),
            device_name=d.get("device_name", ""),
            master_server_address=d["master_server_address"],
        )

    @staticmethod
    def from_file(path: str) -> "MooncakeConfig":
        with open(path) as f:
            return MooncakeConfig.from_dict(json.load(f))

    @staticmethod
    def load_from_env() -> "MooncakeConfig":
        path = os.getenv("MOONCAKE_CONFIG_PATH")
        if path:
            return MooncakeConfig.from_file(path)
        master = os.getenv("MOONCAKE_MASTER")
        if not master:
            raise ValueError("set MOONCAKE_CONFIG_PATH or MOONCAKE_MASTER to configure the store")
        return MooncakeConfig(
            local_hostname=os.getenv("MOONCAKE_LOCAL_HOSTNAME", "localhost"),
            metadata_server=os.getenv("MOONCAKE_TE_META_DATA_SERVER")
            or os.getenv("MC_METADATA_SERVER")
            or "P2PHANDSHAKE",
            global_segment_size=_size(os.getenv("MOONCAKE_GLOBAL_SEGMENT_SIZE"), DEFAULT_GLOBAL_SEGMENT_SIZE),
            local_buffer_size=_size(os.getenv("MOONCAKE_LOCAL_BUFFER_SIZE"), DEFAULT_LOCAL_BUFFER_SIZE),
            protocol=os.getenv("MOONCAKE_PROTOCOL", "tcp"),
            device_name=os.getenv("MOONCAKE_DEVICE", ""),
            master_server_address=master,
        )

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)
