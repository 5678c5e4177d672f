//! The component's variables (spin.toml `[component.users.variables]`), parsed once per request.
//! A bad value is a deployment mistake: the request fails with 500 and the log names the variable
//! (never its value: `jwt_signing_keys` is a secret).

use bazaar_platform::jwt::{self, KeyPair};

pub struct Config {
    /// `sqlite:<label>` or `postgres://...`.
    pub database: String,
    /// The first key signs.
    pub keys: Vec<KeyPair>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
}

/// Longest accepted token lifetime (a year): a typo must not mint near-eternal tokens.
const MAX_TTL_SECS: i64 = 366 * 24 * 3600;

impl Config {
    /// Builds the config from a variable lookup; the error names the variable and the problem.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let required = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("variable `{name}` is not set"))
        };
        let ttl = |name: &str| -> Result<i64, String> {
            let raw = required(name)?;
            match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_TTL_SECS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "variable `{name}` must be a number of seconds between 1 and {MAX_TTL_SECS}"
                )),
            }
        };
        let keys = jwt::parse_signing_keys(&required("jwt_signing_keys")?)
            .map_err(|e| format!("variable `jwt_signing_keys`: {e}"))?;
        Ok(Config {
            database: required("database")?,
            keys,
            issuer: required("jwt_issuer")?,
            audience: required("jwt_audience")?,
            access_ttl_secs: ttl("access_token_ttl_secs")?,
            refresh_ttl_secs: ttl("refresh_token_ttl_secs")?,
        })
    }

    /// The signing key (the first configured one).
    pub fn signing_key(&self) -> &KeyPair {
        &self.keys[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("database", "sqlite:users"),
            (
                "jwt_signing_keys",
                "k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("jwt_issuer", "bazaar"),
            ("jwt_audience", "bazaar-api"),
            ("access_token_ttl_secs", "900"),
            ("refresh_token_ttl_secs", "2592000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in overrides {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn parses_the_manifest_defaults() {
        let m = vars(&[]);
        let c = Config::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert_eq!(c.signing_key().kid, "k1");
        assert_eq!(c.access_ttl_secs, 900);
    }

    #[test]
    fn errors_name_the_variable_but_never_the_secret() {
        for (name, value) in [
            ("access_token_ttl_secs", "0"),
            ("refresh_token_ttl_secs", "soon"),
            ("jwt_signing_keys", "k1=c2VjcmV0"),
            ("database", " "),
        ] {
            let m = vars(&[(name, value)]);
            let err = Config::from_lookup(|k| m.get(k).cloned()).err().unwrap();
            assert!(err.contains(name), "{err}");
            if name == "jwt_signing_keys" {
                assert!(!err.contains("c2VjcmV0"), "{err}");
            }
        }
    }
}
