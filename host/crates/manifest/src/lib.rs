//! Loading and validating a Spin application's configuration: `spin.toml`, `runtime-config.toml`
//! and variable resolution. Pure Rust, no wasmtime, so it is unit-tested quickly and in isolation.

mod glob;
mod ids;
mod load;
pub mod manifest;
pub mod runtime_config;
mod toml_util;
pub mod variables;

pub use ids::{validate_kebab_id, validate_lower_snake_id, validate_store_label};
pub use manifest::*;

#[cfg(test)]
mod tests;
