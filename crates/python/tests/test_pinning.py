"""Per-put pinning applied by the master: `with_hard_pin` objects are never evicted (a
pool full of them refuses puts with NO_SPACE, and remove still works),
`soft_pin_ttl_ms` protects an object for its own TTL, and `SoftPinAction` PRESERVE /
DISABLE decide what an upsert does to an existing soft pin.

The module runs its own master (soft-pinned objects not evictable, so a soft pin is
observable) and one client whose 16 MiB segment is the whole pool."""

from __future__ import annotations

import pytest

from conftest import start_master, stop, wait_until
from mooncake.store import MooncakeDistributedStore, ReplicateConfig, SoftPinAction

MIB = 1 << 20
POOL = 16 * MIB
NO_SPACE = -200
NOT_FOUND = -704


@pytest.fixture(scope="module")
def pin_master(tmp_path_factory):
    log = tmp_path_factory.mktemp("pin-master") / "master.log"
    flags = ["--default_kv_soft_pin_ttl=600000", "--allow_evict_soft_pinned_objects=false"]
    c = start_master(log, lease_ttl_ms=100, flags=flags)
    try:
        yield c.master_addr, c.metadata_url
    finally:
        stop(c.proc)


@pytest.fixture
def pool(pin_master, monkeypatch):
    """A client whose segment is the whole (empty) pool."""
    master, url = pin_master
    monkeypatch.setenv("DEFAULT_KV_LEASE_TTL", "100")
    s = MooncakeDistributedStore()
    assert s.setup("127.0.0.1", url, POOL, 16 * MIB, "tcp", "", master) == 0
    yield s
    s.remove_all(True)
    s.close()


def hard() -> ReplicateConfig:
    c = ReplicateConfig()
    c.with_hard_pin = True
    return c


def soft(ttl_ms=None) -> ReplicateConfig:
    c = ReplicateConfig()
    c.soft_pin_action = SoftPinAction.ENABLE
    c.soft_pin_ttl_ms = ttl_ms
    return c


def value(tag: int) -> bytes:
    return bytes([tag % 251]) * MIB


def fill_with_hard_pins(store, n: int) -> None:
    for i in range(n):
        assert store.put(f"hard-{i}", value(i), hard()) == 0


def test_pool_full_of_hard_pins_refuses_puts_and_remove_frees(pool):
    fill_with_hard_pins(pool, 16)
    assert pool.put("plain", value(99)) == NO_SPACE
    assert pool.put("pinned-too", value(98), hard()) == NO_SPACE
    assert pool.put_batch(["a", "b"], [b"x", b"y"]) == NO_SPACE
    for i in range(16):
        assert pool.get(f"hard-{i}") == value(i), f"hard-{i} survives"
    # Explicit removal ends a hard pin and frees its space (force: the reads above
    # leased the objects for a moment).
    assert pool.remove("hard-3", True) == 0
    assert pool.put("plain", value(99)) == 0
    assert pool.remove_by_regex("^hard-1[0-5]$", True) == 6
    assert pool.remove_all(True) == 10  # hard-0..2, 4..9 and plain
    assert pool.get_size("hard-0") == NOT_FOUND


def test_soft_pin_lasts_its_own_ttl(pool):
    fill_with_hard_pins(pool, 14)
    # The master's default soft pin (600 s here) outlives this test; the per-put
    # TTL of "short" runs out after 1.5 s.
    assert pool.put("long", value(1), soft()) == 0
    assert pool.put("short", value(2), soft(1500)) == 0
    assert pool.put("x", value(3)) == NO_SPACE  # both pins protect their objects
    wait_until(lambda: pool.put("x", value(3)) == 0, 20.0, "the short soft pin to run out")
    assert pool.get_size("short") == NOT_FOUND
    assert pool.get("long") == value(1)
    assert pool.get("x") == value(3)


def test_upsert_preserve_keeps_the_pin_disable_drops_it(pool):
    # Pool: 14 hard pins, the soft-pinned "p", one free slot (an upsert writes the
    # new value before freeing the old one).
    fill_with_hard_pins(pool, 14)
    assert pool.put("p", value(5), soft()) == 0
    keep = ReplicateConfig()
    keep.soft_pin_action = SoftPinAction.PRESERVE
    assert pool.upsert("p", value(6), keep) == 0
    assert pool.put("hard-14", value(14), hard()) == 0  # now full
    assert pool.put("x", value(7)) == NO_SPACE  # "p" kept its pin
    assert pool.remove("hard-14", True) == 0

    drop = ReplicateConfig()
    drop.soft_pin_action = SoftPinAction.DISABLE
    assert pool.upsert("p", value(8), drop) == 0
    assert pool.put("hard-14", value(14), hard()) == 0
    # "p" is unpinned now: room is made for "x" (by the put or the eviction pass).
    wait_until(lambda: pool.put("x", value(7)) == 0, 20.0, "the unpinned object to be evicted")
    assert pool.get_size("p") == NOT_FOUND
    for i in range(15):
        assert pool.get_size(f"hard-{i}") == MIB
