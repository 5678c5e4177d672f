//! Where a request goes: the gateway's own health endpoints, an upstream service, or an error.
//!
//! Upstream services are found through [`SERVICE_ROUTES`], a table from path prefix to Spin
//! component id. A prefix matches the path itself and everything below it at a segment boundary
//! (`/api/v1/cart` matches `/api/v1/cart` and `/api/v1/cart/items`, not `/api/v1/carts`). The path
//! is forwarded unchanged, so services route on the same full paths clients use. A prefix whose
//! component is not in the configured `upstreams` answers 404: the table can name services that
//! are not deployed yet.
//!
//! Besides the table: `GET /.well-known/jwks.json` is answered by the users service's private
//! `/internal/jwks` (public keys are public; other verifiers may use them). Nothing else under
//! `/internal/` is reachable: no table prefix covers it, so it is 404 at the gateway.

use http::Method;

use crate::config::Config;

/// Path of the liveness endpoint (the gateway's own, and the one it probes on upstreams).
pub const LIVE_PATH: &str = "/health/live";
/// Path of the readiness endpoint.
pub const READY_PATH: &str = "/health/ready";
/// Methods the health endpoints accept.
pub const HEALTH_METHODS: &[&str] = &["GET"];
/// The public JWKS path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the users service serves the JWKS (private route).
pub const JWKS_UPSTREAM_PATH: &str = "/internal/jwks";
/// Methods the JWKS path accepts.
pub const JWKS_METHODS: &[&str] = &["GET"];

/// One row of the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRoute {
    /// Path prefix, without trailing slash.
    pub prefix: &'static str,
    /// Spin component id serving it (reached at `http://<id>.spin.internal`).
    pub component: &'static str,
}

const fn service(prefix: &'static str, component: &'static str) -> ServiceRoute {
    ServiceRoute { prefix, component }
}

/// Path prefix → component id. Ids of services that do not exist yet are our naming plan; a row
/// only takes effect once its component is listed in `upstreams`.
pub const SERVICE_ROUTES: &[ServiceRoute] = &[
    service("/api/v1/users", "users"),
    service("/auth", "users"),
    service("/auth/oidc", "oidc"),
    service("/api/v1/products", "catalog"),
    service("/api/v1/categories", "catalog"),
    service("/images", "catalog"),
    service("/api/v1/cart", "carts"),
    service("/api/v1/orders", "orders"),
    service("/api/v1/inventory", "inventory"),
    service("/api/v1/payments", "payments"),
    service("/webhooks/payments", "payments"),
    service("/api/v1/notifications", "notifications"),
    service("/api/v1/recommendations", "recommendations"),
    service("/api/v1/analytics", "analytics"),
];

/// The routing decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// Forward to this upstream component.
    Proxy { component: &'static str },
    /// `GET /.well-known/jwks.json`: the users service's `/internal/jwks`.
    Jwks,
    /// A known path with a method it does not support.
    MethodNotAllowed { allow: &'static [&'static str] },
    /// The path belongs to a service that is not among the configured upstreams.
    NotDeployed { prefix: &'static str },
    /// The path contains `.`/`..` segments (plain or percent-encoded); never forwarded.
    DotSegments,
    /// Nothing serves this path.
    NotFound,
}

/// Decides where `method path` goes.
pub fn route(method: &Method, path: &str, config: &Config) -> Route {
    if path == LIVE_PATH || path == READY_PATH {
        return if method == Method::GET {
            if path == LIVE_PATH {
                Route::Live
            } else {
                Route::Ready
            }
        } else {
            Route::MethodNotAllowed {
                allow: HEALTH_METHODS,
            }
        };
    }
    if path == JWKS_PATH {
        return if method == Method::GET {
            if config.has_upstream("users") {
                Route::Jwks
            } else {
                Route::NotDeployed { prefix: JWKS_PATH }
            }
        } else {
            Route::MethodNotAllowed {
                allow: JWKS_METHODS,
            }
        };
    }
    let Some(entry) = service_for(path) else {
        return Route::NotFound;
    };
    if has_dot_segment(path) {
        Route::DotSegments
    } else if config.has_upstream(entry.component) {
        Route::Proxy {
            component: entry.component,
        }
    } else {
        Route::NotDeployed {
            prefix: entry.prefix,
        }
    }
}

/// The table row whose prefix covers `path`, if any (the longest, should prefixes ever nest).
pub fn service_for(path: &str) -> Option<&'static ServiceRoute> {
    SERVICE_ROUTES
        .iter()
        .filter(|entry| {
            path.strip_prefix(entry.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|entry| entry.prefix.len())
}

/// Whether any segment is `.` or `..` once percent-decoded, with `\\` and encoded slashes also
/// counted as separators (some servers normalise them), so `..%2F` cannot climb out either.
fn has_dot_segment(path: &str) -> bool {
    let decoded = percent_decode(path);
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| segment == b"." || segment == b"..")
}

/// `%XX` escapes decoded (invalid escapes kept as they are).
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Config {
        Config::from_upstreams("users,oidc,catalog,carts,orders,inventory,payments")
    }

    #[test]
    fn health_endpoints() {
        assert_eq!(route(&Method::GET, "/health/live", &all()), Route::Live);
        assert_eq!(
            route(&Method::GET, "/health/ready", &Config::default()),
            Route::Ready
        );
        assert_eq!(
            route(&Method::POST, "/health/live", &all()),
            Route::MethodNotAllowed { allow: &["GET"] }
        );
        assert_eq!(
            route(&Method::DELETE, "/health/ready", &all()),
            Route::MethodNotAllowed { allow: &["GET"] }
        );
        assert_eq!(
            route(&Method::GET, "/health/live/", &all()),
            Route::NotFound
        );
        assert_eq!(route(&Method::GET, "/health", &all()), Route::NotFound);
    }

    #[test]
    fn api_prefixes_map_to_components() {
        let cases = [
            ("/api/v1/users/me", "users"),
            ("/api/v1/products", "catalog"),
            ("/api/v1/products/p1/images", "catalog"),
            ("/api/v1/categories", "catalog"),
            ("/api/v1/cart", "carts"),
            ("/api/v1/cart/items/p1", "carts"),
            ("/api/v1/orders/o1/cancel", "orders"),
            ("/api/v1/inventory/p1", "inventory"),
            ("/api/v1/payments/methods", "payments"),
            ("/auth/login", "users"),
            ("/images/abc.png", "catalog"),
            ("/webhooks/payments/card", "payments"),
            ("/auth/oidc/google/start", "oidc"),
            ("/auth/oidc", "oidc"),
            ("/auth/oidcx", "users"),
            ("/auth/register", "users"),
        ];
        for (path, component) in cases {
            assert_eq!(
                route(&Method::POST, path, &all()),
                Route::Proxy { component },
                "{path}"
            );
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_only() {
        assert_eq!(
            route(&Method::GET, "/api/v1/carts", &all()),
            Route::NotFound
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/usersx", &all()),
            Route::NotFound
        );
        assert_eq!(route(&Method::GET, "/api/v1", &all()), Route::NotFound);
        assert_eq!(route(&Method::GET, "/api/v1/", &all()), Route::NotFound);
        assert_eq!(route(&Method::GET, "/", &all()), Route::NotFound);
        assert_eq!(
            route(&Method::GET, "/API/v1/users", &all()),
            Route::NotFound
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/users/", &all()),
            Route::Proxy { component: "users" }
        );
    }

    #[test]
    fn unconfigured_services_are_not_deployed() {
        let only_users = Config::from_upstreams("users");
        assert_eq!(
            route(&Method::GET, "/api/v1/orders", &only_users),
            Route::NotDeployed {
                prefix: "/api/v1/orders"
            }
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/analytics/sales", &all()),
            Route::NotDeployed {
                prefix: "/api/v1/analytics"
            }
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/users/u1", &only_users),
            Route::Proxy { component: "users" }
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for path in [
            "/api/v1/users/../orders",
            "/api/v1/users/./me",
            "/api/v1/users/%2e%2e/orders",
            "/api/v1/users/%2E./x",
            "/auth/..%2Finternal/jwks",
            "/auth/..%5cinternal/jwks",
            "/auth/%2e%2e%2finternal",
            "/images/a\\..\\x",
        ] {
            assert_eq!(
                route(&Method::GET, path, &all()),
                Route::DotSegments,
                "{path}"
            );
        }
        assert_eq!(
            route(&Method::GET, "/api/v1/users/a..b", &all()),
            Route::Proxy { component: "users" }
        );
    }

    #[test]
    fn jwks_is_public_and_internal_paths_are_not() {
        assert_eq!(
            route(&Method::GET, "/.well-known/jwks.json", &all()),
            Route::Jwks
        );
        for method in [Method::HEAD, Method::POST] {
            assert_eq!(
                route(&method, "/.well-known/jwks.json", &all()),
                Route::MethodNotAllowed { allow: &["GET"] }
            );
        }
        assert_eq!(
            route(
                &Method::GET,
                "/.well-known/jwks.json",
                &Config::from_upstreams("catalog")
            ),
            Route::NotDeployed {
                prefix: "/.well-known/jwks.json"
            }
        );
        for path in [
            "/internal/jwks",
            "/internal",
            "/internal/admin/migrate",
            "/internal/jobs/outbox",
        ] {
            assert_eq!(route(&Method::GET, path, &all()), Route::NotFound, "{path}");
        }
        assert!(
            SERVICE_ROUTES
                .iter()
                .all(|r| !r.prefix.starts_with("/internal"))
        );
    }

    #[test]
    fn table_is_well_formed() {
        for entry in SERVICE_ROUTES {
            assert!(entry.prefix.starts_with('/') && !entry.prefix.ends_with('/'));
            assert!(crate::config::is_component_id(entry.component));
            assert_ne!(entry.prefix, LIVE_PATH);
        }
    }
}
