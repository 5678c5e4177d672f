//! Bazaar's users service: registration, password and social login, access and refresh tokens,
//! profiles and roles (API.md "Identity"; design in docs/users.md).
//!
//! Private component: reached only through the gateway (`/auth/*`, `/api/v1/users*`) and by
//! chaining from other components (`/internal/jwks` for the gateway, `/internal/oidc/login` for
//! the `oidc` component) or from `bazaar admin` (`/internal/admin/*`).
//!
//! Layout: [`domain`] holds the rules (pure, unit-tested natively), [`store`] every SQL statement,
//! [`crypto`] hashing and token material, [`api`] the HTTP handlers; this file is only the Spin
//! glue.

// `Problem` is the error type of every handler; it is built once per failed request.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod store;

use spin_sdk::http::{Request, Response};

// The export only exists on wasm: natively (unit tests) the wasi:http export cannot be linked.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    api::handle(&request, || {
        config::Config::from_lookup(|name| spin_sdk::variables::get(name).ok())
    })
}
