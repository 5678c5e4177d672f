//! The component's variables (spin.toml `[component.catalog.variables]`).

use bazaar_platform::Problem;

/// Validated configuration of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `sqlite:<label>` or `postgres://…` (see `bazaar_platform::db`).
    pub database: String,
    /// `redis://host:port` events are published to.
    pub redis_address: String,
    /// Base URL image URLs are built from; empty = same origin (`/images/<key>`).
    pub cdn_base_url: String,
    /// Largest accepted image upload.
    pub max_image_bytes: usize,
}

impl Config {
    /// Parses the variables `get` returns. Errors name the variable, never its value (the
    /// database URL may hold a password).
    pub fn from_variables(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let database = get("database").unwrap_or_default().trim().to_owned();
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            return Err("variable `database` must be sqlite:<label> or a postgres:// URL".into());
        }
        let redis_address = get("redis_address").unwrap_or_default().trim().to_owned();
        if !(redis_address.starts_with("redis://") || redis_address.starts_with("rediss://")) {
            return Err("variable `redis_address` must be a redis:// URL".into());
        }
        let cdn_base_url = get("cdn_base_url")
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(cdn_base_url.is_empty()
            || cdn_base_url.starts_with("https://")
            || cdn_base_url.starts_with("http://"))
        {
            return Err("variable `cdn_base_url` must be empty or an http(s):// URL".into());
        }
        let max_image_bytes = get("max_image_bytes")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or("variable `max_image_bytes` must be a positive integer")?;
        Ok(Config {
            database,
            redis_address,
            cdn_base_url,
            max_image_bytes,
        })
    }

    /// Reads the Spin variables; a misconfiguration is logged and answered 500.
    pub fn load() -> Result<Config, Problem> {
        Config::from_variables(|name| spin_sdk::variables::get(name).ok()).map_err(|message| {
            bazaar_platform::log_json(
                bazaar_platform::Level::Error,
                crate::service::COMPONENT,
                None,
                "invalid configuration",
                &[("error", message.into())],
            );
            Problem::internal("The catalog is misconfigured; see its log")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn parses_and_normalises() {
        let c = Config::from_variables(vars(&[
            ("database", "sqlite:catalog"),
            ("redis_address", "redis://127.0.0.1:6379"),
            ("cdn_base_url", "https://cdn.example.com/"),
            ("max_image_bytes", "1024"),
        ]))
        .unwrap();
        assert_eq!(c.cdn_base_url, "https://cdn.example.com");
        assert_eq!(c.max_image_bytes, 1024);
    }

    #[test]
    fn rejects_bad_values_without_echoing_them() {
        let base = [
            ("database", "postgres://u:secret@db/x"),
            ("redis_address", "redis://r"),
            ("cdn_base_url", ""),
            ("max_image_bytes", "10"),
        ];
        assert!(Config::from_variables(vars(&base)).is_ok());
        for (name, bad) in [
            ("database", "mysql://x"),
            ("redis_address", "r:6379"),
            ("cdn_base_url", "cdn.example.com"),
            ("max_image_bytes", "0"),
            ("max_image_bytes", "lots"),
        ] {
            let mut v = base.to_vec();
            v.retain(|(n, _)| *n != name);
            v.push((name, bad));
            let err = Config::from_variables(vars(&v)).unwrap_err();
            assert!(err.contains(name) && !err.contains("secret"), "{err}");
        }
    }
}
