//! Spin's HTTP routing (routefinder precedence, trailing-slash tolerance, `spin-*` headers) and
//! the `allowed_outbound_hosts` grammar. Pure Rust, no wasmtime, so the rules that decide which
//! component runs and what it may reach can be tested exhaustively without an engine.

pub mod allowed_hosts;
pub mod routes;

pub use allowed_hosts::{
    AllowedHost, AllowedHosts, BlockedNetworks, parse_outbound_url, service_chaining_target,
};
pub use routes::{RouteMatch, Router, full_url, is_reserved, spin_headers};
