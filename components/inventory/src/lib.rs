//! Bazaar's inventory service (private route; the gateway forwards `/api/v1/inventory...`).
//!
//! Public (API.md): `GET /api/v1/inventory/{product_id}`,
//! `PUT /api/v1/inventory/{product_id}/warehouses/{warehouse_id}` (admin), and
//! `PUT /api/v1/inventory/{product_id}/threshold` (admin; restock alerts).
//!
//! Internal (service chaining only; the gateway never forwards `/internal/`):
//! `POST /internal/reservations` (all-or-nothing, idempotent by reservation id),
//! `GET /internal/reservations/{id}`, `POST /internal/reservations/{id}/commit|release|return`,
//! `GET /internal/events?after=<position>` (catch-up), jobs `POST /internal/jobs/expire` and
//! `POST /internal/jobs/outbox`, and `POST /internal/admin/migrate`.
//!
//! Component variables: `database`, `redis_address`, `reservation_ttl_secs`.

// `Problem` is every handler's error type (see bazaar-platform).
#![allow(clippy::result_large_err)]

pub mod domain;
pub mod store;

use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::{Ctx, Database, FieldError, Problem, Role};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{Method, Request, Response};

use crate::store::ReserveError;

const COMPONENT: &str = "inventory";
const DEFAULT_TTL_SECS: i64 = 15 * 60;

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    let ctx = Ctx::new(COMPONENT, &request);
    let result = route(&ctx, &request);
    ctx.respond(result)
}

fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn open_db() -> Result<Database, Problem> {
    let url = variable("database").unwrap_or_else(|| "sqlite:inventory".to_owned());
    Ok(Database::open(&url)?)
}

fn body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, Problem> {
    parse_json(
        request.header("content-type").and_then(|v| v.as_str()),
        request.body(),
        DEFAULT_JSON_LIMIT,
    )
}

fn id_segment<'a>(raw: &'a str, what: &str) -> Result<&'a str, Problem> {
    domain::parse_id(raw).ok_or_else(|| Problem::not_found(format!("No such {what}")))
}

/// Publishes what the last transaction wrote; anything left is the outbox job's.
fn publish(ctx: &Ctx, db: &Database) {
    bazaar_platform::ops::publish_now(ctx, db, variable("redis_address").as_deref());
}

fn route(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let ops = bazaar_platform::ops::Ops {
        migrations: store::MIGRATIONS,
        open: &open_db,
        redis_address: variable("redis_address"),
    };
    if let Some(answer) = bazaar_platform::ops::route(ctx, request.method(), request.path(), &ops) {
        return answer;
    }
    let path = request.path();
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::Get, ["api", "v1", "inventory", product]) => {
            let product = id_segment(product, "product")?;
            let view = store::inventory(&open_db()?, product, bazaar_platform::time::now_millis())?;
            Ok(ctx.json(200, &view))
        }
        (Method::Put, ["api", "v1", "inventory", product, "warehouses", warehouse]) => {
            ctx.identity()?.require_role(&[Role::Admin])?;
            let product = id_segment(product, "product")?;
            let warehouse = id_segment(warehouse, "warehouse")?;
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SetStock {
                on_hand: i64,
                priority: Option<i64>,
            }
            let input: SetStock = body(request)?;
            let mut errors = Vec::new();
            if !(0..=1_000_000_000).contains(&input.on_hand) {
                errors.push(FieldError::new("on_hand", "must be from 0 to 1000000000"));
            }
            if input
                .priority
                .is_some_and(|p| !(0..=1_000_000).contains(&p))
            {
                errors.push(FieldError::new("priority", "must be from 0 to 1000000"));
            }
            if !errors.is_empty() {
                return Err(Problem::unprocessable(errors));
            }
            let db = open_db()?;
            store::set_stock(
                &db,
                product,
                warehouse,
                input.on_hand,
                input.priority,
                Some(&ctx.request_id),
            )?;
            publish(ctx, &db);
            let view = store::inventory(&db, product, bazaar_platform::time::now_millis())?;
            Ok(ctx.json(200, &view))
        }
        (Method::Put, ["api", "v1", "inventory", product, "threshold"]) => {
            ctx.identity()?.require_role(&[Role::Admin])?;
            let product = id_segment(product, "product")?;
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SetThreshold {
                threshold: i64,
            }
            let input: SetThreshold = body(request)?;
            if !(0..=1_000_000_000).contains(&input.threshold) {
                return Err(Problem::unprocessable(vec![FieldError::new(
                    "threshold",
                    "must be from 0 (no alerts) to 1000000000",
                )]));
            }
            let db = open_db()?;
            store::set_threshold(&db, product, input.threshold)?;
            let view = store::inventory(&db, product, bazaar_platform::time::now_millis())?;
            Ok(ctx.json(200, &view))
        }
        (Method::Post, ["internal", "reservations"]) => reserve(ctx, request),
        (Method::Get, ["internal", "reservations", id]) => {
            let id = id_segment(id, "reservation")?;
            let view = store::reservation(&open_db()?, id)?
                .ok_or_else(|| Problem::not_found("No such reservation"))?;
            Ok(ctx.json(200, &view))
        }
        (
            Method::Post,
            [
                "internal",
                "reservations",
                id,
                action @ ("commit" | "release" | "return"),
            ],
        ) => {
            let id = id_segment(id, "reservation")?;
            let db = open_db()?;
            let view = match *action {
                "commit" => store::commit(&db, id, Some(&ctx.request_id))?,
                "release" => store::release(&db, id, Some(&ctx.request_id))?,
                _ => store::return_stock(&db, id, Some(&ctx.request_id))?,
            };
            publish(ctx, &db);
            Ok(ctx.json(200, &view))
        }
        (Method::Post, ["internal", "jobs", "expire"]) => {
            let db = open_db()?;
            let now = bazaar_platform::time::now_millis();
            let expired = db.transaction(|db| store::release_expired(db, None, now, None))?;
            if expired > 0 {
                ctx.log.info(
                    "expired reservations released",
                    &[("count", (expired as u64).into())],
                );
                publish(ctx, &db);
            }
            Ok(ctx.json(200, &json!({"expired": expired})))
        }
        (_, ["api", "v1", "inventory", ..]) | (_, ["internal", ..]) | (_, ["health", ..]) => {
            Err(Problem::not_found("No such inventory route"))
        }
        _ => Err(Problem::not_found("No such route")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveItem {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    reservation_id: String,
    items: Vec<ReserveItem>,
    ttl_secs: Option<i64>,
}

fn reserve(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let input: ReserveRequest = body(request)?;
    if domain::parse_id(&input.reservation_id).is_none() {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "reservation_id",
            "must be 1-64 characters of A-Z, a-z, 0-9, _ and -",
        )]));
    }
    let items = store::parse_items(
        &input
            .items
            .into_iter()
            .map(|i| (i.product_id, i.quantity))
            .collect::<Vec<_>>(),
    )?;
    let ttl_secs = input
        .ttl_secs
        .or_else(|| variable("reservation_ttl_secs").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=86_400).contains(&ttl_secs) {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "ttl_secs",
            "must be from 1 to 86400",
        )]));
    }
    let db = open_db()?;
    match store::reserve(
        &db,
        &input.reservation_id,
        &items,
        ttl_secs * 1000,
        Some(&ctx.request_id),
    ) {
        Ok(view) => {
            publish(ctx, &db);
            Ok(ctx.json(201, &view))
        }
        Err(ReserveError::OutOfStock {
            product_id,
            requested,
            available,
        }) => Err(Problem::conflict(format!(
            "Only {available} of {requested} units of {product_id} are available"
        ))
        .with_title("Out of stock")
        .with_type("https://bazaar.dev/problems/out-of-stock")
        .with_extension("product_id", product_id)
        .with_extension("requested", requested)
        .with_extension("available", available)),
        Err(ReserveError::Finished(state)) => Err(Problem::conflict(format!(
            "Reservation {} is already {state}",
            input.reservation_id
        ))),
        Err(ReserveError::Problem(p)) => Err(p),
    }
}
