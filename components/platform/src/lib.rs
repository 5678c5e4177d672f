//! Cross-cutting building blocks shared by every Bazaar component.
//!
//! This crate deliberately has no `spin-sdk` dependency: it works on plain `http` types and the
//! Rust standard library, so it is unit-tested natively and runs unchanged on `wasm32-wasip2`.
//!
//! * [`problem`]: RFC 9457 problem details (`application/problem+json`), the error body of
//!   every Bazaar API.
//! * [`request_id`]: the `x-request-id` rules (accept a well-formed client id, otherwise mint
//!   a UUID v4 from the host's CSPRNG).
//! * [`log`]: one-JSON-object-per-line logs on stdout.
//! * [`time`]: RFC 3339 UTC timestamps from `SystemTime` (no date crate needed).

pub mod log;
pub mod problem;
pub mod request_id;
pub mod time;

pub use log::{Level, Logger, log_json};
pub use problem::{FieldError, PROBLEM_CONTENT_TYPE, Problem};
pub use request_id::{REQUEST_ID_HEADER, RequestId};
