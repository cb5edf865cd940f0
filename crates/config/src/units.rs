//! Sizes and durations as people write them, with the reference's meaning. This module is the
//! one owner of that parsing: every flag (as a clap `value_parser`), every configuration file
//! (through [`serde_size`] / [`serde_duration_ms`]) and the Python module call it.
//!
//! Sizes ([`parse_size`]): a number, optionally followed by a unit, case-insensitive, spaces
//! allowed between them. Every unit is binary, as in the reference (`K`, `KB` and `KiB` all mean
//! 1024; `M`/`MB`/`MiB` 2^20; then `G`, `T`, `P`). The number may have a fraction or an exponent
//! (`1.5GiB`, `0.5k`, `1e9`); a result that is not a whole number of bytes is truncated, as the
//! reference's Python configuration does. Negative numbers, percentages, unknown units and values
//! past `u64::MAX` are refused.
//!
//! Durations ([`parse_duration`]): a number with a unit `ns`, `us` (`µs`), `ms`, `s`, `m`
//! (`min`), `h`, or a bare number, which means **seconds**. Fractions allowed (`1.5s`);
//! negative values refused.
//!
//! [`format_size`] prints what [`parse_size`] reads back: exact multiples as `64KiB`, others
//! with one decimal (`1.5GiB`, approximate) and small values as `1000B`.

use std::fmt;
use std::time::Duration;

/// A size or duration that could not be read; the message names the input and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size {input:?}: {reason} (e.g. 4096, 64KiB, 1.5GiB; K/KB/KiB all mean 1024)")]
    Size { input: String, reason: String },
    #[error(
        "invalid duration {input:?}: {reason} (e.g. 500ms, 2s, 1.5m, 1h; a bare number is seconds)"
    )]
    Duration { input: String, reason: String },
}

/// Split `"1.5 GiB"` into `("1.5", "gib")`: the number (digits, one `.`, an optional exponent)
/// and the lower-cased unit after it.
fn split_number(s: &str) -> (&str, String) {
    let t = s.trim();
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    // An exponent: `e` followed by digits (with an optional sign).
    if i > 0 && i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    let (num, unit) = t.split_at(i);
    (num, unit.trim().to_lowercase())
}

/// Bytes from a human-written size (see the module doc for the spellings).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let bad = |reason: &str| UnitError::Size {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    let (num, unit) = split_number(s);
    if num.is_empty() {
        return Err(bad("expected a non-negative number"));
    }
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| bad("too large"));
    }
    let v: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let bytes = v * mult as f64;
    // `u64::MAX as f64` rounds up to 2^64, which itself does not fit.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// [`parse_size`] for fields held as `usize` (buffer lengths).
pub fn parse_size_usize(s: &str) -> Result<usize, UnitError> {
    let n = parse_size(s)?;
    usize::try_from(n).map_err(|_| UnitError::Size {
        input: s.to_string(),
        reason: "too large for this machine".into(),
    })
}

/// A duration from a human-written one (see the module doc; a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let bad = |reason: &str| UnitError::Duration {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    let (num, unit) = split_number(s);
    if num.is_empty() {
        return Err(bad("expected a non-negative number"));
    }
    let v: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let secs = match unit.as_str() {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "" | "s" | "sec" | "secs" => v,
        "m" | "min" | "mins" => v * 60.0,
        "h" | "hr" => v * 3600.0,
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
}

/// A size as people read it, in the spelling [`parse_size`] takes back: `64KiB`, `1.5GiB`,
/// `1000B` (see the module doc).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{}{name}", bytes / unit)
            } else {
                format!("{:.1}{name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes}B")
}

/// Serde for a size field: reads an integer (bytes) or a string in [`parse_size`]'s spellings,
/// writes an integer. Use as `#[serde(with = "mooncake_config::units::serde_size")]`.
pub mod serde_size {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer, T: Copy + TryInto<u64>>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64((*v).try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"64KiB\" or \"1.5GiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("invalid size {v}: negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse_size(v).map_err(E::custom)
            }
        }
        let n = d.deserialize_any(V)?;
        T::try_from(n).map_err(|_| de::Error::custom(format!("size {n} too large")))
    }
}

/// Serde for a duration field: reads an integer (milliseconds, the unit the reference's files
/// use) or a string in [`parse_duration`]'s spellings (`"5s"`; a bare number in a string is
/// milliseconds too), writes integer milliseconds.
pub mod serde_duration_ms {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("milliseconds, or a string such as \"500ms\" or \"5s\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_millis)
                    .map_err(|_| E::custom(format!("invalid duration {v}: negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                // A bare number means milliseconds here, as the integer form does.
                match v.trim().parse::<u64>() {
                    Ok(ms) => Ok(Duration::from_millis(ms)),
                    Err(_) => parse_duration(v).map_err(E::custom),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The spellings every size entry point must read alike (`(input, bytes)`; `None`: refused).
/// Shared by this crate's tests and the CLI's test over all size flags.
pub const SIZE_SPELLINGS: &[(&str, Option<u64>)] = &[
    ("4096", Some(4096)),
    ("0", Some(0)),
    ("1k", Some(1 << 10)),
    ("1K", Some(1 << 10)),
    ("1KB", Some(1 << 10)),
    ("1KiB", Some(1 << 10)),
    ("64kib", Some(64 << 10)),
    ("1MB", Some(1 << 20)),
    ("1MiB", Some(1 << 20)),
    ("4M", Some(4 << 20)),
    ("16 MB", Some(16 << 20)),
    ("1GB", Some(1 << 30)),
    ("1.5GiB", Some(3 << 29)),
    ("0.5KiB", Some(512)),
    ("2TiB", Some(2 << 40)),
    ("1e6", Some(1_000_000)),
    ("", None),
    ("MiB", None),
    ("-1", None),
    ("-1MiB", None),
    ("12XB", None),
    ("50%", None),
    ("1 parsec", None),
    ("99999999999999T", None),
];

/// The spellings every duration entry point must read alike (`(input, duration)`; `None`: refused).
pub const DURATION_SPELLINGS: &[(&str, Option<Duration>)] = &[
    ("2", Some(Duration::from_secs(2))),
    ("2s", Some(Duration::from_secs(2))),
    ("1.5s", Some(Duration::from_millis(1500))),
    ("500ms", Some(Duration::from_millis(500))),
    ("250us", Some(Duration::from_micros(250))),
    ("1m", Some(Duration::from_secs(60))),
    ("2min", Some(Duration::from_secs(120))),
    ("1h", Some(Duration::from_secs(3600))),
    ("0s", Some(Duration::ZERO)),
    ("", None),
    ("s", None),
    ("-1s", None),
    ("5 fortnights", None),
    ("3d", None),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_spellings() {
        for &(s, want) in SIZE_SPELLINGS {
            assert_eq!(parse_size(s).ok(), want, "parse_size({s:?})");
        }
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
        assert!(parse_size("16PiB").is_ok() && parse_size("16384PiB").is_err());
        assert_eq!(
            parse_size("1.3"),
            Ok(1),
            "fractions of a byte are truncated"
        );
        assert_eq!(parse_size_usize("64KiB"), Ok(64 << 10));
    }

    #[test]
    fn duration_spellings() {
        for &(s, want) in DURATION_SPELLINGS {
            assert_eq!(parse_duration(s).ok(), want, "parse_duration({s:?})");
        }
    }

    #[test]
    fn errors_name_the_input() {
        let e = parse_size("12XB").unwrap_err().to_string();
        assert!(e.contains("\"12XB\"") && e.contains("unknown unit"), "{e}");
        let e = parse_duration("3d").unwrap_err().to_string();
        assert!(e.contains("\"3d\""), "{e}");
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(3 << 29), "1.5GiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
        for n in [0, 1, 1023, 1 << 10, 4 << 20, 7 << 30, 3 << 40] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn serde_fields() {
        #[derive(serde::Deserialize, serde::Serialize, Debug)]
        struct C {
            #[serde(with = "serde_size")]
            size: u64,
            #[serde(with = "serde_size")]
            len: usize,
            #[serde(with = "serde_duration_ms")]
            ttl: Duration,
        }
        let c: C = toml::from_str("size = \"1.5GiB\"\nlen = 4096\nttl = \"2s\"").unwrap();
        assert_eq!(
            (c.size, c.len, c.ttl),
            (3 << 29, 4096, Duration::from_secs(2))
        );
        let c: C = toml::from_str("size = 1\nlen = \"1k\"\nttl = 250").unwrap();
        assert_eq!(
            (c.size, c.len, c.ttl),
            (1, 1024, Duration::from_millis(250))
        );
        assert!(toml::from_str::<C>("size = \"1 parsec\"\nlen = 1\nttl = 1").is_err());
        assert!(toml::from_str::<C>("size = -1\nlen = 1\nttl = 1").is_err());
        let back = toml::to_string(&c).unwrap();
        assert!(
            back.contains("len = 1024") && back.contains("ttl = 250"),
            "{back}"
        );
    }
}
