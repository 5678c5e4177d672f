//! What the payment tests need from the shared harness (`common`): building components for
//! wasm32-wasip2, the workspace root and an HTTP client. The payment tests start
//! `bazaar payments serve` themselves rather than `bazaar up`, so they use only these.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

// Not every payment test uses both.
#[allow(unused_imports)]
pub use common::{build_wasm, workspace_root};

/// A client with a longer timeout than `common::client`: the hostile-plugin tests wait for a
/// plugin's CPU budget to run out.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}
