//! Bazaar's access tokens: compact JWS with Ed25519 (`alg: EdDSA`, RFC 8037), a `kid` header so
//! keys can rotate.
//!
//! The users service signs ([`sign`]) with the first key of its `jwt_signing_keys` secret and
//! publishes the public halves as a JWKS ([`jwks`]); the gateway verifies ([`verify`]) against
//! that JWKS. Ed25519 rather than HMAC so the gateway (and anyone else who checks tokens) holds no
//! secret; `ed25519-dalek` is pure Rust and runs unchanged in `wasm32-wasip2`.
//!
//! The algorithm is pinned: a token whose header says anything but `EdDSA` (including `none`,
//! `HS256` signed with the public key as an HMAC secret, or `RS256`) is rejected before any key
//! is looked at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// The only `alg` Bazaar issues or accepts.
pub const ALGORITHM: &str = "EdDSA";
/// Longest token the verifier will look at (a real one is ~400 bytes).
const MAX_TOKEN_LEN: usize = 4096;

/// One signing key and the id published with it.
#[derive(Clone)]
pub struct KeyPair {
    pub kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyPair").field("kid", &self.kid).finish()
    }
}

impl KeyPair {
    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Self {
        KeyPair {
            kid: kid.into(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// Parses the `jwt_signing_keys` secret: comma-separated `kid=base64url(32-byte seed)`.
/// The first key signs; all are published for verification.
pub fn parse_signing_keys(text: &str) -> Result<Vec<KeyPair>, String> {
    let mut keys = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kid, seed) = entry
            .split_once('=')
            .ok_or_else(|| "each signing key must look like kid=base64url-seed".to_owned())?;
        let kid = kid.trim();
        if kid.is_empty()
            || kid.len() > 64
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(format!(
                "signing key id {kid:?} must be 1-64 characters of [A-Za-z0-9._-]"
            ));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(seed.trim().trim_end_matches('='))
            .map_err(|_| format!("signing key {kid}: the seed is not base64url"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("signing key {kid}: the seed must be 32 bytes"))?;
        if keys.iter().any(|k: &KeyPair| k.kid == kid) {
            return Err(format!("signing key id {kid} appears twice"));
        }
        keys.push(KeyPair::from_seed(kid, seed));
    }
    if keys.is_empty() {
        return Err("no signing key configured".to_owned());
    }
    Ok(keys)
}

/// The claims of a Bazaar access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    /// Unix seconds.
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id (for audit logs).
    pub jti: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the verifier would have to understand (RFC 7515 §4.1.11); we understand none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Signs `claims` with `key` into a compact JWS.
pub fn sign(key: &KeyPair, claims: &Claims) -> String {
    let header = Header {
        alg: ALGORITHM.to_owned(),
        typ: Some("JWT".to_owned()),
        kid: Some(key.kid.clone()),
        crit: None,
    };
    let header = serde_json::to_value(&header).unwrap_or_default();
    // `crit: null` would be an odd header; drop absent fields.
    let header: serde_json::Map<String, serde_json::Value> = header
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default())
    );
    let signature = key.key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// A JSON Web Key (RFC 8037 OKP) as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    /// base64url public key.
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JWK Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The verifying key for `kid`, if the set has a usable Ed25519 key under that id.
    pub fn key(&self, kid: &str) -> Option<VerifyingKey> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid == kid && k.kty == "OKP" && k.crv == "Ed25519")?;
        if jwk.alg.as_deref().is_some_and(|alg| alg != ALGORITHM) {
            return None;
        }
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&jwk.x).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }
}

/// The public JWKS of `keys`.
pub fn jwks(keys: &[KeyPair]) -> Jwks {
    Jwks {
        keys: keys
            .iter()
            .map(|k| Jwk {
                kty: "OKP".to_owned(),
                crv: "Ed25519".to_owned(),
                kid: k.kid.clone(),
                x: URL_SAFE_NO_PAD.encode(k.public_key()),
                alg: Some(ALGORITHM.to_owned()),
                use_: Some("sig".to_owned()),
            })
            .collect(),
    }
}

/// Why a token was refused. The gateway answers 401 for all of them; the variant goes to logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    /// `alg` is not `EdDSA` (e.g. `none`, `HS256`).
    AlgorithmNotAllowed(String),
    /// No published key has this `kid` (maybe rotated in; the caller may refresh its JWKS).
    UnknownKey(String),
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::AlgorithmNotAllowed(alg) => write!(f, "algorithm {alg:?} is not accepted"),
            JwtError::UnknownKey(kid) => write!(f, "unknown signing key {kid:?}"),
            JwtError::BadSignature => f.write_str("signature does not verify"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token not valid yet"),
            JwtError::WrongIssuer => f.write_str("wrong issuer"),
            JwtError::WrongAudience => f.write_str("wrong audience"),
        }
    }
}

/// What a valid token must satisfy.
#[derive(Debug, Clone)]
pub struct Validation<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Allowed clock skew for `exp`/`nbf`/`iat`, in seconds.
    pub leeway: i64,
}

/// The `kid` of a token whose header is well-formed and pins [`ALGORITHM`], without checking
/// anything else (lets the caller refresh its JWKS before a full [`verify`]).
pub fn key_id(token: &str) -> Result<String, JwtError> {
    let (header, _, _) = split(token)?;
    Ok(header.kid.unwrap_or_default())
}

fn split(token: &str) -> Result<(Header, &str, &str), JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    if header.alg != ALGORITHM {
        return Err(JwtError::AlgorithmNotAllowed(header.alg));
    }
    if header.crit.is_some() {
        return Err(JwtError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
    {
        return Err(JwtError::Malformed("typ must be JWT"));
    }
    match &header.kid {
        Some(kid) if !kid.is_empty() => {}
        _ => return Err(JwtError::Malformed("kid is missing")),
    }
    Ok((header, p, s))
}

/// Verifies signature, algorithm, `exp`, `nbf`, `iat`, `iss` and `aud`; returns the claims.
pub fn verify(token: &str, keys: &Jwks, rules: &Validation<'_>) -> Result<Claims, JwtError> {
    let (header, payload, signature) = split(token)?;
    let signature_len = signature.len();
    let kid = header.kid.unwrap_or_default();
    let key = keys.key(&kid).ok_or(JwtError::UnknownKey(kid))?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?
        .try_into()
        .map_err(|_| JwtError::BadSignature)?;
    // `header.payload`: everything before the last dot.
    let signing_input = &token[..token.len() - signature_len - 1];
    key.verify_strict(
        signing_input.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| JwtError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JwtError::Malformed("payload is not base64url"))?,
    )
    .map_err(|_| JwtError::Malformed("claims are missing or of the wrong type"))?;
    if claims.exp + rules.leeway <= rules.now {
        return Err(JwtError::Expired);
    }
    if claims.nbf - rules.leeway > rules.now || claims.iat - rules.leeway > rules.now {
        return Err(JwtError::NotYetValid);
    }
    if claims.iss != rules.issuer {
        return Err(JwtError::WrongIssuer);
    }
    if claims.aud != rules.audience {
        return Err(JwtError::WrongAudience);
    }
    if claims.sub.is_empty() {
        return Err(JwtError::Malformed("sub is empty"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, byte: u8) -> KeyPair {
        KeyPair::from_seed(kid, [byte; 32])
    }

    fn claims(now: i64) -> Claims {
        Claims {
            sub: "usr_1".into(),
            role: Role::Customer,
            iss: "bazaar".into(),
            aud: "bazaar-api".into(),
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: "j1".into(),
        }
    }

    fn rules(now: i64) -> Validation<'static> {
        Validation {
            issuer: "bazaar",
            audience: "bazaar-api",
            now,
            leeway: 30,
        }
    }

    fn b64(v: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = key("k0", 1);
        let new = key("k1", 2);
        let set = jwks(&[new.clone(), old.clone()]);
        let now = 1_800_000_000;
        for k in [&old, &new] {
            let token = sign(k, &claims(now));
            assert_eq!(key_id(&token).unwrap(), k.kid);
            assert_eq!(verify(&token, &set, &rules(now)).unwrap(), claims(now));
        }
        let only_new = jwks(&[new]);
        assert_eq!(
            verify(&sign(&old, &claims(now)), &only_new, &rules(now)),
            Err(JwtError::UnknownKey("k0".into()))
        );
    }

    #[test]
    fn time_issuer_and_audience_rules() {
        let k = key("k", 3);
        let set = jwks(std::slice::from_ref(&k));
        let now = 1_800_000_000;
        let token = sign(&k, &claims(now));
        assert_eq!(
            verify(&token, &set, &rules(now + 930)),
            Err(JwtError::Expired)
        );
        assert!(
            verify(&token, &set, &rules(now + 900)).is_ok(),
            "within leeway"
        );
        assert_eq!(
            verify(&token, &set, &rules(now - 31)),
            Err(JwtError::NotYetValid)
        );
        let mut other = rules(now);
        other.issuer = "evil";
        assert_eq!(verify(&token, &set, &other), Err(JwtError::WrongIssuer));
        let mut other = rules(now);
        other.audience = "other-api";
        assert_eq!(verify(&token, &set, &other), Err(JwtError::WrongAudience));
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let k = key("k", 4);
        let set = jwks(std::slice::from_ref(&k));
        let now = 1_800_000_000;
        let token = sign(&k, &claims(now));
        let parts: Vec<&str> = token.split('.').collect();
        let mut admin = claims(now);
        admin.role = Role::Admin;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap()),
            parts[2]
        );
        assert_eq!(
            verify(&forged, &set, &rules(now)),
            Err(JwtError::BadSignature)
        );
        // Same kid, different key.
        let impostor = sign(&key("k", 5), &admin);
        assert_eq!(
            verify(&impostor, &set, &rules(now)),
            Err(JwtError::BadSignature)
        );
        assert!(verify("a.b", &set, &rules(now)).is_err());
        assert!(verify(&"a".repeat(5000), &set, &rules(now)).is_err());
    }

    #[test]
    fn algorithm_is_pinned() {
        let k = key("k", 6);
        let set = jwks(std::slice::from_ref(&k));
        let now = 1_800_000_000;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now)).unwrap());
        let none = format!(
            "{}.{body}.",
            b64(serde_json::json!({"alg":"none","kid":"k"}))
        );
        assert_eq!(
            verify(&none, &set, &rules(now)),
            Err(JwtError::AlgorithmNotAllowed("none".into()))
        );
        // HS256 "signed" with the public key as the HMAC secret (algorithm confusion).
        let hs = format!(
            "{}.{body}.{}",
            b64(serde_json::json!({"alg":"HS256","kid":"k"})),
            URL_SAFE_NO_PAD.encode([0u8; 32])
        );
        assert!(matches!(
            verify(&hs, &set, &rules(now)),
            Err(JwtError::AlgorithmNotAllowed(_))
        ));
        let no_kid = format!("{}.{body}.", b64(serde_json::json!({"alg":"EdDSA"})));
        assert!(matches!(
            verify(&no_kid, &set, &rules(now)),
            Err(JwtError::Malformed(_))
        ));
        let crit = format!(
            "{}.{body}.",
            b64(serde_json::json!({"alg":"EdDSA","kid":"k","crit":["b64"]}))
        );
        assert!(matches!(
            verify(&crit, &set, &rules(now)),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn signing_key_config() {
        let seed = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let keys = parse_signing_keys(&format!("new={seed}, old={seed}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].kid, "new");
        assert!(format!("{:?}", keys[0]).contains("new"));
        assert!(!format!("{:?}", keys[0]).contains(&seed));
        for bad in [
            "".to_owned(),
            "nokey".to_owned(),
            format!("a={}", URL_SAFE_NO_PAD.encode([1u8; 16])),
            "a=!!!".to_owned(),
            format!("a b={seed}"),
            format!("a={seed},a={seed}"),
        ] {
            assert!(parse_signing_keys(&bad).is_err(), "{bad}");
        }
    }
}
