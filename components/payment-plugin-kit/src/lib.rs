//! Plumbing every payment-provider plugin needs, kept out of the plugins so each one is only
//! its provider's protocol: settings lookup, a small blocking `wasi:http` client, form encoding
//! and the webhook signature scheme.

pub mod decimal;
pub mod form;
pub mod http;
pub mod signature;

/// Looks a setting up by name in the `settings` list the host passes with every call.
pub fn setting<'a>(settings: &'a [(String, String)], name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_finds_the_first_match() {
        let settings = vec![
            ("api_base".to_string(), "http://a".to_string()),
            ("api_base".to_string(), "http://b".to_string()),
        ];
        assert_eq!(setting(&settings, "api_base"), Some("http://a"));
        assert_eq!(setting(&settings, "missing"), None);
    }
}
