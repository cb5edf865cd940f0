//! Moving object bytes between the caller and the replicas' segments.
//!
//! Sources and destinations are either plain memory (copied through the
//! staging buffer in windows, except for spans in our own mounted segment,
//! which are copied directly) or a registered [`Region`](super::Region) (the
//! engine reads or writes it in place). All spans of one window — every piece
//! of every replica — go to the engine as one batch, so striped objects and
//! replicas move in parallel.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::ops::Range;

use mooncake_transfer::{Opcode, SegmentHandle, TransferRequest};

use super::plan::{self, Span};
use super::staging::StagingRegion;
use super::{Client, ClientError, Mounted, Result};
use mooncake_store_protocol::{ErrorCode, Replica};

/// Where a put takes its bytes from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Bytes(&'a [u8]),
    /// Address of registered memory holding the whole value.
    Registered(usize),
    /// Registered regions holding the value back to back (see `gather`).
    Gather(&'a [super::Region<'a>]),
}

/// Where a get puts its bytes.
pub(crate) enum Dst<'a> {
    /// Uninitialised memory of exactly the object's size; a successful read
    /// has written every byte of it.
    Bytes(&'a mut [MaybeUninit<u8>]),
    /// Address of registered memory with room for the whole value.
    Registered(usize),
    /// Registered regions the value is laid over back to back (see `gather`).
    Scatter(&'a [super::Region<'a>]),
}

impl Client {
    pub(crate) async fn handles<'s>(
        &self,
        spans: impl Iterator<Item = &'s Span<'s>>,
        cache: &mut HashMap<String, SegmentHandle>,
    ) -> Result<()> {
        for s in spans {
            if !cache.contains_key(s.segment) {
                let h = self.inner.engine.open_segment(s.segment).await?;
                cache.insert(s.segment.to_string(), h);
            }
        }
        Ok(())
    }

    pub(crate) fn mounted(&self) -> Option<std::sync::Arc<Mounted>> {
        self.inner.mounted.lock().clone()
    }

    /// Offset of `[addr, addr+len)` inside our own mounted segment, if the span
    /// names our segment and lies wholly inside it.
    fn own_offset(m: &Mounted, span: &Span<'_>) -> Option<usize> {
        let base = m.buffer.addr() as u64;
        let end = span.addr.checked_add(span.len)?;
        (span.segment == m.desc.name && span.addr >= base && end <= base + m.buffer.len() as u64)
            .then(|| (span.addr - base) as usize)
    }

    /// Copy the spans that lie in our own mounted segment with `local` (given
    /// the span's offset there); the others, which need the engine, are
    /// returned.
    fn split_own<'s>(
        &self,
        spans: impl IntoIterator<Item = Span<'s>>,
        mut local: impl FnMut(&Mounted, usize, &Span<'s>),
    ) -> Vec<Span<'s>> {
        let mounted = self.mounted();
        let mut remote = Vec::new();
        for s in spans {
            match mounted
                .as_deref()
                .and_then(|m| Some((m, Self::own_offset(m, &s)?)))
            {
                Some((m, off)) => local(m, off, &s),
                None => remote.push(s),
            }
        }
        remote
    }

    /// Move the `remote` spans of a `size`-byte object through the staging
    /// buffer, one window at a time: `fill` loads a window's region before its
    /// transfer, `drain` unloads it after (with the spans moved in it).
    async fn through_staging(
        &self,
        remote: &[Span<'_>],
        size: u64,
        opcode: Opcode,
        cache: &mut HashMap<String, SegmentHandle>,
        mut fill: impl FnMut(&StagingRegion, Range<u64>),
        mut drain: impl FnMut(&StagingRegion, Range<u64>, &[Span<'_>]),
    ) -> Result<()> {
        if remote.is_empty() {
            return Ok(());
        }
        let staging = self
            .inner
            .staging
            .clone()
            .ok_or(ClientError::NoStagingBuffer)?;
        self.handles(remote.iter(), cache).await?;
        for w in plan::windows(size, staging.window() as u64) {
            let in_window: Vec<Span<'_>> =
                remote.iter().filter_map(|s| clip(s, w.clone())).collect();
            if in_window.is_empty() {
                continue;
            }
            let region = staging.acquire((w.end - w.start) as usize).await;
            fill(&region, w.clone());
            let base = region.addr();
            let reqs = requests(&in_window, cache, opcode, |s| {
                base + (s.obj_off - w.start) as usize
            });
            self.inner.engine.transfer(&reqs).await?;
            drain(&region, w, &in_window);
        }
        Ok(())
    }

    /// Write `size` bytes from `src` into every replica.
    pub(crate) async fn write_replicas(
        &self,
        replicas: &[Replica],
        size: u64,
        src: Src<'_>,
    ) -> Result<()> {
        check_sizes(replicas, size)?;
        let mut cache = HashMap::new();
        match src {
            Src::Registered(addr) => {
                let all: Vec<Span<'_>> = replicas
                    .iter()
                    .flat_map(|r| plan::spans(r, 0..size))
                    .collect();
                self.handles(all.iter(), &mut cache).await?;
                let reqs = requests(&all, &cache, Opcode::Write, |s| addr + s.obj_off as usize);
                self.inner.engine.transfer(&reqs).await?;
            }
            Src::Gather(parts) => {
                let all: Vec<Span<'_>> = replicas
                    .iter()
                    .flat_map(|r| plan::spans(r, 0..size))
                    .collect();
                self.transfer_mapped(&all, parts, Opcode::Write, &mut cache)
                    .await?;
            }
            Src::Bytes(data) => {
                let spans = replicas.iter().flat_map(|r| plan::spans(r, 0..size));
                let remote = self.split_own(spans, |m, off, s| {
                    let lo = s.obj_off as usize;
                    m.buffer.write_at(off, &data[lo..lo + s.len as usize]);
                });
                let fill = |region: &StagingRegion, w: Range<u64>| {
                    region.write(0, &data[w.start as usize..w.end as usize]);
                };
                self.through_staging(&remote, size, Opcode::Write, &mut cache, fill, |_, _, _| {})
                    .await?;
            }
        }
        Ok(())
    }

    /// Move `spans` between the replicas and `parts` (the object laid back to
    /// back over them), as one engine batch.
    async fn transfer_mapped(
        &self,
        spans: &[Span<'_>],
        parts: &[super::Region<'_>],
        opcode: Opcode,
        cache: &mut HashMap<String, SegmentHandle>,
    ) -> Result<()> {
        let mapped = super::gather::map_spans(spans, parts)
            .ok_or_else(|| ClientError::InvalidParams("object larger than its buffers".into()))?;
        let (pieces, locals): (Vec<Span<'_>>, Vec<usize>) = mapped.into_iter().unzip();
        self.handles(pieces.iter(), cache).await?;
        let mut reqs = requests(&pieces, cache, opcode, |_| 0);
        for (req, local) in reqs.iter_mut().zip(locals) {
            req.source = local;
        }
        self.inner.engine.transfer(&reqs).await?;
        Ok(())
    }

    /// Read the whole of `replica` into `dst`.
    pub(crate) async fn read_replica(&self, replica: &Replica, dst: Dst<'_>) -> Result<()> {
        let size = replica.size();
        let spans = plan::spans(replica, 0..size);
        let mut cache = HashMap::new();
        match dst {
            Dst::Registered(addr) => {
                self.handles(spans.iter(), &mut cache).await?;
                let reqs = requests(&spans, &cache, Opcode::Read, |s| addr + s.obj_off as usize);
                self.inner.engine.transfer(&reqs).await?;
            }
            Dst::Scatter(parts) => {
                self.transfer_mapped(&spans, parts, Opcode::Read, &mut cache)
                    .await?;
            }
            Dst::Bytes(out) => {
                let remote = self.split_own(spans, |m, off, s| {
                    let lo = s.obj_off as usize;
                    let dst = &mut out[lo..lo + s.len as usize];
                    // SAFETY: own_offset checked that [off, off + len) lies
                    // inside our mounted buffer, which `m` keeps mapped.
                    unsafe { copy_out(m.buffer.as_ptr(), off, dst) };
                });
                let drain = |region: &StagingRegion, w: Range<u64>, moved: &[Span<'_>]| {
                    for s in moved {
                        let lo = s.obj_off as usize;
                        region
                            .read_uninit(lo - w.start as usize, &mut out[lo..lo + s.len as usize]);
                    }
                };
                self.through_staging(&remote, size, Opcode::Read, &mut cache, |_, _| {}, drain)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Copy `dst.len()` bytes from `base + off` into `dst`.
///
/// # Safety
/// `[base + off, base + off + dst.len())` must be readable memory that stays
/// mapped for the duration of the call.
pub(crate) unsafe fn copy_out(base: *const u8, off: usize, dst: &mut [MaybeUninit<u8>]) {
    // SAFETY: the source range is valid (caller contract); `dst` is a distinct
    // Rust slice (no overlap) and MaybeUninit<u8> has the layout of u8.
    unsafe {
        std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr().cast::<u8>(), dst.len())
    }
}

/// Every replica must hold exactly `size` bytes in non-empty pieces.
pub(crate) fn check_sizes(replicas: &[Replica], size: u64) -> Result<()> {
    if replicas.is_empty() {
        return Err(ErrorCode::ObjectNotFound.into());
    }
    for r in replicas {
        if r.size() != size || r.pieces.iter().any(|p| p.len == 0) {
            return Err(ClientError::InconsistentRead {
                key: String::new(),
                reason: format!("replica holds {} bytes, expected {size}", r.size()),
            });
        }
    }
    Ok(())
}

/// The part of `s` inside `w`.
fn clip<'a>(s: &Span<'a>, w: std::ops::Range<u64>) -> Option<Span<'a>> {
    let lo = s.obj_off.max(w.start);
    let hi = (s.obj_off + s.len).min(w.end);
    (lo < hi).then(|| Span {
        obj_off: lo,
        segment: s.segment,
        addr: s.addr + (lo - s.obj_off),
        len: hi - lo,
    })
}

pub(crate) fn requests(
    spans: &[Span<'_>],
    handles: &HashMap<String, SegmentHandle>,
    opcode: Opcode,
    local: impl Fn(&Span<'_>) -> usize,
) -> Vec<TransferRequest> {
    spans
        .iter()
        .map(|s| TransferRequest {
            opcode,
            source: local(s),
            target: handles[s.segment].clone(),
            target_offset: s.addr,
            length: s.len as usize,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_span_to_window() {
        let s = Span {
            obj_off: 10,
            segment: "a:1",
            addr: 100,
            len: 20,
        };
        assert_eq!(
            clip(&s, 15..25),
            Some(Span {
                obj_off: 15,
                segment: "a:1",
                addr: 105,
                len: 10
            })
        );
        assert_eq!(clip(&s, 0..10), None);
        assert_eq!(clip(&s, 30..40), None);
    }
}
