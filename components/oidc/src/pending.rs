//! Pending logins: what `start` remembers for `callback`, keyed by `state`.
//!
//! A record holds the provider, the PKCE verifier, the nonce, the redirect URI and the SHA-256
//! of the browser-binding cookie, and expires after [`LOGIN_TTL_MS`]. It is stored under a hash
//! of `state` (a dump of the store yields no usable state) and deleted before it is checked, so
//! each state is usable at most once whatever the outcome.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::ProviderName;
use crate::pkce::{CodeVerifier, is_pkce_token, random_token, sha256_b64};

/// How long a user has between `start` and `callback`.
pub const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

/// What is stored for one pending login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub provider: ProviderName,
    verifier: String,
    pub nonce: String,
    /// base64url(SHA-256(binding cookie value)).
    binding_hash: String,
    pub redirect_uri: String,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("provider", &self.provider)
            .field("redirect_uri", &self.redirect_uri)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// A login just begun: the record to store, and the values that go to the browser.
pub struct NewLogin {
    /// The `state` parameter of the authorization request.
    pub state: String,
    /// The binding cookie's value.
    pub binding: String,
    pub verifier: CodeVerifier,
    pub record: PendingLogin,
}

/// Why a callback's pending login is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, already used or expired state.
    UnknownOrExpired,
    /// The state was issued for another provider than the callback's path names.
    WrongProvider,
    /// The request carries no binding cookie: a different browser, or cookies blocked.
    MissingCookie,
    /// The cookie does not belong to this login (login CSRF, or a newer login in this browser).
    CookieMismatch,
}

impl PendingLogin {
    /// Begins a login for `provider`, expiring [`LOGIN_TTL_MS`] after `now_ms`.
    pub fn begin(provider: ProviderName, redirect_uri: String, now_ms: i64) -> NewLogin {
        let binding = random_token();
        let verifier = CodeVerifier::generate();
        NewLogin {
            state: random_token(),
            record: PendingLogin {
                provider,
                verifier: verifier.as_str().to_owned(),
                nonce: random_token(),
                binding_hash: sha256_b64(&binding),
                redirect_uri,
                expires_at_ms: now_ms.saturating_add(LOGIN_TTL_MS),
            },
            binding,
            verifier,
        }
    }

    /// The key-value key of the login with `state`; `None` when `state` cannot be one of ours
    /// (so garbage never reaches the store).
    pub fn key(state: &str) -> Option<String> {
        is_pkce_token(state).then(|| format!("state:{}", sha256_b64(state)))
    }

    /// Accepts the login for a callback on `provider` with the binding cookie `cookie` at `now_ms`.
    pub fn accept(
        &self,
        provider: &ProviderName,
        cookie: Option<&str>,
        now_ms: i64,
    ) -> Result<CodeVerifier, Refusal> {
        if now_ms >= self.expires_at_ms {
            return Err(Refusal::UnknownOrExpired);
        }
        if &self.provider != provider {
            return Err(Refusal::WrongProvider);
        }
        let cookie = cookie.ok_or(Refusal::MissingCookie)?;
        let presented = sha256_b64(cookie);
        if !bool::from(presented.as_bytes().ct_eq(self.binding_hash.as_bytes())) {
            return Err(Refusal::CookieMismatch);
        }
        CodeVerifier::parse(&self.verifier).map_err(|_| Refusal::UnknownOrExpired)
    }

    /// Seconds until expiry (the store entry's lifetime hint).
    pub fn remaining_secs(&self, now_ms: i64) -> u64 {
        u64::try_from((self.expires_at_ms - now_ms).max(0) / 1000).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> ProviderName {
        ProviderName::parse(name).unwrap()
    }

    fn begin() -> NewLogin {
        PendingLogin::begin(provider("local"), "https://shop/cb".into(), 1_000)
    }

    #[test]
    fn fresh_login_has_independent_random_values() {
        let login = begin();
        assert!(is_pkce_token(&login.state));
        assert!(is_pkce_token(&login.binding));
        assert!(is_pkce_token(&login.record.nonce));
        let values = [
            &login.state,
            &login.binding,
            &login.record.nonce,
            &login.record.verifier,
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(login.record.expires_at_ms, 1_000 + LOGIN_TTL_MS);
        assert_ne!(
            login.record.binding_hash, login.binding,
            "only the hash is stored"
        );
    }

    #[test]
    fn accepts_the_matching_cookie_before_expiry() {
        let login = begin();
        let verifier = login
            .record
            .accept(
                &provider("local"),
                Some(&login.binding),
                1_000 + LOGIN_TTL_MS - 1,
            )
            .unwrap();
        assert_eq!(verifier, login.verifier);
    }

    #[test]
    fn refuses_expired_wrong_provider_and_bad_cookies() {
        let login = begin();
        let r = &login.record;
        let now = 2_000;
        assert_eq!(
            r.accept(
                &provider("local"),
                Some(&login.binding),
                1_000 + LOGIN_TTL_MS
            ),
            Err(Refusal::UnknownOrExpired)
        );
        assert_eq!(
            r.accept(&provider("google"), Some(&login.binding), now),
            Err(Refusal::WrongProvider)
        );
        assert_eq!(
            r.accept(&provider("local"), None, now),
            Err(Refusal::MissingCookie)
        );
        assert_eq!(
            r.accept(&provider("local"), Some(&begin().binding), now),
            Err(Refusal::CookieMismatch)
        );
    }

    #[test]
    fn keys_hash_the_state_and_refuse_garbage() {
        let login = begin();
        let key = PendingLogin::key(&login.state).unwrap();
        assert!(key.starts_with("state:"));
        assert!(!key.contains(&login.state));
        assert_eq!(PendingLogin::key(&login.state), Some(key));
        assert_eq!(PendingLogin::key("short"), None);
        assert_eq!(PendingLogin::key(&"x".repeat(200)), None);
        assert_eq!(PendingLogin::key(&format!("{}/", "a".repeat(50))), None);
    }

    #[test]
    fn record_round_trips_through_json_and_debug_hides_secrets() {
        let login = begin();
        let json = serde_json::to_string(&login.record).unwrap();
        let back: PendingLogin = serde_json::from_str(&json).unwrap();
        assert_eq!(back, login.record);
        let debug = format!("{:?}", login.record);
        assert!(!debug.contains(&login.record.nonce));
        assert!(!debug.contains(login.verifier.as_str()));
    }

    #[test]
    fn remaining_secs_never_negative() {
        let login = begin();
        assert_eq!(login.record.remaining_secs(1_000), 600);
        assert_eq!(login.record.remaining_secs(i64::MAX), 0);
    }
}
