//! Scatter-gather: one object's bytes laid out over several registered
//! regions, back to back in the order given (the reference's
//! `batch_put_from_multi_buffers` / `batch_get_into_multi_buffers`, used by
//! inference engines whose KV cache for one key lives in one block per layer).
//!
//! A put gathers the regions into one object, zero-copy: every span of every
//! replica is cut at the regions' boundaries and goes to the engine as one
//! batch. A get scatters the object into the regions the same way; the
//! regions together must hold at least the object (the reference's rule),
//! filled from the first, and the result is the object's size.
//!
//! Invariant: every transfer names memory inside exactly one of the regions
//! (themselves inside registered memory, the [`Region`] contract), never the
//! gaps between them or anything past their ends.

use futures::future::join_all;
use tracing::Instrument;

use super::io::Src;
use super::ops::{PutMode, ReadTarget};
use super::plan::Span;
use super::{Client, ClientError, Region, Result};
use mooncake_store_protocol::ReplicateConfig;

/// Cut `spans` (byte ranges of the object) at the boundaries of `parts`
/// (the object's bytes laid back to back over them), giving each piece with
/// the local address it maps to. `None` when a span reaches past the parts'
/// total length.
pub(crate) fn map_spans<'s>(
    spans: &[Span<'s>],
    parts: &[Region<'_>],
) -> Option<Vec<(Span<'s>, usize)>> {
    // Start offset of each part within the object.
    let mut starts = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for p in parts {
        starts.push(total);
        total += p.len() as u64;
    }
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let end = s.obj_off.checked_add(s.len)?;
        if end > total {
            return None;
        }
        let mut off = s.obj_off;
        while off < end {
            // The part holding byte `off`: the last one starting at or before it
            // (empty parts start where the next one does and hold nothing).
            let i = starts.partition_point(|&st| st <= off) - 1;
            let part_end = starts[i] + parts[i].len() as u64;
            let hi = end.min(part_end);
            if hi <= off {
                return None;
            }
            out.push((
                Span {
                    obj_off: off,
                    segment: s.segment,
                    addr: s.addr + (off - s.obj_off),
                    len: hi - off,
                },
                parts[i].addr() + (off - starts[i]) as usize,
            ));
            off = hi;
        }
    }
    Some(out)
}

fn total_len(parts: &[Region<'_>]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

impl Client {
    /// Put many values, each gathered from its registered regions (concatenated
    /// in order), zero-copy; one result per key. A key that exists fails with
    /// `ObjectAlreadyExists` and keeps its value.
    pub async fn batch_put_from_parts(
        &self,
        keys: &[String],
        parts: &[Vec<Region<'_>>],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        let span = tracing::info_span!("store.batch_put_from_parts", n = keys.len());
        if keys.len() != parts.len() {
            return Err(ClientError::InvalidParams(format!(
                "{} keys but {} buffer lists",
                keys.len(),
                parts.len()
            )));
        }
        let srcs: Vec<(u64, Src<'_>)> = parts
            .iter()
            .map(|p| (total_len(p), Src::Gather(p)))
            .collect();
        self.batch_put_impl(keys, &srcs, config)
            .instrument(span)
            .await
    }

    /// As [`Client::batch_put_from_parts`], replacing existing objects.
    pub async fn batch_upsert_from_parts(
        &self,
        keys: &[String],
        parts: &[Vec<Region<'_>>],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        let span = tracing::info_span!("store.batch_upsert_from_parts", n = keys.len());
        if keys.len() != parts.len() {
            return Err(ClientError::InvalidParams(format!(
                "{} keys but {} buffer lists",
                keys.len(),
                parts.len()
            )));
        }
        let jobs = keys
            .iter()
            .zip(parts)
            .map(|(k, p)| self.put_impl(k, total_len(p), Src::Gather(p), config, PutMode::Upsert));
        Ok(join_all(jobs).instrument(span).await)
    }

    /// Get many values, each scattered over its registered regions (filled in
    /// order); one result per key: the object's size, or
    /// [`ClientError::BufferTooSmall`] when its regions hold less than it.
    pub async fn batch_get_into_parts(
        &self,
        keys: &[String],
        parts: &[Vec<Region<'_>>],
    ) -> Result<Vec<Result<u64>>> {
        let span = tracing::info_span!("store.batch_get_into_parts", n = keys.len());
        if keys.len() != parts.len() {
            return Err(ClientError::InvalidParams(format!(
                "{} keys but {} buffer lists",
                keys.len(),
                parts.len()
            )));
        }
        let targets: Vec<ReadTarget<'_>> = parts.iter().map(|p| ReadTarget::Parts(p)).collect();
        let out = self.batch_get_impl(keys, &targets).instrument(span).await?;
        Ok(out.into_iter().map(|r| r.map(|(n, _)| n)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(obj_off: u64, addr: u64, len: u64) -> Span<'static> {
        Span {
            obj_off,
            segment: "s:1",
            addr,
            len,
        }
    }

    fn region(addr: usize, len: usize) -> Region<'static> {
        // SAFETY: only addresses are computed here; nothing is accessed.
        unsafe { Region::from_raw(addr, len) }
    }

    #[test]
    fn spans_are_cut_at_part_boundaries() {
        let parts = [region(1000, 4), region(5000, 0), region(2000, 6)];
        // One span over the whole object, one over the middle.
        let got = map_spans(&[span(0, 100, 10), span(3, 200, 2)], &parts).unwrap();
        let flat: Vec<(u64, u64, u64, usize)> = got
            .iter()
            .map(|(s, l)| (s.obj_off, s.addr, s.len, *l))
            .collect();
        assert_eq!(
            flat,
            vec![
                (0, 100, 4, 1000),
                (4, 104, 6, 2000),
                (3, 200, 1, 1003),
                (4, 201, 1, 2000),
            ]
        );
    }

    #[test]
    fn span_past_the_parts_is_refused() {
        let parts = [region(1000, 4), region(2000, 4)];
        assert!(map_spans(&[span(6, 0, 3)], &parts).is_none());
        assert!(map_spans(&[span(0, 0, 8)], &parts).is_some());
        assert!(map_spans(&[span(0, 0, 1)], &[]).is_none());
    }
}
