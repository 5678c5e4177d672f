//! Provider endpoints: OpenID Connect Discovery 1.0 documents, and GitHub's fixed OAuth endpoints.

use serde::{Deserialize, Serialize};

use crate::config::{BaseUrl, TokenAuth, is_loopback};

/// Where the discovery document of `issuer` lives (Discovery §4.1).
pub fn discovery_url(issuer: &BaseUrl) -> String {
    issuer.join("/.well-known/openid-configuration")
}

/// The endpoints a login needs; cached in the key-value store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The issuer identifier ID tokens must carry (`None` for plain OAuth 2.0 providers).
    pub issuer: Option<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// The first of basic/post the provider lists (basic when it lists none: the OIDC default).
    pub token_auth: TokenAuth,
}

/// GitHub's OAuth 2.0 endpoints (no discovery, no ID token).
pub fn github() -> Endpoints {
    Endpoints {
        issuer: None,
        authorization_endpoint: "https://github.com/login/oauth/authorize".into(),
        token_endpoint: "https://github.com/login/oauth/access_token".into(),
        userinfo_endpoint: Some("https://api.github.com/user".into()),
        jwks_uri: None,
        token_auth: TokenAuth::ClientSecretPost,
    }
}

/// The GitHub endpoint listing the account's e-mail addresses.
pub const GITHUB_EMAILS: &str = "https://api.github.com/user/emails";

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    id_token_signing_alg_values_supported: Option<Vec<String>>,
}

/// Parses and checks the discovery document of the configured `issuer`.
pub fn parse(issuer: &BaseUrl, body: &[u8]) -> Result<Endpoints, String> {
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| format!("the discovery document is not valid JSON of the right shape: {e}"))?;
    // Discovery §4.3: the document's issuer must be exactly the one we asked, or a provider
    // could make us accept tokens of another issuer (mix-up).
    if doc.issuer.trim_end_matches('/') != issuer.as_str() {
        return Err(format!(
            "the discovery document names issuer '{}', not the configured '{}'",
            doc.issuer.escape_default(),
            issuer.as_str()
        ));
    }
    let loopback_issuer = !issuer.is_https();
    let endpoint = |name: &str, url: &str| check_endpoint(name, url, loopback_issuer);
    endpoint("authorization_endpoint", &doc.authorization_endpoint)?;
    endpoint("token_endpoint", &doc.token_endpoint)?;
    endpoint("jwks_uri", &doc.jwks_uri)?;
    if let Some(url) = &doc.userinfo_endpoint {
        endpoint("userinfo_endpoint", url)?;
    }
    if let Some(methods) = &doc.code_challenge_methods_supported
        && !methods.iter().any(|m| m == "S256")
    {
        return Err("the provider does not support PKCE with S256".into());
    }
    if let Some(algs) = &doc.id_token_signing_alg_values_supported
        && !algs.iter().any(|a| a == "RS256" || a == "ES256")
    {
        return Err("the provider signs ID tokens with neither RS256 nor ES256".into());
    }
    let token_auth = match &doc.token_endpoint_auth_methods_supported {
        None => TokenAuth::ClientSecretBasic,
        Some(methods) => methods
            .iter()
            .find_map(|m| match m.as_str() {
                "client_secret_basic" => Some(TokenAuth::ClientSecretBasic),
                "client_secret_post" => Some(TokenAuth::ClientSecretPost),
                _ => None,
            })
            .ok_or(
                "the token endpoint supports neither client_secret_basic nor client_secret_post",
            )?,
    };
    Ok(Endpoints {
        issuer: Some(issuer.as_str().to_owned()),
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        userinfo_endpoint: doc.userinfo_endpoint,
        jwks_uri: Some(doc.jwks_uri),
        token_auth,
    })
}

/// Endpoints must be https, except on a loopback issuer (the local development provider).
fn check_endpoint(name: &str, url: &str, loopback_issuer: bool) -> Result<(), String> {
    let bad = || format!("{name} '{}' is not an acceptable URL", url.escape_default());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback_issuer && is_loopback(host) => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(s: &str) -> BaseUrl {
        BaseUrl::parse(s).unwrap()
    }

    fn google_like() -> serde_json::Value {
        serde_json::json!({
            "issuer": "https://accounts.google.com",
            "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
            "token_endpoint": "https://oauth2.googleapis.com/token",
            "userinfo_endpoint": "https://openidconnect.googleapis.com/v1/userinfo",
            "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "id_token_signing_alg_values_supported": ["RS256"]
        })
    }

    #[test]
    fn parses_a_google_like_document() {
        let e = parse(
            &issuer("https://accounts.google.com"),
            google_like().to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(e.issuer.as_deref(), Some("https://accounts.google.com"));
        assert_eq!(e.token_endpoint, "https://oauth2.googleapis.com/token");
        assert_eq!(e.token_auth, TokenAuth::ClientSecretPost);
        assert_eq!(
            discovery_url(&issuer("https://accounts.google.com/")),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let err = parse(
            &issuer("https://evil.example"),
            google_like().to_string().as_bytes(),
        )
        .unwrap_err();
        assert!(err.contains("not the configured"), "{err}");
    }

    #[test]
    fn rejects_insecure_endpoints_and_missing_features() {
        let mut doc = google_like();
        doc["token_endpoint"] = "http://oauth2.googleapis.com/token".into();
        assert!(
            parse(
                &issuer("https://accounts.google.com"),
                doc.to_string().as_bytes()
            )
            .is_err()
        );

        let mut doc = google_like();
        doc["code_challenge_methods_supported"] = serde_json::json!(["plain"]);
        assert!(
            parse(
                &issuer("https://accounts.google.com"),
                doc.to_string().as_bytes()
            )
            .is_err()
        );

        let mut doc = google_like();
        doc["id_token_signing_alg_values_supported"] = serde_json::json!(["HS256"]);
        assert!(
            parse(
                &issuer("https://accounts.google.com"),
                doc.to_string().as_bytes()
            )
            .is_err()
        );

        let mut doc = google_like();
        doc["token_endpoint_auth_methods_supported"] = serde_json::json!(["private_key_jwt"]);
        assert!(
            parse(
                &issuer("https://accounts.google.com"),
                doc.to_string().as_bytes()
            )
            .is_err()
        );

        let mut doc = google_like();
        doc.as_object_mut().unwrap().remove("jwks_uri");
        assert!(
            parse(
                &issuer("https://accounts.google.com"),
                doc.to_string().as_bytes()
            )
            .is_err()
        );

        assert!(parse(&issuer("https://accounts.google.com"), b"<html>").is_err());
    }

    #[test]
    fn loopback_issuers_may_use_http_on_loopback_only() {
        let doc = serde_json::json!({
            "issuer": "http://127.0.0.1:9400",
            "authorization_endpoint": "http://127.0.0.1:9400/authorize",
            "token_endpoint": "http://127.0.0.1:9400/token",
            "jwks_uri": "http://127.0.0.1:9400/jwks",
        });
        let e = parse(&issuer("http://127.0.0.1:9400"), doc.to_string().as_bytes()).unwrap();
        assert_eq!(e.token_auth, TokenAuth::ClientSecretBasic);
        assert_eq!(e.userinfo_endpoint, None);

        let mut doc = doc;
        doc["token_endpoint"] = "http://attacker.example/token".into();
        assert!(parse(&issuer("http://127.0.0.1:9400"), doc.to_string().as_bytes()).is_err());
    }
}
