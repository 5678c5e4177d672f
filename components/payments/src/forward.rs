//! Which requests go to the payment host and how, free of Spin types so it is unit-tested.

use bazaar_platform::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/api/v1/payments...`: needs the caller's identity.
    Api,
    /// `/webhooks/payments/{provider}`: authenticated by the provider's signature instead.
    Webhook,
    /// `GET /health/live`: answered here (the component runs).
    Live,
    /// `GET /health/ready`: the payment host's readiness, forwarded.
    Ready,
}

pub fn classify(method: &str, path: &str) -> Result<Target, Problem> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let allowed = |methods: &[&str]| {
        if methods.contains(&method) {
            Ok(())
        } else {
            Err(Problem::method_not_allowed(method, methods))
        }
    };
    match segments.as_slice() {
        ["health", "live"] => allowed(&["GET"]).map(|_| Target::Live),
        ["health", "ready"] => allowed(&["GET"]).map(|_| Target::Ready),
        ["api", "v1", "payments"] => allowed(&["POST"]).map(|_| Target::Api),
        ["api", "v1", "payments", "methods"] => allowed(&["POST"]).map(|_| Target::Api),
        ["api", "v1", "payments", id] if valid_id(id) => allowed(&["GET"]).map(|_| Target::Api),
        ["api", "v1", "payments", id, "events"] if valid_id(id) => {
            allowed(&["GET"]).map(|_| Target::Api)
        }
        ["api", "v1", "payments", id, "capture" | "void" | "refund"] if valid_id(id) => {
            allowed(&["POST"]).map(|_| Target::Api)
        }
        ["webhooks", "payments", provider] if valid_id(provider) => {
            allowed(&["POST"]).map(|_| Target::Webhook)
        }
        _ => Err(Problem::not_found("No such payment route")),
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `base` + `path` (+ `?query`), or `None` when `base` is not an http(s) origin.
pub fn upstream_url(base: &str, path: &str, query: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return None;
    }
    Some(if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    })
}

/// Request headers passed through. Identity headers are never copied (they are re-set from the
/// verified identity); webhooks keep their signature header.
pub fn forwarded_header(name: &str, target: Target) -> bool {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "content-type" | "idempotency-key" | "accept" => true,
        "bazaar-signature" => target == Target::Webhook,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(classify("GET", "/health/live").unwrap(), Target::Live);
        assert_eq!(classify("GET", "/health/ready").unwrap(), Target::Ready);
        assert_eq!(
            classify("POST", "/api/v1/payments/methods").unwrap(),
            Target::Api
        );
        assert_eq!(
            classify("GET", "/api/v1/payments/pay_1").unwrap(),
            Target::Api
        );
        assert_eq!(
            classify("POST", "/api/v1/payments/pay_1/refund").unwrap(),
            Target::Api
        );
        assert_eq!(
            classify("POST", "/webhooks/payments/card").unwrap(),
            Target::Webhook
        );
        assert_eq!(
            classify("GET", "/api/v1/payments/methods")
                .unwrap_err()
                .status_code()
                .as_u16(),
            405
        );
        assert_eq!(
            classify("POST", "/api/v1/payments/a%2F..")
                .unwrap_err()
                .status_code()
                .as_u16(),
            404
        );
        assert_eq!(
            classify("GET", "/api/v1/payments/x/y/z")
                .unwrap_err()
                .status_code()
                .as_u16(),
            404
        );
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            upstream_url("http://127.0.0.1:3100", "/api/v1/payments/p", "").unwrap(),
            "http://127.0.0.1:3100/api/v1/payments/p"
        );
        assert_eq!(
            upstream_url("http://h:1/", "/x", "a=1").unwrap(),
            "http://h:1/x?a=1"
        );
        assert!(upstream_url("ftp://h", "/x", "").is_none());
        assert!(upstream_url("http://h/path", "/x", "").is_none());
    }

    #[test]
    fn identity_headers_are_never_copied() {
        assert!(!forwarded_header("x-bazaar-user-id", Target::Api));
        assert!(!forwarded_header("x-bazaar-role", Target::Webhook));
        assert!(forwarded_header("Idempotency-Key", Target::Api));
        assert!(forwarded_header("bazaar-signature", Target::Webhook));
        assert!(!forwarded_header("bazaar-signature", Target::Api));
    }
}
