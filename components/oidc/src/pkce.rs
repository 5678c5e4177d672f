//! PKCE (RFC 7636) and the other random values of a login: the code verifier and its S256
//! challenge, `state`, `nonce` and the browser-binding cookie value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url without padding: 43 characters, 256 bits. Used for the PKCE
/// verifier (RFC 7636 §4.1 asks for 43..=128 unreserved characters and recommends exactly this),
/// `state`, `nonce` and the binding cookie (all well above the 128 bits they need).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(bazaar_platform::ids::random_bytes::<32>())
}

/// base64url(SHA-256(`input`)) without padding.
pub fn sha256_b64(input: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()))
}

/// A PKCE code verifier: 43..=128 characters of `[A-Za-z0-9-._~]`.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    /// A fresh verifier with 256 bits of entropy.
    pub fn generate() -> CodeVerifier {
        CodeVerifier(random_token())
    }

    pub fn parse(raw: &str) -> Result<CodeVerifier, String> {
        if is_pkce_token(raw) {
            Ok(CodeVerifier(raw.to_owned()))
        } else {
            Err("a PKCE code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `code_challenge` for `code_challenge_method=S256`: base64url(SHA-256(ASCII(verifier))).
    pub fn s256_challenge(&self) -> String {
        sha256_b64(&self.0)
    }
}

impl std::fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeVerifier(<redacted>)")
    }
}

/// RFC 7636 §4.1 grammar, which also fits `state`, `nonce` and cookie values we generate.
pub fn is_pkce_token(raw: &str) -> bool {
    (43..=128).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        let verifier = CodeVerifier::parse("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(
            verifier.s256_challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_verifiers_are_long_random_and_valid() {
        let a = CodeVerifier::generate();
        let b = CodeVerifier::generate();
        assert_eq!(a.as_str().len(), 43);
        assert!(is_pkce_token(a.as_str()));
        assert_ne!(a, b);
        assert_ne!(a.s256_challenge(), a.as_str());
    }

    #[test]
    fn verifier_grammar_is_enforced() {
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_err());
        assert!(CodeVerifier::parse(&"a".repeat(43)).is_ok());
        assert!(CodeVerifier::parse(&"a".repeat(128)).is_ok());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_err());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_err());
        assert!(CodeVerifier::parse(&format!("{} ", "a".repeat(43))).is_err());
    }

    #[test]
    fn debug_does_not_show_the_verifier() {
        let v = CodeVerifier::generate();
        assert!(!format!("{v:?}").contains(v.as_str()));
    }
}
