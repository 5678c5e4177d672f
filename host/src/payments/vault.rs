//! Card tokenization (PCI scope reduction): a card is validated (Luhn, expiry, brand), its number
//! encrypted at rest with AES-256-GCM under the first key of a key ring (the key id is stored with
//! the ciphertext so keys can rotate) and replaced by an opaque token. The CVC is checked for
//! shape and then dropped: it is never stored. Only brand and last4 leave the payment host.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A card number that passed Luhn and length checks. Deliberately neither `Debug`-printable
/// nor `Display`: it cannot end up in a log line by accident.
pub struct Pan(String);

impl Pan {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        // Spaces and dashes are how people type card numbers; anything else is an error.
        let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must contain only digits");
        }
        if !(12..=19).contains(&digits.len()) {
            return Err("must be 12 to 19 digits");
        }
        if !luhn(&digits) {
            return Err("is not a valid card number");
        }
        Ok(Self(digits))
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    /// The issuer identification number for BIN-country fraud checks: the first eight digits
    /// of a 16-digit or longer number (8-digit BINs; PCI DSS allows showing them with the last
    /// four for such numbers), else the first six.
    pub fn bin(&self) -> &str {
        let len = if self.0.len() >= 16 { 8 } else { 6 };
        &self.0[..len]
    }

    pub fn brand(&self) -> Brand {
        Brand::of(&self.0)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Pan {
    fn drop(&mut self) {
        // Best effort: do not leave the number in freed heap memory.
        // SAFETY: writing ASCII zeros keeps the String valid UTF-8.
        unsafe { self.0.as_bytes_mut().fill(b'0') }
    }
}

pub fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Unknown,
}

impl Brand {
    fn of(digits: &str) -> Self {
        let prefix = |n: usize| digits[..n].parse::<u32>().unwrap_or(0);
        match () {
            _ if digits.starts_with('4') => Self::Visa,
            _ if (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) => {
                Self::Mastercard
            }
            _ if digits.starts_with("34") || digits.starts_with("37") => Self::Amex,
            _ if digits.starts_with("6011") || digits.starts_with("65") => Self::Discover,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Unknown => "unknown",
        }
    }

    fn cvc_len(self) -> usize {
        if self == Self::Amex { 4 } else { 3 }
    }
}

/// A validated card as received from the client; the CVC is only checked, never kept.
pub struct CardInput {
    pub pan: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub name: String,
}

/// Validates the raw fields; errors are `(field, message)` pairs for a 422.
pub fn parse_card(
    number: Option<&str>,
    exp_month: Option<i64>,
    exp_year: Option<i64>,
    cvc: Option<&str>,
    name: Option<&str>,
    now: (i32, u32),
) -> Result<CardInput, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let pan = match number.map(Pan::parse) {
        Some(Ok(pan)) => Some(pan),
        Some(Err(message)) => {
            errors.push(("number", message.to_string()));
            None
        }
        None => {
            errors.push(("number", "is required".to_string()));
            None
        }
    };
    let month = match exp_month {
        Some(m @ 1..=12) => Some(m as u8),
        Some(_) => {
            errors.push(("exp_month", "must be 1 to 12".to_string()));
            None
        }
        None => {
            errors.push(("exp_month", "is required".to_string()));
            None
        }
    };
    let year = match exp_year {
        Some(y @ 2000..=2199) => Some(y as u16),
        Some(_) => {
            errors.push(("exp_year", "must be a four-digit year".to_string()));
            None
        }
        None => {
            errors.push(("exp_year", "is required".to_string()));
            None
        }
    };
    if let (Some(m), Some(y)) = (month, year) {
        // A card is valid through the last day of its expiry month.
        let (now_year, now_month) = now;
        if (i32::from(y), u32::from(m)) < (now_year, now_month) {
            errors.push(("exp_year", "the card has expired".to_string()));
        }
    }
    let expected_cvc = pan.as_ref().map(|p| p.brand().cvc_len());
    match cvc {
        Some(c)
            if c.bytes().all(|b| b.is_ascii_digit())
                && expected_cvc.is_none_or(|n| c.len() == n)
                && (3..=4).contains(&c.len()) => {}
        Some(_) => errors.push((
            "cvc",
            "must be 3 digits (4 for American Express)".to_string(),
        )),
        None => errors.push(("cvc", "is required".to_string())),
    }
    let name = match name.map(str::trim) {
        Some(n)
            if !n.is_empty() && n.chars().count() <= 200 && !n.chars().any(char::is_control) =>
        {
            Some(n.to_string())
        }
        Some(_) => {
            errors.push(("name", "must be 1 to 200 printable characters".to_string()));
            None
        }
        None => {
            errors.push(("name", "is required".to_string()));
            None
        }
    };
    match (pan, month, year, name) {
        (Some(pan), Some(exp_month), Some(exp_year), Some(name)) if errors.is_empty() => {
            Ok(CardInput {
                pan,
                exp_month,
                exp_year,
                name,
            })
        }
        _ => Err(errors),
    }
}

/// The AES-256-GCM key ring: the first key encrypts, every key decrypts.
pub struct KeyRing {
    keys: Vec<(String, Aes256Gcm)>,
    /// Derived from the first key: makes [`KeyRing::fingerprint`] a keyed hash, so a stored
    /// request fingerprint cannot be brute-forced back into a card number.
    fingerprint_key: [u8; 32],
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only; never the key material.
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Parses `kid=base64url(32 bytes)` entries separated by commas.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let mut fingerprint_key = None;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, encoded) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("vault key entry without `kid=`"))?;
            let kid = kid.trim();
            if kid.is_empty()
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                anyhow::bail!("vault key id `{kid}` must be letters, digits, - or _");
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(encoded.trim().trim_end_matches('='))
                .map_err(|_| anyhow::anyhow!("vault key `{kid}` is not base64url"))?;
            if bytes.len() != 32 {
                anyhow::bail!("vault key `{kid}` must be 32 bytes, got {}", bytes.len());
            }
            if fingerprint_key.is_none() {
                let mut derive = Sha256::new();
                derive.update(b"bazaar:request-fingerprint:");
                derive.update(&bytes);
                fingerprint_key = Some(<[u8; 32]>::from(derive.finalize()));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).expect("32-byte key");
            keys.push((kid.to_string(), cipher));
        }
        let Some(fingerprint_key) = fingerprint_key else {
            anyhow::bail!("the vault key ring is empty");
        };
        Ok(Self {
            keys,
            fingerprint_key,
        })
    }

    /// A keyed digest of a secret (card number, CVC) for comparing requests, e.g. two
    /// `Idempotency-Key` retries, without storing anything that reveals the secret.
    pub fn fingerprint(&self, secret: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(self.fingerprint_key);
        hash.update(secret.as_bytes());
        hex::encode(hash.finalize())
    }

    /// A fresh `kid=key` entry, for first-run generation.
    pub fn generate_entry(kid: &str) -> String {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        format!("{kid}={}", URL_SAFE_NO_PAD.encode(key))
    }

    /// Encrypts `plaintext`, binding it to `aad` (the token), so a ciphertext cannot be moved to
    /// another token's row. Returns `(key id, nonce || ciphertext)`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> (String, Vec<u8>) {
        let (kid, cipher) = &self.keys[0];
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of a small message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        (kid.clone(), out)
    }

    pub fn open(&self, kid: &str, sealed: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == kid)
            .ok_or_else(|| anyhow::anyhow!("vault key `{kid}` is no longer configured"))?;
        if sealed.len() < 12 + 16 {
            anyhow::bail!("sealed card data is truncated");
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealed card data failed authentication"))
    }
}

/// An opaque, unguessable token: `pm_` + 24 random bytes in base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    format!("pm_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_brands() {
        for (number, brand) in [
            ("4242424242424242", Brand::Visa),
            ("4000 0000 0000 0002", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
        ] {
            let pan = Pan::parse(number).unwrap_or_else(|e| panic!("{number}: {e}"));
            assert_eq!(pan.brand(), brand, "{number}");
        }
        assert!(Pan::parse("4242424242424241").is_err());
        assert!(Pan::parse("4242x24242424242").is_err());
        assert!(Pan::parse("42").is_err());
    }

    #[test]
    fn card_validation_reports_every_field() {
        let errors = parse_card(
            Some("1234"),
            Some(13),
            Some(99),
            Some("12"),
            Some(""),
            (2026, 11),
        )
        .err()
        .unwrap();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["number", "exp_month", "exp_year", "cvc", "name"]);
        let expired = parse_card(
            Some("4242424242424242"),
            Some(10),
            Some(2026),
            Some("123"),
            Some("A"),
            (2026, 11),
        );
        assert_eq!(expired.err().unwrap()[0].0, "exp_year");
        let ok = parse_card(
            Some("4242424242424242"),
            Some(11),
            Some(2026),
            Some("123"),
            Some("A"),
            (2026, 11),
        )
        .ok()
        .unwrap();
        assert_eq!(ok.pan.last4(), "4242");
        let amex_short_cvc = parse_card(
            Some("378282246310005"),
            Some(1),
            Some(2030),
            Some("123"),
            Some("A"),
            (2026, 11),
        );
        assert_eq!(amex_short_cvc.err().unwrap()[0].0, "cvc");
    }

    #[test]
    fn key_ring_rotation_and_tamper_detection() {
        let old = KeyRing::generate_entry("k1");
        let new = KeyRing::generate_entry("k2");
        let before = KeyRing::parse(&old).unwrap();
        let (kid, sealed) = before.seal(b"4242424242424242", b"pm_a");
        assert_eq!(kid, "k1");
        let rotated = KeyRing::parse(&format!("{new},{old}")).unwrap();
        assert_eq!(
            rotated.open(&kid, &sealed, b"pm_a").unwrap(),
            b"4242424242424242"
        );
        assert_eq!(rotated.seal(b"x", b"y").0, "k2");
        assert!(
            rotated.open(&kid, &sealed, b"pm_b").is_err(),
            "bound to its token"
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(rotated.open(&kid, &tampered, b"pm_a").is_err());
        assert!(
            KeyRing::parse(&new)
                .unwrap()
                .open(&kid, &sealed, b"pm_a")
                .is_err()
        );
        assert!(KeyRing::parse("k=AAAA").is_err());
        assert!(KeyRing::parse("").is_err());
        assert!(!format!("{rotated:?}").contains(new.split_once('=').unwrap().1));
    }
}
