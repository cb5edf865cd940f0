//! Per-put pinning in the state machine (fake clock): soft-pin TTLs per object, hard pins
//! under eviction pressure, a pool full of hard pins, and removal of pinned objects.
#![allow(clippy::field_reassign_with_default)] // tests tweak one knob of the defaults

use super::tests::{r, Fx, MIB};
use crate::config::MasterConfig;
use mooncake_store_protocol::{ClientId, ErrorCode, ReplicateConfig};

const OBJ: u64 = 64 * 1024; // 16 of them fill the 1 MiB pool exactly

fn soft(ttl_ms: u64) -> ReplicateConfig {
    ReplicateConfig {
        with_soft_pin: true,
        soft_pin_ttl_ms: ttl_ms,
        ..r(1)
    }
}

fn hard() -> ReplicateConfig {
    ReplicateConfig {
        with_hard_pin: true,
        ..r(1)
    }
}

fn pinned_view(f: &Fx, key: &str) -> (bool, bool) {
    let v = f.st.key_views(key, 1);
    let v = v.iter().find(|v| v.key == key).expect("key visible");
    (v.soft_pinned, v.hard_pinned)
}

/// Pinned objects are never evictable unless their own pin has run out.
fn strict_cfg() -> MasterConfig {
    let mut cfg = MasterConfig::default();
    cfg.allow_evict_soft_pinned_objects = false;
    cfg.default_kv_soft_pin_ttl = 3_000;
    cfg.default_kv_lease_ttl = 100;
    cfg
}

#[test]
fn each_object_keeps_its_own_soft_pin_ttl() {
    let mut f = Fx::new(strict_cfg(), &[(1, "a:1", MIB)]);
    f.put("a", OBJ, &soft(1_000)).unwrap();
    f.put("b", OBJ, &soft(0)).unwrap(); // 0: the master's default (3 s here)
    f.put("c", OBJ, &soft(8_000)).unwrap();
    for i in 0..13 {
        f.put(&format!("h{i}"), OBJ, &hard()).unwrap();
    }
    let full = f.st.summary();
    assert_eq!(full.bytes_used, full.bytes_total);
    assert_eq!((full.soft_pinned, full.hard_pinned), (3, 13));

    // Before any pin runs out nothing is evictable.
    f.advance_ms(900);
    assert_eq!(
        f.st.put_start("x", OBJ, &hard(), false),
        Err(ErrorCode::NoSpace)
    );

    // After 1 s only "a" lost its pin.
    f.advance_ms(200);
    f.put("x", OBJ, &hard()).unwrap();
    assert_eq!(f.st.exists("a"), Ok(false));
    assert!(f.st.exists("b").unwrap() && f.st.exists("c").unwrap());
    assert_eq!(
        f.st.put_start("y", OBJ, &hard(), false),
        Err(ErrorCode::NoSpace)
    );

    // Reads lease "b" briefly but do not extend its pin: once both run out it goes.
    f.advance_ms(1_800); // t ≈ 2.9 s
    f.st.get_replica_list("b").unwrap();
    assert_eq!(pinned_view(&f, "b"), (true, false));
    f.advance_ms(300); // t ≈ 3.2 s: pin (3 s) and lease (100 ms) both over
    assert_eq!(pinned_view(&f, "b"), (false, false));
    f.put("y", OBJ, &hard()).unwrap();
    assert_eq!(f.st.exists("b"), Ok(false));
    assert_eq!(f.st.exists("c"), Ok(true));

    // "c" (8 s) outlives the default TTL.
    f.advance_ms(4_000);
    assert_eq!(
        f.st.put_start("z", OBJ, &hard(), false),
        Err(ErrorCode::NoSpace)
    );
    f.advance_ms(1_000);
    f.put("z", OBJ, &hard()).unwrap();
    assert_eq!(f.st.exists("c"), Ok(false));
    f.st.check_invariants().unwrap();
}

#[test]
fn pool_full_of_hard_pins_refuses_puts_and_remove_still_works() {
    let mut cfg = strict_cfg();
    cfg.allow_evict_soft_pinned_objects = true; // even then, hard pins stay
    let mut f = Fx::new(cfg, &[(1, "a:1", MIB)]);
    for i in 0..16 {
        f.put(&format!("h{i:02}"), OBJ, &hard()).unwrap();
    }
    f.advance_ms(3_600_000); // any soft TTL and lease long over
    let before = f.st.summary();
    assert_eq!(
        f.st.put_start("x", OBJ, &r(1), false),
        Err(ErrorCode::NoSpace)
    );
    assert_eq!(
        f.st.put_start("x", 1, &soft(1), false),
        Err(ErrorCode::NoSpace)
    );
    // Above the high watermark, yet the ticker finds nothing to evict.
    f.st.heartbeat(ClientId(1)); // (the segment's owner stays alive)
    assert_eq!(f.st.tick().evicted, 0);
    let after = f.st.summary();
    assert_eq!(
        (before.objects, before.bytes_used, after.pending_puts),
        (after.objects, after.bytes_used, 0)
    );
    assert_eq!(after.hard_pinned, 16);
    assert!(f.st.stats().put_no_space >= 2);
    assert_eq!(f.st.stats().evicted_objects, 0);

    // Explicit removal ends a hard pin: remove, regex, remove_all.
    f.st.remove("h00", false).unwrap();
    f.put("x", OBJ, &r(1)).unwrap();
    assert_eq!(f.st.remove_by_regex("^h0[1-4]$", false), Ok(4));
    assert_eq!(f.st.remove_all(false), 12); // h05..h15 and x
    assert_eq!(f.st.summary().bytes_used, 0);
    f.st.check_invariants().unwrap();
}

#[test]
fn hard_pins_survive_pressure_that_evicts_soft_pins() {
    let mut cfg = strict_cfg();
    cfg.allow_evict_soft_pinned_objects = true;
    let mut f = Fx::new(cfg, &[(1, "a:1", MIB)]);
    for i in 0..8 {
        f.put(&format!("h{i}"), OBJ, &hard()).unwrap();
        f.put(&format!("s{i}"), OBJ, &soft(3_600_000)).unwrap();
    }
    // Eight unpinned puts into a full pool: only soft-pinned objects can make room.
    for i in 0..8 {
        f.advance_ms(1);
        f.put(&format!("u{i}"), OBJ, &r(1)).unwrap();
    }
    for i in 0..8 {
        assert_eq!(
            f.st.exists(&format!("h{i}")),
            Ok(true),
            "h{i} is hard-pinned"
        );
    }
    let s = f.st.summary();
    assert_eq!(s.hard_pinned, 8);
    assert_eq!(s.objects, 16);
    f.st.check_invariants().unwrap();
}

#[test]
fn upsert_preserves_or_clears_the_soft_pin_and_may_drop_a_hard_pin() {
    let mut f = Fx::new(strict_cfg(), &[(1, "a:1", MIB)]);
    f.put("k", OBJ, &soft(5_000)).unwrap();
    f.advance_ms(1_000);
    // PRESERVE: the old deadline (5 s from the first put) carries over.
    let preserve = ReplicateConfig {
        preserve_soft_pin: true,
        ..r(1)
    };
    f.st.put_start("k", OBJ, &preserve, true).unwrap();
    f.st.put_end("k").unwrap();
    assert_eq!(pinned_view(&f, "k"), (true, false));
    f.advance_ms(4_100);
    assert_eq!(pinned_view(&f, "k"), (false, false));

    // ENABLE again, then DISABLE (the default) clears it at once.
    f.st.put_start("k", OBJ, &soft(5_000), true).unwrap();
    f.st.put_end("k").unwrap();
    assert_eq!(pinned_view(&f, "k"), (true, false));
    f.st.put_start("k", OBJ, &r(1), true).unwrap();
    f.st.put_end("k").unwrap();
    assert_eq!(pinned_view(&f, "k"), (false, false));

    // A hard pin is set by each put; PRESERVE does not turn it into a soft pin.
    f.st.put_start("k", OBJ, &hard(), true).unwrap();
    f.st.put_end("k").unwrap();
    assert_eq!(pinned_view(&f, "k"), (false, true));
    f.st.put_start("k", OBJ, &preserve, true).unwrap();
    f.st.put_end("k").unwrap();
    assert_eq!(pinned_view(&f, "k"), (false, false));
    f.st.check_invariants().unwrap();
}

#[test]
fn huge_soft_ttl_stays_a_soft_pin() {
    let mut f = Fx::new(strict_cfg(), &[(1, "a:1", MIB)]);
    f.put("k", OBJ, &soft(u64::MAX)).unwrap();
    assert_eq!(pinned_view(&f, "k"), (true, false));
}
