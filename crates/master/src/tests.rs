//! State-machine tests: no sockets, a fake clock.
#![allow(clippy::field_reassign_with_default)] // tests tweak one knob of the defaults

use super::*;
use crate::config::{AllocationStrategy, MasterConfig};
use mooncake_store_protocol::{ClientId, ClientStatus, ErrorCode, ReplicateConfig, SegmentDesc};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

pub(super) const MIB: u64 = 1 << 20;

pub(super) fn desc(name: &str, base: u64, size: u64) -> SegmentDesc {
    SegmentDesc {
        name: name.into(),
        base_addr: base,
        size,
        protocol: "tcp".into(),
        location: String::new(),
    }
}

pub(super) struct Fx {
    pub st: MasterState,
    pub clock: Arc<FakeClock>,
}

impl Fx {
    pub fn new(cfg: MasterConfig, segs: &[(u128, &str, u64)]) -> Fx {
        let clock = Arc::new(FakeClock::new());
        let mut st = MasterState::new(cfg, clock.clone()).with_seed(7);
        for (i, (c, n, size)) in segs.iter().enumerate() {
            st.mount_segment(ClientId(*c), &desc(n, (i as u64 + 1) << 40, *size))
                .unwrap();
        }
        Fx { st, clock }
    }

    pub fn put(&mut self, key: &str, size: u64, cfg: &ReplicateConfig) -> Result<(), ErrorCode> {
        self.st.put_start(key, size, cfg, false)?;
        self.st.put_end(key)
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }
}

pub(super) fn r(n: u32) -> ReplicateConfig {
    ReplicateConfig {
        replica_num: n,
        ..Default::default()
    }
}

#[test]
fn two_phase_put_and_get() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", 64 * MIB)]);
    let reps = f.st.put_start("k", 1000, &r(1), false).unwrap();
    assert_eq!(reps.len(), 1);
    let p = &reps[0].pieces[0];
    assert_eq!((p.segment.as_str(), p.len), ("a:1", 1000));
    assert!(p.addr >= 1 << 40 && p.addr + p.len <= (1 << 40) + 64 * MIB);
    // Invisible until put_end; a second put_start collides.
    assert_eq!(f.st.exists("k"), Ok(false));
    assert_eq!(f.st.get_replica_list("k"), Err(ErrorCode::ObjectNotFound));
    assert_eq!(f.st.remove("k", false), Err(ErrorCode::ReplicaNotReady));
    assert_eq!(
        f.st.put_start("k", 10, &r(1), false),
        Err(ErrorCode::ObjectAlreadyExists)
    );
    f.st.put_end("k").unwrap();
    assert_eq!(f.st.exists("k"), Ok(true));
    assert_eq!(f.st.get_size("k"), Ok(1000));
    assert_eq!(f.st.get_replica_list("k").unwrap(), reps);
    assert_eq!(f.st.put_end("k"), Err(ErrorCode::InvalidWrite));
    assert_eq!(
        f.st.put_start("k", 10, &r(1), false),
        Err(ErrorCode::ObjectAlreadyExists)
    );
    f.st.check_invariants().unwrap();
}

#[test]
fn bad_params_change_nothing() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    assert_eq!(
        f.st.put_start("", 10, &r(1), false),
        Err(ErrorCode::InvalidKey)
    );
    let big = "x".repeat(1 << 20);
    assert_eq!(
        f.st.put_start(&big, 10, &r(1), false),
        Err(ErrorCode::InvalidKey)
    );
    assert_eq!(f.st.exists(&big), Err(ErrorCode::InvalidKey));
    assert_eq!(
        f.st.put_start("k", 0, &r(1), false),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        f.st.put_start("k", 10, &r(0), false),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        f.st.put_start("k", 10, &r(99), false),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        f.st.put_start("k", u64::MAX, &r(1), false),
        Err(ErrorCode::NoSpace)
    );
    assert_eq!(
        f.st.remove_by_regex("(", false),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(f.st.summary().bytes_used, 0);
    assert_eq!(f.st.summary().pending_puts, 0);
}

#[test]
fn revoke_and_timeout_release_space() {
    let mut cfg = MasterConfig::default();
    cfg.put_start_discard_timeout_sec = 2;
    let mut f = Fx::new(cfg, &[(1, "a:1", MIB)]);
    f.st.put_start("a", 1000, &r(1), false).unwrap();
    assert!(f.st.summary().bytes_used > 0);
    f.st.put_revoke("a").unwrap();
    assert_eq!(f.st.summary().bytes_used, 0);
    assert_eq!(f.st.put_revoke("a"), Err(ErrorCode::InvalidWrite));

    f.st.put_start("b", 1000, &r(1), false).unwrap();
    f.advance_ms(1900);
    assert_eq!(f.st.tick().expired_puts, 0);
    f.advance_ms(200);
    assert_eq!(f.st.tick().expired_puts, 1);
    assert_eq!(f.st.summary().bytes_used, 0);
    assert_eq!(f.st.put_end("b"), Err(ErrorCode::InvalidWrite));
    f.st.check_invariants().unwrap();
}

#[test]
fn no_segments_is_no_space() {
    let mut f = Fx::new(MasterConfig::default(), &[]);
    assert_eq!(
        f.st.put_start("k", 10, &r(1), false),
        Err(ErrorCode::NoSpace)
    );
}

#[test]
fn replicas_on_distinct_segments_best_effort() {
    let segs = [
        (1, "a:1", 8 * MIB),
        (2, "b:1", 8 * MIB),
        (3, "c:1", 8 * MIB),
    ];
    let mut f = Fx::new(MasterConfig::default(), &segs);
    let reps = f.st.put_start("k", 4096, &r(3), false).unwrap();
    let mut names: Vec<_> = reps.iter().map(|r| r.pieces[0].segment.clone()).collect();
    names.sort();
    assert_eq!(names, ["a:1", "b:1", "c:1"]);
    let reps = f.st.put_start("k5", 4096, &r(5), false).unwrap();
    assert_eq!(reps.len(), 3, "best effort: one replica per segment");
    f.st.check_invariants().unwrap();
}

#[test]
fn preferred_segment_is_honoured() {
    let segs = [
        (1, "a:1", 8 * MIB),
        (2, "b:1", 8 * MIB),
        (3, "c:1", 8 * MIB),
    ];
    let mut f = Fx::new(MasterConfig::default(), &segs);
    for i in 0..20 {
        let cfg = ReplicateConfig {
            preferred_segments: vec!["nope".into(), "b:1".into()],
            ..r(1)
        };
        let reps = f.st.put_start(&format!("k{i}"), 4096, &cfg, false).unwrap();
        assert_eq!(reps[0].pieces[0].segment, "b:1");
    }
}

#[test]
fn large_objects_are_striped() {
    let mut cfg = MasterConfig::default();
    cfg.max_slice_size = MIB;
    cfg.allocation_strategy = AllocationStrategy::FreeRatioFirst;
    let segs = [
        (1, "a:1", 8 * MIB),
        (2, "b:1", 8 * MIB),
        (3, "c:1", 8 * MIB),
    ];
    let mut f = Fx::new(cfg, &segs);
    f.put("big", 5 * MIB + 3, &r(2)).unwrap();
    let reps = f.st.get_replica_list("big").unwrap();
    assert_eq!(reps.len(), 2);
    for rep in &reps {
        assert_eq!(rep.pieces.len(), 6);
        assert_eq!(rep.size(), 5 * MIB + 3);
        assert!(rep.pieces.iter().all(|p| p.len <= MIB));
        let mut segs: Vec<_> = rep.pieces.iter().map(|p| &p.segment).collect();
        segs.sort();
        segs.dedup();
        assert!(segs.len() > 1, "free_ratio_first spreads stripes");
    }
    f.st.check_invariants().unwrap();
}

#[test]
fn free_ratio_first_balances() {
    let mut cfg = MasterConfig::default();
    cfg.allocation_strategy = AllocationStrategy::FreeRatioFirst;
    let mut f = Fx::new(cfg, &[(1, "a:1", 4 * MIB), (2, "b:1", 4 * MIB)]);
    for i in 0..64 {
        f.put(&format!("k{i}"), 64 * 1024, &r(1)).unwrap();
    }
    let v = f.st.segment_views();
    assert_eq!(v[0].used, v[1].used);
}

#[test]
fn leases_block_remove_until_expiry() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    f.put("k", 100, &r(1)).unwrap();
    f.put("j", 100, &r(1)).unwrap();
    f.st.remove("j", false).unwrap();
    f.st.get_replica_list("k").unwrap();
    assert_eq!(f.st.remove("k", false), Err(ErrorCode::ObjectHasLease));
    assert_eq!(f.st.remove_all(false), 0);
    f.advance_ms(5001);
    f.st.remove("k", false).unwrap();
    assert_eq!(f.st.remove("k", false), Err(ErrorCode::ObjectNotFound));
    f.put("k", 100, &r(1)).unwrap();
    f.st.get_replica_list("k").unwrap();
    f.st.remove("k", true).unwrap();
    f.st.check_invariants().unwrap();
}

#[test]
fn remove_by_regex_and_all() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    for k in ["p/1", "p/2", "q/1", "q/2"] {
        f.put(k, 100, &r(1)).unwrap();
    }
    f.st.get_replica_list("p/2").unwrap();
    assert_eq!(f.st.remove_by_regex("^p/", false), Ok(1));
    assert_eq!(f.st.exists("p/2"), Ok(true));
    assert_eq!(f.st.remove_by_regex("^p/", true), Ok(1));
    assert_eq!(f.st.remove_all(false), 2);
    assert_eq!(f.st.summary().bytes_used, 0);
}

#[test]
fn eviction_is_lru_and_spares_leased_and_pinned() {
    let mut cfg = MasterConfig::default();
    cfg.eviction_ratio = 0.1;
    // 100 objects of 10 KiB fill a 1 MB segment (1,024,000 B of 1,048,576).
    let mut f = Fx::new(cfg, &[(1, "a:1", MIB)]);
    for i in 0..100 {
        let cfg = ReplicateConfig {
            with_soft_pin: i == 0,
            ..r(1)
        };
        f.put(&format!("k{i:03}"), 10 * 1024, &cfg).unwrap();
        f.advance_ms(1);
    }
    // Touch k001 (oldest unpinned) so it becomes most recent; lease k002.
    f.advance_ms(1_000);
    f.st.get_replica_list("k001").unwrap();
    f.st.get_replica_list("k002").unwrap();
    let rep = f.st.tick();
    assert!(rep.evicted >= 10, "{rep:?}");
    let s = f.st.summary();
    assert!(s.bytes_used as f64 <= 0.9 * s.bytes_total as f64);
    for k in ["k000", "k001", "k002"] {
        assert_eq!(f.st.exists(k), Ok(true), "{k} survives");
    }
    for i in 3..3 + rep.evicted {
        assert_eq!(
            f.st.exists(&format!("k{i:03}")),
            Ok(false),
            "k{i:03} evicted first"
        );
    }
    assert_eq!(f.st.exists("k099"), Ok(true));
    assert_eq!(f.st.stats().evicted_objects, rep.evicted as u64);
    f.st.check_invariants().unwrap();
}

#[test]
fn full_pool_put_evicts_or_fails_cleanly() {
    let mut cfg = MasterConfig::default();
    cfg.allow_evict_soft_pinned_objects = false;
    let mut f = Fx::new(cfg, &[(1, "a:1", MIB)]);
    for i in 0..16 {
        f.put(&format!("k{i}"), 64 * 1024, &r(1)).unwrap();
        f.advance_ms(1);
    }
    // Full: the next put evicts the LRU object.
    f.put("new", 64 * 1024, &r(1)).unwrap();
    assert_eq!(f.st.exists("k0"), Ok(false));
    // Lease everything: nothing can be evicted, the put fails and leaves nothing behind.
    for i in 1..16 {
        f.st.get_replica_list(&format!("k{i}")).unwrap();
    }
    f.st.get_replica_list("new").unwrap();
    let before = f.st.summary();
    assert_eq!(
        f.st.put_start("x", 64 * 1024, &r(1), false),
        Err(ErrorCode::NoSpace)
    );
    let after = f.st.summary();
    assert_eq!(
        (before.objects, before.bytes_used),
        (after.objects, after.bytes_used)
    );
    assert_eq!(f.st.exists("x"), Ok(false));
    assert_eq!(after.pending_puts, 0);
    // Soft-pinned objects are not evicted when that is disallowed.
    f.advance_ms(6000);
    f.st.remove_all(true);
    let pin = ReplicateConfig {
        with_soft_pin: true,
        ..r(1)
    };
    for i in 0..16 {
        f.put(&format!("p{i}"), 64 * 1024, &pin).unwrap();
    }
    assert_eq!(
        f.st.put_start("x", 64 * 1024, &r(1), false),
        Err(ErrorCode::NoSpace)
    );
    f.st.check_invariants().unwrap();
}

#[test]
fn dead_client_drops_its_replicas() {
    let mut cfg = MasterConfig::default();
    cfg.client_ttl = 2;
    let segs = [(1, "a:1", 8 * MIB), (2, "b:1", 8 * MIB)];
    let mut f = Fx::new(cfg, &segs);
    let a = ReplicateConfig {
        preferred_segments: vec!["a:1".into()],
        ..r(1)
    };
    f.put("both", 4096, &r(2)).unwrap();
    f.put("only_a", 4096, &a).unwrap();
    f.st.put_start("pending_a", 4096, &a, false).unwrap();
    f.advance_ms(1500);
    assert_eq!(f.st.heartbeat(ClientId(2)).status, ClientStatus::Ok);
    f.advance_ms(1500);
    let rep = f.st.tick();
    assert_eq!(rep.dead_clients, vec![ClientId(1)]);
    let reps = f.st.get_replica_list("both").unwrap();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].pieces[0].segment, "b:1");
    assert_eq!(
        f.st.get_replica_list("only_a"),
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(f.st.put_end("pending_a"), Err(ErrorCode::InvalidWrite));
    assert_eq!(f.st.segment_views().len(), 1);
    // The dead client comes back: told to remount, and can.
    assert_eq!(
        f.st.heartbeat(ClientId(1)).status,
        ClientStatus::NeedRemount
    );
    f.st.mount_segment(ClientId(1), &desc("a:1", 1 << 40, 8 * MIB))
        .unwrap();
    assert_eq!(f.st.heartbeat(ClientId(1)).status, ClientStatus::Ok);
    f.st.check_invariants().unwrap();
}

#[test]
fn mount_rules() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    // Same owner and range: idempotent; same owner, other range: refused.
    f.st.mount_segment(ClientId(1), &desc("a:1", 1 << 40, MIB))
        .unwrap();
    assert_eq!(
        f.st.mount_segment(ClientId(1), &desc("a:1", 0, MIB)),
        Err(ErrorCode::SegmentAlreadyExists)
    );
    // Another client may not replace a live owner's segment (nor unmount it); once the
    // owner went silent past client_ttl (a restarted node), it may.
    assert_eq!(
        f.st.mount_segment(ClientId(2), &desc("a:1", 1 << 40, MIB)),
        Err(ErrorCode::SegmentAlreadyExists)
    );
    assert_eq!(
        f.st.unmount_segment(ClientId(2), "a:1"),
        Err(ErrorCode::InvalidParams)
    );
    f.advance_ms(MasterConfig::default().client_ttl * 1000 + 1000);
    f.st.mount_segment(ClientId(2), &desc("a:1", 1 << 40, MIB))
        .unwrap();
    assert_eq!(f.st.segment_views().len(), 1);
    assert_eq!(
        f.st.unmount_segment(ClientId(1), "a:1"),
        Err(ErrorCode::InvalidParams)
    );
    f.st.unmount_segment(ClientId(2), "a:1").unwrap();
    f.st.mount_segment(ClientId(1), &desc("a:1", 1 << 40, MIB))
        .unwrap();
    assert_eq!(
        f.st.mount_segment(ClientId(1), &desc("", 0, MIB)),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        f.st.mount_segment(ClientId(1), &desc("z", u64::MAX, 2)),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        f.st.unmount_segment(ClientId(1), "nope"),
        Err(ErrorCode::SegmentNotFound)
    );
    assert_eq!(
        f.st.unmount_segment(ClientId(2), "a:1"),
        Err(ErrorCode::InvalidParams)
    );
    f.put("k", 10, &r(1)).unwrap();
    f.st.unmount_segment(ClientId(1), "a:1").unwrap();
    assert_eq!(f.st.exists("k"), Ok(false));
    assert_eq!(f.st.summary().bytes_total, 0);
    // Cluster-wide deletions need the admin credential.
    f.st.mount_segment(ClientId(1), &desc("a:1", 1 << 40, MIB))
        .unwrap();
    f.put("k2", 10, &r(1)).unwrap();
    let all = mooncake_store_protocol::Request::RemoveAll { force: true };
    assert_eq!(
        f.st.handle_as(all.clone(), false),
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(f.st.exists("k2"), Ok(true));
    assert_eq!(f.st.stats().admin_refused, 1);
    assert!(f.st.handle_as(all, true).is_ok());
    assert_eq!(f.st.exists("k2"), Ok(false));
}

#[test]
fn upsert_keeps_old_value_until_put_end_and_defers_leased_free() {
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    f.put("k", 1000, &r(1)).unwrap();
    let old = f.st.get_replica_list("k").unwrap(); // leased
    let new = f.st.put_start("k", 2000, &r(1), true).unwrap();
    assert_ne!(old[0].pieces[0].addr, new[0].pieces[0].addr);
    assert_eq!(f.st.get_size("k"), Ok(1000));
    f.st.put_end("k").unwrap();
    assert_eq!(f.st.get_size("k"), Ok(2000));
    // The old bytes stay allocated until the lease ends.
    assert_eq!(f.st.summary().bytes_used, 1024 + 2048);
    f.advance_ms(5001);
    assert_eq!(f.st.tick().released_deferred, 1);
    assert_eq!(f.st.summary().bytes_used, 2048);
    f.st.check_invariants().unwrap();
}

#[test]
fn handle_batches() {
    use mooncake_store_protocol::{Request, Response};
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", MIB)]);
    let items = vec![
        ("a".to_string(), 10),
        ("".to_string(), 10),
        ("b".to_string(), 10),
    ];
    let Ok(Response::BatchReplicas(v)) = f.st.handle(Request::BatchPutStart {
        items,
        config: r(1),
    }) else {
        panic!()
    };
    assert!(v[0].is_ok() && v[2].is_ok());
    assert_eq!(v[1], Err(ErrorCode::InvalidKey));
    let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let Ok(Response::BatchDone(v)) = f.st.handle(Request::BatchPutEnd { keys: keys.clone() })
    else {
        panic!()
    };
    assert_eq!(v, vec![Ok(()), Ok(()), Err(ErrorCode::InvalidWrite)]);
    assert_eq!(
        f.st.handle(Request::BatchExists { keys }),
        Ok(Response::BatchExists(vec![Ok(true), Ok(true), Ok(false)]))
    );
    let too_many = vec!["k".to_string(); mooncake_store_protocol::MAX_BATCH + 1];
    assert_eq!(
        f.st.handle(Request::BatchExists { keys: too_many }),
        Err(ErrorCode::InvalidParams)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u32, u8, bool),
    End(u8),
    Revoke(u8),
    Get(u8),
    Remove(u8, bool),
    Upsert(u8, u32),
    Advance(u16),
    Heartbeat(u8),
    Unmount(u8),
    Mount(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24, 1u32..300_000, 1u8..4, any::<bool>())
            .prop_map(|(k, s, r, p)| Op::Put(k, s, r, p)),
        (0u8..24).prop_map(Op::End),
        (0u8..24).prop_map(Op::Revoke),
        (0u8..24).prop_map(Op::Get),
        (0u8..24, any::<bool>()).prop_map(|(k, f)| Op::Remove(k, f)),
        (0u8..24, 1u32..300_000).prop_map(|(k, s)| Op::Upsert(k, s)),
        (0u16..4000).prop_map(Op::Advance),
        (0u8..3).prop_map(Op::Heartbeat),
        (0u8..3).prop_map(Op::Unmount),
        (0u8..3).prop_map(Op::Mount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn accounting_stays_consistent(ops in proptest::collection::vec(op(), 1..200), strat in any::<bool>()) {
        let mut cfg = MasterConfig::default();
        cfg.max_slice_size = 128 * 1024;
        cfg.client_ttl = 3;
        cfg.put_start_discard_timeout_sec = 2;
        if strat { cfg.allocation_strategy = AllocationStrategy::FreeRatioFirst; }
        let segs = [(0, "s0", MIB), (1, "s1", MIB), (2, "s2", MIB / 2)];
        let mut f = Fx::new(cfg, &segs);
        for o in ops {
            match o {
                Op::Put(k, s, n, p) => {
                    let c = ReplicateConfig { replica_num: n as u32, with_soft_pin: p, ..Default::default() };
                    if let Ok(reps) = f.st.put_start(&format!("k{k}"), s as u64, &c, false) {
                        prop_assert!(!reps.is_empty());
                        for rep in &reps { prop_assert_eq!(rep.size(), s as u64); }
                    }
                }
                Op::End(k) => { let _ = f.st.put_end(&format!("k{k}")); }
                Op::Revoke(k) => { let _ = f.st.put_revoke(&format!("k{k}")); }
                Op::Get(k) => {
                    if let Ok(reps) = f.st.get_replica_list(&format!("k{k}")) {
                        let size = f.st.get_size(&format!("k{k}")).unwrap();
                        for rep in &reps { prop_assert_eq!(rep.size(), size); }
                    }
                }
                Op::Remove(k, force) => { let _ = f.st.remove(&format!("k{k}"), force); }
                Op::Upsert(k, s) => { let _ = f.st.put_start(&format!("k{k}"), s as u64, &r(1), true); }
                Op::Advance(ms) => { f.advance_ms(ms as u64); f.st.tick(); }
                Op::Heartbeat(c) => { f.st.heartbeat(ClientId(c as u128)); }
                Op::Unmount(c) => { let _ = f.st.unmount_segment(ClientId(c as u128), &format!("s{c}")); }
                Op::Mount(c) => { let _ = f.st.mount_segment(ClientId(c as u128), &desc(&format!("s{c}"), (c as u64 + 1) << 40, MIB)); }
            }
            f.st.check_invariants().map_err(TestCaseError::fail)?;
            let s = f.st.summary();
            prop_assert!(s.bytes_used <= s.bytes_total);
        }
    }
}

#[test]
fn sync_heartbeat_reconciles_every_time() {
    // Client 1 mounted "a:1" at base 1 << 40 (the fixture).
    let mut f = Fx::new(MasterConfig::default(), &[(1, "a:1", 8 * MIB)]);
    let a = desc("a:1", 1 << 40, 8 * MIB);
    f.put("k", 1000, &r(1)).unwrap();
    // Known and matching: nothing changes, objects stay.
    assert_eq!(
        f.st.sync_client(ClientId(1), std::slice::from_ref(&a)),
        (0, 0)
    );
    assert_eq!(f.st.exists("k"), Ok(true));
    // Someone unmounted it (or a remount request was lost): the next beat restores it.
    f.st.unmount_segment(ClientId(1), "a:1").unwrap();
    assert_eq!(
        f.st.sync_client(ClientId(1), std::slice::from_ref(&a)),
        (1, 0)
    );
    assert_eq!(f.st.segment_views().len(), 1);
    // The master expired the client (partitioned past client_ttl): the first beat after
    // the partition heals mounts the segment again.
    f.advance_ms(MasterConfig::default().client_ttl * 1000 + 1000);
    assert_eq!(f.st.tick().dead_clients, vec![ClientId(1)]);
    assert_eq!(f.st.segment_views().len(), 0);
    assert_eq!(
        f.st.sync_client(ClientId(1), std::slice::from_ref(&a)),
        (1, 0)
    );
    assert_eq!(f.st.segment_views().len(), 1);
    // A segment the client no longer lists is dropped.
    assert_eq!(f.st.sync_client(ClientId(1), &[]), (0, 1));
    assert_eq!(f.st.segment_views().len(), 0);
    // Another client (an outsider, or a restarted node with a new id) cannot take the
    // name while its owner is alive; it can once the owner went silent past client_ttl.
    f.st.sync_client(ClientId(1), std::slice::from_ref(&a));
    assert_eq!(
        f.st.sync_client(ClientId(2), std::slice::from_ref(&a)),
        (0, 0)
    );
    assert_eq!(
        f.st.segment_views()[0].owner,
        f.st.client_label(ClientId(1))
    );
    assert!(!f.st.segment_views()[0]
        .owner
        .contains(&ClientId(1).to_string()));
    f.advance_ms(MasterConfig::default().client_ttl * 1000 + 1000);
    assert_eq!(
        f.st.sync_client(ClientId(2), std::slice::from_ref(&a)),
        (1, 0)
    );
    assert_eq!(
        f.st.segment_views()[0].owner,
        f.st.client_label(ClientId(2))
    );
    f.st.check_invariants().unwrap();
}
