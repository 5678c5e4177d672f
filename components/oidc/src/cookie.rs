//! The browser-binding cookie (login CSRF protection, RFC 9700 §4.7.1 / OIDC Core §15.5.2).
//!
//! On https shops the cookie is `__Host-bazaar_oidc`: the `__Host-` prefix makes browsers accept
//! it only with `Secure`, `Path=/` and no `Domain`, so a sibling sub-domain cannot plant one
//! (cookie tossing). Browsers refuse `Secure` cookies from plain-http origins, so a shop served on
//! `http://127.0.0.1` (development, tests) uses the plain name `bazaar_oidc` without `Secure`;
//! loopback has no sibling domains to toss cookies from. Both are `HttpOnly` (scripts never see
//! it) and `SameSite=Lax`: the provider's redirect back is a top-level GET navigation, which Lax
//! cookies accompany, while cross-site sub-requests do not carry it.

use crate::config::BaseUrl;
use crate::pending::LOGIN_TTL_MS;

pub const SECURE_NAME: &str = "__Host-bazaar_oidc";
pub const PLAIN_NAME: &str = "bazaar_oidc";

/// The cookie's name for a shop served at `base`.
pub fn name(base: &BaseUrl) -> &'static str {
    if base.is_https() {
        SECURE_NAME
    } else {
        PLAIN_NAME
    }
}

/// `Set-Cookie` that binds the browser to a login with `value`.
pub fn set(base: &BaseUrl, value: &str) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        name(base),
        LOGIN_TTL_MS / 1000,
        secure_attr(base)
    )
}

/// `Set-Cookie` that removes the binding cookie (the login is over, whatever its outcome).
pub fn clear(base: &BaseUrl) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        name(base),
        secure_attr(base)
    )
}

fn secure_attr(base: &BaseUrl) -> &'static str {
    if base.is_https() { "; Secure" } else { "" }
}

/// The value of cookie `name` in the `Cookie` header values `headers` (RFC 6265 §5.4 syntax:
/// `a=b; c=d`). With duplicates the first wins, as browsers send the most specific first.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_shops_get_a_host_prefixed_secure_cookie() {
        let base = BaseUrl::parse("https://shop.example").unwrap();
        let set = set(&base, "v");
        assert_eq!(
            set,
            "__Host-bazaar_oidc=v; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(clear(&base).contains("Max-Age=0"));
        assert!(clear(&base).ends_with("; Secure"));
    }

    #[test]
    fn loopback_http_shops_get_a_plain_cookie() {
        let base = BaseUrl::parse("http://127.0.0.1:3000").unwrap();
        let set = set(&base, "v");
        assert!(set.starts_with("bazaar_oidc=v;"));
        assert!(!set.contains("Secure"));
        assert!(set.contains("HttpOnly"));
        assert!(set.contains("SameSite=Lax"));
    }

    #[test]
    fn finds_a_cookie_among_others() {
        assert_eq!(
            find(["a=1; bazaar_oidc=xyz; b=2"], "bazaar_oidc"),
            Some("xyz")
        );
        assert_eq!(find(["a=1", "bazaar_oidc=q"], "bazaar_oidc"), Some("q"));
        assert_eq!(find(["xbazaar_oidc=1"], "bazaar_oidc"), None);
        assert_eq!(find(["bazaar_oidc="], "bazaar_oidc"), None);
        assert_eq!(find(["garbage"], "bazaar_oidc"), None);
        assert_eq!(find([], "bazaar_oidc"), None);
    }
}
