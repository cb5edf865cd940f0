"""mooncake.http_metadata_server: the standalone metadata service a program can
start from Python. Checked over real loopback HTTP and through its request
handler directly, and as the metadata service of two transfer engines."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from conftest import free_port
from mooncake.engine import TransferEngine
from mooncake.http_metadata_server import KVBootstrapServer, KVPoll


@pytest.fixture
def server():
    s = KVBootstrapServer(port=0, host="127.0.0.1")
    assert s.poll() == KVPoll.Failed  # not serving yet
    s.run()
    yield s
    s.close()


def call(server, method, key, body=None):
    """(status, body) of one HTTP request; `key=None` leaves the key out."""
    url = f"http://127.0.0.1:{server.port}/metadata"
    if key is not None:
        url += "?key=" + urllib.request.quote(key)
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_put_get_delete_over_http(server):
    assert server.port != 0 and server.poll() == KVPoll.Success
    assert call(server, "GET", "seg/a") == (404, b"metadata not found")
    assert call(server, "PUT", "seg/a", b'{"x": 1}')[0] == 200
    assert call(server, "GET", "seg/a") == (200, b'{"x": 1}')
    assert call(server, "PUT", "seg/a", b"v2")[0] == 200  # plain keys are overwritten
    assert call(server, "GET", "seg/a") == (200, b"v2")
    assert call(server, "DELETE", "seg/a")[0] == 200
    assert call(server, "DELETE", "seg/a")[0] == 404
    assert server.store == {}


@pytest.mark.parametrize("key", [None, "", "  \t"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_missing_or_blank_key_is_refused_and_stores_nothing(server, method, key):
    status, _ = call(server, method, key, b"v" if method == "PUT" else None)
    assert status == 400
    assert server.store == {}


def test_key_is_trimmed_by_the_handler():
    class Req:
        def __init__(self, method, key, body=b""):
            self.method, self.query, self.body = method, {"key": key}, body

        async def read(self):
            return self.body

    s = KVBootstrapServer(port=0)

    async def go():
        put = await s._handle_metadata(Req("PUT", " k1 ", b"val"))
        got = await s._handle_metadata(Req("GET", "k1"))
        blank = await s._handle_metadata(Req("PUT", "   ", b"val"))
        return put, got, blank

    put, got, blank = asyncio.run(go())
    assert (put.status, got.status, got.body) == (200, 200, b"val")
    assert (blank.status, blank.content_type) == (400, "application/json")
    assert list(s.store) == ["k1"]


def test_rpc_meta_may_only_be_republished_unchanged(server):
    key = "mooncake/rpc_meta/node1"
    assert call(server, "PUT", key, b"A")[0] == 200
    assert call(server, "PUT", key, b"A")[0] == 200
    assert call(server, "PUT", key, b"B")[0] == 400
    assert call(server, "GET", key) == (200, b"A")


def test_prefix_listing_tracks_revisions(server):
    import json

    assert call(server, "PUT", "seg/a", b"1")[0] == 200
    assert call(server, "PUT", "seg/b", b"2")[0] == 200
    assert call(server, "PUT", "other", b"3")[0] == 200
    assert call(server, "PUT", "seg/a", b"4")[0] == 200
    url = f"http://127.0.0.1:{server.port}/metadata?prefix=seg/"
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    assert doc == {"revision": 4, "keys": [{"key": "seg/a", "revision": 4}, {"key": "seg/b", "revision": 2}]}
    assert call(server, "DELETE", "seg/b")[0] == 200
    with urllib.request.urlopen(url, timeout=5) as r:
        assert json.loads(r.read()) == {"revision": 5, "keys": [{"key": "seg/a", "revision": 4}]}


def test_close_stops_serving(server):
    server.close()
    assert server.poll() == KVPoll.Failed
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metadata?key=a", timeout=2)


def test_transfer_engines_meet_through_it(server):
    url = f"http://127.0.0.1:{server.port}/metadata"
    a, b = TransferEngine(), TransferEngine()
    try:
        assert a.initialize(f"127.0.0.1:{free_port()}", url, "tcp", "") == 0
        assert b.initialize(f"127.0.0.1:{free_port()}", url, "tcp", "") == 0
        a_name, b_name = a.get_local_segment_name(), b.get_local_segment_name()
        src, dst = a.get_first_buffer_address(a_name), a.get_first_buffer_address(b_name)
        payload = b"metadata via python server"
        assert a.write_bytes_to_buffer(src, payload, len(payload)) == 0
        assert a.transfer_sync_write(b_name, src, dst, len(payload)) == 0
        assert b.read_bytes_from_buffer(b.get_first_buffer_address(b_name), len(payload)) == payload
    finally:
        a.shutdown()
        b.shutdown()
