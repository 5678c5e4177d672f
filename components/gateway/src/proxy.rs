//! Header and URL rules for forwarding a request to an upstream component and relaying its answer.
//!
//! Forwarded request headers: everything the client sent, except
//! * hop-by-hop headers (RFC 9110 §7.6.1: `connection`, `keep-alive`, `proxy-*`, `te`, `trailer`,
//!   `transfer-encoding`, `upgrade`, plus any header named in `connection`) and `http2-settings` —
//!   these describe one connection, and wasi-http hosts refuse most of them anyway;
//! * `host` and `content-length`: the authority is the upstream URL's; the caller sets
//!   `content-length` from the (buffered) body it actually forwards;
//! * `x-bazaar-*`: internal identity headers (user id, roles, ...) that only the gateway may set
//!   after authenticating — a client must never be able to forge them;
//! * `spin-*`: route metadata Spin computed for the gateway's own route; the upstream gets its own;
//! * `x-request-id`, which is replaced by the request's (validated or generated) id.
//!
//! Added: `x-request-id`, and `x-forwarded-for` / `x-forwarded-host` / `x-forwarded-proto`
//! describing the original client request (services need them e.g. to build absolute URLs).
//!
//! Relayed response headers: the upstream's, minus hop-by-hop headers and `content-length`, with
//! `x-request-id` set to the request's id.

use bazaar_platform::{REQUEST_ID_HEADER, RequestId};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that are meaningful for a single connection only, or that wasi-http forbids guests to set.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Prefix of internal identity headers set only by the gateway.
pub const IDENTITY_HEADER_PREFIX: &str = "x-bazaar-";

/// Prefix of headers the Spin host adds to inbound requests.
pub const SPIN_HEADER_PREFIX: &str = "spin-";

/// The chained-call URL of `path_and_query` on `component`.
pub fn upstream_url(component: &str, path_and_query: &str) -> String {
    format!("http://{component}.spin.internal{path_and_query}")
}

/// Headers to send upstream for an inbound request with `inbound` headers.
pub fn forward_request_headers(inbound: &HeaderMap, request_id: &RequestId) -> HeaderMap {
    let listed = connection_listed(inbound);
    let mut out = HeaderMap::with_capacity(inbound.len() + 4);
    for (name, value) in inbound {
        let n = name.as_str();
        let dropped = is_hop_by_hop(n)
            || listed.contains(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || n.starts_with(IDENTITY_HEADER_PREFIX)
            || n.starts_with(SPIN_HEADER_PREFIX)
            || n == REQUEST_ID_HEADER
            || n.starts_with("x-forwarded-");
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    add_forwarded_headers(inbound, &mut out);
    set_request_id(&mut out, request_id);
    out
}

/// Headers to send back to the client for an upstream response with `upstream` headers.
pub fn relay_response_headers(upstream: &HeaderMap, request_id: &RequestId) -> HeaderMap {
    let listed = connection_listed(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        let dropped =
            is_hop_by_hop(name.as_str()) || listed.contains(name) || name == header::CONTENT_LENGTH;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    set_request_id(&mut out, request_id);
    out
}

/// Sets (replaces) `x-request-id`.
pub fn set_request_id(headers: &mut HeaderMap, request_id: &RequestId) {
    // A `RequestId` only ever holds visible ASCII, so this conversion cannot fail.
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Header names listed as connection options in `connection` headers.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// `x-forwarded-for` (client-sent chain plus the peer address), `-host` and `-proto`.
///
/// Spin adds `spin-client-addr` and `spin-full-url` after any client-sent headers, so the last
/// value of each is the host's.
fn add_forwarded_headers(inbound: &HeaderMap, out: &mut HeaderMap) {
    let last = |name: &str| {
        inbound
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    let mut chain: Vec<String> = inbound
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(ip) = last("spin-client-addr").as_deref().and_then(peer_ip) {
        chain.push(ip.to_owned());
    }
    if let Ok(value) = HeaderValue::from_str(&chain.join(", "))
        && !chain.is_empty()
    {
        out.insert(HeaderName::from_static("x-forwarded-for"), value);
    }

    if let Some(host) = inbound.get(header::HOST) {
        out.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }

    let proto = last("spin-full-url")
        .and_then(|url| {
            url.split_once("://")
                .map(|(scheme, _)| scheme.to_ascii_lowercase())
        })
        .filter(|scheme| scheme == "http" || scheme == "https")
        .unwrap_or_else(|| "http".to_owned());
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_str(&proto).unwrap_or(HeaderValue::from_static("http")),
    );
}

/// The client's IP from the host's `spin-client-addr` (the last value; a client cannot add one
/// before the host's since `spin-*` headers are the host's), `None` when unknown.
pub fn client_ip(inbound: &HeaderMap) -> Option<String> {
    inbound
        .get_all("spin-client-addr")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(peer_ip)
        .map(str::to_owned)
}

/// The IP of a `host:port` / `[v6]:port` peer address (`None` for the chaining placeholder).
fn peer_ip(addr: &str) -> Option<&str> {
    let ip = if let Some(rest) = addr.strip_prefix('[') {
        rest.split_once(']').map(|(ip, _)| ip)?
    } else {
        addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
    };
    (!ip.is_empty() && ip != "0.0.0.0").then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn id() -> RequestId {
        RequestId::parse("req-1").unwrap()
    }

    #[test]
    fn builds_chained_url() {
        assert_eq!(
            upstream_url("catalog", "/api/v1/products?q=a%20b&limit=5"),
            "http://catalog.spin.internal/api/v1/products?q=a%20b&limit=5"
        );
    }

    #[test]
    fn request_keeps_end_to_end_headers_including_repeats() {
        let inbound = headers(&[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
            ("accept", "a"),
            ("accept", "b"),
            ("idempotency-key", "k1"),
        ]);
        let out = forward_request_headers(&inbound, &id());
        assert_eq!(out["authorization"], "Bearer t");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out.get_all("accept").iter().count(), 2);
        assert_eq!(out["idempotency-key"], "k1");
    }

    #[test]
    fn request_drops_hop_by_hop_identity_spin_and_framing_headers() {
        let inbound = headers(&[
            ("connection", "keep-alive, x-custom-hop"),
            ("keep-alive", "timeout=5"),
            ("x-custom-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("host", "shop.example"),
            ("content-length", "12"),
            ("x-bazaar-user-id", "admin"),
            ("X-Bazaar-Roles", "admin"),
            ("spin-path-info", "/api/v1/users"),
            ("spin-full-url", "https://shop.example/api/v1/users"),
            ("x-request-id", "client-id"),
            ("x-kept", "yes"),
        ]);
        let out = forward_request_headers(&inbound, &id());
        let names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        for dropped in [
            "connection",
            "keep-alive",
            "x-custom-hop",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "host",
            "content-length",
            "x-bazaar-user-id",
            "x-bazaar-roles",
            "spin-path-info",
            "spin-full-url",
        ] {
            assert!(!names.contains(&dropped), "{dropped} leaked: {names:?}");
        }
        assert_eq!(out["x-kept"], "yes");
        assert_eq!(out.get_all("x-request-id").iter().count(), 1);
        assert_eq!(out["x-request-id"], "req-1");
    }

    #[test]
    fn request_gets_forwarded_headers() {
        let inbound = headers(&[
            ("host", "shop.example:3000"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("spin-client-addr", "198.51.100.2:51234"),
            ("spin-full-url", "https://shop.example:3000/api/v1/cart"),
        ]);
        let out = forward_request_headers(&inbound, &id());
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 198.51.100.2");
        assert_eq!(out["x-forwarded-host"], "shop.example:3000");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out.get_all("x-forwarded-proto").iter().count(), 1);
    }

    #[test]
    fn forwarded_headers_defaults() {
        let out = forward_request_headers(&HeaderMap::new(), &id());
        assert!(out.get("x-forwarded-for").is_none());
        assert!(out.get("x-forwarded-host").is_none());
        assert_eq!(out["x-forwarded-proto"], "http");
    }

    #[test]
    fn peer_ip_parsing() {
        assert_eq!(peer_ip("127.0.0.1:3000"), Some("127.0.0.1"));
        assert_eq!(peer_ip("[::1]:3000"), Some("::1"));
        assert_eq!(peer_ip("0.0.0.0:0"), None);
        assert_eq!(peer_ip("10.0.0.1"), Some("10.0.0.1"));
        assert_eq!(peer_ip("[::1"), None);
    }

    #[test]
    fn response_relays_headers_and_sets_request_id() {
        let upstream = headers(&[
            ("content-type", "application/json"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("content-length", "99"),
            ("x-request-id", "something-else"),
            ("x-cart-id", "c1"),
        ]);
        let out = relay_response_headers(&upstream, &id());
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
        assert_eq!(out["x-cart-id"], "c1");
        assert_eq!(out["x-request-id"], "req-1");
        assert_eq!(out.get_all("x-request-id").iter().count(), 1);
        for dropped in ["connection", "transfer-encoding", "content-length"] {
            assert!(out.get(dropped).is_none(), "{dropped}");
        }
    }
}
