//! Refresh tokens and their families.
//!
//! A login starts a *family*; every refresh rotates: the presented token is marked used and a new
//! token of the same family is issued. A used token presented again means two parties hold the
//! family (the legitimate client and a thief, and we cannot tell which is which), so the whole
//! family is revoked — the newest token too — and both must log in again (OAuth 2.0 Security
//! BCP, RFC 9700 §4.14.2). Logout revokes the family.
//!
//! The token itself is 256 random bits, base64url without padding (43 characters); only its
//! SHA-256 digest is stored, so a database leak yields no usable token.

/// Length of an encoded refresh token.
pub const ENCODED_LEN: usize = 43;

/// What the store knows about a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredToken {
    pub expires_at: i64,
    /// Set when the token was rotated.
    pub used_at: Option<i64>,
    /// Set when the family was revoked (logout or reuse).
    pub family_revoked: bool,
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Valid: mark it used and issue the next token of the family.
    Rotate,
    /// Already used: revoke the family, answer 401.
    RevokeFamily,
    /// Refused without side effects, answer 401.
    Reject(Rejection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unknown,
    Revoked,
    Expired,
}

impl Rejection {
    /// For logs (the client always gets the same 401).
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unknown => "unknown",
            Rejection::Revoked => "revoked",
            Rejection::Expired => "expired",
        }
    }
}

/// Applies the family rules. A revoked family wins over everything (nothing in it works again);
/// reuse is checked before expiry so that replaying an old stolen token still burns the family.
pub fn decide(stored: Option<StoredToken>, now_ms: i64) -> Decision {
    let Some(token) = stored else {
        return Decision::Reject(Rejection::Unknown);
    };
    if token.family_revoked {
        return Decision::Reject(Rejection::Revoked);
    }
    if token.used_at.is_some() {
        return Decision::RevokeFamily;
    }
    if now_ms >= token.expires_at {
        return Decision::Reject(Rejection::Expired);
    }
    Decision::Rotate
}

/// Whether `text` has the shape of a token we issued (anything else is unknown without a lookup).
pub fn well_formed(text: &str) -> bool {
    text.len() == ENCODED_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(used: bool, revoked: bool) -> StoredToken {
        StoredToken {
            expires_at: 1_000,
            used_at: used.then_some(500),
            family_revoked: revoked,
        }
    }

    #[test]
    fn a_fresh_token_rotates_until_it_expires() {
        assert_eq!(decide(Some(token(false, false)), 999), Decision::Rotate);
        assert_eq!(
            decide(Some(token(false, false)), 1_000),
            Decision::Reject(Rejection::Expired)
        );
    }

    #[test]
    fn reuse_revokes_the_family_even_after_expiry() {
        assert_eq!(decide(Some(token(true, false)), 10), Decision::RevokeFamily);
        assert_eq!(
            decide(Some(token(true, false)), 5_000),
            Decision::RevokeFamily
        );
    }

    #[test]
    fn nothing_in_a_revoked_family_works() {
        assert_eq!(
            decide(Some(token(false, true)), 10),
            Decision::Reject(Rejection::Revoked)
        );
        assert_eq!(
            decide(Some(token(true, true)), 10),
            Decision::Reject(Rejection::Revoked)
        );
        assert_eq!(decide(None, 10), Decision::Reject(Rejection::Unknown));
    }

    #[test]
    fn token_shape() {
        assert!(well_formed(&"A".repeat(43)));
        assert!(well_formed("abcdefghijklmnopqrstuvwxyz-_0123456789ABCDE"));
        assert!(!well_formed(&"A".repeat(44)));
        assert!(!well_formed(&format!("{}=", "A".repeat(42))));
        assert!(!well_formed(""));
    }
}
