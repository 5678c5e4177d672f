//! Carts in Spin key-value (store label `carts`): `guest:<cart id>` and `user:<user id>`, each a
//! JSON [`Cart`].
//!
//! Spin key-value has no compare-and-set, so two concurrent writes to one cart are
//! last-writer-wins: a shopper double-clicking "add" in two tabs can lose one click. Carts are
//! advisory (checkout re-validates every line against the catalog and inventory), which is why
//! the architecture keeps them in key-value rather than SQL.

use bazaar_platform::Problem;
use spin_sdk::key_value::Store;

use crate::domain::Cart;

pub trait CartStore {
    fn load(&self, key: &str) -> Result<Option<Cart>, Problem>;
    fn save(&self, key: &str, cart: &Cart) -> Result<(), Problem>;
    fn delete(&self, key: &str) -> Result<(), Problem>;
    fn keys(&self) -> Result<Vec<String>, Problem>;
}

pub fn guest_key(cart_id: &str) -> String {
    format!("guest:{cart_id}")
}

pub fn user_key(user_id: &str) -> String {
    format!("user:{user_id}")
}

pub struct KvCarts(Store);

impl KvCarts {
    pub fn open() -> Result<Self, Problem> {
        Store::open("carts")
            .map(KvCarts)
            .map_err(|e| storage(&format!("open: {e:?}")))
    }
}

fn storage(detail: &str) -> Problem {
    bazaar_platform::log_json(
        bazaar_platform::Level::Error,
        "carts",
        None,
        "key-value operation failed",
        &[("error", detail.into())],
    );
    Problem::service_unavailable("The cart store is unavailable; retry shortly")
}

impl CartStore for KvCarts {
    fn load(&self, key: &str) -> Result<Option<Cart>, Problem> {
        match self.0.get(key) {
            Ok(None) => Ok(None),
            // A record we cannot read (older format, corruption) is treated as absent rather
            // than failing every request of that shopper forever.
            Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) => Err(storage(&format!("get: {e:?}"))),
        }
    }

    fn save(&self, key: &str, cart: &Cart) -> Result<(), Problem> {
        let bytes = serde_json::to_vec(cart).map_err(|e| storage(&e.to_string()))?;
        self.0
            .set(key, &bytes)
            .map_err(|e| storage(&format!("set: {e:?}")))
    }

    fn delete(&self, key: &str) -> Result<(), Problem> {
        self.0
            .delete(key)
            .map_err(|e| storage(&format!("delete: {e:?}")))
    }

    fn keys(&self) -> Result<Vec<String>, Problem> {
        self.0
            .get_keys()
            .map_err(|e| storage(&format!("get_keys: {e:?}")))
    }
}
