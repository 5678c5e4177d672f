//! E-mail addresses as account keys.
//!
//! Normalisation: surrounding whitespace is trimmed and the domain lower-cased (domains are
//! case-insensitive by definition). Uniqueness is case-insensitive on the whole address
//! ([`Email::key`]): mailbox providers treat the local part case-insensitively in practice, and two
//! accounts that differ only by case are a support and phishing hazard.
//!
//! The syntax check is deliberately the practical subset of RFC 5321/5322 that mail systems
//! deliver to (dot-atom local part, DNS host name with a TLD), not the full grammar: quoted local
//! parts, comments and IP-literal domains are refused.

use std::fmt;

/// Longest address SMTP can carry in a path (RFC 5321 §4.5.3.1.3: 256 including the brackets).
pub const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;

/// A syntactically valid, normalised e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    key: String,
}

impl Email {
    /// Parses and normalises `raw`; the error is a message for the client.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        if trimmed.len() > MAX_LEN {
            return Err("must be at most 254 characters");
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or("must contain an @ between the name and the domain")?;
        check_local(local)?;
        let domain = domain.to_ascii_lowercase();
        check_domain(&domain)?;
        let address = format!("{local}@{domain}");
        Ok(Email {
            key: address.to_ascii_lowercase(),
            address,
        })
    }

    /// The address as stored and shown (domain lower-cased).
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The case-insensitive uniqueness key (the whole address lower-cased).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The part before the `@` (a fallback display name).
    pub fn local_part(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(l, _)| l)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// RFC 5322 `atext` plus dots between atoms.
fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("needs a name before the @");
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err("the part before the @ must be at most 64 characters");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !local.chars().all(|c| atext(c) || c == '.') {
        return Err("the part before the @ contains a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(
            "the part before the @ must not start or end with a dot or contain two dots in a row",
        );
    }
    Ok(())
}

/// A DNS host name with at least two labels and an alphabetic-ish TLD (not all digits, which
/// would be an IP address).
fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("needs a domain after the @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs a dot (e.g. example.com)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err("the domain has an empty or overlong part");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("the domain may only contain letters, digits, dots and hyphens");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a domain part must not start or end with a hyphen");
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the domain must end in a top-level domain such as .com");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_whitespace_and_domain_case_and_keys_case_insensitively() {
        let email = Email::parse("  Ada.Lovelace@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@example.com");
        assert_eq!(email.key(), "ada.lovelace@example.com");
        assert_eq!(email.local_part(), "Ada.Lovelace");
        assert_eq!(
            Email::parse("ada.lovelace@example.com").unwrap().key(),
            email.key()
        );
    }

    #[test]
    fn accepts_common_real_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'neil@example.ie",
            "x_y-z@mail-server.example.travel",
            "1234@domain123.com",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        for bad in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "user@",
            "user@localhost",
            "user@example.c",
            "user@192.168.0.1",
            "user@exa mple.com",
            "us er@example.com",
            ".user@example.com",
            "user.@example.com",
            "us..er@example.com",
            "user@-example.com",
            "user@example-.com",
            "user@example..com",
            "user@[127.0.0.1]",
            "\"quoted\"@example.com",
            "user@exämple.com",
            "a@b@example.com",
            long_local.as_str(),
            long_total.as_str(),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
