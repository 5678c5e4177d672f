//! Triggers: what turns the outside world's events into component invocations.

pub mod http;
pub mod redis;
pub mod scheduler;
