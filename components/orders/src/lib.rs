//! Bazaar's order service (private route; the gateway forwards `/api/v1/orders...`).
//!
//! * `POST /api/v1/orders` — checkout (`Idempotency-Key` required): runs the [`saga`];
//! * `GET /api/v1/orders` (own; admin: all), `GET /api/v1/orders/{id}`,
//!   `GET /api/v1/orders/{id}/events` (the stream, oldest first);
//! * `POST /api/v1/orders/{id}/cancel` (owner or admin; releases or returns stock, voids or
//!   refunds the payment), `POST /api/v1/orders/{id}/ship`, `/deliver` (admin, vendor);
//! * internal: `POST /internal/jobs/recover` (resumes stalled sagas), `POST /internal/jobs/outbox`,
//!   `GET /internal/events?after=`, `POST /internal/admin/migrate`; `GET /health/live|ready`.
//!
//! Component variables: `database`, `redis_address`, `customer_action_timeout_secs` (how long
//! a checkout waits at most for the customer to authorize a payment; default 600, below the stock hold).

#![allow(clippy::result_large_err)]

pub mod clients;
pub mod domain;
pub mod saga;
pub mod store;

use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::idempotency::{self, ClaimToken, Claimed};
use bazaar_platform::page::{Page, decode_cursor, parse_limit};
use bazaar_platform::{Ctx, Database, FieldError, Identity, Problem, Role, time};
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};

use crate::clients::{CARTS, CATALOG, call};
use crate::domain::{Event, Money, Status};
use crate::saga::{Outcome, Saga};
use crate::store::{StoreError, Stored};

const COMPONENT: &str = "orders";
/// A checkout request holds its saga this long; past it the recovery job may take over.
const SAGA_LEASE_MS: i64 = 30_000;
/// Idempotency claims of a checkout in flight; longer than the saga lease.
const IDEMPOTENCY_LOCK_MS: i64 = 60_000;
/// After this many stalled attempts the recovery job compensates instead of retrying. Waiting for
/// the customer to authorize a payment is not a stalled attempt (its deadline ends it instead).
const MAX_SAGA_ATTEMPTS: i64 = 20;

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> Response {
    let ctx = Ctx::new(COMPONENT, &request);
    let result = route(&ctx, &request).await;
    ctx.respond(result)
}

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn open_db() -> Result<Database, Problem> {
    let url = variable("database").unwrap_or_else(|| "sqlite:orders".to_owned());
    Ok(Database::open(&url)?)
}

fn publish(ctx: &Ctx, db: &Database) {
    bazaar_platform::ops::publish_now(ctx, db, variable("redis_address").as_deref());
}

fn valid_id(raw: &str) -> Result<&str, Problem> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(raw)
        .ok_or_else(|| Problem::not_found("No such order"))
}

async fn route(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let ops = bazaar_platform::ops::Ops {
        migrations: store::MIGRATIONS,
        open: &open_db,
        redis_address: variable("redis_address"),
    };
    if let Some(answer) = bazaar_platform::ops::route(ctx, request.method(), request.path(), &ops) {
        return answer;
    }
    let path = request.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::Post, ["internal", "jobs", "recover"]) => recover(ctx).await,
        (Method::Post, ["api", "v1", "orders"]) => checkout(ctx, request).await,
        (Method::Get, ["api", "v1", "orders"]) => list(ctx),
        (_, ["api", "v1", "orders"]) => Err(Problem::method_not_allowed(
            request.method().to_string().as_str(),
            &["GET", "POST"],
        )),
        (Method::Get, ["api", "v1", "orders", id]) => {
            let db = open_db()?;
            let stored = owned_order(ctx, &db, valid_id(id)?)?;
            let mut order = render(&stored);
            // A pending order may be waiting for the customer to authorize its payment: show
            // where, from the saga's own row (no call to payments per read).
            if stored.order.status == Status::Pending
                && let Some(payment) = store::pending_payment(&db, &stored.order.id)?
            {
                order["payment"] = payment;
            }
            Ok(ctx.json(200, &order))
        }
        (Method::Get, ["api", "v1", "orders", id, "events"]) => {
            let db = open_db()?;
            let stored = owned_order(ctx, &db, valid_id(id)?)?;
            let events = store::events(&db, &stored.order.id)?;
            Ok(ctx.json(200, &json!({"items": events, "next_cursor": null})))
        }
        (Method::Post, ["api", "v1", "orders", id, "cancel"]) => {
            cancel(ctx, request, valid_id(id)?).await
        }
        (Method::Post, ["api", "v1", "orders", id, action @ ("ship" | "deliver")]) => {
            ctx.identity()?.require_role(&[Role::Admin, Role::Vendor])?;
            let db = open_db()?;
            let stored = store::load(&db, valid_id(id)?)?
                .ok_or_else(|| Problem::not_found("No such order"))?;
            let event = if *action == "ship" {
                Event::Shipped
            } else {
                Event::Delivered
            };
            let next = append_or_problem(&db, &stored, event, &ctx.request_id)?;
            publish(ctx, &db);
            Ok(ctx.json(200, &render(&next)))
        }
        (_, ["api", "v1", "orders", ..]) | (_, ["internal", ..]) | (_, ["health", ..]) => {
            Err(Problem::not_found("No such order route"))
        }
        _ => Err(Problem::not_found("No such route")),
    }
}

fn append_or_problem(
    db: &Database,
    stored: &Stored,
    event: Event,
    request_id: &str,
) -> Result<Stored, Problem> {
    match store::append(db, &stored.order.id, Some(stored), &event, Some(request_id)) {
        Ok(next) => Ok(next),
        Err(StoreError::Illegal(i)) => {
            Err(Problem::conflict(i.0).with_title("Illegal order transition"))
        }
        Err(StoreError::Concurrency) => Err(Problem::conflict(
            "The order changed while this request ran; reload it and retry",
        )),
        Err(StoreError::Db(e)) => Err(e.into()),
    }
}

/// The order if the caller may see it (owner or admin); 404 otherwise, so order ids of other
/// customers cannot be probed.
fn owned_order(ctx: &Ctx, db: &Database, id: &str) -> Result<Stored, Problem> {
    let identity = ctx.identity()?;
    match store::load(db, id)? {
        Some(stored) if identity.is_admin() || stored.order.user_id == identity.user_id => {
            Ok(stored)
        }
        _ => Err(Problem::not_found("No such order")),
    }
}

fn render(stored: &Stored) -> Value {
    let o = &stored.order;
    json!({
        "id": o.id,
        "user_id": o.user_id,
        "status": o.status,
        "items": o.items,
        "total": o.total,
        "payment_id": o.payment_id,
        "shipping_address": o.shipping_address,
        "failure": o.failure,
        "version": o.version,
        "created_at": time::millis_to_rfc3339(stored.created_at),
        "updated_at": time::millis_to_rfc3339(stored.updated_at),
    })
}

fn list(ctx: &Ctx) -> Result<Response, Problem> {
    let identity = ctx.identity()?;
    let limit = parse_limit(ctx.query("limit"))?;
    let after = ctx
        .query("cursor")
        .map(decode_cursor::<(i64, String)>)
        .transpose()?;
    let user = (!identity.is_admin()).then_some(identity.user_id.as_str());
    let rows = store::list(&open_db()?, user, after, limit)?;
    let page = Page::from_overfetch(rows, limit, |s| (s.created_at, s.order.id.clone()));
    Ok(ctx.json(
        200,
        &json!({
            "items": page.items.iter().map(render).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutItem {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    items: Option<Vec<CheckoutItem>>,
    shipping_address: Value,
    payment_method: String,
}

/// The order id for a checkout: derived from the customer and their idempotency key, so a
/// retry after a crash finds the order the first attempt created instead of making another.
fn order_id_for(user: &str, key: &str) -> String {
    let digest = idempotency::fingerprint("order", user, key.as_bytes());
    format!("ord_{}", &digest[..32])
}

fn validate_address(address: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(map) = address.as_object() else {
        return vec![FieldError::new("shipping_address", "must be an object")];
    };
    for field in ["name", "line1", "city", "postal_code", "country"] {
        match map.get(field).and_then(Value::as_str) {
            Some(v) if !v.trim().is_empty() && v.len() <= 200 => {}
            _ => errors.push(FieldError::new(
                format!("shipping_address.{field}"),
                "is required (1-200 characters)",
            )),
        }
    }
    if let Some(country) = map.get("country").and_then(Value::as_str)
        && !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errors.push(FieldError::new(
            "shipping_address.country",
            "must be an ISO 3166-1 alpha-2 code such as ES",
        ));
    }
    if map.len() > 10 {
        errors.push(FieldError::new("shipping_address", "has unknown fields"));
    }
    errors
}

async fn checkout(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let identity = ctx.identity()?.clone();
    let key = idempotency::parse_key(request.header("idempotency-key").and_then(|v| v.as_str()))?;
    let input: CheckoutRequest = parse_json(
        request.header("content-type").and_then(|v| v.as_str()),
        request.body(),
        DEFAULT_JSON_LIMIT,
    )?;
    let mut errors = validate_address(&input.shipping_address);
    if input.payment_method.trim().is_empty() || input.payment_method.len() > 200 {
        errors.push(FieldError::new(
            "payment_method",
            "must be a payment method token",
        ));
    }
    if let Some(items) = &input.items {
        if items.is_empty() || items.len() > 100 {
            errors.push(FieldError::new("items", "must list 1 to 100 items"));
        }
        for (i, item) in items.iter().enumerate() {
            if valid_id(&item.product_id).is_err() {
                errors.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "is not a product id",
                ));
            }
            if !(1..=999).contains(&item.quantity) {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    "must be from 1 to 999",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Problem::unprocessable(errors));
    }

    let db = open_db()?;
    let scope = format!("{}:checkout", identity.user_id);
    let fingerprint = idempotency::fingerprint("POST", "/api/v1/orders", request.body());
    let token = match idempotency::claim_with_token(
        &db,
        &scope,
        &key,
        &fingerprint,
        IDEMPOTENCY_LOCK_MS,
    )? {
        Claimed::Replay { status, body } => {
            let mut response = Response::builder()
                .status(status)
                .header(
                    "content-type",
                    if status >= 400 {
                        bazaar_platform::PROBLEM_CONTENT_TYPE
                    } else {
                        "application/json"
                    },
                )
                .header(bazaar_platform::REQUEST_ID_HEADER, ctx.request_id.as_str())
                .body(body)
                .build();
            response.set_header("idempotent-replayed", "true");
            return Ok(response);
        }
        Claimed::New(token) | Claimed::TakeOver(token) => token,
    };
    let idem = Idem {
        scope: &scope,
        key: &key,
        token: Some(token),
    };

    let order_id = order_id_for(&identity.user_id, &key);
    // The saga row is written before the order's first event: a crash right after `created`
    // must leave a saga for the recovery job to find, not a `pending` order nothing resumes
    // (found by killing the runner mid-checkout, host/tests/checkout_resilience.rs).
    if !store::lease_saga(&db, &order_id, SAGA_LEASE_MS, Some((&scope, &key)))? {
        // Another worker runs this saga (a slow first request, or the recovery job, which
        // stores the answer when it finishes). Give the key back so a later retry is not
        // refused as "in progress" for the whole lock TTL after this request is gone.
        let _ = idempotency::release_claim(&db, &scope, &key, token);
        return Err(Problem::conflict(
            "This checkout is still in progress; retry later",
        ));
    }
    if store::cancel_requested(&db, &order_id)? {
        // The customer cancelled this order; a retried checkout must not push it forward.
        let _ = store::pause_saga(&db, &order_id, "cancellation requested");
        // The same problem as the saga's answer for an order already cancelled, so a client
        // sees one shape (`code: cancelled`, `order_id`) whichever path noticed the cancel.
        return Err(checkout_failure(
            409,
            "cancelled",
            "The order was cancelled",
            &order_id,
        ));
    }

    let stored = match store::load(&db, &order_id)? {
        Some(existing) => existing,
        None => match create_order(ctx, &db, &identity, &order_id, &input).await {
            Ok(stored) => stored,
            Err(problem) => {
                // Nothing happened: let the client fix the input and reuse the key.
                let _ = store::drop_saga(&db, &order_id);
                let _ = idempotency::release_claim(&db, &scope, &key, token);
                return Err(problem);
            }
        },
    };
    let saga = Saga {
        db: &db,
        request_id: &ctx.request_id,
    };
    let outcome = saga.run(stored).await;
    let response = finish_checkout(ctx, &db, &order_id, outcome, Some(idem))?;
    publish(ctx, &db);
    if response.0 == 201 && input.items.is_none() {
        clear_cart(ctx, &identity, &order_id, &db).await;
    }
    Ok(response.1)
}

/// The checkout's idempotency record a saga's end answers.
#[derive(Clone, Copy)]
struct Idem<'a> {
    scope: &'a str,
    key: &'a str,
    /// The claim of the request that runs the saga; `None` for the recovery job, which answers
    /// on behalf of a request that died (and never replaces an answer already stored).
    token: Option<ClaimToken>,
}

/// The problem a checkout that did not succeed answers: `code` says why (its title and type
/// follow from it), `order_id` names the order.
fn checkout_failure(status: u16, code: &str, detail: impl Into<String>, order_id: &str) -> Problem {
    Problem::new(
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::CONFLICT),
        detail,
    )
    .with_title(match code {
        "out_of_stock" => "Out of stock",
        "payment_declined" => "Payment declined",
        _ => "Checkout failed",
    })
    .with_type(format!(
        "https://bazaar.dev/problems/{}",
        code.replace('_', "-")
    ))
    .with_extension("code", code)
    .with_extension("order_id", order_id)
}

/// How soon a client polling a checkout that waits for the customer should ask again (seconds).
const CUSTOMER_POLL_SECS: &str = "5";

/// Records a saga's end: the saga row, the idempotency answer and the HTTP response.
fn finish_checkout(
    ctx: &Ctx,
    db: &Database,
    order_id: &str,
    outcome: Outcome,
    idem: Option<Idem<'_>>,
) -> Result<(u16, Response), Problem> {
    let (status, body) = match outcome {
        Outcome::Paid(stored) => (201, render(&stored)),
        Outcome::Failed {
            order,
            status,
            code,
            detail,
        } => {
            let problem = checkout_failure(status, &code, detail, &order.order.id);
            (
                status,
                serde_json::from_slice(&problem.to_json_vec()).unwrap_or(Value::Null),
            )
        }
        Outcome::Stalled(why) => {
            ctx.log.warn(
                "checkout stalled; the recovery job resumes it",
                &[("order_id", order_id.into()), ("why", why.clone().into())],
            );
            store::pause_saga(db, order_id, &why)?;
            // Not a final answer either: the key is given back, so the retry the answer asks
            // for (Retry-After) runs the saga again instead of finding the key "in progress"
            // until its lock lapses. The saga lease keeps that retry and the recovery job from
            // running it twice.
            if let Some(Idem {
                scope,
                key,
                token: Some(token),
            }) = &idem
            {
                idempotency::release_claim(db, scope, key, *token)?;
            }
            let mut response = ctx.problem(
                Problem::service_unavailable(
                    "The checkout could not finish right now; it is resumed automatically. \
                     Retry with the same Idempotency-Key or read the order.",
                )
                .with_extension("order_id", order_id),
            );
            response.set_header("retry-after", "5");
            return Ok((503, response));
        }
        Outcome::AwaitingCustomer { order, payment } => {
            let payment_json = payment.to_json();
            store::await_customer(db, order_id, payment.wait_until, &payment_json)?;
            // Not a final answer: the key is given back, so a retry under it runs the saga
            // again and answers the order as it stands then (202 while waiting, 201 once paid).
            if let Some(Idem {
                scope,
                key,
                token: Some(token),
            }) = idem
            {
                idempotency::release_claim(db, scope, key, token)?;
            }
            let mut body = render(&order);
            body["payment"] = payment_json;
            let mut response = ctx.json(202, &body);
            response.set_header("retry-after", CUSTOMER_POLL_SECS);
            response.set_header("location", format!("/api/v1/orders/{order_id}").as_str());
            return Ok((202, response));
        }
    };
    let text = body.to_string();
    match idem {
        Some(Idem {
            scope,
            key,
            token: Some(token),
        }) if !idempotency::complete_claim(db, scope, key, token, status, &text)? => {
            // A retry took the key over while this request was slow: its answer stands.
            ctx.log.warn(
                "idempotency claim taken over; the newer attempt's answer stands",
                &[("order_id", order_id.into())],
            );
        }
        Some(Idem { token: Some(_), .. }) => {}
        Some(Idem {
            scope,
            key,
            token: None,
        }) => idempotency::complete(db, scope, key, status, &text)?,
        None => {}
    }
    store::finish_saga(db, order_id)?;
    let response = Response::builder()
        .status(status)
        .header(
            "content-type",
            if status >= 400 {
                bazaar_platform::PROBLEM_CONTENT_TYPE
            } else {
                "application/json"
            },
        )
        .header(bazaar_platform::REQUEST_ID_HEADER, ctx.request_id.as_str())
        .body(text)
        .build();
    Ok((status, response))
}

/// Loads the items (the body's, or the caller's cart), prices them from the catalog and writes
/// the order's first event.
async fn create_order(
    ctx: &Ctx,
    db: &Database,
    identity: &Identity,
    order_id: &str,
    input: &CheckoutRequest,
) -> Result<Stored, Problem> {
    let headers = clients::as_user(&ctx.request_id, &identity.user_id, identity.role.as_str());
    let wanted: Vec<(String, i64)> = match &input.items {
        Some(items) => {
            let mut merged: Vec<(String, i64)> = Vec::new();
            for item in items {
                match merged.iter_mut().find(|(p, _)| *p == item.product_id) {
                    Some((_, q)) => *q += item.quantity,
                    None => merged.push((item.product_id.clone(), item.quantity)),
                }
            }
            // The per-line cap applies to the product, however many lines name it.
            if let Some((product, _)) = merged.iter().find(|(_, q)| *q > 999) {
                return Err(Problem::unprocessable(vec![FieldError::new(
                    "items",
                    format!("at most 999 units of {product} per order"),
                )]));
            }
            merged
        }
        None => {
            let cart = call(Method::Get, &format!("{CARTS}/api/v1/cart"), None, &headers)
                .await
                .map_err(|e| {
                    ctx.log
                        .error("cart lookup failed", &[("error", e.0.into())]);
                    Problem::bad_gateway("The cart service could not be reached")
                })?;
            // Lines the catalog no longer sells stay in the cart, flagged; they are not ordered.
            let items: Vec<(String, i64)> = cart.body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["available"] != false)
                .filter_map(|i| {
                    Some((
                        i["product_id"].as_str()?.to_owned(),
                        i["quantity"].as_i64()?,
                    ))
                })
                .collect();
            if items.is_empty() {
                return Err(Problem::unprocessable(vec![FieldError::new(
                    "items",
                    "the cart is empty; add items or send them in the request",
                )]));
            }
            items
        }
    };
    let mut lines = Vec::with_capacity(wanted.len());
    for (product_id, quantity) in wanted {
        let answer = call(
            Method::Get,
            &format!("{CATALOG}/api/v1/products/{product_id}"),
            None,
            &[(bazaar_platform::REQUEST_ID_HEADER, ctx.request_id.as_str())],
        )
        .await
        .map_err(|e| {
            ctx.log
                .error("catalog lookup failed", &[("error", e.0.into())]);
            Problem::bad_gateway("The catalog could not be reached")
        })?;
        let price: Option<Money> = (answer.status == 200 && answer.body["active"] != false)
            .then(|| serde_json::from_value(answer.body["price"].clone()).ok())
            .flatten();
        let Some(price) = price else {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "items",
                format!("product {product_id} is not for sale"),
            )]));
        };
        lines.push((product_id, quantity, price));
    }
    let (items, total) = domain::price_lines(&lines)
        .map_err(|m| Problem::unprocessable(vec![FieldError::new("items", m)]))?;
    let event = Event::Created {
        user_id: identity.user_id.clone(),
        items,
        total,
        shipping_address: input.shipping_address.clone(),
        payment_method: input.payment_method.clone(),
    };
    match store::append(db, order_id, None, &event, Some(&ctx.request_id)) {
        Ok(stored) => Ok(stored),
        // A concurrent duplicate created it first.
        Err(StoreError::Concurrency) => {
            store::load(db, order_id)?.ok_or_else(|| Problem::internal("The order disappeared"))
        }
        Err(StoreError::Illegal(i)) => Err(Problem::internal(i.0)),
        Err(StoreError::Db(e)) => Err(e.into()),
    }
}

async fn clear_cart(ctx: &Ctx, identity: &Identity, order_id: &str, db: &Database) {
    let Ok(Some(stored)) = store::load(db, order_id) else {
        return;
    };
    let headers = clients::as_user(&ctx.request_id, &identity.user_id, identity.role.as_str());
    for item in &stored.order.items {
        let _ = call(
            Method::Delete,
            &format!("{CARTS}/api/v1/cart/items/{}", item.product_id),
            None,
            &headers,
        )
        .await;
    }
}

async fn cancel(ctx: &Ctx, request: &Request, id: &str) -> Result<Response, Problem> {
    let identity = ctx.identity()?.clone();
    let db = open_db()?;
    let stored = owned_order(ctx, &db, id)?;
    // Optional Idempotency-Key: a retried cancel replays its first answer.
    let key = match request.header("idempotency-key").and_then(|v| v.as_str()) {
        Some(raw) => Some(idempotency::parse_key(Some(raw))?),
        None => None,
    };
    let scope = format!("{}:cancel:{id}", identity.user_id);
    let mut claim = None;
    if let Some(key) = &key {
        let fingerprint = idempotency::fingerprint("POST", request.path(), request.body());
        match idempotency::claim_with_token(&db, &scope, key, &fingerprint, IDEMPOTENCY_LOCK_MS)? {
            Claimed::Replay { status, body } => {
                return Ok(Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .header("idempotent-replayed", "true")
                    .body(body)
                    .build());
            }
            Claimed::New(token) | Claimed::TakeOver(token) => claim = Some((key, token)),
        }
    }
    let result = cancel_order(ctx, &db, stored).await;
    if let Some((key, token)) = claim {
        // Token-checked: after a takeover this (slow) request neither overwrites nor drops the
        // newer attempt's record.
        match &result {
            Ok(next) => {
                idempotency::complete_claim(
                    &db,
                    &scope,
                    key,
                    token,
                    200,
                    &render(next).to_string(),
                )?;
            }
            Err(_) => {
                idempotency::release_claim(&db, &scope, key, token)?;
            }
        }
    }
    let next = result?;
    publish(ctx, &db);
    Ok(ctx.json(200, &render(&next)))
}

async fn cancel_order(ctx: &Ctx, db: &Database, stored: Stored) -> Result<Stored, Problem> {
    let order = &stored.order;
    stored
        .order
        .check(&Event::Cancelled {
            reason: String::new(),
        })
        .map_err(|i| Problem::conflict(i.0).with_title("Illegal order transition"))?;
    if !store::lease_saga(db, &order.id, SAGA_LEASE_MS, None)? {
        return Err(Problem::conflict(
            "The order's checkout is still running; retry shortly",
        ));
    }
    // From here on the order only goes backwards: if compensation fails now, the recovery job
    // finishes the cancellation rather than resuming the checkout.
    store::request_cancel(db, &order.id)?;
    compensate_and_cancel(ctx, db, stored).await
}

/// Undoes what the order holds (refund + return stock once paid; void + release before) and
/// records the cancellation. Every call is idempotent, so it can run again after a failure.
async fn compensate_and_cancel(
    ctx: &Ctx,
    db: &Database,
    stored: Stored,
) -> Result<Stored, Problem> {
    let order = &stored.order;
    let saga = Saga {
        db,
        request_id: &ctx.request_id,
    };
    let compensate = async {
        match order.status {
            Status::Paid => {
                let refunded = saga.refund(&stored).await?;
                saga.inventory(&stored, "return").await?;
                Ok::<_, String>(Some(refunded))
            }
            _ => {
                saga.void(&stored).await?;
                saga.release(&stored).await?;
                Ok(None)
            }
        }
    };
    let refunded = match compensate.await {
        Ok(r) => r,
        Err(why) => {
            store::pause_saga(db, &order.id, &why)?;
            ctx.log
                .error("cancel could not compensate", &[("why", why.into())]);
            return Err(Problem::bad_gateway(
                "The cancellation could not be completed now; it is finished automatically \
                 (or retry)",
            ));
        }
    };
    let mut next = append_or_problem(
        db,
        &stored,
        Event::Cancelled {
            reason: "cancelled by request".into(),
        },
        &ctx.request_id,
    )?;
    if let (Some(amount), Some(payment_id)) = (refunded, next.order.payment_id.clone()) {
        next = append_or_problem(
            db,
            &next,
            Event::Refunded { payment_id, amount },
            &ctx.request_id,
        )?;
    }
    store::finish_saga(db, &order.id)?;
    Ok(next)
}

/// Resumes sagas whose request died or stalled; after too many attempts, compensates.
async fn recover(ctx: &Ctx) -> Result<Response, Problem> {
    let db = open_db()?;
    let mut report = Vec::new();
    for (order_id, attempts, idem, cancelling) in store::stalled_sagas(&db, 20)? {
        if !store::lease_saga(&db, &order_id, SAGA_LEASE_MS, None)? {
            continue;
        }
        let Some(stored) = store::load(&db, &order_id)? else {
            // The request died between taking the lease and writing `created`: nothing was
            // reserved or charged. Dropping the row (rather than marking it done) lets a retry
            // under the same key start a saga the job can resume again.
            store::drop_saga(&db, &order_id)?;
            continue;
        };
        if cancelling {
            let label = if stored.order.status == Status::Cancelled {
                store::finish_saga(&db, &order_id)?;
                "cancelled"
            } else {
                match compensate_and_cancel(ctx, &db, stored).await {
                    Ok(_) => "cancelled",
                    Err(_) => "stalled",
                }
            };
            report.push(json!({"order_id": order_id, "outcome": label}));
            continue;
        }
        let saga = Saga {
            db: &db,
            request_id: &ctx.request_id,
        };
        // Money already taken is never given up on: keep settling a captured order.
        let captured = attempts > MAX_SAGA_ATTEMPTS
            && stored.order.status == Status::Confirmed
            && matches!(
                saga.payment_status(&stored).await.as_deref(),
                Some("captured" | "partially_refunded" | "refunded")
            );
        let outcome = if attempts > MAX_SAGA_ATTEMPTS
            && !captured
            && matches!(stored.order.status, Status::Pending | Status::Confirmed)
        {
            // Give up forward progress: undo what happened and fail the order.
            let undo = async {
                saga.void(&stored).await?;
                saga.release(&stored).await
            };
            match undo.await {
                Ok(()) => match append_or_problem(
                    &db,
                    &stored,
                    Event::Failed {
                        reason: "The checkout could not be completed in time".into(),
                        code: "checkout_timeout".into(),
                    },
                    &ctx.request_id,
                ) {
                    Ok(order) => Outcome::Failed {
                        order,
                        status: 502,
                        code: "checkout_timeout".into(),
                        detail: "The checkout could not be completed in time".into(),
                    },
                    Err(p) => Outcome::Stalled(p.detail),
                },
                Err(why) => Outcome::Stalled(why),
            }
        } else {
            saga.run(stored).await
        };
        let label = match &outcome {
            Outcome::Paid(_) => "paid",
            Outcome::Failed { .. } => "failed",
            Outcome::Stalled(_) => "stalled",
            Outcome::AwaitingCustomer { .. } => "awaiting_customer",
        };
        finish_checkout(
            ctx,
            &db,
            &order_id,
            outcome,
            idem.as_ref().map(|(scope, key)| Idem {
                scope,
                key,
                token: None,
            }),
        )?;
        report.push(json!({"order_id": order_id, "outcome": label}));
    }
    if !report.is_empty() {
        ctx.log.info(
            "sagas recovered",
            &[("count", (report.len() as u64).into())],
        );
        publish(ctx, &db);
    }
    Ok(ctx.json(200, &json!({"recovered": report})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_checkout_names_why_and_the_order() {
        // Both places that refuse a retried checkout of a cancelled order build this problem.
        let problem = checkout_failure(409, "cancelled", "The order was cancelled", "ord_1");
        let json: Value = serde_json::from_slice(&problem.to_json_vec()).unwrap();
        assert_eq!(
            (
                &json["status"],
                &json["code"],
                &json["order_id"],
                &json["type"],
                &json["title"]
            ),
            (
                &serde_json::json!(409),
                &serde_json::json!("cancelled"),
                &serde_json::json!("ord_1"),
                &serde_json::json!("https://bazaar.dev/problems/cancelled"),
                &serde_json::json!("Checkout failed")
            )
        );
        let declined = checkout_failure(422, "payment_declined", "Declined", "ord_2");
        let json: Value = serde_json::from_slice(&declined.to_json_vec()).unwrap();
        assert_eq!(json["title"], "Payment declined");
        assert_eq!(json["type"], "https://bazaar.dev/problems/payment-declined");
    }
}
