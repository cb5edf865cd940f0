"""The reference's console commands (mooncake_master, mooncake_client, ...):
reference flags are translated and the `mooncake` binary is exec'd (the
command's pid is the server's); features this build lacks are refused by
name."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import free_port, mooncake_bin, stop, wait_until, _tcp_open


def launch(entry: str, *args: str, **popen) -> subprocess.Popen:
    code = (
        "import sys; from mooncake import cli; "
        f"sys.argv = ['{entry}'] + sys.argv[1:]; sys.exit(cli.{entry}())"
    )
    env = dict(os.environ, MOONCAKE_BIN=mooncake_bin())
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


def test_master_and_client_with_reference_flags(tmp_path):
    from mooncake.store import MooncakeDistributedStore

    rpc, metrics, client_port = free_port(), free_port(), free_port()
    log = open(tmp_path / "master.log", "wb")
    master = launch("master_main", f"--port={rpc}", "--max_threads=2", f"--metrics_port={metrics}",
                    "--metrics_host=127.0.0.1", "--rpc_address=127.0.0.1", "-v=1",
                    stdout=log, stderr=subprocess.STDOUT)
    client = None
    try:
        wait_until(lambda: master.poll() is not None or _tcp_open(rpc), 30, "the master")
        assert master.poll() is None, (tmp_path / "master.log").read_text()
        client = launch("client_main", f"--master_server_address=127.0.0.1:{rpc}", f"--port={client_port}",
                        "--metadata_server=P2PHANDSHAKE", "--global_segment_size=16MB",
                        "--local_buffer_size=16MB", stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: client.poll() is not None or _tcp_open(client_port), 30, "the real client")
        assert client.poll() is None, (tmp_path / "master.log").read_text()
        # The real client answers a dummy store: the commands started real servers.
        s = MooncakeDistributedStore()
        assert s.setup_dummy(16 << 20, 0, f"127.0.0.1:{client_port}") == 0
        assert s.put("cli-key", b"value") == 0 and s.get("cli-key") == b"value"
        s.close()
        assert "--max_threads accepted" in (tmp_path / "master.log").read_text()
    finally:
        if client is not None:
            stop(client)
        stop(master)


def test_unsupported_flags_are_refused_by_name():
    for flag in ("--enable_offload", "--offload_on_evict=true", "--root_fs_dir=/tmp/x"):
        p = launch("master_main", flag, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 2, (flag, out, err)
        assert flag.split("=")[0] in err and "not supported" in err
    # Turned off, such a flag is harmless; an unknown flag is refused by the binary.
    p = launch("master_main", "--enable_offload=false", "--no_such_flag=1",
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=30)
    assert p.returncode != 0 and "no_such_flag" in err


def test_config_path_json_becomes_flags(tmp_path):
    import json

    from mooncake.cli import translate

    cfg = tmp_path / "master.json"
    cfg.write_text(json.dumps({"port": 1234, "enable_http_metadata_server": True, "default_kv_lease_ttl": 500}))
    args, env, _ = translate("master", [f"--config_path={cfg}", "--v=0"])
    assert args == ["--rpc_port=1234", "--enable_http_metadata_server=true", "--default_kv_lease_ttl=500"]
    assert env == {"RUST_LOG": "info"}
