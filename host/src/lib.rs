//! Bazaar's wasmtime host.
//!
//! The Spin-compatible runner is organised like Spin's own "factors": each capability
//! (`factors::*`) links its bindings, reads its runtime-config section and builds per-instance
//! state; `app` wires a loaded manifest to them and `trigger::http` serves requests.

pub mod admin;
pub mod app;
pub mod bindings;
pub mod cli;
pub mod dev_idp;
pub mod engine;
pub mod factors;
pub mod payments;
pub mod secrets;
pub mod telemetry;
pub mod trigger;
