//! RFC 9457 problem details.
//!
//! Every error a Bazaar API returns is a [`Problem`] serialised as `application/problem+json`:
//!
//! ```json
//! { "type": "about:blank", "title": "Not Found", "status": 404,
//!   "detail": "No route for /nope", "instance": "/nope" }
//! ```
//!
//! `type` defaults to `about:blank`, which (per the RFC) means "the title is the HTTP status
//! phrase and carries no extra semantics". Use [`Problem::with_type`] for problems clients should
//! tell apart programmatically. `detail` is always present (our API contract requires it);
//! `instance` and `errors` are omitted when empty. Additional members (RFC 9457 §3.2 extensions)
//! go through [`Problem::with_extension`] and are flattened into the top-level object.

use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Media type of a problem details body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The `type` used when a problem has no more specific type than its status code.
pub const ABOUT_BLANK: &str = "about:blank";

/// Member names defined by RFC 9457 or by our contract; extensions may not reuse them.
const RESERVED_MEMBERS: [&str; 6] = ["type", "title", "status", "detail", "instance", "errors"];

/// One failed validation rule, reported in [`Problem::errors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The offending field, as a dotted/JSON-pointer-ish path the client sent (`items[0].quantity`).
    pub field: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference identifying the problem type (`about:blank` by default).
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code of this occurrence.
    pub status: u16,
    /// Human-readable explanation specific to this occurrence.
    #[serde(default)]
    pub detail: String,
    /// URI reference identifying this occurrence (we use the request path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Validation failures, one per offending field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension members, serialised at the top level.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

fn about_blank() -> String {
    ABOUT_BLANK.to_owned()
}

impl Problem {
    /// A problem for `status` with the status' standard reason phrase as title.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            type_uri: about_blank(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            errors: Vec::new(),
            extensions: Map::new(),
        }
    }

    /// 400: the request is malformed (e.g. invalid JSON).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401: missing or invalid credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403: valid credentials lacking the role or ownership.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404: no such resource or route.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 405 for `method`, naming the allowed methods in the detail. The caller must also send an
    /// `Allow` header; [`Problem::method_not_allowed_response`] does both.
    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "Method {method} is not allowed here; allowed: {}",
                allowed.join(", ")
            ),
        )
    }

    /// 409: conflicts with the current state (or a concurrent duplicate).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 413: the body exceeds the documented limit of `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body exceeds the limit of {limit_bytes} bytes"),
        )
    }

    /// 415: the body's media type is not accepted.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }

    /// 422: validation failed; one [`FieldError`] per offending field.
    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The request failed validation",
        );
        problem.errors = errors;
        problem
    }

    /// 429: rate limited.
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
    }

    /// 500: an unexpected failure. Keep `detail` free of internals; log those instead.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// 502: an upstream service could not be reached or answered garbage.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }

    /// 503: a dependency is down or the service is not ready.
    pub fn service_unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// 504: an upstream service did not answer in time.
    pub fn gateway_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, detail)
    }

    /// Sets a specific problem type URI.
    pub fn with_type(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = type_uri.into();
        self
    }

    /// Overrides the title (do this together with [`Problem::with_type`]).
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the occurrence URI (typically the request path).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Appends one validation error.
    pub fn with_error(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError::new(field, message));
        self
    }

    /// Adds an extension member. Names of standard members (`type`, `title`, `status`, `detail`,
    /// `instance`, `errors`) are ignored so an extension can never corrupt the standard fields.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !RESERVED_MEMBERS.contains(&name.as_str()) {
            self.extensions.insert(name, value.into());
        }
        self
    }

    /// The status as an `http` status code (500 if the stored number is not a valid status).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body.
    pub fn to_json_vec(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and `Value`s cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// An `http` response with this problem as body and `content-type: application/problem+json`.
    pub fn to_response(&self) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(self.to_json_vec());
        *response.status_mut() = self.status_code();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }

    /// A complete 405 response: problem body plus the `Allow` header.
    pub fn method_not_allowed_response(method: &str, allowed: &[&str]) -> http::Response<Vec<u8>> {
        let mut response = Self::method_not_allowed(method, allowed).to_response();
        if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

impl From<Problem> for http::Response<Vec<u8>> {
    fn from(problem: Problem) -> Self {
        problem.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(problem: &Problem) -> Value {
        serde_json::from_slice(&problem.to_json_vec()).unwrap()
    }

    #[test]
    fn minimal_problem_has_required_members_only() {
        let p = Problem::not_found("No route for /nope");
        assert_eq!(
            body(&p),
            json!({"type": "about:blank", "title": "Not Found", "status": 404,
                   "detail": "No route for /nope"})
        );
    }

    #[test]
    fn members_are_serialised_in_rfc_order() {
        let p = Problem::bad_request("x").with_instance("/a");
        let text = String::from_utf8(p.to_json_vec()).unwrap();
        let positions: Vec<usize> = [
            "\"type\"",
            "\"title\"",
            "\"status\"",
            "\"detail\"",
            "\"instance\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn constructors_use_the_right_status_and_title() {
        let cases = [
            (Problem::bad_request("d"), 400, "Bad Request"),
            (Problem::unauthorized("d"), 401, "Unauthorized"),
            (Problem::forbidden("d"), 403, "Forbidden"),
            (Problem::not_found("d"), 404, "Not Found"),
            (
                Problem::method_not_allowed("POST", &["GET"]),
                405,
                "Method Not Allowed",
            ),
            (Problem::conflict("d"), 409, "Conflict"),
            (Problem::payload_too_large(1024), 413, "Payload Too Large"),
            (
                Problem::unsupported_media_type("d"),
                415,
                "Unsupported Media Type",
            ),
            (Problem::unprocessable(vec![]), 422, "Unprocessable Entity"),
            (Problem::too_many_requests("d"), 429, "Too Many Requests"),
            (Problem::internal("d"), 500, "Internal Server Error"),
            (Problem::bad_gateway("d"), 502, "Bad Gateway"),
            (
                Problem::service_unavailable("d"),
                503,
                "Service Unavailable",
            ),
            (Problem::gateway_timeout("d"), 504, "Gateway Timeout"),
        ];
        for (problem, status, title) in cases {
            assert_eq!(problem.status, status);
            assert_eq!(problem.title, title);
            assert_eq!(problem.type_uri, ABOUT_BLANK);
            assert_eq!(problem.status_code().as_u16(), status);
        }
    }

    #[test]
    fn unprocessable_lists_field_errors() {
        let p = Problem::unprocessable(vec![
            FieldError::new("email", "must be an email address"),
            FieldError::new("items[0].quantity", "must be at least 1"),
        ]);
        assert_eq!(
            body(&p)["errors"],
            json!([
                {"field": "email", "message": "must be an email address"},
                {"field": "items[0].quantity", "message": "must be at least 1"}
            ])
        );
    }

    #[test]
    fn payload_too_large_names_the_limit() {
        assert!(Problem::payload_too_large(65536).detail.contains("65536"));
    }

    #[test]
    fn extensions_are_flattened_and_cannot_shadow_standard_members() {
        let p = Problem::service_unavailable("not ready")
            .with_extension("checks", json!([{"name": "users", "status": "fail"}]))
            .with_extension("status", 200)
            .with_extension("type", "evil");
        let v = body(&p);
        assert_eq!(v["status"], 503);
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["checks"][0]["name"], "users");
    }

    #[test]
    fn custom_type_title_and_errors_builder() {
        let p = Problem::conflict("key in flight")
            .with_type("https://bazaar.dev/problems/idempotency-in-flight")
            .with_title("Request in flight")
            .with_error("Idempotency-Key", "in use");
        let v = body(&p);
        assert_eq!(
            v["type"],
            "https://bazaar.dev/problems/idempotency-in-flight"
        );
        assert_eq!(v["title"], "Request in flight");
        assert_eq!(v["errors"][0]["field"], "Idempotency-Key");
    }

    #[test]
    fn response_carries_status_and_problem_content_type() {
        let response = Problem::not_found("gone").with_instance("/x").to_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        let v: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(v["instance"], "/x");
    }

    #[test]
    fn method_not_allowed_response_has_allow_header() {
        let response = Problem::method_not_allowed_response("DELETE", &["GET", "HEAD"]);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let v: Value = serde_json::from_slice(response.body()).unwrap();
        assert!(v["detail"].as_str().unwrap().contains("DELETE"));
    }

    #[test]
    fn round_trips_and_keeps_unknown_members_as_extensions() {
        let text = r#"{"type":"about:blank","title":"Conflict","status":409,
                       "detail":"dup","request_id":"abc"}"#;
        let p: Problem = serde_json::from_str(text).unwrap();
        assert_eq!(p.status, 409);
        assert_eq!(p.extensions["request_id"], "abc");
        let again: Problem = serde_json::from_slice(&p.to_json_vec()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn invalid_stored_status_maps_to_500() {
        let mut p = Problem::internal("x");
        p.status = 42;
        assert_eq!(p.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
