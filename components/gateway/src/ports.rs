//! The gateway's ports: calls to other components ([`Upstream`]) and its key-value store
//! ([`Store`]: JWKS cache, rate-limit state). On Spin they are service chaining and the `gateway`
//! key-value store (`lib.rs`); unit tests use fakes and [`MemoryStore`].

use std::future::Future;
use std::time::Duration;

/// Sends a request to another component and returns its full response, or a transport error.
pub trait Upstream {
    /// Performs `request` (its URI is absolute: `http://<id>.spin.internal/...`).
    fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> impl Future<Output = Result<http::Response<Vec<u8>>, String>>;

    /// Like [`Upstream::send`], but gives up after `limit` (the response, body included, must
    /// arrive in time). The default waits without bound, for hosts without timers.
    fn send_within(
        &self,
        request: http::Request<Vec<u8>>,
        limit: Duration,
    ) -> impl Future<Output = Result<http::Response<Vec<u8>>, String>> {
        let _ = limit;
        self.send(request)
    }
}

/// Byte values under string keys. Errors are host messages, for logs only.
pub trait Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
}

/// An in-memory store for tests; `failing()` answers every call with an error.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryStore {
    pub entries: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>>,
    pub fail: bool,
    pub writes: std::cell::Cell<usize>,
}

#[cfg(test)]
impl MemoryStore {
    pub fn failing() -> Self {
        MemoryStore {
            fail: true,
            ..MemoryStore::default()
        }
    }
}

#[cfg(test)]
impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        if self.fail {
            return Err("store unavailable".to_owned());
        }
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if self.fail {
            return Err("store unavailable".to_owned());
        }
        self.writes.set(self.writes.get() + 1);
        self.entries
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}
