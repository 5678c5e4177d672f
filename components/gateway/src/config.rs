//! Gateway configuration from Spin component variables (all declared in spin.toml under
//! `[component.gateway.variables]`).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `upstreams` | comma-separated component ids the gateway proxies to and whose `/health/live` its readiness requires | none |
//! | `jwt_issuer` | required `iss` of access tokens | `bazaar` |
//! | `jwt_audience` | required `aud` of access tokens | `bazaar-api` |
//! | `rate_limit_per_minute` | requests per client per minute; `0` switches rate limiting off | `600` |
//! | `max_body_bytes` | largest request body on every route but image uploads | `65536` |
//! | `max_image_bytes` | largest body of `POST /api/v1/products/{id}/images` | `5242880` |
//! | `cors_allowed_origins` | comma-separated exact origins (`https://shop.example`); empty = no CORS | empty |
//!
//! A value that does not parse is not used: the default applies instead and the error is reported
//! by the `config` readiness check, so a typo cannot go unnoticed yet cannot open the gateway up
//! either (every default is the safe one).

use std::num::NonZeroU32;

use crate::cors::CorsPolicy;

/// Name of the component variable listing upstream component ids.
pub const UPSTREAMS_VARIABLE: &str = "upstreams";
pub const JWT_ISSUER_VARIABLE: &str = "jwt_issuer";
pub const JWT_AUDIENCE_VARIABLE: &str = "jwt_audience";
pub const RATE_LIMIT_VARIABLE: &str = "rate_limit_per_minute";
pub const MAX_BODY_VARIABLE: &str = "max_body_bytes";
pub const MAX_IMAGE_VARIABLE: &str = "max_image_bytes";
pub const CORS_VARIABLE: &str = "cors_allowed_origins";

/// Every variable the gateway reads, in the order they are loaded.
pub const VARIABLES: &[&str] = &[
    UPSTREAMS_VARIABLE,
    JWT_ISSUER_VARIABLE,
    JWT_AUDIENCE_VARIABLE,
    RATE_LIMIT_VARIABLE,
    MAX_BODY_VARIABLE,
    MAX_IMAGE_VARIABLE,
    CORS_VARIABLE,
];

pub const DEFAULT_ISSUER: &str = "bazaar";
pub const DEFAULT_AUDIENCE: &str = "bazaar-api";
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Upper bound for either body limit: the gateway buffers bodies in memory.
pub const MAX_CONFIGURABLE_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound for the per-minute rate (keeps the emission interval ≥ 1 ms).
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 60_000;

/// Parsed gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Valid upstream component ids, in the order given.
    pub upstreams: Vec<String>,
    /// Required `iss` claim.
    pub jwt_issuer: String,
    /// Required `aud` claim.
    pub jwt_audience: String,
    /// Requests per client per minute; `None` = rate limiting off.
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Body limit of every route except image uploads.
    pub max_body_bytes: usize,
    /// Body limit of `POST /api/v1/products/{id}/images`.
    pub max_image_bytes: usize,
    /// Origins allowed to call the API from a browser.
    pub cors: CorsPolicy,
    /// Human-readable configuration errors (reported by the `config` readiness check).
    pub errors: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstreams: Vec::new(),
            jwt_issuer: DEFAULT_ISSUER.to_owned(),
            jwt_audience: DEFAULT_AUDIENCE.to_owned(),
            rate_limit_per_minute: NonZeroU32::new(DEFAULT_RATE_LIMIT_PER_MINUTE),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            cors: CorsPolicy::default(),
            errors: Vec::new(),
        }
    }
}

impl Config {
    /// Builds the configuration from a variable lookup: `Ok(None)` for an undefined variable,
    /// `Err` when the variable exists but could not be read.
    pub fn from_variables(lookup: impl Fn(&str) -> Result<Option<String>, String>) -> Self {
        let mut config = Config::default();
        let value = |name: &str, errors: &mut Vec<String>| match lookup(name) {
            Ok(value) => value,
            Err(e) => {
                errors.push(format!("variable '{name}': {e}"));
                None
            }
        };
        let mut errors = Vec::new();
        if let Some(raw) = value(UPSTREAMS_VARIABLE, &mut errors) {
            config.set_upstreams(&raw);
        }
        if let Some(raw) = value(JWT_ISSUER_VARIABLE, &mut errors) {
            match non_empty(&raw) {
                Some(issuer) => config.jwt_issuer = issuer,
                None => errors.push(format!("variable '{JWT_ISSUER_VARIABLE}' is empty")),
            }
        }
        if let Some(raw) = value(JWT_AUDIENCE_VARIABLE, &mut errors) {
            match non_empty(&raw) {
                Some(audience) => config.jwt_audience = audience,
                None => errors.push(format!("variable '{JWT_AUDIENCE_VARIABLE}' is empty")),
            }
        }
        if let Some(raw) = value(RATE_LIMIT_VARIABLE, &mut errors) {
            match parse_rate(&raw) {
                Ok(rate) => config.rate_limit_per_minute = rate,
                Err(e) => errors.push(e),
            }
        }
        if let Some(raw) = value(MAX_BODY_VARIABLE, &mut errors) {
            match parse_bytes(MAX_BODY_VARIABLE, &raw) {
                Ok(limit) => config.max_body_bytes = limit,
                Err(e) => errors.push(e),
            }
        }
        if let Some(raw) = value(MAX_IMAGE_VARIABLE, &mut errors) {
            match parse_bytes(MAX_IMAGE_VARIABLE, &raw) {
                Ok(limit) => config.max_image_bytes = limit,
                Err(e) => errors.push(e),
            }
        }
        if let Some(raw) = value(CORS_VARIABLE, &mut errors) {
            let (policy, cors_errors) = CorsPolicy::parse(&raw);
            config.cors = policy;
            errors.extend(
                cors_errors
                    .into_iter()
                    .map(|e| format!("variable '{CORS_VARIABLE}': {e}")),
            );
        }
        config.errors.extend(errors);
        config
    }

    /// Defaults plus the given `upstreams` value (handy in tests).
    pub fn from_upstreams(raw: &str) -> Self {
        let mut config = Config::default();
        config.set_upstreams(raw);
        config
    }

    fn set_upstreams(&mut self, raw: &str) {
        for id in raw.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            if !is_component_id(id) {
                self.errors.push(format!(
                    "'{id}' in variable '{UPSTREAMS_VARIABLE}' is not a valid component id"
                ));
            } else if !self.upstreams.iter().any(|known| known == id) {
                self.upstreams.push(id.to_owned());
            }
        }
    }

    /// A configuration whose variables could not be read at all.
    pub fn unreadable(error: impl Into<String>) -> Self {
        Config {
            errors: vec![error.into()],
            ..Config::default()
        }
    }

    /// Whether `component` is a configured upstream.
    pub fn has_upstream(&self, component: &str) -> bool {
        self.upstreams.iter().any(|id| id == component)
    }
}

fn non_empty(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn parse_rate(raw: &str) -> Result<Option<NonZeroU32>, String> {
    match raw.trim().parse::<u32>() {
        Ok(rate) if rate <= MAX_RATE_LIMIT_PER_MINUTE => Ok(NonZeroU32::new(rate)),
        _ => Err(format!(
            "variable '{RATE_LIMIT_VARIABLE}' must be an integer from 0 (off) to {MAX_RATE_LIMIT_PER_MINUTE}"
        )),
    }
}

fn parse_bytes(name: &str, raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(limit) if (1..=MAX_CONFIGURABLE_BODY_BYTES).contains(&limit) => Ok(limit),
        _ => Err(format!(
            "variable '{name}' must be a byte count from 1 to {MAX_CONFIGURABLE_BODY_BYTES}"
        )),
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
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Result<Option<String>, String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| Ok(map.get(name).cloned())
    }

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
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn all_variables_parse() {
        let c = Config::from_variables(lookup(&[
            ("upstreams", "users,catalog"),
            ("jwt_issuer", " shop "),
            ("jwt_audience", "shop-api"),
            ("rate_limit_per_minute", "5"),
            ("max_body_bytes", "100"),
            ("max_image_bytes", "1000"),
            (
                "cors_allowed_origins",
                "https://shop.example, http://localhost:5173",
            ),
        ]));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.upstreams, ["users", "catalog"]);
        assert_eq!(c.jwt_issuer, "shop");
        assert_eq!(c.jwt_audience, "shop-api");
        assert_eq!(c.rate_limit_per_minute, NonZeroU32::new(5));
        assert_eq!(c.max_body_bytes, 100);
        assert_eq!(c.max_image_bytes, 1000);
        assert!(c.cors.allows("http://localhost:5173"));
    }

    #[test]
    fn undefined_variables_use_defaults() {
        let c = Config::from_variables(lookup(&[]));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn zero_rate_switches_rate_limiting_off() {
        let c = Config::from_variables(lookup(&[("rate_limit_per_minute", "0")]));
        assert!(c.errors.is_empty());
        assert_eq!(c.rate_limit_per_minute, None);
    }

    #[test]
    fn bad_values_keep_safe_defaults_and_are_reported() {
        let c = Config::from_variables(lookup(&[
            ("jwt_issuer", " "),
            ("rate_limit_per_minute", "lots"),
            ("max_body_bytes", "-1"),
            ("max_image_bytes", "0"),
            ("cors_allowed_origins", "*"),
        ]));
        assert_eq!(c.errors.len(), 5, "{:?}", c.errors);
        assert_eq!(c.jwt_issuer, DEFAULT_ISSUER);
        assert_eq!(
            c.rate_limit_per_minute,
            NonZeroU32::new(DEFAULT_RATE_LIMIT_PER_MINUTE)
        );
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.max_image_bytes, DEFAULT_MAX_IMAGE_BYTES);
        assert!(!c.cors.is_enabled());
    }

    #[test]
    fn unreadable_variable_is_reported() {
        let c = Config::from_variables(|name| {
            if name == "upstreams" {
                Err("provider down".to_owned())
            } else {
                Ok(None)
            }
        });
        assert_eq!(c.errors, ["variable 'upstreams': provider down"]);
    }
}
