//! The operational routes every SQL-backed service answers the same way, written once:
//!
//! * `GET /health/live` — the component runs;
//! * `GET /health/ready` — 503 while the database schema is behind this build's migrations;
//! * `POST /internal/admin/migrate` — applies pending migrations (called only by the one-off
//!   admin process, `bazaar admin migrate`);
//! * `POST /internal/jobs/outbox` — publishes unsent outbox events (scheduled job);
//! * `GET /internal/events?after=<position>&limit=` — catch-up for consumers:
//!   `{items, next_after}`, `next_after` being the position to ask after next time.

use serde_json::json;
use spin_sdk::http::{Method, Response};

use crate::db::{Database, Migration};
use crate::page::parse_limit;
use crate::problem::{FieldError, Problem};
use crate::service::Ctx;

/// What the shared routes need to know about a service.
pub struct Ops<'a> {
    pub migrations: &'a [Migration],
    /// Opens the service's database (only when a route needs it).
    pub open: &'a dyn Fn() -> Result<Database, Problem>,
    /// The Redis address events are published to, if configured.
    pub redis_address: Option<String>,
}

/// Most events one outbox job run publishes (the next run continues).
const OUTBOX_BATCH: u32 = 500;

/// Answers `path` if it is one of the shared routes; `None` otherwise.
pub fn route(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    ops: &Ops<'_>,
) -> Option<Result<Response, Problem>> {
    let answer = match (method, path) {
        (Method::Get, "/health/live") => Ok(ctx.json(200, &json!({"status": "ok"}))),
        (Method::Get, "/health/ready") => ready(ctx, ops),
        (Method::Post, "/internal/admin/migrate") => migrate(ctx, ops),
        (Method::Post, "/internal/jobs/outbox") => outbox(ctx, ops),
        (Method::Get, "/internal/events") => events(ctx, ops),
        _ => return None,
    };
    Some(answer)
}

fn ready(ctx: &Ctx, ops: &Ops<'_>) -> Result<Response, Problem> {
    let want = ops.migrations.last().map_or(0, |m| m.version);
    let have = (ops.open)()?.schema_version()?;
    if have < want {
        return Err(Problem::service_unavailable(format!(
            "The database schema is at version {have}; this build needs {want} \
             (run `bazaar admin migrate`)"
        )));
    }
    Ok(ctx.json(200, &json!({"status": "ok", "schema_version": have})))
}

fn migrate(ctx: &Ctx, ops: &Ops<'_>) -> Result<Response, Problem> {
    let db = (ops.open)()?;
    let applied = db.migrate(ops.migrations)?;
    if !applied.is_empty() {
        ctx.log
            .info("migrations applied", &[("versions", json!(applied))]);
    }
    Ok(ctx.json(
        200,
        &json!({"applied": applied, "version": db.schema_version()?}),
    ))
}

fn outbox(ctx: &Ctx, ops: &Ops<'_>) -> Result<Response, Problem> {
    let redis = ops
        .redis_address
        .as_deref()
        .ok_or_else(|| Problem::service_unavailable("redis_address is not set"))?;
    match crate::outbox::publish_pending(&(ops.open)()?, redis, OUTBOX_BATCH) {
        Ok(published) => Ok(ctx.json(200, &json!({"published": published}))),
        Err(e) => Err(Problem::service_unavailable(format!(
            "Events stay in the outbox until Redis answers: {e}"
        ))),
    }
}

fn events(ctx: &Ctx, ops: &Ops<'_>) -> Result<Response, Problem> {
    let after = match ctx.query("after") {
        None => 0,
        Some(raw) => raw.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(|| {
            Problem::unprocessable(vec![FieldError::new(
                "after",
                "must be an outbox position (a non-negative integer)",
            )])
        })?,
    };
    let limit = parse_limit(ctx.query("limit"))?;
    let items = crate::outbox::events_after(&(ops.open)()?, after, limit)?;
    let next_after = items.last().map_or(after, |e| e.position);
    Ok(ctx.json(200, &json!({"items": items, "next_after": next_after})))
}

/// Publishes what the last transaction wrote, right after its commit; anything Redis refuses
/// stays in the outbox for the job.
pub fn publish_now(ctx: &Ctx, db: &Database, redis_address: Option<&str>) {
    let Some(redis) = redis_address else { return };
    if let Err(e) = crate::outbox::publish_pending(db, redis, 100) {
        ctx.log.warn(
            "events left in the outbox for the next sweep",
            &[("error", e.to_string().into())],
        );
    }
}
