//! Per-client rate limiting: the generic cell rate algorithm (GCRA), i.e. a token bucket of
//! `limit` requests that refills one request every `60 s / limit`, kept as one number per client.
//!
//! State: the *theoretical arrival time* (TAT, Unix ms) — when the client's bucket will be full
//! again. A request at `now` is allowed when `max(TAT, now) + interval - now <= 60 s`, and then
//! moves TAT to `max(TAT, now) + interval`. A client can thus burst `limit` requests and then
//! sustain `limit` per minute; a denied request does not change the state.
//!
//! The key is the verified user id for authenticated requests (a user keeps one budget across
//! addresses), else the client IP. The state lives in the `gateway` key-value store, which offers
//! no atomic read-modify-write: see [`RateLimiter`] for the race this allows and its bound.

use std::num::NonZeroU32;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

const WINDOW_MS: i64 = 60_000;

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RESET_HEADER: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Who a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// A verified user id.
    User(String),
    /// The client's IP address.
    Address(String),
    /// Neither is known (e.g. a chained call, which has no client address).
    Unknown,
}

impl ClientKey {
    /// The key-value store key of this client's state.
    pub fn store_key(&self) -> String {
        let raw = match self {
            ClientKey::User(id) => format!("rl:u:{id}"),
            ClientKey::Address(ip) => format!("rl:a:{ip}"),
            ClientKey::Unknown => "rl:unknown".to_owned(),
        };
        // Keys stay short whatever a (signed, hence trusted) user id looks like.
        if raw.len() <= 200 {
            raw
        } else {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            raw.hash(&mut hasher);
            format!("rl:h:{:016x}:{}", hasher.finish(), &raw[..64])
        }
    }
}

/// The outcome of charging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests the client could still send right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// For a denied request: seconds until one request will be allowed.
    pub retry_after_secs: Option<u64>,
    /// The state to store (only when allowed).
    pub new_tat_ms: Option<i64>,
}

/// Charges one request at `now_ms` against `limit` per minute, given the stored TAT.
pub fn decide(limit: NonZeroU32, stored_tat_ms: Option<i64>, now_ms: i64) -> Decision {
    let interval = WINDOW_MS / i64::from(limit.get());
    // A TAT far in the future (clock jump, corrupted value) is capped to a full window.
    let tat = stored_tat_ms
        .unwrap_or(now_ms)
        .clamp(now_ms, now_ms + WINDOW_MS);
    let new_tat = tat + interval;
    let ceil_secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
    if new_tat - now_ms > WINDOW_MS {
        let retry_ms = new_tat - WINDOW_MS - now_ms;
        return Decision {
            allowed: false,
            limit: limit.get(),
            remaining: 0,
            reset_secs: ceil_secs(tat - now_ms),
            retry_after_secs: Some(ceil_secs(retry_ms).max(1)),
            new_tat_ms: None,
        };
    }
    let remaining = (WINDOW_MS - (new_tat - now_ms)) / interval;
    Decision {
        allowed: true,
        limit: limit.get(),
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_secs: ceil_secs(new_tat - now_ms),
        retry_after_secs: None,
        new_tat_ms: Some(new_tat),
    }
}

/// Parses a stored TAT (decimal Unix ms); anything else counts as no state.
pub fn parse_state(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Sets `RateLimit-Limit`/`-Remaining`/`-Reset` (and `Retry-After` when denied).
pub fn set_headers(decision: &Decision, headers: &mut HeaderMap) {
    headers.insert(LIMIT_HEADER, HeaderValue::from(decision.limit));
    headers.insert(REMAINING_HEADER, HeaderValue::from(decision.remaining));
    headers.insert(RESET_HEADER, HeaderValue::from(decision.reset_secs));
    if let Some(retry) = decision.retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry));
    }
}

/// Reads and writes rate-limit state in a key-value store.
///
/// The race: the store has get and set but no compare-and-swap or increment, so two requests of
/// the same client handled at the same moment can both read the same TAT and both write
/// `TAT + interval` — the second write hides the first charge. Over-admission is therefore
/// bounded by the number of that client's requests whose read→write windows overlap: with `c`
/// requests in flight at once, at most `c - 1` extra requests get through per overlap, and `c` is
/// itself capped by the runner's concurrency limit (`--max-concurrent-instances`). Sequential
/// requests are counted exactly, and the limiter never *under*-admits. An attacker who wants more
/// than the limit must keep many requests in flight concurrently, which the concurrency cap and
/// upstream timeouts bound.
pub struct RateLimiter<'a, S> {
    pub store: &'a S,
}

impl<S: crate::ports::Store> RateLimiter<'_, S> {
    /// Charges one request; on a store failure the request is allowed (fail open: an outage of the
    /// limiter's store must not take the shop down) and the error is returned for logging.
    pub fn charge(
        &self,
        key: &ClientKey,
        limit: NonZeroU32,
        now_ms: i64,
    ) -> (Decision, Option<String>) {
        let store_key = key.store_key();
        let (stored, read_error) = match self.store.get(&store_key) {
            Ok(value) => (value.as_deref().and_then(parse_state), None),
            Err(e) => (None, Some(e)),
        };
        let decision = decide(limit, stored, now_ms);
        if read_error.is_some() {
            return (decision, read_error);
        }
        let write_error = decision
            .new_tat_ms
            .and_then(|tat| self.store.set(&store_key, tat.to_string().as_bytes()).err());
        (decision, write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MemoryStore, Store};

    fn limit(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn burst_of_limit_then_denied() {
        let now = 1_000_000;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let d = decide(limit(3), tat, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = d.new_tat_ms;
        }
        let d = decide(limit(3), tat, now);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_secs, Some(20));
        assert_eq!(d.reset_secs, 60);
        assert_eq!(d.new_tat_ms, None);
    }

    #[test]
    fn refills_one_request_per_interval() {
        let now = 1_000_000;
        let mut tat = None;
        for _ in 0..3 {
            tat = decide(limit(3), tat, now).new_tat_ms;
        }
        assert!(!decide(limit(3), tat, now + 19_999).allowed);
        let d = decide(limit(3), tat, now + 20_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let d = decide(limit(3), tat, now + 60_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2, "a full minute later the bucket is full");
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let now = 0;
        let mut tat = None;
        for _ in 0..600 {
            tat = decide(limit(600), tat, now).new_tat_ms;
        }
        let d = decide(limit(600), tat, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, Some(1));
    }

    #[test]
    fn stale_or_absurd_state_is_tolerated() {
        let now = 10_000_000;
        let d = decide(limit(3), Some(5), now);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        let d = decide(limit(3), Some(i64::MAX), now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, Some(20));
        assert_eq!(parse_state(b"123"), Some(123));
        assert_eq!(parse_state(b"x"), None);
        assert_eq!(parse_state(&[0xff]), None);
    }

    #[test]
    fn headers_are_set() {
        let d = decide(limit(3), None, 0);
        let mut h = HeaderMap::new();
        set_headers(&d, &mut h);
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], "2");
        assert_eq!(h["ratelimit-reset"], "20");
        assert!(h.get("retry-after").is_none());
    }

    #[test]
    fn keys() {
        assert_eq!(ClientKey::User("u1".into()).store_key(), "rl:u:u1");
        assert_eq!(
            ClientKey::Address("10.0.0.1".into()).store_key(),
            "rl:a:10.0.0.1"
        );
        let long = ClientKey::User("x".repeat(1000)).store_key();
        assert!(long.len() < 100 && long.starts_with("rl:h:"));
        assert_ne!(long, ClientKey::User("x".repeat(999)).store_key());
    }

    #[test]
    fn limiter_charges_per_client_through_the_store() {
        let store = MemoryStore::default();
        let limiter = RateLimiter { store: &store };
        let a = ClientKey::Address("10.0.0.1".into());
        let b = ClientKey::User("u1".into());
        for _ in 0..2 {
            assert!(limiter.charge(&a, limit(2), 0).0.allowed);
        }
        assert!(!limiter.charge(&a, limit(2), 0).0.allowed);
        assert!(limiter.charge(&b, limit(2), 0).0.allowed);
        assert_eq!(store.get("rl:u:u1").unwrap().unwrap(), b"30000");
    }

    #[test]
    fn limiter_fails_open_on_store_errors() {
        let store = MemoryStore::failing();
        let limiter = RateLimiter { store: &store };
        let key = ClientKey::Unknown;
        for _ in 0..5 {
            let (decision, error) = limiter.charge(&key, limit(1), 0);
            assert!(decision.allowed);
            assert!(error.is_some());
        }
    }
}
