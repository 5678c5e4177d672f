//! The component's routes (all private: the gateway forwards `/auth/oidc/...` unchanged).

/// Path of the liveness endpoint the gateway's readiness probes.
pub const LIVE_PATH: &str = "/health/live";
/// The expired-login sweep (a scheduled job; `[[component.oidc.tool.bazaar.jobs]]`).
pub const SWEEP_PATH: &str = "/internal/jobs/expire-logins";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Live,
    Start { provider: &'a str },
    Callback { provider: &'a str },
    Sweep,
    MethodNotAllowed { allow: &'static [&'static str] },
    NotFound,
}

/// Decides what `method path` is.
pub fn route<'a>(method: &http::Method, path: &'a str) -> Route<'a> {
    let (found, allow): (Route<'a>, &'static [&'static str]) = if path == LIVE_PATH {
        (Route::Live, &["GET"])
    } else if path == SWEEP_PATH {
        (Route::Sweep, &["POST"])
    } else if let Some(rest) = path.strip_prefix("/auth/oidc/") {
        match rest.split_once('/') {
            Some((provider, "start")) if !provider.is_empty() => {
                (Route::Start { provider }, &["GET"])
            }
            Some((provider, "callback")) if !provider.is_empty() => {
                (Route::Callback { provider }, &["GET"])
            }
            _ => return Route::NotFound,
        }
    } else {
        return Route::NotFound;
    };
    if allow.contains(&method.as_str()) {
        found
    } else {
        Route::MethodNotAllowed { allow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_start_callback_health_and_sweep() {
        assert_eq!(
            route(&Method::GET, "/auth/oidc/google/start"),
            Route::Start { provider: "google" }
        );
        assert_eq!(
            route(&Method::GET, "/auth/oidc/local/callback"),
            Route::Callback { provider: "local" }
        );
        assert_eq!(route(&Method::GET, "/health/live"), Route::Live);
        assert_eq!(route(&Method::POST, SWEEP_PATH), Route::Sweep);
        assert_eq!(
            route(&Method::POST, "/auth/oidc/google/start"),
            Route::MethodNotAllowed { allow: &["GET"] }
        );
        assert_eq!(route(&Method::GET, "/auth/oidc//start"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/auth/oidc/a/b/start"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/auth/oidc/google"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/elsewhere"), Route::NotFound);
    }
}
