"""The reference's console commands, shipped with this wheel:

* ``mooncake_master``  -> ``mooncake master``
* ``mooncake_client``  -> ``mooncake real-client`` (the standalone real client)
* ``mooncake_http_metadata_server`` -> ``mooncake.http_metadata_server`` (this package)
* ``transfer_engine_bench`` -> ``mooncake bench transfer``

Each takes the reference's gflags-style flags (``--port=50051``, ``--flag value``,
``-v=1``, ``--config_path=master.json``), translates the ones spelled differently
here, and execs the ``mooncake`` binary, so the command's process id is the
server's. Flags of features this build does not have (SSD offload, promotion, CXL,
...) are refused with a message naming them (exit status 2) unless they are turned
off; any other unknown flag is refused by the binary with its name.

The binary is looked up as ``$MOONCAKE_BIN``, then ``mooncake/bin/mooncake`` inside
this package (where a release wheel carries it), then ``mooncake`` on ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

_FALSE = {"false", "0", "no", "off"}

# Reference flag -> our flag, per command.
_RENAMES: Dict[str, Dict[str, str]] = {
    "master": {"port": "rpc_port"},
    "real-client": {"device_names": "device_name", "master_server_addr": "master_server_address"},
    "bench transfer": {},
}
# Flags accepted with a notice: tuning that this implementation manages itself.
_NOTED: Dict[str, Dict[str, str]] = {
    "master": {
        "max_threads": "the master serves RPCs on an async runtime sized to the machine",
        "rpc_thread_num": "the master serves RPCs on an async runtime sized to the machine",
        "logtostderr": "logs always go to stderr",
        "alsologtostderr": "logs always go to stderr",
    },
    "real-client": {
        "threads": "the real client serves on an async runtime sized to the machine",
        "logtostderr": "logs always go to stderr",
    },
    "bench transfer": {},
}
# Features this build does not have: refused when turned on.
_UNSUPPORTED = {
    "enable_offload", "offload_on_evict", "promotion_on_hit", "promotion_admission_threshold",
    "enable_cxl", "root_fs_dir", "global_file_segment_size", "enable_disk_eviction",
    "enable_ssd_offload", "ssd_offload_path", "quota_bytes", "cxl_path", "cxl_size",
}


class UsageError(Exception):
    pass


def _split(arg: str) -> Tuple[str, Optional[str]]:
    name = arg.lstrip("-")
    if "=" in name:
        k, v = name.split("=", 1)
        return k, v
    return name, None


def translate(command: str, argv: Sequence[str]) -> Tuple[List[str], Dict[str, str], List[str]]:
    """The ``mooncake`` arguments for the reference flags ``argv``, extra
    environment, and notices to print. Raises UsageError for refused flags."""
    out: List[str] = []
    env: Dict[str, str] = {}
    notes: List[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-h", "--help"):
            out.append(arg)
            continue
        name, value = _split(arg)
        if value is None and i < len(args) and not args[i].startswith("-") and name not in ("v",):
            # gflags also takes "--flag value"; a bare flag is a boolean "true".
            if name not in _BOOLEAN_HINTS:
                value = args[i]
                i += 1
        if name in ("v", "verbose", "minloglevel"):
            level = int(value or "1") if name != "minloglevel" else 0
            env["RUST_LOG"] = "debug" if level >= 1 else "info"
            continue
        if name == "config_path":
            if value is None:
                raise UsageError("--config_path needs a file")
            more, more_env, more_notes = translate(command, _json_flags(value))
            out += more
            env.update(more_env)
            notes += more_notes
            continue
        if name in _UNSUPPORTED:
            if value is not None and value.strip().lower() in _FALSE:
                continue
            raise UsageError(f"--{name} is not supported by this build (no SSD offload, promotion or CXL tier)")
        if name in _NOTED.get(command, {}):
            notes.append(f"--{name} accepted and not needed: {_NOTED[command][name]}")
            continue
        flag = _RENAMES.get(command, {}).get(name, name)
        out.append(f"--{flag}" if value is None else f"--{flag}={value}")
    return out, env, notes


# Flags that are booleans in the reference (a following word is not their value).
_BOOLEAN_HINTS = {
    "enable_http_metadata_server", "allow_evict_soft_pinned_objects", "enable_gc", "enable_ha",
    "enable_metric_reporting", "rpc_enable_tcp_no_delay", "logtostderr", "alsologtostderr",
    "enable_offload", "offload_on_evict", "promotion_on_hit", "enable_cxl", "enable_disk_eviction",
    "enable_ssd_offload",
}


def _json_flags(path: str) -> List[str]:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--config_path={path}: {e}") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"--config_path={path}: expected a JSON object")
    flags = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        flags.append(f"--{k}={v}")
    return flags


def find_binary() -> Optional[str]:
    explicit = os.getenv("MOONCAKE_BIN")
    if explicit:
        return explicit
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "mooncake")
    if os.path.isfile(bundled) and os.access(bundled, os.X_OK):
        return bundled
    return shutil.which("mooncake")


def _exec(prog: str, command: str, argv: Sequence[str]) -> int:
    try:
        args, env, notes = translate(command, argv)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    binary = find_binary()
    if binary is None:
        print(
            f"{prog}: the `mooncake` binary is not installed; build it with "
            "`cargo build --release -p mooncake-cli` and put it on PATH or set MOONCAKE_BIN",
            file=sys.stderr,
        )
        return 127
    for n in notes:
        print(f"{prog}: {n}", file=sys.stderr)
    os.environ.update(env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [binary, *command.split(), *args])
    return 0  # not reached


def master_main() -> int:
    return _exec("mooncake_master", "master", sys.argv[1:])


def client_main() -> int:
    return _exec("mooncake_client", "real-client", sys.argv[1:])


def transfer_engine_bench_main() -> int:
    return _exec("transfer_engine_bench", "bench transfer", sys.argv[1:])


def http_metadata_server_main() -> int:
    from mooncake import http_metadata_server

    return http_metadata_server.main() or 0


def store_rest_server_main() -> int:
    print(
        "mc_store_rest_server: the REST store service (mooncake.mooncake_store_service) "
        "is not available in this build",
        file=sys.stderr,
    )
    return 2
