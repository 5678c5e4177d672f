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
//! Component variable: `upstreams` — comma-separated component ids (see [`config`]).

pub mod app;
pub mod config;
pub mod health;
pub mod proxy;
pub mod routing;

use std::time::Instant;

use bazaar_platform::Problem;
use http::header::{HeaderName, HeaderValue};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, OutgoingResponse, ResponseOutparam,
};

use crate::config::{Config, UPSTREAMS_VARIABLE};

// The export only exists on wasm: natively (unit tests) the `wasi:http/incoming-handler@0.2.0#handle`
// symbol cannot be linked into a cdylib, so the attribute is applied on wasm32 only.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
    let started = Instant::now();
    let (parts, body) = read_request(request).await;
    let response = match body {
        Ok(body) => {
            let config = load_config();
            app::handle(
                http::Request::from_parts(parts.clone(), body),
                &config,
                &SpinUpstream,
            )
            .await
        }
        Err(problem) => app::reject(&parts, problem),
    };
    app::log_access(
        &parts.method,
        parts.uri.path(),
        &response,
        started.elapsed(),
    );
    write_response(response_out, response).await;
}

/// Reads method, target, headers (all values, in order) and the whole body.
async fn read_request(
    request: IncomingRequest,
) -> (http::request::Parts, Result<Vec<u8>, Problem>) {
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
    let body = request
        .into_body()
        .await
        .map_err(|_| Problem::bad_request("The request body could not be read"));
    match problem {
        Some(problem) => (parts, Err(problem)),
        None => (parts, body),
    }
}

/// The gateway's variables; a missing `upstreams` variable means "no upstreams".
fn load_config() -> Config {
    use spin_sdk::variables::{Error, get};
    match get(UPSTREAMS_VARIABLE) {
        Ok(raw) => Config::from_upstreams(&raw),
        Err(Error::Undefined(_)) => Config::default(),
        Err(e) => Config::unreadable(format!("variable '{UPSTREAMS_VARIABLE}': {e:?}")),
    }
}

/// Outbound calls through the host (`wasi:http/outgoing-handler`), i.e. Spin service chaining.
struct SpinUpstream;

impl app::Upstream for SpinUpstream {
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
