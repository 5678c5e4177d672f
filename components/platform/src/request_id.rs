//! Request ids (`x-request-id`).
//!
//! Rules (the API contract): a client-supplied id is kept if it is 1..=128 characters of
//! `[A-Za-z0-9._-]`; anything else (absent, empty, too long, other characters) is replaced by a
//! freshly generated id. The id is echoed on every response and forwarded on chained calls so one
//! request can be followed through every component's logs.
//!
//! Generated ids are random UUID v4 strings (`8-4-4-4-12` lower-case hex, which themselves satisfy
//! the rules above). The 122 random bits come from [`getrandom`], which on `wasm32-wasip2` calls
//! `wasi:random/random.get-random-u64` — the host's cryptographically secure generator, available
//! on every WASI 0.2 host (Spin, SpinKube, our runner) — and natively uses the OS generator.
//! Should that ever fail, we fall back to std's per-instance hash seed (`wasi:random/insecure-seed`
//! on wasip2) mixed with a counter and the clock: ids stay unique, they merely become guessable,
//! which is acceptable for a correlation id (it is never used as a secret).

use std::fmt;

/// Header carrying the request id, lower-case as HTTP/2 and wasi-http present it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied id we accept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A validated or generated request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// The client's id if valid, otherwise a new one.
    pub fn from_header(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or_else(Self::generate)
    }

    /// The id if `value` satisfies the rules, else `None`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::is_valid(value).then(|| Self(value.to_owned()))
    }

    /// Whether `value` is an acceptable request id: 1..=128 chars of `[A-Za-z0-9._-]`.
    pub fn is_valid(value: &str) -> bool {
        (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// A new random id (UUID v4).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            bytes = fallback_entropy();
        }
        Self::from_entropy(bytes)
    }

    /// Formats 16 bytes of entropy as a UUID v4 (version and variant bits are overwritten).
    /// Deterministic: exposed so callers with their own entropy source, and tests, can use it.
    pub fn from_entropy(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
        let mut out = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(out)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Non-cryptographic but unique-per-call entropy, used only if the host RNG fails.
fn fallback_entropy() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = [0u8; 16];
    for (half, chunk) in out.chunks_mut(8).enumerate() {
        // Each `RandomState::new()` is keyed from the per-instance seed plus a per-thread counter.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.write_usize(half);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_uuid_v4(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && s.bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && parts[2].starts_with('4')
            && matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn accepts_valid_client_ids() {
        for id in ["a", "abc-123", "A.B_C-d", "0", &"x".repeat(128)] {
            assert_eq!(RequestId::from_header(Some(id)).as_str(), id);
        }
    }

    #[test]
    fn replaces_invalid_client_ids() {
        let too_long = "x".repeat(129);
        for id in [
            "",
            " ",
            "a b",
            "abc/def",
            "ünicode",
            "x\n",
            "a:b",
            too_long.as_str(),
        ] {
            let got = RequestId::from_header(Some(id));
            assert_ne!(got.as_str(), id);
            assert!(is_uuid_v4(got.as_str()), "{got}");
        }
    }

    #[test]
    fn generates_when_absent() {
        let id = RequestId::from_header(None);
        assert!(is_uuid_v4(id.as_str()), "{id}");
        assert!(RequestId::is_valid(id.as_str()));
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids: HashSet<String> = (0..1000)
            .map(|_| RequestId::generate().into_string())
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn from_entropy_sets_version_and_variant() {
        let id = RequestId::from_entropy([0xff; 16]);
        assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = RequestId::from_entropy([0; 16]);
        assert_eq!(id.as_str(), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn fallback_entropy_differs_between_calls() {
        assert_ne!(fallback_entropy(), fallback_entropy());
        assert!(is_uuid_v4(
            RequestId::from_entropy(fallback_entropy()).as_str()
        ));
    }

    #[test]
    fn serialises_as_plain_string() {
        let id = RequestId::parse("abc").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert_eq!(id.to_string(), "abc");
    }
}
