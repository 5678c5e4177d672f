//! Bazaar's catalog component: products, categories, pricing and discounts, images.
//! See docs/catalog.md for the routes and rules.
//!
//! * [`domain`]: pure types and rules (money, discounts, products, categories, list queries,
//!   images), unit-tested natively;
//! * [`store`]: SQL storage and migrations; [`kv`]: the product cache and the image objects;
//! * [`routes`] and [`service`]: the HTTP edge; [`config`]: the component variables.

// `Problem` is the error type of every handler (see bazaar_platform).
#![allow(clippy::result_large_err)]

pub mod config;
pub mod domain;
pub mod kv;
pub mod routes;
pub mod service;
pub mod store;

use spin_sdk::http::{Request, Response};

// The export only exists on wasm: natively (unit tests) the handler symbol cannot be linked
// into a cdylib, so the attribute is applied on wasm32 only.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    service::handle(request)
}
