//! Small helpers: time, randomness, hashing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Now, RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    unix_to_rfc3339(now_unix())
}

/// Unix seconds to RFC 3339.
pub fn unix_to_rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `n` random bytes, base64url.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Inserts into a map kept in memory that must stay bounded: the entries no longer `live` go
/// first, then, at `max`, the one with the smallest `age_key` (the oldest) makes room.
pub(crate) fn insert_bounded<V, A: Ord>(
    map: &mut std::collections::HashMap<String, V>,
    max: usize,
    key: String,
    value: V,
    live: impl Fn(&V) -> bool,
    age_key: impl Fn(&V) -> A,
) {
    map.retain(|_, v| live(v));
    if map.len() >= max
        && let Some(k) = map
            .iter()
            .min_by_key(|(_, v)| age_key(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
    map.insert(key, value);
}

/// A random v4 UUID.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// SHA-256, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Minimal HTML escaping.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let s = unix_to_rfc3339(1_700_000_000);
        assert_eq!(parse_rfc3339(&s), Some(1_700_000_000));
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert_eq!(html_escape("<a&'\">"), "&lt;a&amp;&#39;&quot;&gt;");
    }
}
