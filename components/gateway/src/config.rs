//! Gateway configuration from Spin component variables.
//!
//! `upstreams` (component variable, fed by the application variable `gateway_upstreams`):
//! comma-separated Spin component ids of the services the gateway may proxy to and whose
//! `/health/live` its readiness depends on, e.g. `"users,catalog,carts"`. Whitespace around ids and
//! empty entries are ignored; duplicates are collapsed. An id that is not a valid Spin component id
//! is not used and makes the `config` readiness check fail, so a typo cannot go unnoticed.

/// Name of the component variable listing upstream component ids.
pub const UPSTREAMS_VARIABLE: &str = "upstreams";

/// Parsed gateway configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Valid upstream component ids, in the order given.
    pub upstreams: Vec<String>,
    /// Human-readable configuration errors (reported by the `config` readiness check).
    pub errors: Vec<String>,
}

impl Config {
    /// Parses the `upstreams` variable.
    pub fn from_upstreams(raw: &str) -> Self {
        let mut config = Config::default();
        for id in raw.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            if !is_component_id(id) {
                config.errors.push(format!(
                    "'{id}' in variable '{UPSTREAMS_VARIABLE}' is not a valid component id"
                ));
            } else if !config.upstreams.iter().any(|known| known == id) {
                config.upstreams.push(id.to_owned());
            }
        }
        config
    }

    /// A configuration whose variables could not be read at all.
    pub fn unreadable(error: impl Into<String>) -> Self {
        Config {
            upstreams: Vec::new(),
            errors: vec![error.into()],
        }
    }

    /// Whether `component` is a configured upstream.
    pub fn has_upstream(&self, component: &str) -> bool {
        self.upstreams.iter().any(|id| id == component)
    }
}

/// Spin's component id rule: `-`-separated words, each starting with an ASCII letter followed by
/// ASCII letters/digits, each word entirely lower-case or entirely upper-case.
pub fn is_component_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('-').all(|word| {
            let mut chars = word.chars();
            let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
            let alphanumeric = word.chars().all(|c| c.is_ascii_alphanumeric());
            let single_case = !word.chars().any(|c| c.is_ascii_uppercase())
                || !word.chars().any(|c| c.is_ascii_lowercase());
            starts_with_letter && alphanumeric && single_case
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comma_separated_ids() {
        let c = Config::from_upstreams(" users, catalog ,,carts,users ");
        assert_eq!(c.upstreams, ["users", "catalog", "carts"]);
        assert!(c.errors.is_empty());
        assert!(c.has_upstream("catalog"));
        assert!(!c.has_upstream("orders"));
    }

    #[test]
    fn empty_means_no_upstreams() {
        assert_eq!(Config::from_upstreams(""), Config::default());
        assert_eq!(Config::from_upstreams(" , "), Config::default());
    }

    #[test]
    fn invalid_ids_are_reported_not_used() {
        let c = Config::from_upstreams("users,cart-2,http://x,catalog");
        assert_eq!(c.upstreams, ["users", "catalog"]);
        assert_eq!(c.errors.len(), 2);
        assert!(c.errors[0].contains("cart-2"));
    }

    #[test]
    fn component_id_rules() {
        for ok in ["users", "cart-v2", "a", "ABC-def", "x1-y2"] {
            assert!(is_component_id(ok), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "a--b", "cart-2", "1a", "a_b", "Users", "a.b", "a b",
        ] {
            assert!(!is_component_id(bad), "{bad}");
        }
    }

    #[test]
    fn unreadable_config_carries_the_error() {
        let c = Config::unreadable("provider down");
        assert!(c.upstreams.is_empty());
        assert_eq!(c.errors, ["provider down"]);
    }
}
