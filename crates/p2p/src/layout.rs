//! How an object's bytes are laid out: the manifest (parts, shards and their
//! checksums), the set of shards a holder has, and the mapping of one shard
//! onto a holder's buffers and the reader's buffers. Pure: no I/O.
//!
//! Invariants: shards never cross a part boundary, cover the object exactly
//! once in order, and are at most `shard_size` bytes; anything read from the
//! network ([`ShardSet::from_ranges`], [`Manifest::check`]) is validated
//! before use and yields an error, never a panic.

use serde::{Deserialize, Serialize};

/// One named part of an object (a file, or a registered buffer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// File base name for `mooncake p2p serve`; empty for raw buffers.
    pub name: String,
    pub len: u64,
}

/// One shard: `len` bytes at `offset` in the object, with their CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

/// The published description of an object (`mooncake/p2p/objects/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// Random per registration: holder records of an earlier registration of
    /// the same name are ignored.
    pub id: u64,
    pub size: u64,
    pub shard_size: u64,
    pub parts: Vec<Part>,
    pub shards: Vec<Shard>,
}

impl Manifest {
    /// Validate a manifest read from metadata: shards tile `[0, size)` in
    /// order, each non-empty and at most `shard_size`, parts add up to `size`.
    pub fn check(&self) -> Result<(), String> {
        let parts: u64 = self
            .parts
            .iter()
            .try_fold(0u64, |a, p| a.checked_add(p.len))
            .ok_or("part sizes overflow")?;
        if parts != self.size {
            return Err(format!("parts add up to {parts}, size is {}", self.size));
        }
        let mut at = 0u64;
        for (i, s) in self.shards.iter().enumerate() {
            if s.offset != at || s.len == 0 || s.len > self.shard_size {
                return Err(format!("shard {i} is malformed"));
            }
            at = at.checked_add(s.len).ok_or("shard sizes overflow")?;
        }
        if at != self.size {
            return Err(format!("shards cover {at} bytes, size is {}", self.size));
        }
        Ok(())
    }
}

/// Cut parts of `lens` bytes into shards of at most `max_shard` bytes that
/// never cross a part boundary; returns `(offset, len)` in object order.
pub fn cut(lens: &[u64], max_shard: u64) -> Vec<(u64, u64)> {
    assert!(max_shard > 0, "max_shard must be > 0");
    let mut out = Vec::new();
    let mut base = 0u64;
    for &len in lens {
        let mut off = 0;
        while off < len {
            let n = (len - off).min(max_shard);
            out.push((base + off, n));
            off += n;
        }
        base += len;
    }
    out
}

/// A contiguous piece of memory: absolute address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub addr: u64,
    pub len: u64,
}

/// One transfer of a shard: `len` bytes from the holder's `remote` address
/// into the reader's `local` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub local: u64,
    pub remote: u64,
    pub len: u64,
}

/// Where object bytes `[offset, offset+len)` live in `regions` (the object
/// laid out across them in order), as `(addr, len)` runs; `None` when the
/// regions are too small.
pub fn locate(regions: &[Region], offset: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let end = offset.checked_add(len)?;
    let mut out = Vec::new();
    let mut base = 0u64;
    for r in regions {
        let r_end = base.checked_add(r.len)?;
        let lo = offset.max(base);
        let hi = end.min(r_end);
        if lo < hi {
            out.push((r.addr.checked_add(lo - base)?, hi - lo));
        }
        base = r_end;
        if base >= end {
            break;
        }
    }
    (base >= end).then_some(out)
}

/// The transfers that copy object bytes `[offset, offset+len)` from a holder
/// laid out over `remote` into a reader laid out over `local`: both layouts
/// are walked together, so a piece never crosses a region of either side.
pub fn pieces(offset: u64, len: u64, remote: &[Region], local: &[Region]) -> Option<Vec<Piece>> {
    let r = locate(remote, offset, len)?;
    let l = locate(local, offset, len)?;
    let mut out = Vec::new();
    let (mut ri, mut li) = (0, 0);
    let (mut r_used, mut l_used) = (0u64, 0u64);
    while ri < r.len() && li < l.len() {
        let n = (r[ri].1 - r_used).min(l[li].1 - l_used);
        out.push(Piece {
            local: l[li].0 + l_used,
            remote: r[ri].0 + r_used,
            len: n,
        });
        r_used += n;
        l_used += n;
        if r_used == r[ri].1 {
            ri += 1;
            r_used = 0;
        }
        if l_used == l[li].1 {
            li += 1;
            l_used = 0;
        }
    }
    Some(out)
}

/// Which shards a holder has: a bitset over `0..n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardSet {
    n: usize,
    bits: Vec<u64>,
    count: usize,
}

impl ShardSet {
    pub fn empty(n: usize) -> Self {
        Self {
            n,
            bits: vec![0; n.div_ceil(64)],
            count: 0,
        }
    }

    pub fn full(n: usize) -> Self {
        let mut s = Self::empty(n);
        for i in 0..n {
            s.insert(i);
        }
        s
    }

    pub fn capacity(&self) -> usize {
        self.n
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.n
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.n && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Add shard `i` (ignored when out of range); true if it was new.
    pub fn insert(&mut self, i: usize) -> bool {
        if i >= self.n || self.contains(i) {
            return false;
        }
        self.bits[i / 64] |= 1 << (i % 64);
        self.count += 1;
        true
    }

    /// Remove shard `i`; true if it was present.
    pub fn remove(&mut self, i: usize) -> bool {
        if !self.contains(i) {
            return false;
        }
        self.bits[i / 64] &= !(1 << (i % 64));
        self.count -= 1;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).filter(|&i| self.contains(i))
    }

    /// Half-open runs `[start, end)` of present shards (the wire form).
    pub fn to_ranges(&self) -> Vec<[usize; 2]> {
        let mut out: Vec<[usize; 2]> = Vec::new();
        for i in self.iter() {
            match out.last_mut() {
                Some(r) if r[1] == i => r[1] = i + 1,
                _ => out.push([i, i + 1]),
            }
        }
        out
    }

    /// Parse the wire form; runs must be in range and non-empty.
    pub fn from_ranges(n: usize, ranges: &[[usize; 2]]) -> Result<Self, String> {
        let mut s = Self::empty(n);
        for &[a, b] in ranges {
            if a >= b || b > n {
                return Err(format!("shard range [{a}, {b}) outside 0..{n}"));
            }
            for i in a..b {
                s.insert(i);
            }
        }
        Ok(s)
    }
}

/// `0-3,7,9-10` for shard numbers (sorted), for error messages.
pub fn format_shards(shards: &[usize]) -> String {
    let mut set = shards.to_vec();
    set.sort_unstable();
    set.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < set.len() {
        let mut j = i;
        while j + 1 < set.len() && set[j + 1] == set[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            set[i].to_string()
        } else {
            format!("{}-{}", set[i], set[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(v: &[(u64, u64)]) -> Vec<Region> {
        v.iter().map(|&(addr, len)| Region { addr, len }).collect()
    }

    #[test]
    fn cut_never_crosses_parts() {
        assert_eq!(
            cut(&[10, 0, 5], 4),
            vec![(0, 4), (4, 4), (8, 2), (10, 4), (14, 1)]
        );
        assert!(cut(&[0], 4).is_empty());
    }

    #[test]
    fn pieces_walk_both_layouts() {
        // Holder: one region; reader: two regions split at 6.
        let remote = reg(&[(1000, 20)]);
        let local = reg(&[(50, 6), (200, 14)]);
        let p = pieces(4, 8, &remote, &local).unwrap();
        assert_eq!(
            p,
            vec![
                Piece {
                    local: 54,
                    remote: 1004,
                    len: 2
                },
                Piece {
                    local: 200,
                    remote: 1006,
                    len: 6
                },
            ]
        );
        // Reader too small for the shard.
        assert!(pieces(4, 8, &remote, &reg(&[(0, 10)])).is_none());
        // Total is preserved for an awkward pair of layouts.
        let remote = reg(&[(0, 3), (100, 7), (300, 10)]);
        let local = reg(&[(5000, 4), (6000, 4), (7000, 12)]);
        let p = pieces(1, 18, &remote, &local).unwrap();
        assert_eq!(p.iter().map(|p| p.len).sum::<u64>(), 18);
        assert!(p.iter().all(|p| p.len > 0));
    }

    #[test]
    fn shard_set_round_trip_and_bounds() {
        let mut s = ShardSet::empty(70);
        for i in [0, 1, 2, 5, 64, 65, 69] {
            assert!(s.insert(i));
        }
        assert!(!s.insert(5));
        assert!(s.remove(5) && !s.remove(5) && s.insert(5));
        assert!(!s.insert(70));
        let r = s.to_ranges();
        assert_eq!(r, vec![[0, 3], [5, 6], [64, 66], [69, 70]]);
        assert_eq!(ShardSet::from_ranges(70, &r).unwrap(), s);
        assert!(ShardSet::from_ranges(70, &[[3, 71]]).is_err());
        assert!(ShardSet::from_ranges(70, &[[3, 3]]).is_err());
        assert!(ShardSet::full(3).is_full());
    }

    #[test]
    fn manifest_check_rejects_gaps() {
        let mut m = Manifest {
            name: "x".into(),
            id: 1,
            size: 10,
            shard_size: 4,
            parts: vec![Part {
                name: String::new(),
                len: 10,
            }],
            shards: cut(&[10], 4)
                .into_iter()
                .map(|(offset, len)| Shard {
                    offset,
                    len,
                    crc32: 0,
                })
                .collect(),
        };
        assert!(m.check().is_ok());
        m.shards[1].offset = 5;
        assert!(m.check().is_err());
    }

    #[test]
    fn shard_lists_are_compact() {
        assert_eq!(format_shards(&[9, 0, 1, 2, 3, 7, 10]), "0-3,7,9-10");
    }
}
