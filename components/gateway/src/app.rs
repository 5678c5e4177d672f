//! The gateway's request handling on plain `http` types, independent of the Spin host.
//!
//! `lib.rs` converts the wasi-http request head into `http::request::Parts`, calls [`handle`] with
//! the body still unread and the Spin adapters of the [ports](crate::ports), and writes the
//! response back. Unit tests drive the same function with fakes.
//!
//! Order of work for one request (each step may answer on its own):
//! 1. request id (the client's if valid, else a new one);
//! 2. health endpoints — never authenticated or rate limited;
//! 3. authentication ([`crate::authn`]): no `Authorization` = anonymous, a bad one = 401;
//! 4. rate limiting ([`crate::ratelimit`]) per user or client address = 429;
//! 5. CORS preflight ([`crate::cors`]) = 204/403;
//! 6. routing errors (404/405/400);
//! 7. body limits ([`crate::limits`]): declared length, then the body read with a cap = 413;
//! 8. forwarding with the identity headers, then CORS, rate-limit and request-id headers on the
//!    way back.

use std::future::Future;
use std::time::Duration;

use bazaar_platform::auth::{CLIENT_ADDR_HEADER, ROLE_HEADER, USER_ID_HEADER};
use bazaar_platform::jwt::Claims;
use bazaar_platform::{Level, Logger, Problem, REQUEST_ID_HEADER, RequestId, log_json};
use futures::future::join_all;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::authn::{self, AuthError, Credentials, Verifier};
use crate::config::Config;
use crate::cors;
use crate::health;
use crate::limits::{self, BodyLimit};
pub use crate::ports::{Store, Upstream};
use crate::proxy::{
    client_ip, forward_request_headers, relay_response_headers, set_request_id, upstream_url,
};
use crate::ratelimit::{self, ClientKey, Decision, RateLimiter};
use crate::routing::{JWKS_UPSTREAM_PATH, LIVE_PATH, Route, route};

/// This component's id, stamped on log lines.
pub const COMPONENT: &str = "gateway";
/// How long a readiness probe of one upstream may take.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// `Retry-After` (seconds) when tokens cannot be verified for lack of keys.
const KEYS_UNAVAILABLE_RETRY_SECS: u32 = 30;

/// A request body that has not been read yet.
pub trait Body {
    /// Reads the whole body, giving up as soon as it is longer than `limit` bytes.
    fn read(self, limit: usize) -> impl Future<Output = Result<Vec<u8>, BodyError>>;
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit (reading stopped there).
    TooLarge,
    /// The client's stream failed (text for logs).
    Unreadable(String),
}

/// An already buffered body (tests, and requests rejected before their body was read).
impl Body for Vec<u8> {
    async fn read(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self.len() > limit {
            Err(BodyError::TooLarge)
        } else {
            Ok(self)
        }
    }
}

/// What the gateway works with besides the request: configuration, ports and the time.
pub struct Env<'a, U, S> {
    pub config: &'a Config,
    pub upstream: &'a U,
    pub store: &'a S,
    /// Unix milliseconds at the start of the request.
    pub now_ms: i64,
}

/// What the gateway did for a request; stored in the response's extensions for the access log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The upstream component the request was forwarded to.
    pub upstream: Option<&'static str>,
    /// Why forwarding failed (transport error text; never shown to the client).
    pub error: Option<String>,
    /// The verified user, if any.
    pub user_id: Option<String>,
    /// Why the presented credentials were refused (never the token itself).
    pub auth_error: Option<String>,
    /// The rate-limit charge of this request.
    pub rate: Option<Decision>,
}

/// Handles one request whose body is still unread.
pub async fn handle<B: Body, U: Upstream, S: Store>(
    parts: http::request::Parts,
    body: B,
    env: &Env<'_, U, S>,
) -> http::Response<Vec<u8>> {
    let request_id = request_id_of(&parts.headers);
    let log = Logger::new(COMPONENT).with_request_id(request_id.as_str());
    let mut outcome = Outcome::default();
    let mut response = process(&parts, body, env, &request_id, &log, &mut outcome).await;
    if !cors::is_preflight(&parts.method, &parts.headers) {
        cors::decorate(&env.config.cors, &parts.headers, response.headers_mut());
    }
    if let Some(decision) = &outcome.rate {
        ratelimit::set_headers(decision, response.headers_mut());
    }
    finish(response, &request_id, &parts.method, outcome)
}

async fn process<B: Body, U: Upstream, S: Store>(
    parts: &http::request::Parts,
    body: B,
    env: &Env<'_, U, S>,
    request_id: &RequestId,
    log: &Logger,
    outcome: &mut Outcome,
) -> http::Response<Vec<u8>> {
    let method = &parts.method;
    let path = parts.uri.path();
    let config = env.config;
    let routed = route(method, path, config);
    match routed {
        Route::Live => return health::live_response(),
        Route::Ready => return readiness(env, request_id, path).await,
        _ => {}
    }

    let claims = match authenticate(parts, env, log, outcome).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };

    if let Some(limit) = config.rate_limit_per_minute {
        let key = match &claims {
            Some(claims) => ClientKey::User(claims.sub.clone()),
            None => client_ip(&parts.headers).map_or(ClientKey::Unknown, ClientKey::Address),
        };
        let (decision, store_error) =
            RateLimiter { store: env.store }.charge(&key, limit, env.now_ms);
        if let Some(e) = store_error {
            log.warn(
                "rate-limit store failed; request allowed",
                &[("error", json!(e))],
            );
        }
        outcome.rate = Some(decision);
        if !decision.allowed {
            return Problem::too_many_requests(format!(
                "Too many requests; the limit is {} per minute",
                decision.limit
            ))
            .with_instance(path)
            .to_response();
        }
    }

    if cors::is_preflight(method, &parts.headers) {
        return cors::preflight_response(&config.cors, &parts.headers, path);
    }

    let (component, upstream_path) = match routed {
        Route::Proxy { component } => (component, None),
        Route::Jwks => ("users", Some(JWKS_UPSTREAM_PATH)),
        Route::MethodNotAllowed { allow } => {
            let mut response = Problem::method_not_allowed(method.as_str(), allow)
                .with_instance(path)
                .to_response();
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
        Route::NotDeployed { prefix } => {
            return Problem::not_found(format!("No service is deployed for {prefix}"))
                .with_instance(path)
                .to_response();
        }
        Route::DotSegments => {
            return Problem::bad_request("The path must not contain '.' or '..' segments")
                .with_instance(path)
                .to_response();
        }
        Route::NotFound | Route::Live | Route::Ready => {
            return Problem::not_found(format!("No route for {path}"))
                .with_instance(path)
                .to_response();
        }
    };

    let limit = limits::body_limit(method, path, config);
    let body = match read_body(parts, body, limit).await {
        Ok(body) => body,
        Err(problem) => {
            if let Some(error) = &problem.1 {
                log.info("request body unreadable", &[("error", json!(error))]);
            }
            return problem.0.with_instance(path).to_response();
        }
    };

    outcome.upstream = Some(component);
    let target =
        upstream_path.unwrap_or_else(|| parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));
    match forward(
        parts,
        body,
        component,
        target,
        claims.as_ref(),
        env.upstream,
        request_id,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            outcome.error = Some(error);
            Problem::bad_gateway(format!("The {component} service could not be reached"))
                .with_instance(path)
                .to_response()
        }
    }
}

/// The verified claims (`None` = anonymous), or the response refusing the request.
async fn authenticate<U: Upstream, S: Store>(
    parts: &http::request::Parts,
    env: &Env<'_, U, S>,
    log: &Logger,
    outcome: &mut Outcome,
) -> Result<Option<Claims>, http::Response<Vec<u8>>> {
    let path = parts.uri.path();
    let token = match authn::credentials(&parts.headers) {
        Credentials::Absent => return Ok(None),
        Credentials::Bearer(token) => token,
        Credentials::Unusable(why) => {
            outcome.auth_error = Some(why.to_owned());
            return Err(authn::unauthorized(path));
        }
    };
    let verifier = Verifier {
        config: env.config,
        upstream: env.upstream,
        store: env.store,
        now_ms: env.now_ms,
        log,
    };
    match verifier.verify(token).await {
        Ok(claims) => {
            outcome.user_id = Some(claims.sub.clone());
            Ok(Some(claims))
        }
        Err(AuthError::Invalid(why)) => {
            outcome.auth_error = Some(why);
            Err(authn::unauthorized(path))
        }
        Err(AuthError::KeysUnavailable) => {
            outcome.auth_error = Some("no usable public keys".to_owned());
            let mut response = Problem::service_unavailable(
                "Access tokens cannot be verified right now; try again shortly",
            )
            .with_instance(path)
            .to_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(KEYS_UNAVAILABLE_RETRY_SECS),
            );
            Err(response)
        }
    }
}

/// The body within `limit`: a declared `Content-Length` is checked before reading; the read stops
/// once the body passes the limit. Errors carry the problem and, for logs, the stream error.
async fn read_body<B: Body>(
    parts: &http::request::Parts,
    body: B,
    limit: BodyLimit,
) -> Result<Vec<u8>, (Problem, Option<String>)> {
    limits::check_declared_length(&parts.headers, limit).map_err(|p| (p, None))?;
    body.read(limit.bytes).await.map_err(|e| match e {
        BodyError::TooLarge => (Problem::payload_too_large(limit.bytes), None),
        BodyError::Unreadable(why) => (
            Problem::bad_request("The request body could not be read"),
            Some(why),
        ),
    })
}

/// Answers `problem` for a request that could not be read (bad method or URI).
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
    parts: &http::request::Parts,
    body: Vec<u8>,
    component: &str,
    path_and_query: &str,
    claims: Option<&Claims>,
    upstream: &U,
    request_id: &RequestId,
) -> Result<http::Response<Vec<u8>>, String> {
    let mut outbound = http::Request::builder()
        .method(parts.method.clone())
        .uri(upstream_url(component, path_and_query))
        .body(body)
        .map_err(|e| format!("building upstream request: {e}"))?;
    let headers = outbound.headers_mut();
    *headers = forward_request_headers(&parts.headers, request_id);
    set_identity_headers(headers, claims, client_ip(&parts.headers));
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

/// Adds `x-bazaar-user-id`/`x-bazaar-role` for a verified caller and `x-bazaar-client-addr`
/// when the client address is known (the client's own `x-bazaar-*` headers are already gone).
fn set_identity_headers(headers: &mut HeaderMap, claims: Option<&Claims>, client: Option<String>) {
    if let Some(claims) = claims
        && let Ok(user_id) = HeaderValue::from_str(&claims.sub)
    {
        headers.insert(HeaderName::from_static(USER_ID_HEADER), user_id);
        headers.insert(
            HeaderName::from_static(ROLE_HEADER),
            HeaderValue::from_static(claims.role.as_str()),
        );
    }
    if let Some(ip) = client.and_then(|ip| HeaderValue::from_str(&ip).ok()) {
        headers.insert(HeaderName::from_static(CLIENT_ADDR_HEADER), ip);
    }
}

async fn readiness<U: Upstream, S: Store>(
    env: &Env<'_, U, S>,
    request_id: &RequestId,
    instance: &str,
) -> http::Response<Vec<u8>> {
    let upstream = env.upstream;
    let probes = env.config.upstreams.iter().map(|component| async move {
        let probe = http::Request::get(upstream_url(component, LIVE_PATH))
            .header(REQUEST_ID_HEADER, request_id.as_str())
            .body(Vec::new());
        let result = match probe {
            Ok(probe) => upstream
                .send_within(probe, READY_PROBE_TIMEOUT)
                .await
                .map(|r| r.status()),
            Err(e) => Err(e.to_string()),
        };
        health::upstream_check(component, result)
    });
    let mut checks = vec![health::config_check(&env.config.errors)];
    checks.extend(join_all(probes).await);
    checks.push(health::store_check(
        env.store.get(authn::JWKS_KEY).map(|_| ()),
    ));
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
/// `status`, `duration_ms`, and when they apply `upstream`, `error`, `user_id`, `auth_error`
/// (why a token was refused; never the token) and `rate_remaining`.
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
        if let Some(user_id) = &outcome.user_id {
            fields.push(("user_id", json!(user_id)));
        }
        if let Some(auth_error) = &outcome.auth_error {
            fields.push(("auth_error", json!(auth_error)));
        }
        if let Some(rate) = &outcome.rate {
            fields.push(("rate_remaining", json!(rate.remaining)));
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
    use crate::ports::MemoryStore;
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

    const NOW_MS: i64 = 1_800_000_000_000;

    fn run<U: Upstream>(
        req: http::Request<Vec<u8>>,
        config: &Config,
        upstream: &U,
    ) -> http::Response<Vec<u8>> {
        run_with(req, config, upstream, &MemoryStore::default())
    }

    fn run_with<U: Upstream, S: Store>(
        req: http::Request<Vec<u8>>,
        config: &Config,
        upstream: &U,
        store: &S,
    ) -> http::Response<Vec<u8>> {
        let (parts, body) = req.into_parts();
        let env = Env {
            config,
            upstream,
            store,
            now_ms: NOW_MS,
        };
        block_on(handle(parts, body, &env))
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
            json!({"status": "ok", "checks": [
                {"name": "config", "status": "ok"},
                {"name": "store", "status": "ok"}
            ]})
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

    // ----- security and limits -----

    use bazaar_platform::Role;
    use bazaar_platform::jwt::{self, KeyPair};

    fn signing_key() -> KeyPair {
        KeyPair::from_seed("k1", [7; 32])
    }

    fn token_for(sub: &str, role: Role) -> String {
        let now = NOW_MS / 1000;
        jwt::sign(
            &signing_key(),
            &Claims {
                sub: sub.into(),
                role,
                iss: "bazaar".into(),
                aud: "bazaar-api".into(),
                iat: now,
                nbf: now,
                exp: now + 900,
                jti: "j".into(),
            },
        )
    }

    /// Serves the JWKS at the users' private route; every other request is answered 200 with
    /// the request's headers as JSON.
    fn shop_upstream() -> FakeUpstream {
        FakeUpstream::new(|req: &Req| {
            if req.uri() == authn::JWKS_URL {
                let jwks = jwt::jwks(&[signing_key()]);
                return Ok(http::Response::new(serde_json::to_vec(&jwks).unwrap()));
            }
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap())))
                .collect();
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&json!({"headers": headers, "uri": req.uri().to_string(), "body_len": req.body().len()})).unwrap())
                .unwrap())
        })
    }

    fn forwarded(up: &FakeUpstream) -> Vec<Req> {
        up.seen
            .borrow()
            .iter()
            .filter(|r| r.uri() != authn::JWKS_URL)
            .map(|r| {
                let mut copy = http::Request::new(r.body().clone());
                *copy.uri_mut() = r.uri().clone();
                *copy.method_mut() = r.method().clone();
                *copy.headers_mut() = r.headers().clone();
                copy
            })
            .collect()
    }

    fn carts() -> Config {
        Config::from_upstreams("users,carts,catalog")
    }

    #[test]
    fn valid_token_sets_identity_headers_and_drops_forged_ones() {
        let up = shop_upstream();
        let r = run(
            request("GET", "/api/v1/cart")
                .header(
                    "authorization",
                    format!("Bearer {}", token_for("usr_9", Role::Vendor)),
                )
                .header("x-bazaar-user-id", "forged")
                .header("x-bazaar-role", "admin")
                .header("x-bazaar-client-addr", "1.2.3.4")
                .header("spin-client-addr", "198.51.100.7:4000")
                .body(vec![])
                .unwrap(),
            &carts(),
            &up,
        );
        assert_eq!(r.status(), 200);
        let sent = forwarded(&up);
        assert_eq!(sent.len(), 1);
        let h = sent[0].headers();
        assert_eq!(h["x-bazaar-user-id"], "usr_9");
        assert_eq!(h["x-bazaar-role"], "vendor");
        assert_eq!(h["x-bazaar-client-addr"], "198.51.100.7");
        assert_eq!(h.get_all("x-bazaar-user-id").iter().count(), 1);
        let outcome = r.extensions().get::<Outcome>().unwrap();
        assert_eq!(outcome.user_id.as_deref(), Some("usr_9"));
    }

    #[test]
    fn anonymous_request_is_forwarded_without_identity() {
        let up = shop_upstream();
        let r = run(
            request("GET", "/api/v1/cart")
                .header("x-bazaar-user-id", "forged")
                .header("x-bazaar-role", "admin")
                .header("spin-client-addr", "[2001:db8::1]:4000")
                .body(vec![])
                .unwrap(),
            &carts(),
            &up,
        );
        assert_eq!(r.status(), 200);
        let sent = forwarded(&up);
        let h = sent[0].headers();
        assert!(h.get("x-bazaar-user-id").is_none());
        assert!(h.get("x-bazaar-role").is_none());
        assert_eq!(h["x-bazaar-client-addr"], "2001:db8::1");
    }

    #[test]
    fn bad_credentials_are_401_with_challenge_and_not_forwarded() {
        let forged = {
            let t = token_for("usr_9", Role::Customer);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            parts[2] = parts[2].replace(&parts[2][..2], "AA");
            parts.join(".")
        };
        for auth in [
            "Bearer garbage".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            "Bearer".to_owned(),
            format!("Bearer {forged}"),
            format!(
                "Bearer {}",
                jwt::sign(
                    &KeyPair::from_seed("k1", [8; 32]),
                    &Claims {
                        sub: "usr_1".into(),
                        role: Role::Admin,
                        iss: "bazaar".into(),
                        aud: "bazaar-api".into(),
                        iat: NOW_MS / 1000,
                        nbf: NOW_MS / 1000,
                        exp: NOW_MS / 1000 + 60,
                        jti: "x".into(),
                    }
                )
            ),
        ] {
            let up = shop_upstream();
            let r = run(
                request("GET", "/api/v1/cart")
                    .header("authorization", auth.as_str())
                    .body(vec![])
                    .unwrap(),
                &carts(),
                &up,
            );
            assert_eq!(r.status(), 401, "{auth}");
            assert_eq!(
                r.headers()["www-authenticate"],
                "Bearer error=\"invalid_token\""
            );
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert!(forwarded(&up).is_empty(), "{auth}");
            let outcome = r.extensions().get::<Outcome>().unwrap();
            let reason = outcome.auth_error.as_deref().unwrap();
            assert!(
                !reason.contains(auth.trim_start_matches("Bearer ")) || auth == "Bearer",
                "token leaked into {reason}"
            );
            let (_, fields) = access_log_fields(&Method::GET, "/api/v1/cart", &r, Duration::ZERO);
            assert!(fields.iter().any(|(k, _)| *k == "auth_error"));
        }
    }

    #[test]
    fn unreachable_keys_are_503_not_401() {
        let up = FakeUpstream::new(|_req: &Req| Err("connection refused".to_owned()));
        let r = run(
            request("GET", "/api/v1/cart")
                .header(
                    "authorization",
                    format!("Bearer {}", token_for("u", Role::Customer)),
                )
                .body(vec![])
                .unwrap(),
            &carts(),
            &up,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "30");
        assert_eq!(up.seen.borrow().len(), 1, "only the JWKS fetch");
    }

    #[test]
    fn rate_limit_per_client_with_headers_and_health_exempt() {
        let config = Config {
            rate_limit_per_minute: std::num::NonZeroU32::new(2),
            ..carts()
        };
        let up = shop_upstream();
        let store = MemoryStore::default();
        let from = |addr: &str| {
            request("GET", "/api/v1/cart")
                .header("spin-client-addr", addr)
                .body(vec![])
                .unwrap()
        };
        let r = run_with(from("10.0.0.1:1"), &config, &up, &store);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "2");
        assert_eq!(r.headers()["ratelimit-remaining"], "1");
        assert_eq!(
            run_with(from("10.0.0.1:2"), &config, &up, &store).status(),
            200
        );
        let r = run_with(from("10.0.0.1:3"), &config, &up, &store);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "30");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(forwarded(&up).len(), 2);
        // Another address has its own budget; health is never limited.
        assert_eq!(
            run_with(from("10.0.0.2:1"), &config, &up, &store).status(),
            200
        );
        for _ in 0..5 {
            let r = run_with(
                request("GET", "/health/live")
                    .header("spin-client-addr", "10.0.0.1:1")
                    .body(vec![])
                    .unwrap(),
                &config,
                &up,
                &store,
            );
            assert_eq!(r.status(), 200);
            assert!(r.headers().get("ratelimit-limit").is_none());
        }
        // An authenticated user is charged under their id, not the shared address.
        let authed = || {
            request("GET", "/api/v1/cart")
                .header("spin-client-addr", "10.0.0.1:9")
                .header(
                    "authorization",
                    format!("Bearer {}", token_for("usr_1", Role::Customer)),
                )
                .body(vec![])
                .unwrap()
        };
        assert_eq!(run_with(authed(), &config, &up, &store).status(), 200);
        assert_eq!(run_with(authed(), &config, &up, &store).status(), 200);
        assert_eq!(run_with(authed(), &config, &up, &store).status(), 429);
    }

    #[test]
    fn rate_limiting_off_sends_no_headers() {
        let config = Config {
            rate_limit_per_minute: None,
            ..carts()
        };
        let up = shop_upstream();
        let r = run(
            request("GET", "/api/v1/cart").body(vec![]).unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit-limit").is_none());
    }

    #[test]
    fn cors_preflight_and_actual_responses() {
        let config = Config {
            cors: crate::cors::CorsPolicy::parse("https://shop.example").0,
            ..carts()
        };
        let up = shop_upstream();
        let r = run(
            request("OPTIONS", "/api/v1/cart/items")
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type, authorization",
                )
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 204);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
        assert!(r.headers().contains_key("access-control-allow-methods"));
        assert!(r.headers().contains_key("access-control-max-age"));
        assert_eq!(r.headers()["vary"], "origin");
        assert!(r.headers().get("content-length").is_none());
        assert!(
            forwarded(&up).is_empty(),
            "preflights are answered by the gateway"
        );

        let r = run(
            request("OPTIONS", "/api/v1/cart/items")
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST")
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-"))
        );

        let r = run(
            request("GET", "/api/v1/cart")
                .header("origin", "https://shop.example")
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
        assert!(
            r.headers()["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .contains("x-request-id")
        );

        // Errors made by the gateway itself are readable cross-origin too.
        let r = run(
            request("GET", "/api/v1/cart")
                .header("origin", "https://shop.example")
                .header("authorization", "Basic x")
                .body(vec![])
                .unwrap(),
            &config,
            &up,
        );
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
    }

    /// A body that must not be read.
    struct Untouchable;

    impl Body for Untouchable {
        async fn read(self, _limit: usize) -> Result<Vec<u8>, BodyError> {
            panic!("the body was read although the declared length is over the limit")
        }
    }

    #[test]
    fn oversized_declared_length_is_413_without_reading() {
        let config = Config {
            max_body_bytes: 10,
            ..carts()
        };
        let up = shop_upstream();
        let (parts, ()) = request("POST", "/api/v1/cart/items")
            .header("content-length", "11")
            .body(())
            .unwrap()
            .into_parts();
        let store = MemoryStore::default();
        let env = Env {
            config: &config,
            upstream: &up,
            store: &store,
            now_ms: NOW_MS,
        };
        let r = block_on(handle(parts, Untouchable, &env));
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(json_body(&r)["detail"].as_str().unwrap().contains("10"));
        assert!(forwarded(&up).is_empty());
    }

    #[test]
    fn oversized_streamed_body_is_413_and_limits_depend_on_route() {
        let config = Config {
            max_body_bytes: 10,
            max_image_bytes: 100,
            ..carts()
        };
        let up = shop_upstream();
        let post = |path: &str, len: usize| request("POST", path).body(vec![b'x'; len]).unwrap();
        assert_eq!(
            run(post("/api/v1/cart/items", 11), &config, &up).status(),
            413
        );
        assert_eq!(
            run(post("/api/v1/cart/items", 10), &config, &up).status(),
            200
        );
        assert_eq!(
            run(post("/api/v1/products/p1/images", 100), &config, &up).status(),
            200
        );
        assert_eq!(
            run(post("/api/v1/products/p1/images", 101), &config, &up).status(),
            413
        );
        assert_eq!(
            run(post("/api/v1/products", 11), &config, &up).status(),
            413
        );
        let sent = forwarded(&up);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].body().len(), 100);
    }

    #[test]
    fn public_jwks_is_the_users_internal_route() {
        let up = shop_upstream();
        let r = run(
            request("GET", "/.well-known/jwks.json")
                .body(vec![])
                .unwrap(),
            &carts(),
            &up,
        );
        assert_eq!(r.status(), 200);
        let v = json_body(&r);
        assert_eq!(v["keys"][0]["kid"], "k1");
        assert_eq!(up.seen.borrow()[0].uri().to_string(), authn::JWKS_URL);
        let r = run(
            request("GET", "/internal/jwks").body(vec![]).unwrap(),
            &carts(),
            &up,
        );
        assert_eq!(r.status(), 404);
        assert_eq!(up.seen.borrow().len(), 1);
    }

    #[test]
    fn readiness_probes_are_bounded_and_store_is_checked() {
        struct SlowUpstream {
            limits: RefCell<Vec<Duration>>,
        }
        impl Upstream for SlowUpstream {
            async fn send(&self, _request: Req) -> Answer {
                Ok(http::Response::new(Vec::new()))
            }
            async fn send_within(&self, _request: Req, limit: Duration) -> Answer {
                self.limits.borrow_mut().push(limit);
                Err(format!("no answer within {} ms", limit.as_millis()))
            }
        }
        let up = SlowUpstream {
            limits: RefCell::new(Vec::new()),
        };
        let r = run_with(
            request("GET", "/health/ready").body(vec![]).unwrap(),
            &Config::from_upstreams("users"),
            &up,
            &MemoryStore::failing(),
        );
        assert_eq!(r.status(), 503);
        assert_eq!(*up.limits.borrow(), [READY_PROBE_TIMEOUT]);
        let v = json_body(&r);
        assert!(
            v["checks"][1]["detail"]
                .as_str()
                .unwrap()
                .contains("no answer within 2000 ms")
        );
        assert_eq!(v["checks"][2]["name"], "store");
        assert_eq!(v["checks"][2]["status"], "fail");
    }
}
