//! One module per capability, in the manner of Spin's factors: each links its bindings, reads
//! its runtime-config section (if any) and builds per-instance state.

pub mod key_value;
pub mod outbound_http;
pub mod postgres;
pub mod redis;
pub mod sqlite;
pub mod variables;
pub mod wasi;
