//! The `file` transport through the engine: a file registered as a segment,
//! written and read back through batches (random data, unaligned offsets, odd
//! sizes, large batches), refusals outside the registered size, and a second engine
//! reaching the same file segment. Files live under cargo's target tmp dir (a real
//! disk: /tmp may be tmpfs, where O_DIRECT is unavailable and the transport falls
//! back to buffered I/O — also correct, just slower).

use std::path::Path;
use std::sync::Arc;

use mooncake_transfer::transport::file::FileTransport;
use mooncake_transfer::{
    FailureReason, ManagedBuffer, Opcode, Protocol, SegmentHandle, TransferEngine,
    TransferEngineConfig, TransferError, TransferRequest, TransferStatus,
};
use rand::{Rng, RngCore, SeedableRng};

fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir under target/tmp")
}

async fn engine() -> Arc<TransferEngine> {
    TransferEngine::start(TransferEngineConfig {
        protocols: vec![Protocol::File, Protocol::Tcp],
        ..TransferEngineConfig::default()
    })
    .await
    .expect("engine starts")
}

fn unique(tag: &str) -> String {
    format!("file-test-{tag}-{}", rand::random::<u64>())
}

fn req(
    opcode: Opcode,
    buf: &ManagedBuffer,
    local_off: usize,
    seg: &SegmentHandle,
    file_off: u64,
    len: usize,
) -> TransferRequest {
    TransferRequest {
        opcode,
        source: buf.addr() + local_off,
        target: seg.clone(),
        target_offset: file_off,
        length: len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_unaligned_round_trips_through_a_file_segment() {
    let dir = disk_dir();
    let e = engine().await;
    let size: usize = 16 << 20;
    let name = unique("rt");
    let seg = e
        .register_file_segment(&name, &dir.path().join("seg"), Some(size as u64), true)
        .await
        .expect("register file segment");
    let file_t = e.transport(Protocol::File).expect("file transport enabled");
    let direct = file_t
        .as_any()
        .downcast_ref::<FileTransport>()
        .unwrap()
        .direct_io(&name);
    eprintln!("O_DIRECT on {}: {direct:?}", dir.path().display());

    let src = e.allocate_managed_buffer(size).await.unwrap();
    let dst = e.allocate_managed_buffer(size).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    src.write_at(0, &data);
    let mut model = vec![0u8; size];

    for round in 0..40 {
        // A batch of non-overlapping pieces with odd sizes at unaligned file offsets
        // and unaligned local addresses.
        let mut reqs = Vec::new();
        let mut file_off = rng.gen_range(0..8192u64);
        while reqs.len() < 24 {
            let len = match rng.gen_range(0..4) {
                0 => rng.gen_range(1..100),
                1 => rng.gen_range(1..20_000),
                2 => 4096 * rng.gen_range(1..64),
                _ => rng.gen_range(1..(3 << 20)),
            };
            if file_off as usize + len > size {
                break;
            }
            let local_off = rng.gen_range(0..size - len);
            reqs.push(req(Opcode::Write, &src, local_off, &seg, file_off, len));
            model[file_off as usize..file_off as usize + len]
                .copy_from_slice(&data[local_off..local_off + len]);
            file_off += len as u64 + rng.gen_range(0..5000);
        }
        e.transfer(&reqs)
            .await
            .unwrap_or_else(|err| panic!("round {round}: write batch: {err}"));
    }
    // Read the whole file back in a batch of odd-sized pieces into unaligned places.
    let mut reads = Vec::new();
    let mut off = 0usize;
    while off < size {
        let len = rng.gen_range(1..(1 << 20)).min(size - off);
        reads.push(req(Opcode::Read, &dst, off, &seg, off as u64, len));
        off += len;
    }
    e.transfer(&reads).await.expect("read back");
    let mut back = vec![0u8; size];
    dst.read_at(0, &mut back);
    assert!(back == model, "file contents differ from what was written");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_through_the_batch_api() {
    let dir = disk_dir();
    let e = engine().await;
    let block = 64 << 10;
    let n = 1024;
    let seg = e
        .register_file_segment(
            &unique("big"),
            &dir.path().join("seg"),
            Some((block * n) as u64),
            true,
        )
        .await
        .unwrap();
    let src = e.allocate_managed_buffer(block * n).await.unwrap();
    let dst = e.allocate_managed_buffer(block * n).await.unwrap();
    let mut data = vec![0u8; block * n];
    rand::thread_rng().fill_bytes(&mut data);
    src.write_at(0, &data);
    // Reverse order on the file, to be sure offsets are honoured per request.
    let writes: Vec<_> = (0..n)
        .map(|i| {
            req(
                Opcode::Write,
                &src,
                i * block,
                &seg,
                ((n - 1 - i) * block) as u64,
                block,
            )
        })
        .collect();
    let batch = e.allocate_batch(n).unwrap();
    e.submit(batch, &writes).unwrap();
    let statuses = e.wait(batch).await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == TransferStatus::Completed),
        "{statuses:?}"
    );
    e.free_batch(batch).unwrap();
    let reads: Vec<_> = (0..n)
        .map(|i| {
            req(
                Opcode::Read,
                &dst,
                i * block,
                &seg,
                ((n - 1 - i) * block) as u64,
                block,
            )
        })
        .collect();
    e.transfer(&reads).await.unwrap();
    let mut back = vec![0u8; block * n];
    dst.read_at(0, &mut back);
    assert!(back == data);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_is_refused_and_the_file_is_untouched() {
    let dir = disk_dir();
    let e = engine().await;
    let path = dir.path().join("seg");
    let len = 1 << 20;
    let seg = e
        .register_file_segment(&unique("oob"), &path, Some(len), true)
        .await
        .unwrap();
    let buf = e.allocate_managed_buffer(2 << 20).await.unwrap();
    buf.fill(0, 2 << 20, 0xab);
    for (off, n) in [
        (len - 100, 101usize),
        (len, 1),
        (len + 4096, 4096),
        (0, (len + 1) as usize),
        (u64::MAX - 10, 20),
    ] {
        let r = e
            .transfer(&[req(Opcode::Write, &buf, 0, &seg, off, n)])
            .await;
        match r {
            Err(TransferError::OutOfRange { .. } | TransferError::NotRegistered { .. }) => {}
            Err(TransferError::Failed(
                FailureReason::OutOfRange { .. } | FailureReason::NotRegistered { .. },
            )) => {}
            other => panic!("write of {n} at {off} was not refused: {other:?}"),
        }
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), len, "the file was extended");
    let content = std::fs::read(&path).unwrap();
    assert!(
        content.iter().all(|&b| b == 0),
        "a refused write touched the file"
    );
    // A zero-length request at the very end is fine.
    e.transfer(&[req(Opcode::Write, &buf, 0, &seg, len, 0)])
        .await
        .unwrap();
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_descriptor_larger_than_the_file_is_refused() {
    let dir = disk_dir();
    let path = dir.path().join("seg");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let t = FileTransport::new("host".into()).unwrap();
    let mut desc = t.register_file("forged", &path, None, false).unwrap();
    assert_eq!(desc.buffers[0].length, 8192);
    // Someone publishes the same path with a larger size under another name.
    desc.name = "forged-bigger".into();
    desc.buffers[0].length = 1 << 20;
    desc.transports.insert(
        "file".into(),
        serde_json::json!({"path": path, "length": 1u64 << 20}),
    );
    let mut local = vec![0u8; 4096];
    let slice = mooncake_transfer::transport::Slice {
        opcode: Opcode::Write,
        local_addr: local.as_mut_ptr() as usize,
        remote_addr: 64 << 10,
        len: 4096,
        attempt: 0,
    };
    use mooncake_transfer::transport::Transport;
    let err = t
        .execute(&Arc::new(desc), &slice)
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        8192,
        "file was extended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_engine_on_this_host_reaches_the_file_segment() {
    let dir = disk_dir();
    let owner = engine().await;
    let other = engine().await;
    let name = unique("shared");
    let seg = owner
        .register_file_segment(&name, &dir.path().join("seg"), Some(4 << 20), true)
        .await
        .unwrap();
    let a = owner.allocate_managed_buffer(1 << 20).await.unwrap();
    let payload: Vec<u8> = (0..(1 << 20) - 3).map(|i| (i % 251) as u8).collect();
    a.write_at(0, &payload);
    owner
        .transfer(&[req(Opcode::Write, &a, 0, &seg, 12345, payload.len())])
        .await
        .unwrap();

    let seg2 = other
        .open_segment(&name)
        .await
        .expect("other engine resolves the file segment");
    let b = other.allocate_managed_buffer(1 << 20).await.unwrap();
    other
        .transfer(&[req(Opcode::Read, &b, 1, &seg2, 12345, payload.len())])
        .await
        .unwrap();
    let mut back = vec![0u8; payload.len()];
    b.read_at(1, &mut back);
    assert!(back == payload);

    owner.unregister_file_segment(&name).await.unwrap();
    assert!(matches!(
        owner.unregister_file_segment(&name).await,
        Err(TransferError::UnknownSegment(_))
    ));
    other.shutdown().await;
    owner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors_are_typed() {
    let dir = disk_dir();
    let e = engine().await;
    let name = unique("dup");
    e.register_file_segment(&name, &dir.path().join("a"), Some(4096), true)
        .await
        .unwrap();
    assert!(e
        .register_file_segment(&name, &dir.path().join("b"), Some(4096), true)
        .await
        .is_err());
    let missing = e
        .register_file_segment(
            &unique("missing"),
            &dir.path().join("nope"),
            Some(4096),
            false,
        )
        .await;
    assert!(matches!(missing, Err(TransferError::Io(_))), "{missing:?}");
    let own = e
        .register_file_segment(e.segment_name(), Path::new("/dev/null"), None, false)
        .await;
    assert!(
        matches!(own, Err(TransferError::InvalidConfig(_))),
        "{own:?}"
    );
    let no_file = TransferEngine::start(TransferEngineConfig::default())
        .await
        .unwrap();
    let r = no_file
        .register_file_segment("x", &dir.path().join("c"), Some(4096), true)
        .await;
    assert!(
        matches!(r, Err(TransferError::TransportUnavailable { .. })),
        "{r:?}"
    );
    no_file.shutdown().await;
    e.shutdown().await;
}
