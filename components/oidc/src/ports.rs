//! What the login flow needs from the outside world, as small traits: the Spin adapters live
//! in `spin.rs` (wasm only), test doubles in the flow's tests.

/// A key-value store (Spin's `oidc` store in production).
pub trait Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    fn keys(&self) -> Result<Vec<String>, String>;
}

/// Outbound HTTP (providers and `users.spin.internal`). Implementations bound the size of the
/// response body they read, so a hostile or broken endpoint cannot exhaust memory.
pub trait Outbound {
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<http::Response<Vec<u8>>, String>>;
}

/// Wall-clock time in Unix milliseconds.
pub trait Clock {
    fn now_millis(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        bazaar_platform::time::now_millis()
    }
}
