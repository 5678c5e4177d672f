//! Display names: what the shop shows, not an identifier.

/// Longest name, in characters (not bytes, so non-Latin names get the same room).
pub const MAX_CHARS: usize = 100;

/// A trimmed name of 1..=100 characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<DisplayName, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        if trimmed.chars().count() > MAX_CHARS {
            return Err("must be at most 100 characters");
        }
        // Control characters (newlines, NUL, bidi overrides aside) break logs, e-mails and UIs.
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(DisplayName(trimmed.to_owned()))
    }

    /// A name derived from an identity provider's claim, or failing that from the e-mail's
    /// local part: social logins must not fail because a provider sent an odd or empty name.
    pub fn from_provider(claim: Option<&str>, fallback: &str) -> DisplayName {
        if let Some(name) = claim.and_then(|c| DisplayName::parse(c).ok()) {
            return name;
        }
        let cleaned: String = fallback
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CHARS)
            .collect();
        DisplayName::parse(&cleaned).unwrap_or_else(|_| DisplayName("Customer".to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds_by_characters() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\nb").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn provider_names_fall_back() {
        assert_eq!(DisplayName::from_provider(Some(" Bo "), "x").as_str(), "Bo");
        assert_eq!(DisplayName::from_provider(Some(""), "ada").as_str(), "ada");
        assert_eq!(DisplayName::from_provider(None, "").as_str(), "Customer");
    }
}
