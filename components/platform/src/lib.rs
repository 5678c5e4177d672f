//! Cross-cutting building blocks shared by every Bazaar component — written once here, never
//! copied per service.
//!
//! Pure modules (no host calls; unit-tested natively):
//! * [`problem`]: RFC 9457 problem details (`application/problem+json`);
//! * [`request_id`]: the `x-request-id` rules;
//! * [`log`]: one-JSON-object-per-line logs on stdout;
//! * [`time`]: RFC 3339 UTC timestamps and Unix milliseconds, both directions;
//! * [`auth`]: roles and the verified identity the gateway passes to services;
//! * [`page`]: `limit`/`cursor` keyset pagination;
//! * [`body`]: JSON request bodies (413/415/400/422);
//! * [`ids`]: random opaque ids;
//! * [`jwt`]: Ed25519 access tokens (sign, JWKS, verify with the algorithm pinned).
//!
//! Spin adapters (call `spin-sdk` imports; exercised by the integration tests):
//! * [`db`]: one SQL API over `sqlite:` and `postgres://` databases, migrations;
//! * [`outbox`]: transactional outbox, publishing to Redis, catch-up reads;
//! * [`idempotency`]: `Idempotency-Key` claims, replays and conflicts (Stripe semantics);
//! * [`service`]: per-request context and JSON/problem responses;
//! * [`ops`]: the health, migrate, outbox-job and catch-up routes every SQL service shares.

// `Problem` is the error type of every handler; it is built once per failed request, so its
// size does not matter and boxing it everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod body;
pub mod db;
pub mod idempotency;
pub mod ids;
pub mod jwt;
pub mod log;
pub mod ops;
pub mod outbox;
pub mod page;
pub mod problem;
pub mod request_id;
pub mod service;
pub mod time;

pub use auth::{Identity, Role};
pub use db::{Database, DbError, Migration, Value};
pub use log::{Level, Logger, log_json};
pub use problem::{FieldError, PROBLEM_CONTENT_TYPE, Problem};
pub use request_id::{REQUEST_ID_HEADER, RequestId};
pub use service::Ctx;
