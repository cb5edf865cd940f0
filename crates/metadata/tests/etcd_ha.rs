//! The etcd helpers the store's high availability builds on, against a real
//! etcd: leases (grant, keep-alive, expiry, revoke) and put-if-absent.

use std::time::{Duration, Instant};

use mooncake_metadata::etcd::{EtcdClient, EtcdOptions, PutIfAbsent};
use mooncake_testkit::EtcdServer;

fn etcd() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("{e}"))
}

async fn client(server: &EtcdServer) -> EtcdClient {
    EtcdClient::connect(&[server.endpoint()], EtcdOptions::default())
        .await
        .unwrap()
}

/// Poll until `key` is absent, within `deadline`.
async fn await_absent(c: &EtcdClient, key: &[u8], deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if c.get(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn gateway_prefix_is_detected() {
    let server = etcd();
    let c = client(&server).await;
    // Debian's etcd 3.4 serves /v3 (and /v3beta); newer ones only /v3.
    assert_eq!(c.api_prefix().await.unwrap(), "/v3");
}

#[tokio::test]
async fn put_if_absent_is_atomic_first_writer_wins() {
    let server = etcd();
    let c = client(&server).await;
    let key = b"ha/leader";
    // Many contenders at once: exactly one creates the key.
    let results = futures::future::join_all((0..8u8).map(|i| {
        let c = c.clone();
        async move { (i, c.put_if_absent(key, &[i], None).await.unwrap()) }
    }))
    .await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| *r == PutIfAbsent::Created)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0];
    for (i, r) in &results {
        if *i != winner {
            assert_eq!(*r, PutIfAbsent::Exists(vec![winner]));
        }
    }
    assert_eq!(c.get(key).await.unwrap(), Some(vec![winner]));
    assert_eq!(c.delete(key, None).await.unwrap(), 1);
    assert_eq!(
        c.put_if_absent(key, b"again", None).await.unwrap(),
        PutIfAbsent::Created
    );
}

#[tokio::test]
async fn kept_alive_lease_holds_its_key_and_an_abandoned_one_expires() {
    let server = etcd();
    let c = client(&server).await;
    let lease = c.lease_grant(Duration::from_secs(1)).await.unwrap();
    // etcd raises TTLs below its minimum (1.5 x election timeout) to it.
    assert!(lease.ttl >= Duration::from_secs(1) && lease.ttl <= Duration::from_secs(3));
    assert_eq!(
        c.put_if_absent(b"ha/master", b"me", Some(lease.id))
            .await
            .unwrap(),
        PutIfAbsent::Created
    );
    let mut keeper = c.keep_alive(lease);
    // Several TTLs pass: the refreshes keep the key (time must pass here; there
    // is no event to await for "nothing happened").
    tokio::time::sleep(lease.ttl * 3).await;
    assert!(keeper.is_alive());
    assert_eq!(c.get(b"ha/master").await.unwrap(), Some(b"me".to_vec()));
    assert!(c.lease_keep_alive_once(lease.id).await.unwrap().is_some());

    // Stop refreshing: the lease expires and takes the key with it.
    drop(keeper);
    assert!(await_absent(&c, b"ha/master", Duration::from_secs(15)).await);
    assert_eq!(c.lease_keep_alive_once(lease.id).await.unwrap(), None);

    // A keeper of an expired lease reports it lost.
    keeper = c.keep_alive(lease);
    tokio::time::timeout(Duration::from_secs(15), keeper.lost())
        .await
        .expect("keeper notices the lost lease");
    assert!(!keeper.is_alive());
}

#[tokio::test]
async fn revoking_a_lease_deletes_its_keys_at_once() {
    let server = etcd();
    let c = client(&server).await;
    let lease = c.lease_grant(Duration::from_secs(60)).await.unwrap();
    c.put(b"ha/a", b"1", Some(lease.id)).await.unwrap();
    c.put(b"ha/b", b"2", Some(lease.id)).await.unwrap();
    c.put(b"ha/c", b"3", None).await.unwrap();
    c.lease_revoke(lease.id).await.unwrap();
    assert_eq!(c.get(b"ha/a").await.unwrap(), None);
    assert_eq!(c.get(b"ha/b").await.unwrap(), None);
    assert_eq!(c.get(b"ha/c").await.unwrap(), Some(b"3".to_vec()));
    // Revoking again (unknown lease) is not an error.
    c.lease_revoke(lease.id).await.unwrap();
}

#[tokio::test]
async fn guarded_txn_writes_only_under_the_same_leadership() {
    use mooncake_metadata::etcd::TxnOp;
    let server = etcd();
    let c = client(&server).await;
    let guard = b"g/leader";
    assert_eq!(
        c.put_if_absent(guard, b"me", None).await.unwrap(),
        PutIfAbsent::Created
    );
    let term = c.get_kv(guard).await.unwrap().unwrap().create_revision;
    assert!(term > 0);
    let put = |k: &str| TxnOp::Put {
        key: k.as_bytes().to_vec(),
        value: b"v".to_vec(),
    };
    for i in 0..5 {
        assert!(c
            .txn_if_created_at(guard, term, &[put(&format!("g/log/{i}"))])
            .await
            .unwrap());
    }
    // Paged range reads everything in key order.
    let all = c.range_prefix(b"g/log/", 2).await.unwrap();
    let keys: Vec<String> = all
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    assert_eq!(
        keys,
        ["g/log/0", "g/log/1", "g/log/2", "g/log/3", "g/log/4"]
    );
    // Delete a prefix below a bound.
    assert!(c
        .txn_if_created_at(
            guard,
            term,
            &[TxnOp::DeletePrefix {
                prefix: b"g/log/".to_vec(),
                before: Some(b"g/log/3".to_vec()),
            }]
        )
        .await
        .unwrap());
    assert_eq!(c.range_prefix(b"g/log/", 100).await.unwrap().len(), 2);
    // A successor re-creates the guard key: the old term can write nothing.
    c.delete(guard, None).await.unwrap();
    c.put_if_absent(guard, b"successor", None).await.unwrap();
    let term2 = c.get_kv(guard).await.unwrap().unwrap().create_revision;
    assert!(term2 > term, "terms grow");
    assert!(!c
        .txn_if_created_at(guard, term, &[put("g/log/stale")])
        .await
        .unwrap());
    assert_eq!(c.get(b"g/log/stale").await.unwrap(), None);
    assert!(c
        .txn_if_created_at(guard, term2, &[put("g/log/new")])
        .await
        .unwrap());
}
