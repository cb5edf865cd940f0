//! Pure planning of data movement: which replica to read, and which byte
//! ranges of an object map to which (segment, address) spans.
//!
//! No I/O here; the client turns [`Span`]s into Transfer Engine requests.

use std::ops::Range;

use mooncake_store_protocol::Replica;

/// A contiguous run of object bytes `[obj_off, obj_off + len)` that lives at
/// `addr` in `segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span<'a> {
    pub obj_off: u64,
    pub segment: &'a str,
    pub addr: u64,
    pub len: u64,
}

/// The spans of `replica` that cover `range` of the object, in byte order.
/// Pieces are laid out back to back in the order the master lists them.
pub(crate) fn spans(replica: &Replica, range: Range<u64>) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let mut piece_start = 0u64;
    for p in &replica.pieces {
        let piece_end = piece_start + p.len;
        let lo = range.start.max(piece_start);
        let hi = range.end.min(piece_end);
        if lo < hi {
            out.push(Span {
                obj_off: lo,
                segment: &p.segment,
                addr: p.addr + (lo - piece_start),
                len: hi - lo,
            });
        }
        if piece_end >= range.end {
            break;
        }
        piece_start = piece_end;
    }
    out
}

/// The host part of a segment name (`host:port`, `[v6]:port` or bare `host`).
pub(crate) fn host_of(segment: &str) -> &str {
    if let Some(rest) = segment.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    match segment.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => segment,
    }
}

/// How close a replica is to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Locality {
    /// Every piece is in the reader's own segment: a memcpy.
    Local = 0,
    /// Every piece is on the reader's host: shared memory.
    SameHost = 1,
    /// At least one piece crosses the network.
    Remote = 2,
}

pub(crate) fn locality(replica: &Replica, own_segment: &str, own_host: &str) -> Locality {
    if replica.pieces.iter().all(|p| p.segment == own_segment) {
        Locality::Local
    } else if replica
        .pieces
        .iter()
        .all(|p| host_of(&p.segment) == own_host)
    {
        Locality::SameHost
    } else {
        Locality::Remote
    }
}

/// Indices of `replicas` in the order to try them: nearest first; among equals,
/// start at `spread` (e.g. a per-client counter) so readers share the load.
pub(crate) fn read_order(
    replicas: &[Replica],
    own_segment: &str,
    own_host: &str,
    spread: usize,
) -> Vec<usize> {
    let n = replicas.len();
    let mut idx: Vec<usize> = (0..n).map(|i| (i + spread) % n.max(1)).collect();
    idx.sort_by_key(|&i| locality(&replicas[i], own_segment, own_host));
    idx
}

/// Split `[0, size)` into windows of at most `window` bytes.
pub(crate) fn windows(size: u64, window: u64) -> impl Iterator<Item = Range<u64>> {
    let window = window.max(1);
    (0..size.div_ceil(window)).map(move |i| i * window..((i + 1) * window).min(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooncake_store_protocol::Piece;

    fn piece(seg: &str, addr: u64, len: u64) -> Piece {
        Piece {
            segment: seg.into(),
            addr,
            len,
        }
    }

    #[test]
    fn spans_cover_range_across_pieces() {
        let r = Replica {
            crc32c: None,
            pieces: vec![
                piece("a:1", 1000, 10),
                piece("b:2", 5000, 10),
                piece("c:3", 0, 5),
            ],
        };
        let s = spans(&r, 5..22);
        assert_eq!(
            s,
            vec![
                Span {
                    obj_off: 5,
                    segment: "a:1",
                    addr: 1005,
                    len: 5
                },
                Span {
                    obj_off: 10,
                    segment: "b:2",
                    addr: 5000,
                    len: 10
                },
                Span {
                    obj_off: 20,
                    segment: "c:3",
                    addr: 0,
                    len: 2
                },
            ]
        );
        assert_eq!(spans(&r, 0..25).iter().map(|s| s.len).sum::<u64>(), 25);
        assert!(spans(&r, 10..10).is_empty());
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_of("127.0.0.1:17001"), "127.0.0.1");
        assert_eq!(host_of("node-a"), "node-a");
        assert_eq!(host_of("[::1]:80"), "::1");
    }

    #[test]
    fn read_order_prefers_local_then_same_host() {
        let remote = Replica {
            crc32c: None,
            pieces: vec![piece("10.0.0.2:1", 0, 4)],
        };
        let host = Replica {
            crc32c: None,
            pieces: vec![piece("127.0.0.1:9", 0, 4)],
        };
        let local = Replica {
            crc32c: None,
            pieces: vec![piece("127.0.0.1:5", 0, 4)],
        };
        let reps = vec![remote, host, local];
        assert_eq!(
            read_order(&reps, "127.0.0.1:5", "127.0.0.1", 0),
            vec![2, 1, 0]
        );
        assert_eq!(read_order(&reps, "127.0.0.1:5", "127.0.0.1", 1)[0], 2);
    }

    #[test]
    fn windows_split_exactly() {
        let w: Vec<_> = windows(10, 4).collect();
        assert_eq!(w, vec![0..4, 4..8, 8..10]);
        assert_eq!(windows(0, 4).count(), 0);
    }
}
