//! Access-token verification at the gateway.
//!
//! * No `Authorization` header: the request goes on anonymously (services answer 401 where a
//!   route needs a user).
//! * `Authorization: Bearer <token>` with a token [`bazaar_platform::jwt::verify`] accepts (pinned
//!   `EdDSA`, signature, `exp`/`nbf`/`iat` with [`LEEWAY_SECS`], `iss`, `aud`): the request goes on
//!   with the verified identity.
//! * Anything else (another scheme, an empty or repeated header, an invalid token): 401 at the
//!   gateway with `WWW-Authenticate: Bearer error="invalid_token"`, never forwarded.
//!
//! Public keys come from the users service (`GET http://users.spin.internal/internal/jwks`) and
//! are cached in the `gateway` key-value store under [`JWKS_KEY`] together with when they were
//! fetched and when a fetch was last attempted:
//! * a set younger than [`JWKS_TTL_MS`] is used as is;
//! * an older set is refetched, but at most once per [`REFETCH_INTERVAL_MS`];
//! * a token whose `kid` is unknown triggers a refetch (a key rotated in) — again at most once per
//!   [`REFETCH_INTERVAL_MS`], so a flood of made-up `kid`s cannot turn into a flood of calls to
//!   the users service;
//! * when the users service cannot be reached, the last good set is used for up to
//!   [`MAX_STALE_MS`] after it was fetched; with no usable set the gateway answers 503 (the
//!   token may well be valid, the gateway just cannot tell).
//!
//! Spin instances live for one request, so the store is the only cache. Two instances that find
//! the set stale at the same moment may both fetch it; that is bounded by the number of requests
//! in flight and harmless (both write the same keys).

use std::time::Duration;

use bazaar_platform::jwt::{self, Claims, Jwks, JwtError, Validation};
use bazaar_platform::{Logger, Problem};
use http::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::ports::{Store, Upstream};

/// Key of the cached JWKS in the `gateway` store.
pub const JWKS_KEY: &str = "jwks";
/// Where the users service publishes its public keys (a private route).
pub const JWKS_URL: &str = "http://users.spin.internal/internal/jwks";
/// A cached set younger than this is used without asking the users service.
pub const JWKS_TTL_MS: i64 = 300_000;
/// At most one fetch per this interval (stale set, unknown `kid`, or failed fetch).
pub const REFETCH_INTERVAL_MS: i64 = 30_000;
/// How long after its fetch a set may still be used while the users service is unreachable.
pub const MAX_STALE_MS: i64 = 3_600_000;
/// Allowed clock skew for `exp`/`nbf`/`iat`.
pub const LEEWAY_SECS: i64 = 30;
/// How long a JWKS fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The challenge sent with every 401 of the gateway (RFC 6750 §3).
pub const CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// What the client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Authorization` header.
    Absent,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// An `Authorization` header the gateway will not accept; the reason is for logs.
    Unusable(&'static str),
}

/// Reads the `Authorization` header(s).
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::Absent;
    };
    if values.next().is_some() {
        return Credentials::Unusable("more than one Authorization header");
    }
    let Ok(text) = value.to_str() else {
        return Credentials::Unusable("Authorization header is not visible ASCII");
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return Credentials::Unusable("Authorization header is not 'Bearer <token>'");
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::Unusable("Authorization scheme is not Bearer");
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Credentials::Unusable("Authorization header is not 'Bearer <token>'");
    }
    Credentials::Bearer(token)
}

/// The 401 for a refused token.
pub fn unauthorized(instance: &str) -> http::Response<Vec<u8>> {
    let mut response =
        Problem::unauthorized("The access token is missing, malformed, expired or invalid")
            .with_instance(instance)
            .to_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// Why a request carrying credentials was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The credentials are not acceptable: 401. The text is for logs.
    Invalid(String),
    /// No usable public keys (the users service is unreachable): 503.
    KeysUnavailable,
}

impl From<JwtError> for AuthError {
    fn from(e: JwtError) -> Self {
        AuthError::Invalid(e.to_string())
    }
}

/// The cached key set, as stored under [`JWKS_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedJwks {
    /// When `jwks` was fetched (Unix ms); 0 = never fetched successfully.
    pub fetched_at_ms: i64,
    /// When a fetch was last attempted, successful or not (Unix ms).
    pub checked_at_ms: i64,
    pub jwks: Jwks,
}

impl CachedJwks {
    fn is_fresh(&self, now_ms: i64) -> bool {
        self.fetched_at_ms > 0 && now_ms - self.fetched_at_ms < JWKS_TTL_MS
    }

    /// Whether another fetch is allowed now.
    pub fn may_refetch(&self, now_ms: i64) -> bool {
        now_ms - self.checked_at_ms >= REFETCH_INTERVAL_MS || now_ms < self.checked_at_ms
    }

    /// The keys, unless never fetched or too stale to trust.
    pub fn usable_keys(&self, now_ms: i64) -> Option<&Jwks> {
        (self.fetched_at_ms > 0 && now_ms - self.fetched_at_ms <= MAX_STALE_MS)
            .then_some(&self.jwks)
    }
}

/// Whether the cache must be refreshed before verifying.
pub fn needs_fetch(cached: Option<&CachedJwks>, now_ms: i64) -> bool {
    match cached {
        None => true,
        Some(c) => !c.is_fresh(now_ms) && c.may_refetch(now_ms),
    }
}

/// Verifies access tokens against the cached (and, when needed, refetched) JWKS.
pub struct Verifier<'a, U, S> {
    pub config: &'a Config,
    pub upstream: &'a U,
    pub store: &'a S,
    pub now_ms: i64,
    pub log: &'a Logger,
}

impl<U: Upstream, S: Store> Verifier<'_, U, S> {
    /// The verified claims of `token`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // Structure and the pinned algorithm first: garbage never costs a store read or a fetch.
        jwt::key_id(token)?;
        let mut cached = self.load();
        if needs_fetch(cached.as_ref(), self.now_ms) {
            cached = Some(self.refresh(cached).await);
        }
        let Some(entry) = cached else {
            return Err(AuthError::KeysUnavailable);
        };
        let keys = entry
            .usable_keys(self.now_ms)
            .ok_or(AuthError::KeysUnavailable)?;
        match jwt::verify(token, keys, &self.rules()) {
            Err(JwtError::UnknownKey(_)) if entry.may_refetch(self.now_ms) => {
                let entry = self.refresh(Some(entry)).await;
                let keys = entry
                    .usable_keys(self.now_ms)
                    .ok_or(AuthError::KeysUnavailable)?;
                Ok(jwt::verify(token, keys, &self.rules())?)
            }
            result => Ok(result?),
        }
    }

    fn rules(&self) -> Validation<'_> {
        Validation {
            issuer: &self.config.jwt_issuer,
            audience: &self.config.jwt_audience,
            now: self.now_ms.div_euclid(1000),
            leeway: LEEWAY_SECS,
        }
    }

    fn load(&self) -> Option<CachedJwks> {
        match self.store.get(JWKS_KEY) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    self.log.warn(
                        "cached JWKS unreadable; refetching",
                        &[("error", json!(e.to_string()))],
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.log
                    .warn("reading the JWKS cache failed", &[("error", json!(e))]);
                None
            }
        }
    }

    /// Fetches the set and stores the outcome; on failure keeps the previous keys and records the
    /// attempt (so the next try waits [`REFETCH_INTERVAL_MS`]).
    async fn refresh(&self, previous: Option<CachedJwks>) -> CachedJwks {
        let entry = match self.fetch().await {
            Ok(jwks) => {
                self.log.info(
                    "fetched JWKS",
                    &[(
                        "kids",
                        json!(jwks.keys.iter().map(|k| &k.kid).collect::<Vec<_>>()),
                    )],
                );
                CachedJwks {
                    fetched_at_ms: self.now_ms,
                    checked_at_ms: self.now_ms,
                    jwks,
                }
            }
            Err(e) => {
                self.log.warn(
                    "fetching JWKS from the users service failed",
                    &[("error", json!(e))],
                );
                let (fetched_at_ms, jwks) = previous
                    .map(|p| (p.fetched_at_ms, p.jwks))
                    .unwrap_or_default();
                CachedJwks {
                    fetched_at_ms,
                    checked_at_ms: self.now_ms,
                    jwks,
                }
            }
        };
        match serde_json::to_vec(&entry) {
            Ok(bytes) => {
                if let Err(e) = self.store.set(JWKS_KEY, &bytes) {
                    self.log
                        .warn("writing the JWKS cache failed", &[("error", json!(e))]);
                }
            }
            Err(e) => self.log.warn(
                "encoding the JWKS cache failed",
                &[("error", json!(e.to_string()))],
            ),
        }
        entry
    }

    async fn fetch(&self) -> Result<Jwks, String> {
        let request = http::Request::get(JWKS_URL)
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let response = self.upstream.send_within(request, FETCH_TIMEOUT).await?;
        if !response.status().is_success() {
            return Err(format!(
                "{JWKS_URL} answered {}",
                response.status().as_u16()
            ));
        }
        serde_json::from_slice::<Jwks>(response.body())
            .map_err(|e| format!("{JWKS_URL} answered an invalid JWK set: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MemoryStore;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use bazaar_platform::Role;
    use bazaar_platform::jwt::KeyPair;
    use futures::executor::block_on;
    use std::cell::{Cell, RefCell};

    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW: i64 = NOW_MS / 1000;

    /// Serves a JWKS that tests can change, counting fetches; `None` = unreachable.
    struct KeysUpstream {
        jwks: RefCell<Option<Jwks>>,
        fetches: Cell<usize>,
    }

    impl KeysUpstream {
        fn serving(keys: &[KeyPair]) -> Self {
            KeysUpstream {
                jwks: RefCell::new(Some(jwt::jwks(keys))),
                fetches: Cell::new(0),
            }
        }
    }

    impl Upstream for KeysUpstream {
        async fn send(
            &self,
            request: http::Request<Vec<u8>>,
        ) -> Result<http::Response<Vec<u8>>, String> {
            assert_eq!(request.uri(), JWKS_URL);
            self.fetches.set(self.fetches.get() + 1);
            match &*self.jwks.borrow() {
                Some(jwks) => Ok(http::Response::new(serde_json::to_vec(jwks).unwrap())),
                None => Err("connection refused".to_owned()),
            }
        }
    }

    fn key(kid: &str, byte: u8) -> KeyPair {
        KeyPair::from_seed(kid, [byte; 32])
    }

    fn claims() -> Claims {
        Claims {
            sub: "usr_1".into(),
            role: Role::Vendor,
            iss: "bazaar".into(),
            aud: "bazaar-api".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 900,
            jti: "j1".into(),
        }
    }

    fn verify_at(
        token: &str,
        upstream: &KeysUpstream,
        store: &MemoryStore,
        now_ms: i64,
    ) -> Result<Claims, AuthError> {
        let config = Config::default();
        let log = Logger::new("gateway-test");
        let verifier = Verifier {
            config: &config,
            upstream,
            store,
            now_ms,
            log: &log,
        };
        block_on(verifier.verify(token))
    }

    fn b64(v: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn credentials_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h), Credentials::Absent);
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(credentials(&h), Credentials::Bearer("abc.def.ghi"));
        h.insert("authorization", HeaderValue::from_static("bearer   abc"));
        assert_eq!(credentials(&h), Credentials::Bearer("abc"));
        for bad in [
            "Basic dXNlcjpwdw==",
            "Bearer",
            "Bearer ",
            "abc",
            "Bearer a b",
            "",
        ] {
            h.insert("authorization", HeaderValue::from_static(bad));
            assert!(
                matches!(credentials(&h), Credentials::Unusable(_)),
                "{bad:?}"
            );
        }
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        h.append("authorization", HeaderValue::from_static("Bearer b"));
        assert!(matches!(credentials(&h), Credentials::Unusable(_)));
    }

    #[test]
    fn unauthorized_has_challenge_and_problem() {
        let r = unauthorized("/api/v1/users/me");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], CHALLENGE);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }

    #[test]
    fn valid_token_is_verified_and_keys_are_cached() {
        let k = key("k1", 1);
        let up = KeysUpstream::serving(std::slice::from_ref(&k));
        let store = MemoryStore::default();
        let token = jwt::sign(&k, &claims());
        assert_eq!(verify_at(&token, &up, &store, NOW_MS), Ok(claims()));
        assert_eq!(verify_at(&token, &up, &store, NOW_MS + 1000), Ok(claims()));
        assert_eq!(up.fetches.get(), 1, "second verification uses the cache");
        let cached: CachedJwks =
            serde_json::from_slice(&store.get(JWKS_KEY).unwrap().unwrap()).unwrap();
        assert_eq!(cached.fetched_at_ms, NOW_MS);
        // After the TTL the set is refetched once.
        assert!(verify_at(&token, &up, &store, NOW_MS + JWKS_TTL_MS).is_ok());
        assert_eq!(up.fetches.get(), 2);
    }

    #[test]
    fn every_kind_of_bad_token_is_invalid() {
        let k = key("k1", 1);
        let up = KeysUpstream::serving(std::slice::from_ref(&k));
        let store = MemoryStore::default();
        let good = jwt::sign(&k, &claims());
        let (header, payload, signature) = {
            let mut parts = good.split('.');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        };
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims();
            f(&mut c);
            jwt::sign(&k, &c)
        };
        let mut tampered = claims();
        tampered.role = Role::Admin;
        let tampered = format!(
            "{header}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap())
        );
        let none = format!(
            "{}.{payload}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": "k1"}))
        );
        let hs256 = format!(
            "{}.{payload}.{signature}",
            b64(json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}))
        );
        let wrong_key = jwt::sign(&key("k1", 9), &claims());
        let unknown_kid = jwt::sign(&key("zz", 1), &claims());
        let cases = [
            ("expired", with(&|c| c.exp = NOW - 3600)),
            ("not yet valid", with(&|c| c.nbf = NOW + 3600)),
            ("wrong issuer", with(&|c| c.iss = "evil".into())),
            ("wrong audience", with(&|c| c.aud = "other".into())),
            ("tampered", tampered),
            ("alg none", none),
            ("hs256", hs256),
            ("same kid, wrong key", wrong_key),
            ("unknown kid", unknown_kid),
            ("garbage", "not-a-token".to_owned()),
        ];
        for (name, token) in cases {
            let result = verify_at(&token, &up, &store, NOW_MS);
            assert!(
                matches!(result, Err(AuthError::Invalid(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn garbage_never_reaches_the_store_or_upstream() {
        let up = KeysUpstream::serving(&[key("k1", 1)]);
        let store = MemoryStore::failing();
        let result = verify_at("garbage", &up, &store, NOW_MS);
        assert!(matches!(result, Err(AuthError::Invalid(_))));
        assert_eq!(up.fetches.get(), 0);
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let old = key("k1", 1);
        let up = KeysUpstream::serving(std::slice::from_ref(&old));
        let store = MemoryStore::default();
        assert!(verify_at(&jwt::sign(&old, &claims()), &up, &store, NOW_MS).is_ok());
        assert_eq!(up.fetches.get(), 1);

        // A flood of random kids within the interval: no further fetches.
        for i in 0..50 {
            let token = jwt::sign(&key(&format!("rnd{i}"), 7), &claims());
            assert!(verify_at(&token, &up, &store, NOW_MS + 10 + i).is_err());
        }
        assert_eq!(up.fetches.get(), 1);

        // A key rotated in is picked up on the first unknown kid after the interval.
        let new = key("k2", 2);
        *up.jwks.borrow_mut() = Some(jwt::jwks(&[new.clone(), old.clone()]));
        let later = NOW_MS + REFETCH_INTERVAL_MS;
        let mut c = claims();
        c.iat = later / 1000;
        c.nbf = later / 1000;
        assert!(verify_at(&jwt::sign(&new, &c), &up, &store, later).is_ok());
        assert_eq!(up.fetches.get(), 2);
        for i in 0..20 {
            let token = jwt::sign(&key(&format!("rnd{i}"), 7), &c);
            assert!(verify_at(&token, &up, &store, later + 1 + i).is_err());
        }
        assert_eq!(up.fetches.get(), 2);
    }

    #[test]
    fn users_down_serves_stale_keys_then_503() {
        let k = key("k1", 1);
        let up = KeysUpstream::serving(std::slice::from_ref(&k));
        let store = MemoryStore::default();
        let token = |at_ms: i64| {
            let mut c = claims();
            c.iat = at_ms / 1000;
            c.nbf = at_ms / 1000;
            c.exp = at_ms / 1000 + 900;
            jwt::sign(&k, &c)
        };
        assert!(verify_at(&token(NOW_MS), &up, &store, NOW_MS).is_ok());
        *up.jwks.borrow_mut() = None;

        let stale = NOW_MS + JWKS_TTL_MS + 1;
        assert!(
            verify_at(&token(stale), &up, &store, stale).is_ok(),
            "stale keys are used"
        );
        assert_eq!(up.fetches.get(), 2);
        assert!(verify_at(&token(stale), &up, &store, stale + 1000).is_ok());
        assert_eq!(up.fetches.get(), 2, "a failed fetch backs off");

        let too_old = NOW_MS + MAX_STALE_MS + 1;
        assert_eq!(
            verify_at(&token(too_old), &up, &store, too_old),
            Err(AuthError::KeysUnavailable)
        );
    }

    #[test]
    fn nothing_cached_and_users_down_is_unavailable_with_backoff() {
        let up = KeysUpstream {
            jwks: RefCell::new(None),
            fetches: Cell::new(0),
        };
        let store = MemoryStore::default();
        let token = jwt::sign(&key("k1", 1), &claims());
        for i in 0..5 {
            assert_eq!(
                verify_at(&token, &up, &store, NOW_MS + i),
                Err(AuthError::KeysUnavailable)
            );
        }
        assert_eq!(up.fetches.get(), 1);
    }

    #[test]
    fn broken_store_still_verifies_by_fetching() {
        let k = key("k1", 1);
        let up = KeysUpstream::serving(std::slice::from_ref(&k));
        let store = MemoryStore::failing();
        assert!(verify_at(&jwt::sign(&k, &claims()), &up, &store, NOW_MS).is_ok());
    }

    #[test]
    fn cache_policy() {
        let entry = CachedJwks {
            fetched_at_ms: NOW_MS,
            checked_at_ms: NOW_MS,
            jwks: Jwks::default(),
        };
        assert!(needs_fetch(None, NOW_MS));
        assert!(!needs_fetch(Some(&entry), NOW_MS + JWKS_TTL_MS - 1));
        assert!(needs_fetch(Some(&entry), NOW_MS + JWKS_TTL_MS));
        assert!(!entry.may_refetch(NOW_MS + REFETCH_INTERVAL_MS - 1));
        assert!(entry.may_refetch(NOW_MS + REFETCH_INTERVAL_MS));
        assert!(
            entry.may_refetch(NOW_MS - 1),
            "a clock that went back does not block fetches"
        );
        assert!(entry.usable_keys(NOW_MS + MAX_STALE_MS).is_some());
        assert!(entry.usable_keys(NOW_MS + MAX_STALE_MS + 1).is_none());
        let never = CachedJwks {
            fetched_at_ms: 0,
            ..entry
        };
        assert!(never.usable_keys(NOW_MS).is_none());
    }
}
