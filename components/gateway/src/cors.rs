//! Cross-origin resource sharing (the Fetch standard's CORS protocol) for browser clients.
//!
//! The policy is a list of exact origins (`scheme://host[:port]`). With an empty list the gateway
//! sends no CORS header at all, so browsers keep the same-origin rule.
//!
//! * Preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
//!   gateway itself and never forwarded: an allowed origin gets 204 with the allowed methods and
//!   headers; any other origin gets 403 problem+json without CORS headers (the browser blocks).
//! * Every other response to an allowed origin carries `Access-Control-Allow-Origin` (the echoed
//!   origin) and `Access-Control-Expose-Headers`; CORS headers an upstream set are dropped so the
//!   gateway's policy is the only one.
//! * Whenever a policy is configured, responses carry `Vary: Origin`, because they depend on it.
//!
//! No `Access-Control-Allow-Credentials`: the API authenticates with bearer tokens, not cookies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use bazaar_platform::Problem;

/// Methods a browser may use cross-origin.
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a browser may send cross-origin (beyond the CORS-safelisted ones).
pub const ALLOW_HEADERS: &str =
    "authorization, content-type, idempotency-key, x-request-id, x-cart-id";
/// Response headers scripts may read (beyond the CORS-safelisted ones).
pub const EXPOSE_HEADERS: &str = "x-request-id, x-cart-id, retry-after, etag, location, ratelimit-limit, ratelimit-remaining, ratelimit-reset";
/// How long (seconds) browsers may cache a preflight answer.
pub const MAX_AGE_SECS: &str = "600";

/// The configured origins, normalised to lower case (browsers serialise origins that way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Parses comma-separated origins; invalid entries are left out and reported.
    pub fn parse(raw: &str) -> (CorsPolicy, Vec<String>) {
        let mut policy = CorsPolicy::default();
        let mut errors = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_origin(entry) {
                Some(origin) => {
                    if !policy.origins.contains(&origin) {
                        policy.origins.push(origin);
                    }
                }
                None => errors.push(format!(
                    "{entry:?} is not an origin like https://shop.example[:port]"
                )),
            }
        }
        (policy, errors)
    }

    /// Whether any origin is configured (otherwise no CORS headers are sent).
    pub fn is_enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    /// Whether `origin` (as sent in the `Origin` header) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.contains(&origin)
    }

    /// The request's `Origin` value when it is an allowed origin.
    fn allowed_origin<'h>(&self, request: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let mut values = request.get_all(header::ORIGIN).iter();
        let (Some(origin), None) = (values.next(), values.next()) else {
            return None;
        };
        origin
            .to_str()
            .ok()
            .filter(|o| self.allows(o))
            .map(|_| origin)
    }
}

/// `scheme://host[:port]` with scheme http/https, lower-cased; `None` if it is not one.
fn parse_origin(entry: &str) -> Option<String> {
    let lower = entry.to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host_ok, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        let addr_ok = !addr.is_empty()
            && addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        (addr_ok, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (is_host_name(host), port)
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    (host_ok && port_ok).then_some(lower)
}

/// Dot-separated non-empty labels of letters, digits and `-`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Whether the request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The gateway's answer to a preflight.
pub fn preflight_response(
    policy: &CorsPolicy,
    request: &HeaderMap,
    instance: &str,
) -> http::Response<Vec<u8>> {
    let Some(origin) = policy.allowed_origin(request) else {
        return Problem::forbidden("Cross-origin requests from this origin are not allowed")
            .with_instance(instance)
            .to_response();
    };
    let mut response = http::Response::new(Vec::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// Applies the policy to a (non-preflight) response: drops upstream CORS headers, then adds the
/// gateway's for an allowed origin.
pub fn decorate(policy: &CorsPolicy, request: &HeaderMap, response: &mut HeaderMap) {
    let upstream_cors: Vec<HeaderName> = response
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream_cors {
        response.remove(name);
    }
    if !policy.is_enabled() {
        return;
    }
    let varies_on_origin = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*");
    if !varies_on_origin {
        response.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(origin) = policy.allowed_origin(request) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(raw: &str) -> CorsPolicy {
        let (policy, errors) = CorsPolicy::parse(raw);
        assert!(errors.is_empty(), "{errors:?}");
        policy
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn parses_exact_origins() {
        let p = policy(
            " https://Shop.Example , http://localhost:5173,http://[::1]:8080,https://shop.example",
        );
        assert!(p.allows("https://shop.example"));
        assert!(p.allows("HTTPS://SHOP.EXAMPLE"));
        assert!(p.allows("http://localhost:5173"));
        assert!(p.allows("http://[::1]:8080"));
        assert!(!p.allows("http://localhost"));
        assert!(!p.allows("https://shop.example.evil"));
        assert!(!p.allows("null"));
        assert_eq!(p.origins.len(), 3);
    }

    #[test]
    fn rejects_non_origins() {
        for bad in [
            "*",
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://",
            "https://shop..example",
            "https://shop.example:99999",
            "https://shop.example:",
            "https://user@shop.example",
            "http://[::1",
            "http://[::1]x",
        ] {
            let (p, errors) = CorsPolicy::parse(bad);
            assert_eq!(errors.len(), 1, "{bad}");
            assert!(!p.is_enabled(), "{bad}");
        }
        assert!(!CorsPolicy::parse("").0.is_enabled());
    }

    #[test]
    fn detects_preflight() {
        let h = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::GET, &h));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &headers(&[("origin", "https://a.example")])
        ));
    }

    #[test]
    fn preflight_for_allowed_origin() {
        let p = policy("https://a.example");
        let r = preflight_response(
            &p,
            &headers(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "POST"),
            ]),
            "/api/v1/cart",
        );
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("idempotency-key")
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "origin");
        assert!(r.body().is_empty());
    }

    #[test]
    fn preflight_for_other_origin_has_no_cors_headers() {
        for p in [policy("https://a.example"), CorsPolicy::default()] {
            let r = preflight_response(
                &p,
                &headers(&[
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "GET"),
                ]),
                "/x",
            );
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            assert!(
                r.headers()
                    .keys()
                    .all(|k| !k.as_str().starts_with("access-control-")),
            );
        }
    }

    #[test]
    fn two_origin_headers_are_not_trusted() {
        let p = policy("https://a.example");
        let r = preflight_response(
            &p,
            &headers(&[
                ("origin", "https://a.example"),
                ("origin", "https://b.example"),
                ("access-control-request-method", "GET"),
            ]),
            "/x",
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn decorates_responses_for_allowed_origins_only() {
        let p = policy("https://a.example");
        let mut response = headers(&[
            ("access-control-allow-origin", "*"),
            ("content-type", "application/json"),
        ]);
        decorate(
            &p,
            &headers(&[("origin", "https://a.example")]),
            &mut response,
        );
        assert_eq!(response["access-control-allow-origin"], "https://a.example");
        assert_eq!(response["access-control-expose-headers"], EXPOSE_HEADERS);
        assert_eq!(response["vary"], "origin");

        let mut response = headers(&[("access-control-allow-origin", "*"), ("vary", "Origin")]);
        decorate(
            &p,
            &headers(&[("origin", "https://evil.example")]),
            &mut response,
        );
        assert!(response.get("access-control-allow-origin").is_none());
        assert_eq!(response.get_all("vary").iter().count(), 1);

        let mut response = headers(&[("access-control-allow-origin", "*")]);
        decorate(
            &CorsPolicy::default(),
            &headers(&[("origin", "https://a.example")]),
            &mut response,
        );
        assert!(response.is_empty(), "{response:?}");
    }
}
