//! The component's configuration, parsed once per request from its two variables:
//!
//! * `providers`: a JSON object, provider name → provider settings:
//!
//!   ```json
//!   {
//!     "google": {"issuer": "https://accounts.google.com", "client_id": "…", "client_secret": "…"},
//!     "github": {"kind": "github", "client_id": "…", "client_secret": "…"},
//!     "local":  {"issuer": "http://127.0.0.1:9400", "client_id": "bazaar-local",
//!                "client_secret": "…", "scopes": ["openid", "email", "profile"],
//!                "token_endpoint_auth": "client_secret_basic"}
//!   }
//!   ```
//!
//!   `kind` is `"oidc"` (default: any OpenID Provider, found through discovery from `issuer`) or
//!   `"github"` (GitHub's OAuth 2.0 apps, which have no ID token). `scopes` is optional
//!   (OIDC: `openid email profile`, always including `openid`; GitHub: `read:user user:email`).
//!   `token_endpoint_auth` is optional: `client_secret_basic` or `client_secret_post`; by default
//!   the first of the two the provider's discovery document lists (basic when it lists none,
//!   which is the OIDC default).
//! * `public_base_url`: the shop's public origin (`https://shop.example`), from which the redirect
//!   URI `<public_base_url>/auth/oidc/<provider>/callback` is built.
//!
//! Parse, don't validate: a [`Config`] only exists when every provider is usable, so handlers
//! never meet a half-valid provider.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The variable holding the providers' JSON.
pub const PROVIDERS_VARIABLE: &str = "providers";
/// The variable holding the shop's public base URL.
pub const PUBLIC_BASE_URL_VARIABLE: &str = "public_base_url";

/// A provider's name as it appears in `/auth/oidc/<name>/...`: 1..=32 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(raw: &str) -> Result<ProviderName, String> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(ProviderName(raw.to_owned()))
        } else {
            Err(format!(
                "provider name '{}' must be 1 to 32 of a-z, 0-9, '-' and '_'",
                raw.escape_default()
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ProviderName::parse(&value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> String {
        value.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute `http(s)` URL without query or fragment, stored without a trailing slash.
/// Plain `http` is accepted only for loopback hosts (local development and tests): anywhere
/// else codes and tokens would cross the network in clear text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<BaseUrl, String> {
        let trimmed = raw.trim_end_matches('/');
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|_| format!("'{}' is not a URL", raw.escape_default()))?;
        let scheme = uri.scheme_str().unwrap_or("");
        let host = uri
            .host()
            .ok_or_else(|| format!("'{}' has no host", raw.escape_default()))?;
        if uri.query().is_some() || trimmed.contains('#') {
            return Err(format!(
                "'{}' must not have a query or fragment",
                raw.escape_default()
            ));
        }
        match scheme {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => {
                return Err(format!(
                    "'{}' must use https (plain http is allowed only for loopback hosts)",
                    raw.escape_default()
                ));
            }
            _ => return Err(format!("'{}' must be an http(s) URL", raw.escape_default())),
        }
        Ok(BaseUrl(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// `self` followed by `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// Whether `host` (as `http::Uri` returns it, IPv6 in brackets) names this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

/// What kind of provider, and what identifies its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// An OpenID Provider; endpoints come from `<issuer>/.well-known/openid-configuration`.
    Oidc { issuer: BaseUrl },
    /// GitHub OAuth app: fixed endpoints, identity from the REST API.
    Github,
}

/// One usable provider.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: ProviderName,
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// `None`: choose from the discovery document.
    pub token_auth: Option<TokenAuth>,
}

// The secret must never reach a log line, even through `{:?}`.
impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("token_auth", &self.token_auth)
            .finish()
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub providers: BTreeMap<ProviderName, Provider>,
    pub public_base_url: BaseUrl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth: Option<TokenAuth>,
}

impl Config {
    /// Parses both variables; the error names the offending provider and field (never a value
    /// of a secret).
    pub fn parse(providers_json: &str, public_base_url: &str) -> Result<Config, String> {
        let public_base_url =
            BaseUrl::parse(public_base_url).map_err(|e| format!("public_base_url: {e}"))?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(providers_json)
            .map_err(|e| {
                format!(
                    "providers must be a JSON object of provider settings (line {}, column {})",
                    e.line(),
                    e.column()
                )
            })?;
        let mut providers = BTreeMap::new();
        for (name, value) in raw {
            let name = ProviderName::parse(&name)?;
            let provider =
                parse_provider(&name, value).map_err(|e| format!("provider {name}: {e}"))?;
            providers.insert(name, provider);
        }
        Ok(Config {
            providers,
            public_base_url,
        })
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        ProviderName::parse(name)
            .ok()
            .and_then(|name| self.providers.get(&name))
    }

    /// The redirect URI registered with `provider`.
    pub fn redirect_uri(&self, provider: &ProviderName) -> String {
        self.public_base_url
            .join(&format!("/auth/oidc/{provider}/callback"))
    }
}

fn parse_provider(name: &ProviderName, value: serde_json::Value) -> Result<Provider, String> {
    // serde_json's message can quote the offending value; keep only its category so a
    // malformed secret is never echoed into a log.
    let raw: RawProvider = serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        if text.starts_with("unknown field") || text.starts_with("missing field") {
            text
        } else {
            "fields must be strings (scopes: an array of strings; token_endpoint_auth: \
             client_secret_basic or client_secret_post)"
                .to_owned()
        }
    })?;
    let kind = match raw.kind.as_deref().unwrap_or("oidc") {
        "oidc" => {
            let issuer = raw
                .issuer
                .as_deref()
                .ok_or("issuer is required for kind oidc")?;
            ProviderKind::Oidc {
                issuer: BaseUrl::parse(issuer).map_err(|e| format!("issuer: {e}"))?,
            }
        }
        "github" => {
            if raw.issuer.is_some() {
                return Err("issuer is not used for kind github; remove it".to_owned());
            }
            ProviderKind::Github
        }
        other => {
            return Err(format!(
                "kind '{}' is not supported (use oidc or github)",
                other.escape_default()
            ));
        }
    };
    let printable =
        |s: &str| !s.is_empty() && s.len() <= 512 && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(&raw.client_id) {
        return Err("client_id must be 1..512 printable ASCII characters".to_owned());
    }
    if !printable(&raw.client_secret) {
        return Err("client_secret must be 1..512 printable ASCII characters".to_owned());
    }
    let mut scopes = match raw.scopes {
        Some(scopes) => scopes,
        None => match kind {
            ProviderKind::Oidc { .. } => vec!["openid".into(), "email".into(), "profile".into()],
            ProviderKind::Github => vec!["read:user".into(), "user:email".into()],
        },
    };
    if scopes.iter().any(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err("scopes must be non-empty scope tokens (RFC 6749 §3.3)".to_owned());
    }
    if matches!(kind, ProviderKind::Oidc { .. }) && !scopes.iter().any(|s| s == "openid") {
        // Without `openid` the provider returns no ID token, and the flow would not be OIDC.
        scopes.insert(0, "openid".to_owned());
    }
    Ok(Provider {
        name: name.clone(),
        kind,
        client_id: raw.client_id,
        client_secret: raw.client_secret,
        scopes,
        token_auth: raw.token_endpoint_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://shop.example";

    #[test]
    fn parses_oidc_and_github_providers_with_defaults() {
        let config = Config::parse(
            r#"{"google":{"issuer":"https://accounts.google.com/","client_id":"id","client_secret":"s"},
                "github":{"kind":"github","client_id":"gid","client_secret":"gs"}}"#,
            "https://shop.example/",
        )
        .unwrap();
        let google = config.provider("google").unwrap();
        assert_eq!(
            google.kind,
            ProviderKind::Oidc {
                issuer: BaseUrl("https://accounts.google.com".into())
            }
        );
        assert_eq!(google.scopes, ["openid", "email", "profile"]);
        assert_eq!(google.token_auth, None);
        let github = config.provider("github").unwrap();
        assert_eq!(github.kind, ProviderKind::Github);
        assert_eq!(github.scopes, ["read:user", "user:email"]);
        assert_eq!(
            config.redirect_uri(&google.name),
            "https://shop.example/auth/oidc/google/callback"
        );
        assert!(config.provider("GOOGLE").is_none());
        assert!(config.provider("../x").is_none());
    }

    #[test]
    fn openid_scope_is_always_requested_from_oidc_providers() {
        let config = Config::parse(
            r#"{"p":{"issuer":"https://idp.example","client_id":"i","client_secret":"s","scopes":["email"],
                     "token_endpoint_auth":"client_secret_post"}}"#,
            BASE,
        )
        .unwrap();
        let p = config.provider("p").unwrap();
        assert_eq!(p.scopes, ["openid", "email"]);
        assert_eq!(p.token_auth, Some(TokenAuth::ClientSecretPost));
    }

    #[test]
    fn http_is_only_for_loopback() {
        assert!(BaseUrl::parse("http://127.0.0.1:9400").is_ok());
        assert!(BaseUrl::parse("http://localhost:3000").is_ok());
        assert!(BaseUrl::parse("http://[::1]:3000").is_ok());
        assert!(BaseUrl::parse("http://idp.example").is_err());
        assert!(BaseUrl::parse("ftp://idp.example").is_err());
        assert!(BaseUrl::parse("https://idp.example?x=1").is_err());
        assert!(BaseUrl::parse("not a url").is_err());
        assert!(!BaseUrl::parse("http://127.0.0.1").unwrap().is_https());
    }

    #[test]
    fn rejects_bad_providers_without_echoing_secrets() {
        let cases = [
            (r#"[]"#, "JSON object"),
            (
                r#"{"Bad Name":{"issuer":"https://a.example","client_id":"i","client_secret":"s"}}"#,
                "provider name",
            ),
            (
                r#"{"p":{"client_id":"i","client_secret":"s"}}"#,
                "issuer is required",
            ),
            (
                r#"{"p":{"kind":"saml","client_id":"i","client_secret":"s"}}"#,
                "not supported",
            ),
            (
                r#"{"p":{"kind":"github","issuer":"https://a.example","client_id":"i","client_secret":"s"}}"#,
                "not used",
            ),
            (
                r#"{"p":{"issuer":"https://a.example","client_id":"i"}}"#,
                "missing field",
            ),
            (
                r#"{"p":{"issuer":"https://a.example","client_id":"i","client_secret":"s","extra":1}}"#,
                "unknown field",
            ),
            (
                r#"{"p":{"issuer":"https://a.example","client_id":"i","client_secret":"hunter 2"}}"#,
                "client_secret",
            ),
            (
                r#"{"p":{"issuer":"https://a.example","client_id":"i","client_secret":42}}"#,
                "must be strings",
            ),
            (
                r#"{"p":{"issuer":"http://a.example","client_id":"i","client_secret":"s"}}"#,
                "https",
            ),
        ];
        for (json, expected) in cases {
            let err = Config::parse(json, BASE).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
            assert!(!err.contains("hunter"), "{err}");
        }
        assert!(Config::parse("{}", "http://shop.example").is_err());
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let config = Config::parse(
            r#"{"p":{"issuer":"https://a.example","client_id":"i","client_secret":"topsecret"}}"#,
            BASE,
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("topsecret"));
    }
}
