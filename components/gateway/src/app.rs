//! The gateway's request handling on plain `http` types, independent of the Spin host.
//!
//! `lib.rs` converts the wasi-http request into an `http::Request`, calls [`handle`] with an
//! [`Upstream`] that sends through `spin_sdk::http::send`, and writes the response back. Unit tests
//! drive the same function with a fake upstream.

use std::future::Future;
use std::time::Duration;

use bazaar_platform::{Level, Problem, REQUEST_ID_HEADER, RequestId, log_json};
use futures::future::join_all;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::Config;
use crate::health;
use crate::proxy::{forward_request_headers, relay_response_headers, set_request_id, upstream_url};
use crate::routing::{LIVE_PATH, Route, route};

/// This component's id, stamped on log lines.
pub const COMPONENT: &str = "gateway";

/// Sends a request to another component and returns its full response, or a transport error.
pub trait Upstream {
    /// Performs `request` (its URI is absolute: `http://<id>.spin.internal/...`).
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> impl Future<Output = Result<http::Response<Vec<u8>>, String>>;
}

/// What the gateway did for a request; stored in the response's extensions for the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The upstream component the request was forwarded to.
    pub upstream: Option<&'static str>,
    /// Why forwarding failed (transport error text; never shown to the client).
    pub error: Option<String>,
}

/// Handles one request.
pub async fn handle<U: Upstream>(
    request: http::Request<Vec<u8>>,
    config: &Config,
    upstream: &U,
) -> http::Response<Vec<u8>> {
    let request_id = request_id_of(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut outcome = Outcome::default();

    let response = match route(&method, &path, config) {
        Route::Live => health::live_response(),
        Route::Ready => readiness(config, upstream, &request_id, &path).await,
        Route::Proxy { component } => {
            outcome.upstream = Some(component);
            match forward(request, component, upstream, &request_id).await {
                Ok(response) => response,
                Err(error) => {
                    outcome.error = Some(error);
                    Problem::bad_gateway(format!("The {component} service could not be reached"))
                        .with_instance(&path)
                        .to_response()
                }
            }
        }
        Route::MethodNotAllowed { allow } => {
            let mut response = Problem::method_not_allowed(method.as_str(), allow)
                .with_instance(&path)
                .to_response();
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        Route::NotDeployed { prefix } => {
            Problem::not_found(format!("No service is deployed for {prefix}"))
                .with_instance(&path)
                .to_response()
        }
        Route::DotSegments => {
            Problem::bad_request("The path must not contain '.' or '..' segments")
                .with_instance(&path)
                .to_response()
        }
        Route::NotFound => Problem::not_found(format!("No route for {path}"))
            .with_instance(&path)
            .to_response(),
    };
    finish(response, &request_id, &method, outcome)
}

/// Answers `problem` for a request that could not be read (bad URI, unreadable body).
pub fn reject(parts: &http::request::Parts, problem: Problem) -> http::Response<Vec<u8>> {
    let request_id = request_id_of(&parts.headers);
    let response = problem.with_instance(parts.uri.path()).to_response();
    finish(response, &request_id, &parts.method, Outcome::default())
}

/// The client's `x-request-id` if valid, else a new id.
pub fn request_id_of(headers: &HeaderMap) -> RequestId {
    RequestId::from_header(
        headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok()),
    )
}

/// Stamps the request id, fixes framing and records the outcome.
fn finish(
    mut response: http::Response<Vec<u8>>,
    request_id: &RequestId,
    method: &Method,
    outcome: Outcome,
) -> http::Response<Vec<u8>> {
    set_request_id(response.headers_mut(), request_id);
    let status = response.status();
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if *method != Method::HEAD && !bodiless {
        let length = HeaderValue::from(response.body().len());
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length);
    }
    response.extensions_mut().insert(outcome);
    response.extensions_mut().insert(request_id.clone());
    response
}

async fn forward<U: Upstream>(
    request: http::Request<Vec<u8>>,
    component: &str,
    upstream: &U,
    request_id: &RequestId,
) -> Result<http::Response<Vec<u8>>, String> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut outbound = http::Request::builder()
        .method(parts.method.clone())
        .uri(upstream_url(component, path_and_query))
        .body(body)
        .map_err(|e| format!("building upstream request: {e}"))?;
    *outbound.headers_mut() = forward_request_headers(&parts.headers, request_id);
    // The body is buffered, so announce its exact length rather than letting the host chunk it.
    if !outbound.body().is_empty() || parts.headers.contains_key(header::CONTENT_LENGTH) {
        let length = HeaderValue::from(outbound.body().len());
        outbound
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length);
    }

    let (upstream_parts, upstream_body) = upstream.send(outbound).await?.into_parts();
    let mut relayed = http::Response::new(upstream_body);
    *relayed.status_mut() = upstream_parts.status;
    *relayed.headers_mut() = relay_response_headers(&upstream_parts.headers, request_id);
    Ok(relayed)
}

async fn readiness<U: Upstream>(
    config: &Config,
    upstream: &U,
    request_id: &RequestId,
    instance: &str,
) -> http::Response<Vec<u8>> {
    let probes = config.upstreams.iter().map(|component| async move {
        let probe = http::Request::get(upstream_url(component, LIVE_PATH))
            .header(REQUEST_ID_HEADER, request_id.as_str())
            .body(Vec::new());
        let result = match probe {
            Ok(probe) => upstream.send(probe).await.map(|r| r.status()),
            Err(e) => Err(e.to_string()),
        };
        health::upstream_check(component, result)
    });
    let mut checks = vec![health::config_check(&config.errors)];
    checks.extend(join_all(probes).await);
    health::ready_response(&checks, instance)
}

/// Writes the access log line for a finished request.
pub fn log_access(
    method: &Method,
    path: &str,
    response: &http::Response<Vec<u8>>,
    elapsed: Duration,
) {
    let (level, fields) = access_log_fields(method, path, response, elapsed);
    let request_id = response
        .extensions()
        .get::<RequestId>()
        .map(RequestId::as_str);
    log_json(level, COMPONENT, request_id, "request", &fields);
}

/// Level and fields of the access log line: `method`, `path` (no query: it may hold secrets),
/// `status`, `duration_ms`, and `upstream`/`error` when the request was forwarded.
pub fn access_log_fields(
    method: &Method,
    path: &str,
    response: &http::Response<Vec<u8>>,
    elapsed: Duration,
) -> (Level, Vec<(&'static str, Value)>) {
    let status = response.status();
    let duration_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let mut fields = vec![
        ("method", json!(method.as_str())),
        ("path", json!(path)),
        ("status", json!(status.as_u16())),
        ("duration_ms", json!(duration_ms)),
    ];
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        if let Some(upstream) = outcome.upstream {
            fields.push(("upstream", json!(upstream)));
        }
        if let Some(error) = &outcome.error {
            fields.push(("error", json!(error)));
        }
    }
    let level = if status.is_server_error() {
        Level::Error
    } else {
        Level::Info
    };
    (level, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::cell::RefCell;

    type Req = http::Request<Vec<u8>>;
    type Answer = Result<http::Response<Vec<u8>>, String>;

    /// Answers from a closure and records every request it was given.
    struct FakeUpstream {
        answer: Box<dyn Fn(&Req) -> Answer>,
        seen: RefCell<Vec<Req>>,
    }

    impl FakeUpstream {
        fn new(answer: impl Fn(&Req) -> Answer + 'static) -> Self {
            Self {
                answer: Box::new(answer),
                seen: RefCell::new(Vec::new()),
            }
        }
    }

    impl Upstream for FakeUpstream {
        async fn send(&self, request: Req) -> Answer {
            let answer = (self.answer)(&request);
            self.seen.borrow_mut().push(request);
            answer
        }
    }

    fn ok_upstream() -> FakeUpstream {
        FakeUpstream::new(|_req| {
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(b"{\"ok\":true}".to_vec())
                .unwrap())
        })
    }

    fn request(method: &str, uri: &str) -> http::request::Builder {
        http::Request::builder().method(method).uri(uri)
    }

    fn run<U: Upstream>(
        req: http::Request<Vec<u8>>,
        config: &Config,
        upstream: &U,
    ) -> http::Response<Vec<u8>> {
        block_on(handle(req, config, upstream))
    }

    fn json_body(response: &http::Response<Vec<u8>>) -> Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[test]
    fn live() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/health/live").body(vec![]).unwrap(),
            &Config::default(),
            &up,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(json_body(&r), json!({"status": "ok"}));
        assert!(RequestId::is_valid(
            r.headers()["x-request-id"].to_str().unwrap()
        ));
        assert_eq!(r.headers()["content-length"], "15");
        assert!(up.seen.borrow().is_empty());
    }

    #[test]
    fn ready_without_upstreams_reports_own_checks() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/health/ready").body(vec![]).unwrap(),
            &Config::default(),
            &up,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(
            json_body(&r),
            json!({"status": "ok", "checks": [{"name": "config", "status": "ok"}]})
        );
    }

    #[test]
    fn ready_probes_each_upstream_liveness_with_the_request_id() {
        let up = FakeUpstream::new(|req: &Req| {
            if req.uri().host() == Some("catalog.spin.internal") {
                Err("connection refused".to_owned())
            } else {
                Ok(http::Response::new(Vec::new()))
            }
        });
        let config = Config::from_upstreams("users,catalog");
        let r = run(
            request("GET", "/health/ready")
                .header("x-request-id", "probe-1")
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(r.headers()["x-request-id"], "probe-1");
        let v = json_body(&r);
        assert_eq!(
            v["checks"][1],
            json!({"name": "upstream:users", "status": "ok"})
        );
        assert_eq!(v["checks"][2]["name"], "upstream:catalog");
        assert_eq!(v["checks"][2]["status"], "fail");

        let seen = up.seen.borrow();
        let uris: Vec<String> = seen.iter().map(|r| r.uri().to_string()).collect();
        assert_eq!(
            uris,
            [
                "http://users.spin.internal/health/live",
                "http://catalog.spin.internal/health/live"
            ]
        );
        assert!(seen.iter().all(|r| r.method() == Method::GET));
        assert!(
            seen.iter()
                .all(|r| r.headers()["x-request-id"] == "probe-1")
        );
    }

    #[test]
    fn ready_fails_on_bad_config() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/health/ready").body(vec![]).unwrap(),
            &Config::from_upstreams("users,not_valid"),
            &up,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(json_body(&r)["checks"][0]["name"], "config");
        assert_eq!(json_body(&r)["checks"][0]["status"], "fail");
    }

    #[test]
    fn wrong_method_on_health_is_405_with_allow() {
        let up = ok_upstream();
        let r = run(
            request("POST", "/health/live").body(vec![]).unwrap(),
            &Config::default(),
            &up,
        );
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(json_body(&r)["instance"], "/health/live");
    }

    #[test]
    fn unknown_route_is_404_problem() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/nope?x=1").body(vec![]).unwrap(),
            &Config::default(),
            &up,
        );
        assert_eq!(r.status(), 404);
        let v = json_body(&r);
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["instance"], "/nope");
        assert!(r.headers().contains_key("x-request-id"));
    }

    #[test]
    fn undeployed_service_is_404_problem_and_not_contacted() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/api/v1/orders").body(vec![]).unwrap(),
            &Config::from_upstreams("users"),
            &up,
        );
        assert_eq!(r.status(), 404);
        assert!(
            json_body(&r)["detail"]
                .as_str()
                .unwrap()
                .contains("/api/v1/orders")
        );
        assert!(up.seen.borrow().is_empty());
    }

    #[test]
    fn proxies_method_path_query_body_and_headers() {
        let up = FakeUpstream::new(|req: &Req| {
            assert_eq!(req.body(), b"{\"quantity\":2}");
            Ok(http::Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .header("connection", "close")
                .header("x-request-id", "upstream-made-this-up")
                .body(b"{\"id\":\"c1\"}".to_vec())
                .unwrap())
        });
        let r = run(
            request("POST", "/api/v1/cart/items?dry_run=1&x=a%20b")
                .header("content-type", "application/json")
                .header("authorization", "Bearer abc")
                .header("x-bazaar-user-id", "forged-admin")
                .header("connection", "keep-alive")
                .header("x-request-id", "client.id-1")
                .body(b"{\"quantity\":2}".to_vec())
                .unwrap(),
            &Config::from_upstreams("carts"),
            &up,
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.body(), b"{\"id\":\"c1\"}");
        assert_eq!(r.headers()["x-request-id"], "client.id-1");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert!(r.headers().get("connection").is_none());
        assert_eq!(r.headers()["content-length"], "11");
        assert_eq!(
            r.extensions().get::<Outcome>().unwrap().upstream,
            Some("carts")
        );

        let seen = up.seen.borrow();
        let sent = &seen[0];
        assert_eq!(sent.method(), Method::POST);
        assert_eq!(
            sent.uri().to_string(),
            "http://carts.spin.internal/api/v1/cart/items?dry_run=1&x=a%20b"
        );
        assert_eq!(sent.headers()["authorization"], "Bearer abc");
        assert_eq!(sent.headers()["content-type"], "application/json");
        assert_eq!(sent.headers()["x-request-id"], "client.id-1");
        assert!(sent.headers().get("x-bazaar-user-id").is_none());
        assert_eq!(sent.headers()["content-length"], "14");
        assert!(sent.headers().get("connection").is_none());
    }

    #[test]
    fn upstream_error_statuses_pass_through() {
        let up = FakeUpstream::new(|_req: &Req| {
            Ok(http::Response::builder()
                .status(422)
                .header("content-type", "application/problem+json")
                .body(b"{}".to_vec())
                .unwrap())
        });
        let r = run(
            request("POST", "/api/v1/users").body(vec![]).unwrap(),
            &Config::from_upstreams("users"),
            &up,
        );
        assert_eq!(r.status(), 422);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }

    #[test]
    fn transport_failure_is_502_problem() {
        let up = FakeUpstream::new(|_req: &Req| Err("Http(ConnectionRefused)".to_owned()));
        let r = run(
            request("GET", "/api/v1/products").body(vec![]).unwrap(),
            &Config::from_upstreams("catalog"),
            &up,
        );
        assert_eq!(r.status(), 502);
        let v = json_body(&r);
        assert_eq!(v["title"], "Bad Gateway");
        assert!(!v["detail"].as_str().unwrap().contains("ConnectionRefused"));
        let outcome = r.extensions().get::<Outcome>().unwrap();
        assert_eq!(outcome.error.as_deref(), Some("Http(ConnectionRefused)"));
        let (level, fields) = access_log_fields(
            &Method::GET,
            "/api/v1/products",
            &r,
            Duration::from_micros(1500),
        );
        assert_eq!(level, Level::Error);
        let fields: serde_json::Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(fields["status"], 502);
        assert_eq!(fields["duration_ms"], 1.5);
        assert_eq!(fields["upstream"], "catalog");
        assert_eq!(fields["error"], "Http(ConnectionRefused)");
    }

    #[test]
    fn dot_segments_are_400() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/api/v1/users/../orders")
                .body(vec![])
                .unwrap(),
            &Config::from_upstreams("users,orders"),
            &up,
        );
        assert_eq!(r.status(), 400);
        assert!(up.seen.borrow().is_empty());
    }

    #[test]
    fn invalid_client_request_id_is_replaced_everywhere() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/api/v1/users/me")
                .header("x-request-id", "bad id with spaces")
                .body(vec![])
                .unwrap(),
            &Config::from_upstreams("users"),
            &up,
        );
        let returned = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(returned, "bad id with spaces");
        assert!(RequestId::is_valid(&returned));
        assert_eq!(
            up.seen.borrow()[0].headers()["x-request-id"],
            returned.as_str()
        );
        assert_eq!(
            r.extensions().get::<RequestId>().unwrap().as_str(),
            returned
        );
    }

    #[test]
    fn head_and_no_content_responses_get_no_content_length() {
        let up = FakeUpstream::new(|_req: &Req| {
            Ok(http::Response::builder()
                .status(204)
                .header("content-length", "0")
                .body(Vec::new())
                .unwrap())
        });
        let config = Config::from_upstreams("carts");
        let r = run(
            request("DELETE", "/api/v1/cart/items/p1")
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 204);
        assert!(r.headers().get("content-length").is_none());
        let r = run(
            request("HEAD", "/api/v1/cart").body(vec![]).unwrap(),
            &config,
            &up,
        );
        assert!(r.headers().get("content-length").is_none());
    }

    #[test]
    fn reject_builds_a_problem_with_request_id() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = "/api/v1/users".parse().unwrap();
        parts
            .headers
            .insert("x-request-id", HeaderValue::from_static("abc"));
        let r = reject(
            &parts,
            Problem::bad_request("The request body could not be read"),
        );
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-request-id"], "abc");
        assert_eq!(json_body(&r)["instance"], "/api/v1/users");
    }

    #[test]
    fn access_log_line_fields() {
        let up = ok_upstream();
        let r = run(
            request("GET", "/health/live").body(vec![]).unwrap(),
            &Config::default(),
            &up,
        );
        let (level, fields) =
            access_log_fields(&Method::GET, "/health/live", &r, Duration::from_millis(3));
        assert_eq!(level, Level::Info);
        let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["method", "path", "status", "duration_ms"]);
        log_access(&Method::GET, "/health/live", &r, Duration::from_millis(3));
    }
}
