//! Bazaar's payment core as a component of the `bazaar:payments/payment-core` world, run by the
//! isolated payment host (`bazaar payments serve`, `payments/spin.toml`): payment records, the
//! state machine, idempotency, provider routing and the fraud check. It reaches the providers
//! and the card vault only through the host's imports (`bazaar:payments/providers`, `vault`):
//! no vault key ever enters this component, and a card number only passes through once, from
//! the request body of `POST /api/v1/payments/methods` straight into `vault.tokenize-card`
//! (never stored, logged or sent anywhere else); afterwards the core holds only the token, the
//! sealed number it cannot open, brand, last4 and BIN.
//!
//! Routes:
//! * `GET /health/live`, `GET /health/ready` (the database answers at this build's schema),
//!   `POST /internal/admin/migrate`, `POST /internal/jobs/outbox`,
//!   `GET /internal/events?after=&limit=` (catch-up of the `payments` channel);
//! * `POST /webhooks/payments/{provider}` (raw body, verified by the provider's plugin);
//! * `/api/v1/payments/*` (identity from `x-bazaar-user-id` / `x-bazaar-role` /
//!   `x-bazaar-client-addr`; `x-bazaar-payments-token` when `internal_token` is set):
//!   `POST /api/v1/payments` (`Idempotency-Key` required), `POST /api/v1/payments/methods`,
//!   `GET /api/v1/payments/{id}`, `GET /api/v1/payments/{id}/events`,
//!   `POST /api/v1/payments/{id}/capture|void|refund` (refund: admin only).
//!
//! Variables: see [`config::VARIABLES`].

// `Problem` is the error type of every handler (see bazaar_platform).
#![allow(clippy::result_large_err)]

pub mod config;
pub mod domain;
pub mod fraud;
pub mod requests;
pub mod rules;
pub mod service;
pub mod store;

/// The payment host's imports. Only the `payment-core` world's imports are generated; the
/// component's export is spin-sdk's `wasi:http/incoming-handler`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "bazaar:payments/payment-core",
        generate_all,
    });
}

use bazaar_platform::auth::{CLIENT_ADDR_HEADER, ROLE_HEADER, USER_ID_HEADER};
use bazaar_platform::idempotency;
use bazaar_platform::{Ctx, Database, Problem};
use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};

use crate::config::Config;
use crate::rules::Fail;
use crate::service::{Action, Answer, Caller, Service, Timings};

const COMPONENT: &str = "payment-core";
/// The header carrying the shared secret between the Spin `payments` component and this core.
const TOKEN_HEADER: &str = "x-bazaar-payments-token";

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> Response {
    let ctx = Ctx::new(COMPONENT, &request);
    let started = bazaar_platform::time::now_millis();
    let response = match route(&ctx, &request) {
        Ok(response) => response,
        Err(fail) => problem_response(&ctx, fail, request.path()),
    };
    // The outbox job runs every 2 s: its successful runs are not logged (the host's scheduler
    // logs failed runs), as no other service logs its job runs.
    if !(request.path().starts_with("/internal/jobs/") && *response.status() < 400) {
        ctx.log.info(
            "request handled",
            &[
                ("method", request.method().to_string().into()),
                ("path", request.path().into()),
                ("status", (*response.status()).into()),
                (
                    "elapsed_ms",
                    (bazaar_platform::time::now_millis() - started).into(),
                ),
            ],
        );
    }
    response
}

fn problem_response(ctx: &Ctx, fail: Fail, path: &str) -> Response {
    let mut response = ctx.problem(fail.problem.with_instance(path));
    response.set_header("cache-control", "no-store");
    if let Some(secs) = fail.retry_after {
        response.set_header("retry-after", secs.to_string());
    }
    if let Some(allow) = fail.allow {
        response.set_header("allow", allow);
    }
    response
}

fn answer_response(ctx: &Ctx, answer: Answer) -> Response {
    // A replayed failure is still a problem.
    let mut response = if answer.status >= 400 {
        Response::builder()
            .status(answer.status)
            .header("content-type", bazaar_platform::PROBLEM_CONTENT_TYPE)
            .header(bazaar_platform::REQUEST_ID_HEADER, ctx.request_id.as_str())
            .body(serde_json::to_vec(&answer.body).unwrap_or_default())
            .build()
    } else {
        ctx.json(answer.status, &answer.body)
    };
    response.set_header("cache-control", "no-store");
    if answer.replayed {
        // As the orders service marks it (Stripe's `Idempotent-Replayed`).
        response.set_header("idempotent-replayed", "true");
    }
    response
}

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).ok()
}

fn config(ctx: &Ctx) -> Result<Config, Problem> {
    Config::from_lookup(variable).map_err(|invalid| {
        ctx.log.error(
            "invalid component variable",
            &[
                ("variable", invalid.variable.into()),
                ("error", invalid.message.as_str().into()),
            ],
        );
        Problem::internal(format!(
            "the payment core is misconfigured (variable {}); the error is logged",
            invalid.variable
        ))
    })
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.header(name).and_then(|v| v.as_str())
}

fn token_ok(expected: Option<&str>, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq as _;
    match expected {
        None => true,
        Some(expected) => {
            given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
        }
    }
}

/// The caller, from the identity headers. The role is optional (absent: not an admin), as the
/// Spin `payments` component forwards it.
fn caller_of(
    user_id: Option<&str>,
    role: Option<&str>,
    client_addr: Option<&str>,
) -> Result<Caller, Problem> {
    let user_id = user_id
        .filter(|u| !u.is_empty() && u.len() <= 128)
        .ok_or_else(|| Problem::unauthorized("authentication is required"))?;
    Ok(Caller {
        user_id: user_id.to_owned(),
        admin: role == Some("admin"),
        client_addr: client_addr.filter(|a| a.len() <= 64).map(str::to_owned),
    })
}

/// The optional `Idempotency-Key`, validated by the platform's rules.
fn optional_key(request: &Request) -> Result<Option<String>, Problem> {
    match request.header(idempotency::HEADER) {
        None => Ok(None),
        // Not text at all: the platform's answer for a key with invalid characters.
        Some(v) => idempotency::parse_key(Some(v.as_str().unwrap_or("\u{fffd}"))).map(Some),
    }
}

fn route(ctx: &Ctx, request: &Request) -> Result<Response, Fail> {
    let config = config(ctx)?;
    let open = || -> Result<Database, Problem> { Ok(Database::open(&config.database)?) };
    let ops = bazaar_platform::ops::Ops {
        migrations: store::MIGRATIONS,
        open: &open,
        redis_address: config.redis_address.clone(),
    };
    if let Some(answer) = bazaar_platform::ops::route(ctx, request.method(), request.path(), &ops) {
        return Ok(answer?);
    }
    let path = request.path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = request.method().clone();
    let is_api = matches!(segments.as_slice(), ["api", "v1", "payments", ..]);
    let is_webhook = matches!(segments.as_slice(), ["webhooks", "payments", _]);
    if !is_api && !is_webhook {
        return Err(Problem::not_found("no such route").into());
    }
    let db = open()?;
    let service = Service {
        db: &db,
        config: &config,
        log: &ctx.log,
        request_id: &ctx.request_id,
        path: &path,
        timings: Timings::from_call_deadline(
            bindings::bazaar::payments::providers::call_deadline_ms(),
        ),
        holder: bazaar_platform::ids::new_id(),
    };
    let answer = if let ["webhooks", "payments", provider] = segments.as_slice() {
        if method != Method::Post {
            return Err(method_not_allowed(&method, &["POST"]));
        }
        if request.body().len() > requests::MAX_BODY {
            return Err(Problem::payload_too_large(requests::MAX_BODY).into());
        }
        let headers: Vec<(String, String)> = request
            .headers()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        service.webhook(provider, &headers, request.body())
    } else {
        api(&service, &config, request, &method, &segments[3..])
    };
    // Whatever this request committed (an answer or a failed payment alike) goes out now; what
    // Redis refuses waits in the outbox for the job.
    bazaar_platform::ops::publish_now(ctx, &db, config.redis_address.as_deref());
    Ok(answer_response(ctx, answer?))
}

fn api(
    service: &Service<'_>,
    config: &Config,
    request: &Request,
    method: &Method,
    rest: &[&str],
) -> Result<Answer, Fail> {
    if !token_ok(
        config.internal_token.as_deref(),
        header(request, TOKEN_HEADER),
    ) {
        return Err(Problem::unauthorized("missing or wrong internal token").into());
    }
    let caller = caller_of(
        header(request, USER_ID_HEADER),
        header(request, ROLE_HEADER),
        header(request, CLIENT_ADDR_HEADER),
    )?;
    let content_type = header(request, "content-type");
    let fingerprint = |body: &str| idempotency::fingerprint("POST", service.path, body.as_bytes());
    match (method, rest) {
        (Method::Post, ["methods"]) => {
            let key = optional_key(request)?;
            let body = requests::json_object(content_type, request.body())?;
            // The card number and CVC enter the fingerprint only as the vault's keyed digest.
            let canonical = requests::method_fingerprint_body(&body, |secret| {
                bindings::bazaar::payments::vault::fingerprint(secret)
            });
            service.idempotent(
                format!("methods:{}", caller.user_id),
                key,
                &fingerprint(&canonical),
                false,
                |claim| service.save_method(&caller, &body, claim),
            )
        }
        (Method::Post, []) => {
            let key = idempotency::parse_key(header(request, idempotency::HEADER))?;
            let body = requests::json_object(content_type, request.body())?;
            let canonical = body.to_string();
            service.idempotent(
                format!("create:{}", caller.user_id),
                Some(key),
                &fingerprint(&canonical),
                true,
                |claim| {
                    let req = requests::create_payment(&body)?;
                    service.create(&caller, req, claim)
                },
            )
        }
        (Method::Get, [id]) => service.get(id, &caller),
        (Method::Get, [id, "events"]) => service.events(id, &caller),
        (Method::Post, [id, action]) if Action::parse(action).is_some() => {
            let action = Action::parse(action).unwrap_or(Action::Void);
            let key = optional_key(request)?;
            let body: Value = requests::action_body(request.body())?;
            let canonical = body.to_string();
            // Scoped to the caller too: another user's key can neither replay this payment's
            // answer nor reveal that it exists.
            service.idempotent(
                format!("{}:{}:{id}", action.as_str(), caller.user_id),
                key.clone(),
                &fingerprint(&canonical),
                false,
                |claim| service.act(action, id, &caller, &body, key.as_deref(), claim),
            )
        }
        (_, []) => Err(method_not_allowed(method, &["POST"])),
        (_, ["methods"]) => Err(method_not_allowed(method, &["POST"])),
        (_, [_] | [_, "events"]) => Err(method_not_allowed(method, &["GET"])),
        (_, [_, "capture" | "void" | "refund"]) => Err(method_not_allowed(method, &["POST"])),
        _ => Err(Problem::not_found("no such route").into()),
    }
}

fn method_not_allowed(method: &Method, allowed: &[&str]) -> Fail {
    Fail::method_not_allowed(&method.to_string(), allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_token_is_required_only_when_configured() {
        assert!(token_ok(None, None));
        assert!(token_ok(None, Some("anything")));
        assert!(token_ok(Some("s3cret"), Some("s3cret")));
        assert!(!token_ok(Some("s3cret"), Some("s3cre")));
        assert!(!token_ok(Some("s3cret"), None));
    }

    #[test]
    fn callers_need_a_user_id_and_only_the_admin_role_counts() {
        assert_eq!(
            caller_of(None, Some("admin"), None).unwrap_err().status,
            401
        );
        assert_eq!(caller_of(Some(""), None, None).unwrap_err().status, 401);
        assert!(caller_of(Some(&"u".repeat(129)), None, None).is_err());
        let c = caller_of(Some("u1"), None, Some("10.0.0.1")).unwrap();
        assert!(!c.admin);
        assert_eq!(c.client_addr.as_deref(), Some("10.0.0.1"));
        assert!(caller_of(Some("u1"), Some("admin"), None).unwrap().admin);
        assert!(!caller_of(Some("u1"), Some("Admin "), None).unwrap().admin);
        let long_addr = "a".repeat(65);
        assert_eq!(
            caller_of(Some("u1"), None, Some(&long_addr))
                .unwrap()
                .client_addr,
            None
        );
    }
}
