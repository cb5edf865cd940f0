//! End-to-end value checksums: the CRC32C (Castagnoli) a writer computes over
//! the value it puts and records with the object at the master
//! ([`crate::protocol::Replica::crc32c`]), and the check of every whole-object
//! read against it.
//!
//! A replica whose bytes do not match — corrupted in memory, or overwritten by
//! someone who could reach its segment — is never returned: the read counts it
//! ([`checksum_failures`]), logs it, and moves on to the next replica; when no
//! replica matches the get fails with [`ClientError::ChecksumMismatch`].
//! Range reads (`get_range_into`) read part of a value and are not checked.

use std::sync::atomic::{AtomicU64, Ordering};

use super::io::Src;
use super::ops::ReadTarget;
use super::{ClientError, Result};

/// Replica reads refused for a checksum mismatch, in this process.
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many replica reads this process refused because their bytes did not
/// match the object's CRC32C.
pub fn checksum_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// CRC32C of regions of local memory laid back to back, `size` bytes in all.
///
/// # Safety
/// Every `(addr, len)` must be readable local memory for the call's duration.
unsafe fn crc_of_regions(parts: impl Iterator<Item = (usize, usize)>, mut size: u64) -> u32 {
    let mut crc = 0;
    for (addr, len) in parts {
        if size == 0 {
            break;
        }
        let n = (len as u64).min(size) as usize;
        // SAFETY: the caller guarantees [addr, addr + len) is readable and n <= len.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, n) };
        crc = crc32c::crc32c_append(crc, bytes);
        size -= n as u64;
    }
    crc
}

/// CRC32C of the `size` bytes a put takes from `src`.
pub(crate) fn of_source(src: Src<'_>, size: u64) -> u32 {
    match src {
        Src::Bytes(b) => crc32c::crc32c(&b[..(size as usize).min(b.len())]),
        // SAFETY: a Registered source names `size` bytes of CPU memory the caller
        // registered with this client and lent for the put (Region's contract).
        Src::Registered(addr) => unsafe {
            crc_of_regions(std::iter::once((addr, size as usize)), size)
        },
        // SAFETY: as above, each part is a Region of registered CPU memory.
        Src::Gather(parts) => unsafe {
            crc_of_regions(parts.iter().map(|r| (r.addr(), r.len())), size)
        },
    }
}

/// Check the `size` bytes a read just placed in `target` (or in `vec` for
/// [`ReadTarget::Vec`]) against `expected`. A mismatch is counted and logged.
pub(crate) fn verify(
    key: &str,
    replica: usize,
    expected: Option<u32>,
    target: &ReadTarget<'_>,
    vec: Option<&[u8]>,
    size: u64,
) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let got = match (target, vec) {
        (_, Some(v)) => crc32c::crc32c(v),
        // SAFETY: the read wrote `size` bytes into the caller's registered CPU
        // region(s), which stay lent to us for the duration of the get.
        (ReadTarget::Region(r), None) => unsafe {
            crc_of_regions(std::iter::once((r.addr(), r.len())), size)
        },
        // SAFETY: as above.
        (ReadTarget::Parts(p), None) => unsafe {
            crc_of_regions(p.iter().map(|r| (r.addr(), r.len())), size)
        },
        (ReadTarget::Vec, None) => return Ok(()),
    };
    if got == expected {
        return Ok(());
    }
    FAILURES.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        key,
        replica,
        expected = format_args!("{expected:08x}"),
        got = format_args!("{got:08x}"),
        "replica failed its CRC32C check (corrupted or overwritten); trying another"
    );
    Err(ClientError::ChecksumMismatch {
        key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_parts_checksum_as_one_value() {
        let v: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = crc32c::crc32c(&v);
        assert_eq!(of_source(Src::Bytes(&v), 1000), whole);
        assert_eq!(of_source(Src::Registered(v.as_ptr() as usize), 1000), whole);
        // SAFETY: the regions name bytes of `v`, alive for the whole test.
        let parts = unsafe {
            [
                super::super::Region::from_raw(v.as_ptr() as usize, 300),
                super::super::Region::from_raw(v.as_ptr() as usize + 300, 700),
            ]
        };
        assert_eq!(of_source(Src::Gather(&parts), 1000), whole);
    }

    #[test]
    fn mismatch_is_refused_and_counted() {
        let v = b"hello world".to_vec();
        let crc = crc32c::crc32c(&v);
        assert!(verify("k", 0, Some(crc), &ReadTarget::Vec, Some(&v), 11).is_ok());
        assert!(verify("k", 0, None, &ReadTarget::Vec, Some(b"x"), 1).is_ok());
        let before = checksum_failures();
        let err = verify(
            "k",
            1,
            Some(crc),
            &ReadTarget::Vec,
            Some(b"hellO world"),
            11,
        );
        assert!(matches!(err, Err(ClientError::ChecksumMismatch { .. })));
        assert!(checksum_failures() > before);
    }
}
