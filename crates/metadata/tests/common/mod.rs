//! The conformance suite every metadata backend must pass, over `&dyn MetadataStore`.

use std::time::Duration;

use mooncake_metadata::{MetadataStore, WatchEvent};
use tokio::sync::mpsc;

/// Bound on waiting for one watch event (polling backends poll every 500 ms).
const EVENT_DEADLINE: Duration = Duration::from_secs(15);

/// Deterministic pseudo-random bytes, so failures reproduce.
pub use mooncake_testkit::pattern as pseudo_random;

async fn next_event(rx: &mut mpsc::Receiver<WatchEvent>, what: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_DEADLINE, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watch channel closed while waiting for {what}"),
        Err(_) => panic!("no watch event within {EVENT_DEADLINE:?} while waiting for {what}"),
    }
}

/// Run the whole suite under the key namespace `ns` (must be unique per run).
pub async fn conformance(store: &dyn MetadataStore, ns: &str) {
    let k = |s: &str| format!("{ns}/{s}");
    let backend = store.backend();

    // Missing keys.
    assert_eq!(store.get(&k("missing")).await.unwrap(), None, "{backend}");
    store.delete(&k("missing")).await.unwrap();
    assert!(store.list(&k("nothing-here/")).await.unwrap().is_empty());

    // Put, get, overwrite, delete.
    store.put(&k("a"), b"one").await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    store.put(&k("a"), b"two!").await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"two!"[..])
    );
    store.delete(&k("a")).await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap(),
        None,
        "{backend}: deleted"
    );

    // Binary and empty values come back byte for byte.
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    store.put(&k("bin"), &all_bytes).await.unwrap();
    assert_eq!(store.get(&k("bin")).await.unwrap(), Some(all_bytes));
    store.put(&k("empty"), b"").await.unwrap();
    assert_eq!(
        store.get(&k("empty")).await.unwrap(),
        Some(Vec::new()),
        "{backend}: empty value"
    );

    // A large value (1 MiB and an odd tail; etcd's default request limit is 1.5 MiB).
    let large = pseudo_random((1 << 20) + 13, 7);
    store.put(&k("large"), &large).await.unwrap();
    assert!(
        store.get(&k("large")).await.unwrap() == Some(large),
        "{backend}: large value"
    );

    // Keys with characters that need escaping in URLs, globs and JSON.
    let odd = [
        k("odd/sp ace&x=1%2F+plus"),
        k("odd/glob*?[x]\\"),
        k("odd/unicode-é-月"),
        k("odd/quote\"'"),
    ];
    for (i, key) in odd.iter().enumerate() {
        store.put(key, format!("v{i}").as_bytes()).await.unwrap();
    }
    for (i, key) in odd.iter().enumerate() {
        assert_eq!(
            store.get(key).await.unwrap(),
            Some(format!("v{i}").into_bytes()),
            "{backend}: key {key:?}"
        );
    }
    let mut want: Vec<String> = odd.to_vec();
    want.sort();
    assert_eq!(
        store.list(&k("odd/")).await.unwrap(),
        want,
        "{backend}: list odd"
    );
    // A prefix with glob metacharacters matches literally.
    assert_eq!(
        store.list(&k("odd/glob*")).await.unwrap(),
        vec![odd[1].clone()]
    );
    assert!(
        store.list(&k("odd/g*")).await.unwrap().is_empty(),
        "{backend}: literal prefix"
    );

    // Listing: exactly the keys under the prefix, sorted.
    for key in ["l/b", "l/a", "l/a/x", "lz", "l"] {
        store.put(&k(key), b"x").await.unwrap();
    }
    assert_eq!(
        store.list(&k("l/")).await.unwrap(),
        vec![k("l/a"), k("l/a/x"), k("l/b")],
        "{backend}: list"
    );
    let everything = store.list(&format!("{ns}/")).await.unwrap();
    assert!(
        everything.windows(2).all(|w| w[0] < w[1]),
        "{backend}: sorted"
    );
    assert!(everything.contains(&k("lz")) && everything.contains(&k("bin")));
    assert!(!everything.contains(&k("a")));

    // Concurrent writers: every acknowledged put is there afterwards.
    let keys: Vec<String> = (0..32).map(|i| k(&format!("conc/{i:02}"))).collect();
    futures::future::try_join_all(keys.iter().map(|key| store.put(key, key.as_bytes())))
        .await
        .unwrap();
    assert_eq!(
        store.list(&k("conc/")).await.unwrap(),
        keys,
        "{backend}: concurrent puts"
    );
    let values = futures::future::try_join_all(keys.iter().map(|key| store.get(key)))
        .await
        .unwrap();
    for (key, value) in keys.iter().zip(values) {
        assert_eq!(value.as_deref(), Some(key.as_bytes()), "{backend}: {key}");
    }

    watch_suite(store, ns).await;
}

async fn watch_suite(store: &dyn MetadataStore, ns: &str) {
    let k = |s: &str| format!("{ns}/{s}");
    let backend = store.backend();
    store.put(&k("w/pre-existing"), b"old").await.unwrap();
    let mut rx = store.watch(&k("w/")).await.unwrap();

    store.put(&k("w/x"), b"v1").await.unwrap();
    assert_eq!(
        next_event(&mut rx, "first put").await,
        WatchEvent::Put {
            key: k("w/x"),
            value: b"v1".to_vec()
        },
        "{backend}"
    );
    store.put(&k("w/x"), &[0, 255, 1]).await.unwrap();
    assert_eq!(
        next_event(&mut rx, "overwrite").await,
        WatchEvent::Put {
            key: k("w/x"),
            value: vec![0, 255, 1]
        },
        "{backend}"
    );
    // Outside the prefix: must not be reported.
    store.put(&k("outside"), b"no").await.unwrap();
    store.delete(&k("w/x")).await.unwrap();
    assert_eq!(
        next_event(&mut rx, "delete").await,
        WatchEvent::Delete { key: k("w/x") },
        "{backend}"
    );
    store.put(&k("w/end"), b"sentinel").await.unwrap();
    assert_eq!(
        next_event(&mut rx, "sentinel").await,
        WatchEvent::Put { key: k("w/end"), value: b"sentinel".to_vec() },
        "{backend}: nothing else (no pre-existing key, no key outside the prefix) before the sentinel"
    );
    drop(rx);

    // Two watchers on nested prefixes both see a change under both.
    let mut outer = store.watch(&k("w/")).await.unwrap();
    let mut inner = store.watch(&k("w/in/")).await.unwrap();
    store.put(&k("w/in/1"), b"both").await.unwrap();
    let want = WatchEvent::Put {
        key: k("w/in/1"),
        value: b"both".to_vec(),
    };
    assert_eq!(
        next_event(&mut outer, "outer watcher").await,
        want,
        "{backend}"
    );
    assert_eq!(
        next_event(&mut inner, "inner watcher").await,
        want,
        "{backend}"
    );
}
