//! The catalog's domain: pure types and rules, no host calls, unit-tested natively. Every type
//! is built by parsing client input, so an invalid value cannot exist past the HTTP edge.

pub mod category;
pub mod discount;
pub mod image;
pub mod listing;
pub mod money;
pub mod product;
