//! The two key-value stores: the product read cache and the image objects.

use bazaar_platform::Logger;
use spin_sdk::key_value::Store;

use crate::domain::image::ImageKey;
use crate::domain::product::ProductRecord;

pub const CACHE_STORE: &str = "catalog_cache";
pub const IMAGES_STORE: &str = "images";

/// Bumped when [`ProductRecord`]'s stored shape changes, so old entries are simply missed.
const CACHE_KEY_PREFIX: &str = "product:v1:";

/// Product read cache: the raw record (never a computed price), keyed by id. Best effort: a
/// failing cache is logged and the database answers instead, never the client's problem.
pub struct ProductCache {
    store: Option<Store>,
    log: Logger,
}

impl ProductCache {
    pub fn open(log: &Logger) -> ProductCache {
        let store = match Store::open(CACHE_STORE) {
            Ok(s) => Some(s),
            Err(e) => {
                log.warn(
                    "product cache unavailable",
                    &[("error", format!("{e:?}").into())],
                );
                None
            }
        };
        ProductCache {
            store,
            log: log.clone(),
        }
    }

    fn key(id: &str) -> String {
        format!("{CACHE_KEY_PREFIX}{id}")
    }

    pub fn get(&self, id: &str) -> Option<ProductRecord> {
        let store = self.store.as_ref()?;
        match store.get(&Self::key(id)) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(record) => Some(record),
                Err(e) => {
                    // An entry this code cannot read (older format, corruption): drop it.
                    self.log
                        .warn("unreadable cache entry", &[("error", e.to_string().into())]);
                    let _ = store.delete(&Self::key(id));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.log.warn(
                    "product cache read failed",
                    &[("error", format!("{e:?}").into())],
                );
                None
            }
        }
    }

    pub fn put(&self, record: &ProductRecord) {
        let Some(store) = &self.store else { return };
        if let Ok(bytes) = serde_json::to_vec(record)
            && let Err(e) = store.set(&Self::key(&record.id), &bytes)
        {
            self.log.warn(
                "product cache write failed",
                &[("error", format!("{e:?}").into())],
            );
        }
    }

    /// Drops the entry of `id`; called after every committed write of that product.
    pub fn invalidate(&self, id: &str) {
        let Some(store) = &self.store else { return };
        if let Err(e) = store.delete(&Self::key(id)) {
            self.log.error(
                "product cache invalidation failed",
                &[
                    ("product_id", id.into()),
                    ("error", format!("{e:?}").into()),
                ],
            );
        }
    }
}

/// Image bytes by content-addressed key (the key's extension gives the content type).
pub struct ImageStore {
    store: Store,
}

impl ImageStore {
    pub fn open() -> Result<ImageStore, String> {
        Store::open(IMAGES_STORE)
            .map(|store| ImageStore { store })
            .map_err(|e| format!("{e:?}"))
    }

    fn key(key: &ImageKey) -> String {
        format!("image:{key}")
    }

    pub fn get(&self, key: &ImageKey) -> Result<Option<Vec<u8>>, String> {
        self.store
            .get(&Self::key(key))
            .map_err(|e| format!("{e:?}"))
    }

    /// Stores `bytes` under `key` unless already present (content addressing makes a second
    /// write of the same key pointless).
    pub fn put(&self, key: &ImageKey, bytes: &[u8]) -> Result<(), String> {
        let k = Self::key(key);
        if self.store.exists(&k).map_err(|e| format!("{e:?}"))? {
            return Ok(());
        }
        self.store.set(&k, bytes).map_err(|e| format!("{e:?}"))
    }
}
