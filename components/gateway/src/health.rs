//! Liveness and readiness answers.
//!
//! * `GET /health/live` → 200 `{"status":"ok"}` whenever the gateway runs.
//! * `GET /health/ready` → 200 `{"status":"ok","checks":[..]}` when every check passes, else 503
//!   problem+json whose `checks` extension lists every check with its status. Checks: `config`
//!   (the gateway's variables are valid) and one `upstream:<id>` per configured upstream, which
//!   passes when `GET http://<id>.spin.internal/health/live` answers 2xx within the probe timeout,
//!   and `store` (the `gateway` key-value store answers a read).

use bazaar_platform::Problem;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::json;

/// Outcome of one readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Passed.
    Ok,
    /// Failed.
    Fail,
}

/// One readiness check as reported in the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `config` or `upstream:<component id>`.
    pub name: String,
    /// Passed or failed.
    pub status: CheckStatus,
    /// Why it failed (absent when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn ok(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: None,
        }
    }

    /// A failing check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: Some(detail.into()),
        }
    }
}

/// The `config` check: fails with every configuration error.
pub fn config_check(errors: &[String]) -> Check {
    if errors.is_empty() {
        Check::ok("config")
    } else {
        Check::fail("config", errors.join("; "))
    }
}

/// The `upstream:<id>` check from the result of probing its liveness endpoint.
pub fn upstream_check(component: &str, probe: Result<StatusCode, String>) -> Check {
    let name = format!("upstream:{component}");
    match probe {
        Ok(status) if status.is_success() => Check::ok(name),
        Ok(status) => Check::fail(name, format!("/health/live answered {}", status.as_u16())),
        Err(error) => Check::fail(name, format!("unreachable: {error}")),
    }
}

/// The `store` check: the gateway's key-value store (JWKS cache, rate limits) answers.
pub fn store_check(probe: Result<(), String>) -> Check {
    match probe {
        Ok(()) => Check::ok("store"),
        Err(error) => Check::fail("store", format!("key-value store 'gateway': {error}")),
    }
}

/// 200 `{"status":"ok"}`.
pub fn live_response() -> http::Response<Vec<u8>> {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// 200 with all checks, or 503 problem+json listing them.
pub fn ready_response(checks: &[Check], instance: &str) -> http::Response<Vec<u8>> {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        #[derive(Serialize)]
        struct Ready<'a> {
            status: &'static str,
            checks: &'a [Check],
        }
        let body = Ready {
            status: "ok",
            checks,
        };
        return json_response(StatusCode::OK, &body);
    }
    Problem::service_unavailable(format!(
        "{} of {} readiness checks failed: {}",
        failed.len(),
        checks.len(),
        failed.join(", ")
    ))
    .with_instance(instance)
    .with_extension("checks", json!(checks))
    .to_response()
}

fn json_response(status: StatusCode, body: &impl Serialize) -> http::Response<Vec<u8>> {
    // Plain structs and `Value`s always serialise.
    let mut response = http::Response::new(serde_json::to_vec(body).unwrap_or_default());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(response: &http::Response<Vec<u8>>) -> Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[test]
    fn live_is_ok() {
        let r = live_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(&r), json!({"status": "ok"}));
    }

    #[test]
    fn ready_when_all_checks_pass() {
        let checks = [Check::ok("config"), Check::ok("upstream:users")];
        let r = ready_response(&checks, "/health/ready");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(String::from_utf8_lossy(r.body()).starts_with(r#"{"status":"ok","checks":["#));
        assert_eq!(
            body(&r),
            json!({"status": "ok", "checks": [
                {"name": "config", "status": "ok"},
                {"name": "upstream:users", "status": "ok"}
            ]})
        );
    }

    #[test]
    fn not_ready_is_a_503_problem_listing_checks() {
        let checks = [
            config_check(&[]),
            upstream_check("users", Ok(StatusCode::OK)),
            upstream_check("catalog", Ok(StatusCode::INTERNAL_SERVER_ERROR)),
            upstream_check("carts", Err("HttpRequestDenied".into())),
        ];
        let r = ready_response(&checks, "/health/ready");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let v = body(&r);
        assert_eq!(v["status"], 503);
        assert_eq!(v["instance"], "/health/ready");
        assert!(v["detail"].as_str().unwrap().starts_with("2 of 4"));
        assert_eq!(v["checks"][2]["status"], "fail");
        assert_eq!(v["checks"][2]["detail"], "/health/live answered 500");
        assert!(
            v["checks"][3]["detail"]
                .as_str()
                .unwrap()
                .contains("HttpRequestDenied")
        );
        assert!(v["checks"][1].get("detail").is_none());
    }

    #[test]
    fn config_errors_fail_the_config_check() {
        let c = config_check(&["bad id 'x-1'".into(), "other".into()]);
        assert_eq!(c.status, CheckStatus::Fail);
        assert_eq!(c.detail.as_deref(), Some("bad id 'x-1'; other"));
    }
}
