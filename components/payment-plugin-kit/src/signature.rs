//! The webhook signature scheme shared by Bazaar's providers (Stripe's shape):
//! header `bazaar-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`,
//! possibly several `v1=` entries (the sender signs with every active secret during rotation).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "bazaar-signature";
/// How far a signature's timestamp may be from now (either way), in seconds.
pub const TOLERANCE_SECS: u64 = 300;

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    MissingHeader,
    Malformed,
    StaleTimestamp,
    NoMatch,
    NoSecrets,
}

impl SignatureError {
    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing bazaar-signature header",
            Self::Malformed => "malformed bazaar-signature header",
            Self::StaleTimestamp => "signature timestamp outside the 300 s tolerance",
            Self::NoMatch => "no signature matches any configured secret",
            Self::NoSecrets => "no webhook secret configured",
        }
    }
}

/// The hex signature of `body` at `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The full header value for `body` signed with `secret` now (`timestamp`, unix seconds).
pub fn header_value(secret: &str, timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Verifies `headers` against `body`: the timestamp must be within the tolerance of `now_secs`
/// and one `v1` signature must match one of `secrets` (compared in constant time).
pub fn verify(
    headers: &[(String, String)],
    body: &[u8],
    secrets: &[&str],
    now_secs: u64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    let header = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(HEADER))
        .map(|(_, value)| value.as_str())
        .ok_or(SignatureError::MissingHeader)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => {
                candidates.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            // Unknown schemes are ignored, as Stripe does, so new ones can be added.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if timestamp.abs_diff(now_secs) > TOLERANCE_SECS {
        return Err(SignatureError::StaleTimestamp);
    }
    let mut matched = false;
    for secret in secrets {
        let expected = hex::decode(sign(secret, timestamp, body)).expect("own hex");
        for candidate in &candidates {
            // Non-short-circuiting so timing does not reveal which secret matched.
            matched |= bool::from(expected.ct_eq(candidate));
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// Splits a comma-separated secrets setting into its non-empty entries.
pub fn secrets(setting: Option<&str>) -> Vec<&str> {
    setting
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: String) -> Vec<(String, String)> {
        vec![("Bazaar-Signature".to_string(), value)]
    }

    #[test]
    fn accepts_any_configured_secret() {
        let body = br#"{"id":"evt_1"}"#;
        let h = headers(header_value("old", 1000, body));
        assert_eq!(verify(&h, body, &["new", "old"], 1000), Ok(()));
    }

    #[test]
    fn rejects_tampered_body_stale_and_future_timestamps() {
        let body = br#"{"id":"evt_1"}"#;
        let h = headers(header_value("s", 1000, body));
        assert_eq!(
            verify(&h, b"{\"id\":\"evt_2\"}", &["s"], 1000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&h, body, &["s"], 1301),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            verify(&h, body, &["s"], 699),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(verify(&h, body, &["s"], 1300), Ok(()));
    }

    #[test]
    fn rejects_malformed_and_missing_headers() {
        assert_eq!(
            verify(&[], b"", &["s"], 0),
            Err(SignatureError::MissingHeader)
        );
        for bad in ["t=x,v1=00", "v1=00", "t=1", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify(&headers(bad.to_string()), b"", &["s"], 1),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(verify(&[], b"", &[], 0), Err(SignatureError::NoSecrets));
    }
}
