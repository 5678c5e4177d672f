//! Bazaar's `payments` Spin component. Payments do not run in the Spin app (ARCHITECTURE
//! principle 7): this component is the app-side face of the isolated payment host. It checks the
//! caller identity the gateway set, then forwards the request (body untouched, so card data goes
//! straight through to the payment host's vault and is never parsed, stored or logged here) to
//! the payment host at the `payment_host_url` variable.
//!
//! Component variables:
//! * `payment_host_url`: `scheme://host:port` of `bazaar payments serve` (also in the component's
//!   `allowed_outbound_hosts`, through the same application variable);
//! * `payment_host_token`: optional shared secret sent as `x-bazaar-payments-token`.

// `Problem` is every handler's error type (see bazaar-platform).
#![allow(clippy::result_large_err)]

pub mod forward;

use bazaar_platform::service::Ctx;
use spin_sdk::http::{Method, Request, Response};

use crate::forward::Target;

// The export only exists on wasm: natively (unit tests) the wasi:http export cannot be linked.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> Response {
    let ctx = Ctx::new("payments", &request);
    let method = request.method().to_string();
    let target = match forward::classify(&method, request.path()) {
        Ok(target) => target,
        Err(problem) => return ctx.problem(problem),
    };
    let identity = match target {
        Target::Live => return ctx.json(200, &serde_json::json!({"status": "ok"})),
        Target::Api => match ctx.identity() {
            Ok(identity) => Some(identity.clone()),
            Err(problem) => return ctx.problem(problem),
        },
        Target::Webhook | Target::Ready => None,
    };
    let base = spin_sdk::variables::get("payment_host_url").unwrap_or_default();
    let token = spin_sdk::variables::get("payment_host_token").unwrap_or_default();
    let url = forward::upstream_url(&base, request.path(), request.query());
    let Some(url) = url else {
        ctx.log
            .error("payment_host_url is not a valid http(s) origin", &[]);
        return ctx.problem(bazaar_platform::Problem::service_unavailable(
            "payments are not configured",
        ));
    };
    let mut outbound = Request::builder();
    outbound
        .method(match method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Options,
        })
        .uri(url);
    for (name, value) in request.headers() {
        if let (true, Some(value)) = (forward::forwarded_header(name, target), value.as_str()) {
            outbound.header(name, value);
        }
    }
    outbound.header("x-request-id", ctx.request_id.as_str());
    if let Some(identity) = &identity {
        // Re-set from the verified identity, never copied blindly.
        outbound.header("x-bazaar-user-id", identity.user_id.as_str());
        outbound.header("x-bazaar-role", identity.role.as_str());
        if let Some(addr) = &ctx.client_addr {
            outbound.header("x-bazaar-client-addr", addr.as_str());
        }
    }
    if !token.is_empty() {
        outbound.header("x-bazaar-payments-token", token.as_str());
    }
    outbound.body(request.body().to_vec());
    let started = bazaar_platform::time::now_millis();
    match spin_sdk::http::send::<_, Response>(outbound.build()).await {
        Ok(upstream) => {
            let status = *upstream.status();
            ctx.log.info(
                "forwarded to the payment host",
                &[
                    ("method", method.clone().into()),
                    ("path", request.path().into()),
                    ("status", status.into()),
                    (
                        "elapsed_ms",
                        (bazaar_platform::time::now_millis().saturating_sub(started)).into(),
                    ),
                ],
            );
            let mut response = Response::builder();
            response.status(status);
            for (name, value) in upstream.headers() {
                if let (true, Some(value)) = (
                    matches!(
                        name,
                        "content-type"
                            | "cache-control"
                            | "retry-after"
                            | "allow"
                            | "idempotent-replayed"
                    ),
                    value.as_str(),
                ) {
                    response.header(name, value);
                }
            }
            response.header("x-request-id", ctx.request_id.as_str());
            response.body(upstream.body().to_vec());
            response.build()
        }
        Err(err) => {
            ctx.log.error(
                "payment host unreachable",
                &[("error", err.to_string().into())],
            );
            // 503, not 502: the payment host's own 502 means "the provider failed, nothing was
            // charged", while here the outcome is unknown (the host may have crashed mid-call),
            // so callers must retry with the same Idempotency-Key rather than give up.
            let mut response = ctx.problem(bazaar_platform::Problem::service_unavailable(
                "the payment service is unavailable",
            ));
            response.set_header("retry-after", "5");
            response
        }
    }
}
