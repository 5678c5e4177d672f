//! The component's variables (`payments/spin.toml` `[component.payment-core.variables]`), read
//! once per request and validated: a bad value is a deployment error, answered 500 with a log
//! line naming the variable, never silently replaced by a default.

use crate::fraud::{FraudConfig, parse_bin_countries};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `sqlite:<label>` or `postgres://…` (variable `database`, default `sqlite:default`).
    pub database: String,
    /// Where events are published (variable `redis_address`; empty: not published, they wait
    /// in the outbox for the catch-up route).
    pub redis_address: Option<String>,
    /// Required in `x-bazaar-payments-token` on `/api/v1/payments/*` (variable
    /// `internal_token`; empty: not checked).
    pub internal_token: Option<String>,
    /// Variables `fraud_review_at`, `fraud_block_at`, `fraud_first_purchase_limit`,
    /// `fraud_bin_countries`.
    pub fraud: FraudConfig,
}

/// The variable names, for the manifest and the docs.
pub const VARIABLES: [&str; 7] = [
    "database",
    "redis_address",
    "internal_token",
    "fraud_review_at",
    "fraud_block_at",
    "fraud_first_purchase_limit",
    "fraud_bin_countries",
];

/// An invalid variable: its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub variable: &'static str,
    pub message: String,
}

impl Config {
    /// Builds the configuration from `lookup` (a variable's value; `None` or blank when unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Invalid> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |name: &'static str, default: u64| -> Result<u64, Invalid> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().map_err(|_| Invalid {
                    variable: name,
                    message: format!("`{v}` is not a non-negative integer"),
                }),
            }
        };
        let defaults = FraudConfig::default();
        let points = |name: &'static str, default: u32| -> Result<u32, Invalid> {
            let v = number(name, u64::from(default))?;
            u32::try_from(v)
                .ok()
                .filter(|p| *p <= 10_000)
                .ok_or(Invalid {
                    variable: name,
                    message: format!("{v} is not a score of at most 10000 points"),
                })
        };
        let review_at = points("fraud_review_at", defaults.review_at)?;
        let block_at = points("fraud_block_at", defaults.block_at)?;
        if review_at > block_at {
            return Err(Invalid {
                variable: "fraud_review_at",
                message: format!("{review_at} is above fraud_block_at ({block_at})"),
            });
        }
        let first_purchase_limit =
            number("fraud_first_purchase_limit", defaults.first_purchase_limit)?;
        let bin_countries = match get("fraud_bin_countries") {
            None => defaults.bin_countries,
            Some(text) => parse_bin_countries(&text).map_err(|message| Invalid {
                variable: "fraud_bin_countries",
                message,
            })?,
        };
        let database = get("database").unwrap_or_else(|| "sqlite:default".to_owned());
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            return Err(Invalid {
                variable: "database",
                message: "must start with sqlite: or postgres://".to_owned(),
            });
        }
        Ok(Config {
            database,
            redis_address: get("redis_address"),
            internal_token: get("internal_token"),
            fraud: FraudConfig {
                review_at,
                block_at,
                first_purchase_limit,
                bin_countries,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Invalid> {
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_and_blank_variables_take_the_defaults() {
        let c = config(&[("redis_address", " "), ("internal_token", "")]).unwrap();
        assert_eq!(c.database, "sqlite:default");
        assert_eq!(c.redis_address, None);
        assert_eq!(c.internal_token, None);
        assert_eq!(c.fraud, FraudConfig::default());
    }

    #[test]
    fn values_are_read_and_validated() {
        let c = config(&[
            ("database", "postgres://postgres@127.0.0.1:5432/test"),
            ("redis_address", "redis://127.0.0.1:6379"),
            ("internal_token", "s3cret"),
            ("fraud_review_at", "30"),
            ("fraud_block_at", "60"),
            ("fraud_first_purchase_limit", "5000"),
            ("fraud_bin_countries", "411111=GB"),
        ])
        .unwrap();
        assert_eq!(c.internal_token.as_deref(), Some("s3cret"));
        assert_eq!((c.fraud.review_at, c.fraud.block_at), (30, 60));
        assert_eq!(c.fraud.first_purchase_limit, 5000);
        assert_eq!(c.fraud.bin_country("411111").as_deref(), Some("GB"));
        assert_eq!(
            c.fraud.bin_country("424242"),
            None,
            "the list replaces the default"
        );

        for (name, value) in [
            ("fraud_review_at", "-1"),
            ("fraud_block_at", "lots"),
            ("fraud_review_at", "80"),
            ("fraud_first_purchase_limit", "1.5"),
            ("fraud_bin_countries", "4242=USA"),
            ("database", "mysql://x"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
    }
}
