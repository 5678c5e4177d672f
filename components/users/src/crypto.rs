//! Password hashing (argon2id) and refresh-token material. Secrets pass through here and nowhere
//! else; nothing in this module logs.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bazaar_platform::ids::random_bytes;
use sha2::{Digest, Sha256};

/// argon2id memory cost in KiB. See docs/users.md for the measurement inside `bazaar up` that
/// chose these: OWASP's first recommended configuration (19 MiB, 2 passes, 1 lane).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ITERATIONS: u32 = 2;
/// argon2id lanes. Components are single-threaded, so more lanes only add memory.
pub const PARALLELISM: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("the argon2 parameters are valid constants");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) for `password` with a fresh
/// 128-bit salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string. The parameters come from the string, so
/// hashes made with older parameters keep verifying. A corrupt stored hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => {
            burn_equivalent_work(password);
            false
        }
    }
}

/// Does the work of one verification against nothing, so that a login for an unknown e-mail (or
/// an account without a password) takes as long as one with a wrong password and response timing
/// does not reveal which e-mails have accounts.
pub fn burn_equivalent_work(password: &str) {
    const DUMMY_SALT: &[u8; 16] = b"bazaar-dummy-slt";
    let mut out = [0u8; 32];
    let _ = hasher().hash_password_into(password.as_bytes(), DUMMY_SALT, &mut out);
}

/// A new refresh token: 256 random bits, base64url without padding.
pub fn new_refresh_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// The stored form of a refresh token: lower-case hex SHA-256.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("purple-otter-climbs-42").unwrap();
        let b = hash_password("purple-otter-climbs-42").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(verify_password("purple-otter-climbs-42", &a));
        assert!(!verify_password("purple-otter-climbs-43", &a));
        assert!(!verify_password(
            "purple-otter-climbs-42",
            "not a phc string"
        ));
    }

    #[test]
    fn refresh_tokens_are_256_bit_and_stored_as_digests() {
        let t = new_refresh_token();
        assert!(crate::domain::refresh::well_formed(&t), "{t}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert_ne!(t, new_refresh_token());
        let d = token_digest(&t);
        assert_eq!(d.len(), 64);
        assert_eq!(d, token_digest(&t));
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
