//! Bazaar's API gateway: the one public entry point of the Spin application (route `/...`).
//!
//! * `GET /health/live`, `GET /health/ready` ([`health`]);
//! * `/api/v1/<service>/...` (and `/auth`, `/images`, `/webhooks/payments`) forwarded to the owning
//!   component over Spin service chaining, `http://<id>.spin.internal/<same path>` ([`routing`],
//!   [`proxy`]);
//! * request ids, problem+json errors and one JSON access-log line per request.
//!
//! Everything that decides something lives in the pure modules and in [`app`], which are
//! unit-tested natively. This file is only the Spin glue: wasi-http request → `http::Request`,
//! variables → [`config::Config`], outbound calls through `spin_sdk::http::send`, and
//! `http::Response` → wasi-http response. Repeated headers (e.g. `set-cookie`) survive both
//! directions because the glue works on wasi-http field lists, not on spin-sdk's single-valued
//! `Request`/`Response` maps.
//!
//! Component variables: see [`config`].

pub mod app;
pub mod authn;
pub mod config;
pub mod cors;
pub mod health;
pub mod limits;
pub mod ports;
pub mod proxy;
pub mod ratelimit;
pub mod routing;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bazaar_platform::Problem;
use futures::StreamExt;
use futures::future::{Either, select};
use http::header::{HeaderName, HeaderValue};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, OutgoingResponse, ResponseOutparam,
};

use crate::config::Config;

// The export only exists on wasm: natively (unit tests) the `wasi:http/incoming-handler@0.2.0#handle`
// symbol cannot be linked into a cdylib, so the attribute is applied on wasm32 only.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
    let started = Instant::now();
    let (parts, problem) = read_head(&request);
    let response = match problem {
        None => {
            let config = load_config();
            let store = SpinStore::open();
            let env = app::Env {
                config: &config,
                upstream: &SpinUpstream,
                store: &store,
                now_ms: bazaar_platform::time::now_millis(),
            };
            app::handle(parts.clone(), SpinBody(request), &env).await
        }
        Some(problem) => app::reject(&parts, problem),
    };
    app::log_access(
        &parts.method,
        parts.uri.path(),
        &response,
        started.elapsed(),
    );
    write_response(response_out, response).await;
}

/// Reads method, target and headers (all values, in order); the body stays unread.
fn read_head(request: &IncomingRequest) -> (http::request::Parts, Option<Problem>) {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    let mut problem = None;

    match http::Method::from_bytes(request.method().to_string().as_bytes()) {
        Ok(method) => parts.method = method,
        Err(_) => problem = Some(Problem::bad_request("The request method is invalid")),
    }
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    match http::Uri::try_from(target.as_str()) {
        Ok(uri) => parts.uri = uri,
        Err(_) => {
            problem = Some(Problem::bad_request(
                "The request target is not a valid URI",
            ))
        }
    }
    // The headers resource is dropped at the end of this statement, before the body is consumed.
    let entries = request.headers().entries();
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            parts.headers.append(name, value);
        }
    }
    (parts, problem)
}

/// The request body, streamed from the host only when the gateway decides to read it.
struct SpinBody(IncomingRequest);

impl app::Body for SpinBody {
    async fn read(self, limit: usize) -> Result<Vec<u8>, app::BodyError> {
        let mut stream = self.0.into_body_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| app::BodyError::Unreadable(format!("{e:?}")))?;
            // Stop at the first chunk past the limit: the rest is never pulled from the client.
            if body.len() + chunk.len() > limit {
                return Err(app::BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The gateway's variables (see [`config`]).
fn load_config() -> Config {
    use spin_sdk::variables::{Error, get};
    Config::from_variables(|name| match get(name) {
        Ok(value) => Ok(Some(value)),
        Err(Error::Undefined(_)) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    })
}

/// The `gateway` key-value store; if it cannot be opened every call fails with that error (the
/// callers fail open or refetch, and readiness reports it).
struct SpinStore(Result<spin_sdk::key_value::Store, String>);

impl SpinStore {
    const LABEL: &str = "gateway";

    fn open() -> Self {
        SpinStore(spin_sdk::key_value::Store::open(Self::LABEL).map_err(|e| format!("{e:?}")))
    }

    fn store(&self) -> Result<&spin_sdk::key_value::Store, String> {
        self.0.as_ref().map_err(Clone::clone)
    }
}

impl ports::Store for SpinStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.store()?.get(key).map_err(|e| format!("{e:?}"))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.store()?.set(key, value).map_err(|e| format!("{e:?}"))
    }
}

/// Outbound calls through the host (`wasi:http/outgoing-handler`), i.e. Spin service chaining.
struct SpinUpstream;

impl ports::Upstream for SpinUpstream {
    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, String> {
        let response: IncomingResponse = spin_sdk::http::send(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let entries = response.headers().entries();
        let body = response
            .into_body()
            .await
            .map_err(|e| format!("reading upstream body: {}", e.to_debug_string()))?;
        let mut relayed = http::Response::new(body);
        *relayed.status_mut() =
            http::StatusCode::from_u16(status).map_err(|_| format!("invalid status {status}"))?;
        for (name, value) in entries {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                relayed.headers_mut().append(name, value);
            }
        }
        Ok(relayed)
    }

    async fn send_within(
        &self,
        request: http::Request<Vec<u8>>,
        limit: Duration,
    ) -> Result<http::Response<Vec<u8>>, String> {
        // Dropping the losing `send` future drops its wasi-http handles, which cancels the call.
        match select(pin!(self.send(request)), pin!(Deadline::after(limit))).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Err(format!("no answer within {} ms", limit.as_millis())),
        }
    }
}

/// A future that completes once `wasi:clocks/monotonic-clock` passes a deadline, driven by the
/// Spin executor's poll loop (the same mechanism spin-sdk uses for its HTTP streams).
struct Deadline {
    at: u64,
    registration: Option<spin_executor::CancelOnDropToken>,
}

impl Deadline {
    fn after(limit: Duration) -> Self {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        Deadline {
            at: wasi::clocks::monotonic_clock::now().saturating_add(nanos),
            registration: None,
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if wasi::clocks::monotonic_clock::now() >= self.at {
            return Poll::Ready(());
        }
        let pollable = wasi::clocks::monotonic_clock::subscribe_instant(self.at);
        // Replacing the token cancels the previous registration.
        self.registration =
            Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}

/// Sends `response` (all header values, in order) and its body.
async fn write_response(response_out: ResponseOutparam, response: http::Response<Vec<u8>>) {
    let (parts, body) = response.into_parts();
    let entries: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).unwrap_or_else(|e| {
        bazaar_platform::log_json(
            bazaar_platform::Level::Error,
            app::COMPONENT,
            None,
            "response headers rejected by host",
            &[("error", serde_json::json!(format!("{e:?}")))],
        );
        Fields::new()
    });
    let outgoing = OutgoingResponse::new(headers);
    // Every `http::StatusCode` is in 100..=999, which wasi-http accepts.
    let _ = outgoing.set_status_code(parts.status.as_u16());
    if let Err(e) = response_out.set_with_body(outgoing, body).await {
        bazaar_platform::log_json(
            bazaar_platform::Level::Error,
            app::COMPONENT,
            None,
            "writing response body failed",
            &[("error", serde_json::json!(format!("{e:?}")))],
        );
    }
}
