//! Test payloads: deterministic pseudo-random bytes, and self-describing
//! values a reader can check without knowing what was written.

/// `len` deterministic pseudo-random bytes (xorshift64 from `seed`), so a
/// failure reproduces.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a, 64 bit.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A value that names itself: `fnv(key) | version | len | payload | checksum`
/// (little-endian words), so a reader can tell whether it got exactly the
/// object it asked for. `len` is at least 64.
pub fn tagged_value(key: &str, version: u64, len: usize) -> Vec<u8> {
    assert!(len >= 64, "a tagged value needs at least 64 bytes");
    let mut v = vec![0u8; len];
    let payload = pattern(
        len - 32,
        fnv(key.as_bytes()) ^ version.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    v[24..len - 8].copy_from_slice(&payload);
    v[0..8].copy_from_slice(&fnv(key.as_bytes()).to_le_bytes());
    v[8..16].copy_from_slice(&version.to_le_bytes());
    v[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    let sum = fnv(&v[..len - 8]);
    v[len - 8..].copy_from_slice(&sum.to_le_bytes());
    v
}

/// Check a [`tagged_value`]: its version, or why it is not an intact value of `key`.
pub fn check_tagged(key: &str, v: &[u8]) -> Result<u64, String> {
    if v.len() < 64 {
        return Err(format!("too short: {}", v.len()));
    }
    let n = v.len();
    let word = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().expect("8 bytes"));
    if word(0) != fnv(key.as_bytes()) {
        return Err("bytes of a different key".into());
    }
    if word(16) != n as u64 {
        return Err(format!("length field {} but {} bytes", word(16), n));
    }
    if word(n - 8) != fnv(&v[..n - 8]) {
        return Err("checksum mismatch (torn or corrupt)".into());
    }
    Ok(word(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_values_check_and_detect_damage() {
        let v = tagged_value("k", 7, 100);
        assert_eq!(check_tagged("k", &v), Ok(7));
        assert!(check_tagged("other", &v).is_err());
        let mut torn = v.clone();
        torn[50] ^= 1;
        assert!(check_tagged("k", &torn).unwrap_err().contains("checksum"));
        assert!(check_tagged("k", &v[..63]).is_err());
        assert_eq!(pattern(16, 3), pattern(16, 3));
        assert_ne!(pattern(16, 3), pattern(16, 4));
    }
}
