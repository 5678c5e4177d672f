//! ID token validation (OpenID Connect Core §3.1.3.7), pure and host-free.
//!
//! Signatures: RS256 (RSASSA-PKCS1-v1_5 with SHA-256, mandatory for OPs) and ES256 (ECDSA P-256
//! with SHA-256). The key is chosen by `kid` from the provider's JWKS and the algorithm is
//! pinned to what that key is: an RSA key verifies only RS256, a P-256 key only ES256, and a
//! key's own `alg`/`use` must agree. `none`, HS* (which would turn a public key into an HMAC
//! secret) and everything else is refused before any key is looked at.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15;
use rsa::signature::Verifier as _;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use serde_json::Value;

/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
/// Smallest RSA modulus accepted (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// Largest token we parse; real ID tokens are a few kilobytes.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why an ID token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    UnsupportedAlgorithm(String),
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    NonceMismatch,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(what) => write!(f, "the ID token is malformed: {what}"),
            TokenError::UnsupportedAlgorithm(alg) => write!(
                f,
                "the ID token's algorithm '{}' is not accepted (RS256 or ES256 only)",
                alg.escape_default()
            ),
            TokenError::UnknownKey => f.write_str("the ID token is signed with an unknown key"),
            TokenError::BadSignature => f.write_str("the ID token's signature is invalid"),
            TokenError::WrongIssuer => f.write_str("the ID token was issued by another issuer"),
            TokenError::WrongAudience => f.write_str("the ID token is meant for another client"),
            TokenError::Expired => f.write_str("the ID token has expired"),
            TokenError::NotYetValid => f.write_str("the ID token is not valid yet"),
            TokenError::NonceMismatch => {
                f.write_str("the ID token's nonce does not match this login")
            }
        }
    }
}

/// Accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn parse(name: &str) -> Result<Alg, TokenError> {
        match name {
            "RS256" => Ok(Alg::Rs256),
            "ES256" => Ok(Alg::Es256),
            other => Err(TokenError::UnsupportedAlgorithm(other.to_owned())),
        }
    }
}

/// A verification key from a JWKS.
#[derive(Debug, Clone)]
enum Key {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl Key {
    fn alg(&self) -> Alg {
        match self {
            Key::Rsa(_) => Alg::Rs256,
            Key::P256(_) => Alg::Es256,
        }
    }
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

/// The usable signing keys of a JSON Web Key Set (RFC 7517). Keys of other types, curves,
/// uses or algorithms are skipped, not errors: providers publish keys for other purposes too.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

impl Jwks {
    pub fn parse(body: &[u8]) -> Result<Jwks, String> {
        let raw: RawJwks = serde_json::from_slice(body)
            .map_err(|_| "the JWKS is not a JSON object with a keys array".to_owned())?;
        let keys: Vec<Jwk> = raw.keys.iter().filter_map(parse_jwk).collect();
        if keys.is_empty() {
            return Err("the JWKS has no usable RS256 or ES256 signing key".into());
        }
        Ok(Jwks { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with `kid` is present (a miss suggests the provider rotated keys).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key for a token header: by `kid`, or the only key of the right type without one.
    fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&Key> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| &k.key),
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.key.alg() == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(&only.key),
                    _ => None,
                }
            }
        }
    }
}

fn parse_jwk(value: &Value) -> Option<Jwk> {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let bytes = |name: &str| text(name).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let key = match text("kty")? {
        "RSA" => {
            let n = BigUint::from_bytes_be(&bytes("n")?);
            let e = BigUint::from_bytes_be(&bytes("e")?);
            let key = RsaPublicKey::new(n, e).ok()?;
            if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                return None;
            }
            Key::Rsa(key)
        }
        "EC" if text("crv") == Some("P-256") => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            Key::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()?)
        }
        _ => return None,
    };
    // A key that names its algorithm may be used with that algorithm only.
    if let Some(alg) = text("alg")
        && Alg::parse(alg).ok() != Some(key.alg())
    {
        return None;
    }
    Some(Jwk {
        kid: text("kid").map(str::to_owned),
        key,
    })
}

/// What a login must match.
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now_secs: i64,
}

/// The claims of a valid ID token that the login uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
}

/// The `kid` of a token's header, if it parses (used to refresh a JWKS on rotation).
pub fn header_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// Verifies `token`'s signature with `jwks` and its claims against `expect`.
pub fn validate(token: &str, jwks: &Jwks, expect: &Expectations) -> Result<IdClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not a JWS compact serialization"));
    };
    let decode = |part: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed(what))
    };
    let header: Value = serde_json::from_slice(&decode(header_b64, "header encoding")?)
        .map_err(|_| TokenError::Malformed("header JSON"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("no alg"))?;
    let alg = Alg::parse(alg)?;
    if header.get("crit").is_some() {
        // No extensions are understood, so a token that makes one critical must be refused.
        return Err(TokenError::Malformed("unsupported critical header"));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let key = jwks.find(kid, alg).ok_or(TokenError::UnknownKey)?;
    if key.alg() != alg {
        return Err(TokenError::UnsupportedAlgorithm(format!(
            "{alg:?} with a key for {:?}",
            key.alg()
        )));
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    let signature = decode(signature_b64, "signature encoding")?;
    verify(key, signing_input.as_bytes(), &signature)?;

    let claims: Value = serde_json::from_slice(&decode(payload_b64, "payload encoding")?)
        .map_err(|_| TokenError::Malformed("payload JSON"))?;
    check_claims(&claims, expect)
}

fn verify(key: &Key, message: &[u8], signature: &[u8]) -> Result<(), TokenError> {
    match key {
        Key::Rsa(public) => {
            let verifying = pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public.clone());
            let signature =
                pkcs1v15::Signature::try_from(signature).map_err(|_| TokenError::BadSignature)?;
            verifying
                .verify(message, &signature)
                .map_err(|_| TokenError::BadSignature)
        }
        Key::P256(verifying) => {
            // JWS ES256 signatures are r || s, 32 bytes each (RFC 7518 §3.4), not DER.
            let signature = p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| TokenError::BadSignature)?;
            verifying
                .verify(message, &signature)
                .map_err(|_| TokenError::BadSignature)
        }
    }
}

fn check_claims(claims: &Value, expect: &Expectations) -> Result<IdClaims, TokenError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);

    if !issuer_matches(text("iss"), expect.issuer) {
        return Err(TokenError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => return Err(TokenError::WrongAudience),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(TokenError::WrongAudience);
    }
    // Core §3.1.3.7 items 4-5: with several audiences the token must name us as its
    // authorized party; a present azp must be us in any case.
    match text("azp") {
        Some(azp) if azp != expect.client_id => return Err(TokenError::WrongAudience),
        None if audiences.len() > 1 => return Err(TokenError::WrongAudience),
        _ => {}
    }
    let exp = number("exp").ok_or(TokenError::Malformed("no exp"))?;
    if expect.now_secs >= exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    let iat = number("iat").ok_or(TokenError::Malformed("no iat"))?;
    if iat > expect.now_secs.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(nbf) = number("nbf")
        && nbf > expect.now_secs.saturating_add(LEEWAY_SECS)
    {
        return Err(TokenError::NotYetValid);
    }
    // We always send a nonce, so the token must echo it (Core §3.1.3.7 item 11).
    let nonce = text("nonce").ok_or(TokenError::NonceMismatch)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        nonce.as_bytes(),
        expect.nonce.as_bytes(),
    )) {
        return Err(TokenError::NonceMismatch);
    }
    let subject = text("sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(TokenError::Malformed("sub must be 1..255 characters"))?;
    Ok(IdClaims {
        subject: subject.to_owned(),
        email: text("email").map(str::to_owned),
        email_verified: claims.get("email_verified").is_some_and(is_true),
        name: text("name").map(str::to_owned),
        preferred_username: text("preferred_username").map(str::to_owned),
    })
}

/// Google's issuer; Google documents that its ID tokens may carry it without the scheme.
const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// `iss` must be the issuer exactly; the one documented exception is Google's scheme-less form.
fn issuer_matches(iss: Option<&str>, issuer: &str) -> bool {
    match iss {
        Some(iss) if iss == issuer => true,
        Some("accounts.google.com") => issuer == GOOGLE_ISSUER,
        _ => false,
    }
}

/// `true` or, as some providers send it, `"true"`.
pub fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true) || value.as_str() == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey as EcSigningKey;
    use rand_core::OsRng;
    use rsa::RsaPrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use serde_json::json;
    use std::sync::OnceLock;

    const NOW: i64 = 1_800_000_000;

    fn rsa_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(key: &RsaPrivateKey, kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
               "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
    }

    fn ec_jwk(key: &EcSigningKey, kid: &str) -> Value {
        let point = key.verifying_key().to_encoded_point(false);
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
    }

    fn jwks(keys: Vec<Value>) -> Jwks {
        Jwks::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.example", "aud": "client-1", "sub": "user-42",
               "exp": NOW + 300, "iat": NOW, "nonce": "n-123",
               "email": "ada@example.com", "email_verified": true, "name": "Ada"})
    }

    fn unsigned(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    fn sign_rs256(key: &RsaPrivateKey, kid: &str, claims: &Value) -> String {
        let input = unsigned(&json!({"alg": "RS256", "kid": kid, "typ": "JWT"}), claims);
        let signer = pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
        let signature = signer.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", b64(&signature))
    }

    fn sign_es256(key: &EcSigningKey, kid: &str, claims: &Value) -> String {
        let input = unsigned(&json!({"alg": "ES256", "kid": kid}), claims);
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    fn expect() -> Expectations<'static> {
        Expectations {
            issuer: "https://idp.example",
            client_id: "client-1",
            nonce: "n-123",
            now_secs: NOW,
        }
    }

    #[test]
    fn accepts_a_valid_rs256_token() {
        let token = sign_rs256(rsa_key(), "k1", &claims());
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        let got = validate(&token, &keys, &expect()).unwrap();
        assert_eq!(
            got,
            IdClaims {
                subject: "user-42".into(),
                email: Some("ada@example.com".into()),
                email_verified: true,
                name: Some("Ada".into()),
                preferred_username: None,
            }
        );
        assert_eq!(header_kid(&token).as_deref(), Some("k1"));
    }

    #[test]
    fn accepts_a_valid_es256_token() {
        let key = EcSigningKey::random(&mut OsRng);
        let token = sign_es256(&key, "ec1", &claims());
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1"), ec_jwk(&key, "ec1")]);
        assert_eq!(
            validate(&token, &keys, &expect()).unwrap().subject,
            "user-42"
        );
    }

    #[test]
    fn rejects_a_bad_signature() {
        let token = sign_rs256(rsa_key(), "k1", &claims());
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        // Payload swapped after signing.
        let mut forged = claims();
        forged["sub"] = "admin".into();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            validate(&tampered, &keys, &expect()),
            Err(TokenError::BadSignature)
        );
        // Signed by another key under the same kid.
        let other = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let token = sign_rs256(&other, "k1", &claims());
        assert_eq!(
            validate(&token, &keys, &expect()),
            Err(TokenError::BadSignature)
        );
        // ES256 signature with a flipped byte.
        let ec = EcSigningKey::random(&mut OsRng);
        let mut token = sign_es256(&ec, "ec1", &claims()).into_bytes();
        let last = token.len() - 2;
        token[last] = if token[last] == b'A' { b'B' } else { b'A' };
        let token = String::from_utf8(token).unwrap();
        let keys = jwks(vec![ec_jwk(&ec, "ec1")]);
        assert_eq!(
            validate(&token, &keys, &expect()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rejects_alg_none_and_hs256() {
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        let none = format!(
            "{}.",
            unsigned(&json!({"alg": "none", "kid": "k1"}), &claims())
        );
        assert!(matches!(
            validate(&none, &keys, &expect()),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
        // The classic confusion: HMAC keyed with the RSA public key's bytes.
        use sha2::Digest;
        let input = unsigned(&json!({"alg": "HS256", "kid": "k1"}), &claims());
        let fake_mac = sha2::Sha256::digest(input.as_bytes());
        let hs = format!("{input}.{}", b64(&fake_mac));
        assert!(matches!(
            validate(&hs, &keys, &expect()),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn algorithm_is_pinned_to_the_key() {
        // An ES256 header naming an RSA key's kid must not be verified at all.
        let ec = EcSigningKey::random(&mut OsRng);
        let token = sign_es256(&ec, "k1", &claims());
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        assert!(matches!(
            validate(&token, &keys, &expect()),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
        // A JWK that declares another alg is not usable.
        let mut jwk = rsa_jwk(rsa_key(), "k1");
        jwk["alg"] = "PS256".into();
        assert!(Jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes()).is_err());
        // Encryption keys are not signing keys.
        let mut jwk = rsa_jwk(rsa_key(), "k1");
        jwk["use"] = "enc".into();
        assert!(Jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes()).is_err());
    }

    #[test]
    fn rejects_unknown_kid_and_weak_keys() {
        let token = sign_rs256(rsa_key(), "rotated", &claims());
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        assert_eq!(
            validate(&token, &keys, &expect()),
            Err(TokenError::UnknownKey)
        );
        assert!(!keys.has_kid("rotated"));
        let weak = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        assert!(
            Jwks::parse(
                json!({"keys": [rsa_jwk(&weak, "w")]})
                    .to_string()
                    .as_bytes()
            )
            .is_err()
        );
    }

    fn with(change: impl FnOnce(&mut Value)) -> Result<IdClaims, TokenError> {
        let mut c = claims();
        change(&mut c);
        let token = sign_rs256(rsa_key(), "k1", &c);
        validate(&token, &jwks(vec![rsa_jwk(rsa_key(), "k1")]), &expect())
    }

    #[test]
    fn rejects_wrong_issuer() {
        assert_eq!(
            with(|c| c["iss"] = "https://evil.example".into()),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            with(|c| c["iss"] = "https://idp.example/".into()),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn google_scheme_less_issuer_is_accepted_for_google_only() {
        assert!(issuer_matches(Some("accounts.google.com"), GOOGLE_ISSUER));
        assert!(issuer_matches(Some(GOOGLE_ISSUER), GOOGLE_ISSUER));
        assert!(!issuer_matches(
            Some("accounts.google.com"),
            "https://idp.example"
        ));
        assert!(!issuer_matches(Some("idp.example"), "https://idp.example"));
        assert!(!issuer_matches(None, GOOGLE_ISSUER));
    }

    #[test]
    fn rejects_wrong_audience_and_checks_azp() {
        assert_eq!(
            with(|c| c["aud"] = "client-2".into()),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            with(|c| c["aud"] = json!(["a", "b"])),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            with(|c| c["aud"] = json!(["client-1", "other"])),
            Err(TokenError::WrongAudience),
            "several audiences need azp"
        );
        assert!(
            with(|c| {
                c["aud"] = json!(["client-1", "other"]);
                c["azp"] = "client-1".into();
            })
            .is_ok()
        );
        assert_eq!(
            with(|c| c["azp"] = "other".into()),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn rejects_expired_and_future_tokens_with_small_leeway() {
        assert_eq!(
            with(|c| c["exp"] = (NOW - LEEWAY_SECS).into()),
            Err(TokenError::Expired)
        );
        assert!(with(|c| c["exp"] = (NOW - LEEWAY_SECS + 1).into()).is_ok());
        assert_eq!(
            with(|c| c["iat"] = (NOW + LEEWAY_SECS + 1).into()),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            with(|c| c["nbf"] = (NOW + 3600).into()),
            Err(TokenError::NotYetValid)
        );
        assert!(matches!(
            with(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_nonce_mismatch_or_absence() {
        assert_eq!(
            with(|c| c["nonce"] = "other".into()),
            Err(TokenError::NonceMismatch)
        );
        assert_eq!(
            with(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
            Err(TokenError::NonceMismatch)
        );
    }

    #[test]
    fn email_verified_accepts_string_true_only_as_true() {
        assert!(
            with(|c| c["email_verified"] = "true".into())
                .unwrap()
                .email_verified
        );
        assert!(
            !with(|c| c["email_verified"] = "yes".into())
                .unwrap()
                .email_verified
        );
        assert!(
            !with(|c| {
                c.as_object_mut().unwrap().remove("email_verified");
            })
            .unwrap()
            .email_verified
        );
    }

    #[test]
    fn malformed_tokens_never_panic() {
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        for token in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "!!!.@@@.###",
            &"x".repeat(20_000),
        ] {
            assert!(validate(token, &keys, &expect()).is_err(), "{token}");
        }
        let header_only = format!("{}..", b64(br#"{"alg":"RS256","kid":"k1"}"#));
        assert_eq!(
            validate(&header_only, &keys, &expect()),
            Err(TokenError::BadSignature)
        );
        let crit = format!(
            "{}.e30.AA",
            b64(br#"{"alg":"RS256","kid":"k1","crit":["b64"]}"#)
        );
        assert!(matches!(
            validate(&crit, &keys, &expect()),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn token_without_kid_uses_the_only_key_of_its_type() {
        let input = unsigned(&json!({"alg": "RS256"}), &claims());
        let signer = pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key().clone());
        let token = format!("{input}.{}", b64(&signer.sign(input.as_bytes()).to_vec()));
        let keys = jwks(vec![rsa_jwk(rsa_key(), "k1")]);
        assert!(validate(&token, &keys, &expect()).is_ok());
        let other = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let two = jwks(vec![rsa_jwk(rsa_key(), "k1"), rsa_jwk(&other, "k2")]);
        assert_eq!(
            validate(&token, &two, &expect()),
            Err(TokenError::UnknownKey)
        );
    }
}
