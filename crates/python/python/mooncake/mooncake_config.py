"""Client configuration from a JSON file (``MOONCAKE_CONFIG_PATH``) or from
``MOONCAKE_*`` environment variables, with the reference's field names, defaults
and error texts.

File keys: local_hostname, metadata_server, master_server_address (required);
global_segment_size, local_buffer_size (ints or strings such as "16MB", "3 gb"),
protocol, device_name, enable_ssd_offload, ssd_offload_path, tenant_id,
enable_client_http_server, client_http_port. A null value means the default.

Environment (when ``MOONCAKE_CONFIG_PATH`` is unset): MOONCAKE_MASTER (required),
LOCAL_HOSTNAME or MOONCAKE_LOCAL_HOSTNAME, MOONCAKE_TE_META_DATA_SERVER (or
MC_METADATA_SERVER), MOONCAKE_GLOBAL_SEGMENT_SIZE, MOONCAKE_LOCAL_BUFFER_SIZE,
MOONCAKE_PROTOCOL, MOONCAKE_DEVICE, MOONCAKE_OFFLOAD_ENABLED,
MOONCAKE_OFFLOAD_FILE_STORAGE_PATH, MOONCAKE_TENANT_ID,
MOONCAKE_ENABLE_CLIENT_HTTP_SERVER, MOONCAKE_CLIENT_HTTP_PORT.

Booleans accept true/false, 1/0, yes/no, on/off, enable(d)/disable(d) in any
case; anything else is a ``ValueError`` (never a silent False).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

logger = logging.getLogger("mooncake.mooncake_config")

DEFAULT_GLOBAL_SEGMENT_SIZE = 3355443200  # 3200 MiB
DEFAULT_LOCAL_BUFFER_SIZE = 1073741824  # 1024 MiB
DEFAULT_CLIENT_HTTP_PORT = 9300
DEFAULT_TENANT_ID = "default"

_REQUIRED = ("local_hostname", "metadata_server", "master_server_address")
_KNOWN_PROTOCOLS = {
    "tcp", "rdma", "efa", "cxl", "ascend", "musa", "nvlink", "nvlink_intra", "ub", "ubshmem",
    "maca", "sunrise_link", "rpc_only", "hip", "nvmeof", "barex",
}
_TRUE = {"true", "1", "yes", "on", "enable", "enabled"}
_FALSE = {"false", "0", "no", "off", "disable", "disabled", ""}


def _parse_segment_size(value: Any) -> int:
    """A byte count from an int, a float (truncated) or a string such as "512MB",
    "1.5 gb", "4096b", "1e9" (binary units, read by the one Rust parser,
    ``mooncake_config::units``); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"Invalid size: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"Invalid size: {value!r}")
    from mooncake._mooncake import parse_size

    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(f"Invalid size: {value!r}") from None


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ValueError(f"Invalid boolean for {name}: {value!r}")


def _size_or_default(value: Any, default: int) -> int:
    return default if value is None or value == "" else _parse_segment_size(value)


@dataclass
class MooncakeConfig:
    local_hostname: str
    metadata_server: str
    global_segment_size: int
    local_buffer_size: int
    protocol: str
    device_name: Optional[str]
    master_server_address: str
    enable_ssd_offload: bool = False
    ssd_offload_path: str = ""
    tenant_id: str = DEFAULT_TENANT_ID
    enable_client_http_server: bool = False
    client_http_port: int = DEFAULT_CLIENT_HTTP_PORT

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, str) or not self.protocol.strip():
            raise ValueError(f"Invalid protocol: {self.protocol!r} (must be a non-empty string)")
        self.protocol = self.protocol.strip().lower()
        if self.protocol not in _KNOWN_PROTOCOLS:
            logger.warning("Unrecognised protocol %r; passing it through", self.protocol)
        for name in _REQUIRED:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("global_segment_size", "local_buffer_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0 < int(self.client_http_port) < 65536:
            raise ValueError(f"client_http_port must be a TCP port, got {self.client_http_port!r}")

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "MooncakeConfig":
        for field in _REQUIRED:
            if field not in d:
                raise ValueError(f"Missing required config field: {field}")

        def opt(name: str, default: Any) -> Any:
            v = d.get(name)
            return default if v is None else v

        return MooncakeConfig(
            local_hostname=d["local_hostname"],
            metadata_server=d["metadata_server"],
            global_segment_size=_size_or_default(d.get("global_segment_size"), DEFAULT_GLOBAL_SEGMENT_SIZE),
            local_buffer_size=_size_or_default(d.get("local_buffer_size"), DEFAULT_LOCAL_BUFFER_SIZE),
            protocol=opt("protocol", "tcp"),
            device_name=opt("device_name", ""),
            master_server_address=d["master_server_address"],
            enable_ssd_offload=_parse_bool(opt("enable_ssd_offload", False), "enable_ssd_offload"),
            ssd_offload_path=opt("ssd_offload_path", ""),
            tenant_id=opt("tenant_id", DEFAULT_TENANT_ID),
            enable_client_http_server=_parse_bool(
                opt("enable_client_http_server", False), "enable_client_http_server"
            ),
            client_http_port=int(opt("client_http_port", DEFAULT_CLIENT_HTTP_PORT)),
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
            raise ValueError(
                "Neither the environment variable 'MOONCAKE_CONFIG_PATH' nor 'MOONCAKE_MASTER' is set."
            )
        env = os.getenv
        return MooncakeConfig(
            local_hostname=env("LOCAL_HOSTNAME") or env("MOONCAKE_LOCAL_HOSTNAME") or "localhost",
            metadata_server=env("MOONCAKE_TE_META_DATA_SERVER") or env("MC_METADATA_SERVER") or "P2PHANDSHAKE",
            global_segment_size=_size_or_default(env("MOONCAKE_GLOBAL_SEGMENT_SIZE"), DEFAULT_GLOBAL_SEGMENT_SIZE),
            local_buffer_size=_size_or_default(env("MOONCAKE_LOCAL_BUFFER_SIZE"), DEFAULT_LOCAL_BUFFER_SIZE),
            protocol=env("MOONCAKE_PROTOCOL", "tcp"),
            device_name=env("MOONCAKE_DEVICE", ""),
            master_server_address=master,
            enable_ssd_offload=_parse_bool(env("MOONCAKE_OFFLOAD_ENABLED", "false"), "MOONCAKE_OFFLOAD_ENABLED"),
            ssd_offload_path=env("MOONCAKE_OFFLOAD_FILE_STORAGE_PATH", ""),
            tenant_id=env("MOONCAKE_TENANT_ID") or DEFAULT_TENANT_ID,
            enable_client_http_server=_parse_bool(
                env("MOONCAKE_ENABLE_CLIENT_HTTP_SERVER", "false"), "MOONCAKE_ENABLE_CLIENT_HTTP_SERVER"
            ),
            client_http_port=int(env("MOONCAKE_CLIENT_HTTP_PORT") or DEFAULT_CLIENT_HTTP_PORT),
        )

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)
