//! Without CUDA (this CI machine): the engine says so, host memory works as
//! before, and a registration that says `cuda:*` is refused with a clear
//! error and changes nothing. Skips (with a message) where CUDA is present.

mod common;

use common::*;
use mooncake_transfer::{cuda, Protocol, TransferError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_registration_refused_without_cuda() {
    let (found, detail) = cuda::status();
    if found {
        eprintln!("skipped: CUDA is present here ({detail}); tests/gpu.rs covers this machine");
        return;
    }
    assert!(detail.contains("CUDA not available"), "{detail}");
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let mem = vec![0u8; 4096];
    let addr = mem.as_ptr() as usize;
    // SAFETY: `mem` outlives the registration attempts below.
    let err = unsafe { e.register_memory(addr, mem.len(), "cuda:0").await }.unwrap_err();
    assert!(matches!(err, TransferError::InvalidConfig(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cuda:0") && msg.contains("libcuda"), "{msg}");
    assert!(
        e.local_descriptor().buffers.is_empty(),
        "refusal changed nothing"
    );
    // SAFETY: as above.
    let err = unsafe { e.register_memory(addr, mem.len(), "cuda:x").await }.unwrap_err();
    assert!(err.to_string().contains("bad location"), "{err}");
    // Host memory: classified as host, registered under the name it was given.
    // SAFETY: as above; unregistered before `mem` drops.
    unsafe { e.register_memory(addr, mem.len(), "cpu:0").await }.unwrap();
    assert_eq!(e.local_descriptor().buffers[0].name, "cpu:0");
    e.unregister_memory(addr).await.unwrap();
    e.shutdown().await;
}
