use super::*;
use crate::kv_events::hash::{BlockHasher, HashAlgo, DEFAULT_SEED};

fn stored(hashes: &[u64], medium: &str) -> KvEvent {
    KvEvent::BlockStored {
        block_hashes: hashes.to_vec(),
        parent_block_hash: Some(0),
        token_ids: vec![],
        block_size: 16,
        lora_id: None,
        medium: Some(medium.into()),
        lora_name: None,
    }
}

fn batch(events: Vec<KvEvent>, dp: Option<u32>) -> KvEventBatch {
    KvEventBatch {
        ts: 0.0,
        events,
        data_parallel_rank: dp,
    }
}

#[test]
fn stored_removed_cleared_per_instance_medium_and_rank() {
    let mut ix = PrefixIndex::default();
    ix.apply("a", 0, 0, &batch(vec![stored(&[1, 2, 3], "GPU")], None));
    ix.apply(
        "a",
        0,
        0,
        &batch(vec![stored(&[1, 2, 3, 4], "CPU")], Some(1)),
    );
    ix.apply("b", 0, 0, &batch(vec![stored(&[1, 2], "GPU")], None));
    assert_eq!(ix.longest_prefix("a", &[1, 2, 3, 4, 5]), 4);
    assert_eq!(ix.longest_prefix("b", &[1, 2, 3]), 2);
    assert_eq!(ix.longest_prefix("c", &[1]), 0);
    let q = ix.query("a", &[1, 2, 3, 4]);
    assert_eq!(q.longest, 4);
    assert_eq!(q.media["GPU"], 3);
    assert_eq!(q.media["CPU"], 4);
    assert_eq!(q.dp[&0], 3);
    assert_eq!(q.dp[&1], 4);

    // Removing block 2 from a's GPU cuts only the GPU run.
    ix.apply(
        "a",
        0,
        1,
        &batch(
            vec![KvEvent::BlockRemoved {
                block_hashes: vec![2],
                medium: Some("GPU".into()),
            }],
            None,
        ),
    );
    let q = ix.query("a", &[1, 2, 3, 4]);
    assert_eq!((q.longest, q.media["GPU"], q.media["CPU"]), (4, 1, 4));
    // b is untouched.
    assert_eq!(ix.longest_prefix("b", &[1, 2]), 2);

    // AllBlocksCleared on rank 1 leaves rank 0's GPU blocks.
    ix.apply("a", 0, 2, &batch(vec![KvEvent::AllBlocksCleared], Some(1)));
    assert_eq!(ix.longest_prefix("a", &[1, 2, 3]), 1);
    assert_eq!(ix.stream_stats("a")[&1].cleared, 1);

    // A restart clears; removal forgets; the global map empties.
    ix.restarted("b", 0);
    assert_eq!(ix.longest_prefix("b", &[1]), 0);
    assert_eq!(ix.stream_stats("b")[&0].restarts, 1);
    assert_eq!(ix.remove("a", None).len(), 2);
    assert!(!ix.has_instance("a"));
    assert!(ix.is_empty(), "{:?}", ix.blocks);
}

#[test]
fn removing_unknown_blocks_and_empty_events_change_nothing() {
    let mut ix = PrefixIndex::default();
    ix.apply("a", 0, 0, &batch(vec![stored(&[1], "GPU")], None));
    ix.apply(
        "a",
        0,
        1,
        &batch(
            vec![
                KvEvent::BlockRemoved {
                    block_hashes: vec![99],
                    medium: None,
                },
                stored(&[], "GPU"),
            ],
            None,
        ),
    );
    assert_eq!(ix.longest_prefix("a", &[1]), 1);
    assert_eq!(ix.len(), 1);
}

#[test]
fn root_hash_check_counts_mismatches() {
    let h = BlockHasher::new(HashAlgo::Sha256, 4, DEFAULT_SEED);
    let toks = vec![5, 6, 7, 8];
    let good = h.hashes(&toks)[0];
    let mut ix = PrefixIndex::new(Some(h));
    for (hash, seq) in [(good, 0), (good ^ 1, 1)] {
        let ev = KvEvent::BlockStored {
            block_hashes: vec![hash],
            parent_block_hash: None,
            token_ids: toks.clone(),
            block_size: 4,
            lora_id: None,
            medium: None,
            lora_name: None,
        };
        ix.apply("a", 0, seq, &batch(vec![ev], None));
    }
    assert_eq!(ix.stream_stats("a")[&0].hash_mismatches, 1);
}
