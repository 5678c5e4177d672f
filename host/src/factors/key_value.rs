//! Key-value capability: `fermyon:spin/key-value@2.0.0`.
//!
//! One [`KeyValueFactor`] is built per app at startup from `[key_value_store.<label>]` in the
//! runtime config (spin-reference §5.2). The label `default` always exists: unless the runtime
//! config redefines it, it is an SQLite file `<state_dir>/sqlite_key_value.db` (in-memory when
//! there is no state dir). Each guest instance gets a [`KeyValueInstance`] that only lets it open
//! the labels listed in its component's `key_value_stores`.
//!
//! Backends:
//! * `spin`: an SQLite database with one table `spin_key_value(store, key, value)`, the same
//!   layout Spin uses, so an existing `.spin/sqlite_key_value.db` keeps working. One connection per
//!   store label, used from blocking threads (`spawn_blocking`).
//! * `redis`: a `redis::aio::ConnectionManager` (reconnects by itself) connected at startup with a
//!   bounded timeout. Keys are stored as-is, without a prefix, as Spin does.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bazaar_manifest::runtime_config::KeyValueStoreConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::spin2::key_value::{self, Error};

/// Maximum key length of the `spin` (SQLite) backend, as in Spin's documentation.
pub const MAX_KEY_BYTES: usize = 256;
/// Maximum value length of the `spin` (SQLite) backend (1 MiB), as in Spin's documentation.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// How many stores one instance may have open at once (`store-table-full` beyond that).
const MAX_OPEN_STORES: usize = 256;
/// How long an SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for connecting to Redis at startup.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for a single Redis command issued on behalf of a guest.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// File name of the implicit `default` store inside the state dir.
pub const DEFAULT_STORE_FILE: &str = "sqlite_key_value.db";

/// Guest-visible handle of an open key-value store (resource `store`).
pub struct StoreHandle {
    store: Arc<Store>,
}

impl StoreHandle {
    /// The label this handle was opened with.
    pub fn label(&self) -> &str {
        &self.store.label
    }
}

/// All key-value stores of the app. Cheap to clone.
#[derive(Clone)]
pub struct KeyValueFactor {
    stores: Arc<BTreeMap<String, Arc<Store>>>,
}

/// Per-instance key-value state: the labels the component may open and its open store handles.
pub struct KeyValueInstance {
    stores: Arc<BTreeMap<String, Arc<Store>>>,
    allowed: HashSet<String>,
    table: ResourceTable,
}

struct Store {
    label: String,
    backend: Backend,
}

// The Redis variant is large, but there is one `Backend` per store label, behind an `Arc`.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite {
        conn: Arc<Mutex<rusqlite::Connection>>,
        path: Option<PathBuf>,
    },
    Redis {
        conn: ConnectionManager,
        display_url: String,
    },
}

impl KeyValueFactor {
    /// Builds every store: `default` (unless `configs` defines it) plus each configured label.
    /// Backends are opened now, so a bad path or an unreachable Redis fails startup with a
    /// one-line error naming the label.
    pub async fn new(
        configs: &BTreeMap<String, KeyValueStoreConfig>,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut all: BTreeMap<String, KeyValueStoreConfig> = BTreeMap::new();
        if !configs.contains_key("default") {
            let path = state_dir.map(|dir| dir.join(DEFAULT_STORE_FILE));
            all.insert("default".to_string(), KeyValueStoreConfig::Spin { path });
        }
        all.extend(configs.iter().map(|(k, v)| (k.clone(), v.clone())));

        let mut stores = BTreeMap::new();
        for (label, config) in all {
            let backend = open_backend(&config)
                .await
                .map_err(|e| anyhow::anyhow!("key_value_stores label `{label}`: {e:#}"))?;
            stores.insert(label.clone(), Arc::new(Store { label, backend }));
        }
        Ok(Self {
            stores: Arc::new(stores),
        })
    }

    /// Startup validation of one component's `key_value_stores`: every label must exist.
    pub fn check_component(&self, component_id: &str, labels: &[String]) -> anyhow::Result<()> {
        for label in labels {
            if !self.stores.contains_key(label) {
                anyhow::bail!(
                    "component `{component_id}`: unknown key_value_stores label `{label}`"
                );
            }
        }
        Ok(())
    }

    /// Fresh per-instance state for a component whose `key_value_stores` is `allowed`.
    pub fn instance_state(&self, allowed: &[String]) -> KeyValueInstance {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_OPEN_STORES);
        KeyValueInstance {
            stores: self.stores.clone(),
            allowed: allowed.iter().cloned().collect(),
            table,
        }
    }

    /// One `(label, description)` per store, for the startup output.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.stores
            .values()
            .map(|store| {
                let what = match &store.backend {
                    Backend::Sqlite {
                        path: Some(path), ..
                    } => format!("spin file {}", path.display()),
                    Backend::Sqlite { path: None, .. } => "spin in-memory".to_string(),
                    Backend::Redis { display_url, .. } => format!("redis {display_url}"),
                };
                (store.label.clone(), what)
            })
            .collect()
    }

    /// Writes one entry from the host side (e.g. `--key-value key=value` at startup).
    pub async fn set(&self, label: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let store = self
            .stores
            .get(label)
            .with_context(|| format!("unknown key_value_stores label `{label}`"))?;
        store
            .set(key.to_string(), value.to_vec())
            .await
            .map_err(|e| anyhow::anyhow!("key_value_stores label `{label}`: {e}"))
    }
}

async fn open_backend(config: &KeyValueStoreConfig) -> anyhow::Result<Backend> {
    match config {
        KeyValueStoreConfig::Spin { path } => {
            let path = path.clone();
            let open_path = path.clone();
            let conn = tokio::task::spawn_blocking(move || open_sqlite(open_path.as_deref()))
                .await
                .context("SQLite open task failed")??;
            Ok(Backend::Sqlite {
                conn: Arc::new(Mutex::new(conn)),
                path,
            })
        }
        KeyValueStoreConfig::Redis { url } => {
            let display_url = redact_url(url);
            let client = redis::Client::open(url.as_str())
                .map_err(|e| anyhow::anyhow!("invalid Redis URL `{display_url}`: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(5))
                .set_response_timeout(REDIS_RESPONSE_TIMEOUT)
                // Few, short retries: a guest call waits for at most a few seconds while Redis
                // is down instead of backing off for minutes.
                .set_number_of_retries(2)
                .set_max_delay(500);
            let conn = match tokio::time::timeout(
                REDIS_CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => anyhow::bail!("cannot connect to Redis at `{display_url}`: {e}"),
                Err(_) => anyhow::bail!(
                    "cannot connect to Redis at `{display_url}`: timed out after {}s",
                    REDIS_CONNECT_TIMEOUT.as_secs()
                ),
            };
            Ok(Backend::Redis { conn, display_url })
        }
    }
}

fn open_sqlite(path: Option<&Path>) -> anyhow::Result<rusqlite::Connection> {
    let conn = match path {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory `{}`", parent.display()))?;
            }
            let conn = rusqlite::Connection::open(path)
                .with_context(|| format!("cannot open SQLite file `{}`", path.display()))?;
            conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
            // WAL lets several processes/labels share the file; keep going if the FS refuses it.
            let _: rusqlite::Result<String> =
                conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0));
            conn
        }
        None => rusqlite::Connection::open_in_memory().context("cannot open in-memory SQLite")?,
    };
    conn.execute(
        "CREATE TABLE IF NOT EXISTS spin_key_value (
            store TEXT NOT NULL,
            key   TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (store, key)
        )",
        [],
    )
    .map_err(|e| match path {
        Some(p) => anyhow::anyhow!("cannot initialise SQLite file `{}`: {e}", p.display()),
        None => anyhow::anyhow!("cannot initialise in-memory SQLite: {e}"),
    })?;
    Ok(conn)
}

/// `redis://user:secret@host/` → `redis://user:***@host/`, for logs and startup output.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Runs `f` on the store's SQLite connection on a blocking thread.
async fn with_sqlite<R: Send + 'static>(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
) -> Result<R, String> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    })
    .await
    .map_err(|e| format!("key-value task failed: {e}"))?
    .map_err(|e| format!("SQLite key-value error: {e}"))
}

fn redis_err(e: redis::RedisError) -> String {
    format!("Redis key-value error: {e}")
}

impl Store {
    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, String> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let label = self.label.clone();
                with_sqlite(conn, move |c| {
                    use rusqlite::OptionalExtension as _;
                    c.prepare_cached(
                        "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    )?
                    .query_row((label, key), |row| row.get::<_, Vec<u8>>(0))
                    .optional()
                })
                .await
            }
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .map_err(redis_err)
            }
        }
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                if key.len() > MAX_KEY_BYTES {
                    return Err(format!(
                        "key is {} bytes long; the maximum key size is {MAX_KEY_BYTES} bytes",
                        key.len()
                    ));
                }
                if value.len() > MAX_VALUE_BYTES {
                    return Err(format!(
                        "value is {} bytes long; the maximum value size is {MAX_VALUE_BYTES} bytes (1 MiB)",
                        value.len()
                    ));
                }
                let label = self.label.clone();
                with_sqlite(conn, move |c| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute((label, key, value))
                    .map(|_| ())
                })
                .await
            }
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(redis_err)
            }
        }
    }

    async fn delete(&self, key: String) -> Result<(), String> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let label = self.label.clone();
                with_sqlite(conn, move |c| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                        .execute((label, key))
                        .map(|_| ())
                })
                .await
            }
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(redis_err)
            }
        }
    }

    async fn exists(&self, key: String) -> Result<bool, String> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let label = self.label.clone();
                with_sqlite(conn, move |c| {
                    c.prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)",
                    )?
                    .query_row((label, key), |row| row.get::<_, bool>(0))
                })
                .await
            }
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut conn)
                    .await
                    .map_err(redis_err)
            }
        }
    }

    async fn keys(&self) -> Result<Vec<String>, String> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let label = self.label.clone();
                with_sqlite(conn, move |c| {
                    let mut stmt =
                        c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
                    let keys = stmt.query_map([label], |row| row.get::<_, String>(0))?;
                    keys.collect()
                })
                .await
            }
            Backend::Redis { conn, .. } => {
                // SCAN instead of KEYS so a big database does not block the server.
                let mut conn = conn.clone();
                let mut seen = HashSet::new();
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)?;
                    for raw in batch {
                        let key = String::from_utf8_lossy(&raw).into_owned();
                        if seen.insert(key.clone()) {
                            keys.push(key);
                        }
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                Ok(keys)
            }
        }
    }
}

impl KeyValueInstance {
    fn store(&self, handle: &Resource<StoreHandle>) -> Result<Arc<Store>, Error> {
        self.table
            .get(handle)
            .map(|h| h.store.clone())
            .map_err(|e| Error::Other(format!("invalid store handle: {e}")))
    }
}

impl key_value::Host for KeyValueInstance {}

impl key_value::HostStore for KeyValueInstance {
    async fn open(&mut self, label: String) -> Result<Resource<StoreHandle>, Error> {
        // Spin checks the component's allow-list first, so an undeclared label is
        // `access-denied` whether or not it exists.
        if !self.allowed.contains(&label) {
            return Err(Error::AccessDenied);
        }
        let store = self.stores.get(&label).cloned().ok_or(Error::NoSuchStore)?;
        self.table
            .push(StoreHandle { store })
            .map_err(|_| Error::StoreTableFull)
    }

    async fn get(
        &mut self,
        self_: Resource<StoreHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.store(&self_)?.get(key).await.map_err(Error::Other)
    }

    async fn set(
        &mut self,
        self_: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        self.store(&self_)?
            .set(key, value)
            .await
            .map_err(Error::Other)
    }

    async fn delete(&mut self, self_: Resource<StoreHandle>, key: String) -> Result<(), Error> {
        self.store(&self_)?.delete(key).await.map_err(Error::Other)
    }

    async fn exists(&mut self, self_: Resource<StoreHandle>, key: String) -> Result<bool, Error> {
        self.store(&self_)?.exists(key).await.map_err(Error::Other)
    }

    async fn get_keys(&mut self, self_: Resource<StoreHandle>) -> Result<Vec<String>, Error> {
        self.store(&self_)?.keys().await.map_err(Error::Other)
    }

    async fn drop(&mut self, rep: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

/// `HasData` marker: the generated linker functions hand out `&mut KeyValueInstance`.
struct KeyValueData;

impl HasData for KeyValueData {
    type Data<'a> = &'a mut KeyValueInstance;
}

/// Links `fermyon:spin/key-value@2.0.0` into `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KeyValueInstance,
) -> anyhow::Result<()> {
    key_value::add_to_linker::<T, KeyValueData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking fermyon:spin/key-value@2.0.0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::spin2::key_value::HostStore as _;

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A second (borrowed) handle to the same table entry, as a guest method call would pass it.
    fn borrow(handle: &Resource<StoreHandle>) -> Resource<StoreHandle> {
        Resource::new_borrow(handle.rep())
    }

    async fn memory_factor() -> KeyValueFactor {
        KeyValueFactor::new(&BTreeMap::new(), None).await.unwrap()
    }

    #[tokio::test]
    async fn set_get_delete_exists_keys_round_trip() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let store = inst.open("default".into()).await.unwrap();

        assert_eq!(inst.get(borrow(&store), "a".into()).await.unwrap(), None);
        assert!(!inst.exists(borrow(&store), "a".into()).await.unwrap());
        inst.set(borrow(&store), "a".into(), b"one".to_vec())
            .await
            .unwrap();
        inst.set(borrow(&store), "b".into(), vec![0, 255, 7])
            .await
            .unwrap();
        inst.set(borrow(&store), "a".into(), b"uno".to_vec())
            .await
            .unwrap(); // overwrite
        assert_eq!(
            inst.get(borrow(&store), "a".into()).await.unwrap(),
            Some(b"uno".to_vec())
        );
        assert_eq!(
            inst.get(borrow(&store), "b".into()).await.unwrap(),
            Some(vec![0, 255, 7])
        );
        assert!(inst.exists(borrow(&store), "a".into()).await.unwrap());
        let mut keys = inst.get_keys(borrow(&store)).await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);

        inst.delete(borrow(&store), "a".into()).await.unwrap();
        inst.delete(borrow(&store), "missing".into()).await.unwrap(); // deleting nothing is fine
        assert!(!inst.exists(borrow(&store), "a".into()).await.unwrap());
        assert_eq!(inst.get(borrow(&store), "a".into()).await.unwrap(), None);
        assert_eq!(
            inst.get_keys(borrow(&store)).await.unwrap(),
            vec!["b".to_string()]
        );

        // Empty values are values.
        inst.set(borrow(&store), "empty".into(), Vec::new())
            .await
            .unwrap();
        assert_eq!(
            inst.get(borrow(&store), "empty".into()).await.unwrap(),
            Some(Vec::new())
        );

        // Dropping the handle removes it from the table; later use is an error, not a panic.
        inst.drop(store).await.unwrap();
        assert!(inst.table.is_empty());
    }

    #[tokio::test]
    async fn stores_are_isolated_by_label_even_in_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("sub/dir/shared.db");
        let configs = BTreeMap::from([
            (
                "default".to_string(),
                KeyValueStoreConfig::Spin {
                    path: Some(shared.clone()),
                },
            ),
            (
                "other".to_string(),
                KeyValueStoreConfig::Spin {
                    path: Some(shared.clone()),
                },
            ),
            ("mem".to_string(), KeyValueStoreConfig::Spin { path: None }),
        ]);
        let factor = KeyValueFactor::new(&configs, None).await.unwrap();
        assert!(shared.exists(), "parent directories and file are created");
        let mut inst = factor.instance_state(&labels(&["default", "other", "mem"]));
        let a = inst.open("default".into()).await.unwrap();
        let b = inst.open("other".into()).await.unwrap();
        let m = inst.open("mem".into()).await.unwrap();
        inst.set(borrow(&a), "k".into(), b"from-default".to_vec())
            .await
            .unwrap();
        assert_eq!(inst.get(borrow(&b), "k".into()).await.unwrap(), None);
        assert_eq!(inst.get(borrow(&m), "k".into()).await.unwrap(), None);
        inst.set(borrow(&b), "k".into(), b"from-other".to_vec())
            .await
            .unwrap();
        assert_eq!(
            inst.get(borrow(&a), "k".into()).await.unwrap(),
            Some(b"from-default".to_vec())
        );
        assert_eq!(
            inst.get(borrow(&b), "k".into()).await.unwrap(),
            Some(b"from-other".to_vec())
        );
        assert_eq!(
            inst.get_keys(borrow(&a)).await.unwrap(),
            vec!["k".to_string()]
        );
        assert!(inst.get_keys(borrow(&m)).await.unwrap().is_empty());

        // Two handles on the same label share data.
        let a2 = inst.open("default".into()).await.unwrap();
        assert_eq!(
            inst.get(borrow(&a2), "k".into()).await.unwrap(),
            Some(b"from-default".to_vec())
        );
    }

    #[tokio::test]
    async fn undeclared_labels_are_access_denied() {
        let configs = BTreeMap::from([(
            "other".to_string(),
            KeyValueStoreConfig::Spin { path: None },
        )]);
        let factor = KeyValueFactor::new(&configs, None).await.unwrap();

        let mut inst = factor.instance_state(&labels(&["default"]));
        // Defined but not listed by the component.
        assert!(matches!(
            inst.open("other".into()).await,
            Err(Error::AccessDenied)
        ));
        // Neither listed nor defined: Spin checks the allow-list first.
        assert!(matches!(
            inst.open("nowhere".into()).await,
            Err(Error::AccessDenied)
        ));
        assert!(inst.open("default".into()).await.is_ok());

        // A component with no key_value_stores cannot even open `default`.
        let mut none = factor.instance_state(&[]);
        assert!(matches!(
            none.open("default".into()).await,
            Err(Error::AccessDenied)
        ));

        // Listed but not defined (only possible if startup validation was skipped).
        let mut ghost = factor.instance_state(&labels(&["ghost"]));
        assert!(matches!(
            ghost.open("ghost".into()).await,
            Err(Error::NoSuchStore)
        ));
    }

    #[tokio::test]
    async fn check_component_rejects_unknown_labels() {
        let configs = BTreeMap::from([(
            "other".to_string(),
            KeyValueStoreConfig::Spin { path: None },
        )]);
        let factor = KeyValueFactor::new(&configs, None).await.unwrap();
        factor
            .check_component("cart", &labels(&["default", "other"]))
            .unwrap();
        factor.check_component("cart", &[]).unwrap();
        let err = factor
            .check_component("cart", &labels(&["default", "sessions"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "component `cart`: unknown key_value_stores label `sessions`"
        );
    }

    #[tokio::test]
    async fn default_store_persists_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".spin");
        {
            let factor = KeyValueFactor::new(&BTreeMap::new(), Some(&state))
                .await
                .unwrap();
            let desc = factor.describe();
            assert_eq!(desc.len(), 1);
            assert_eq!(desc[0].0, "default");
            assert_eq!(
                desc[0].1,
                format!("spin file {}", state.join("sqlite_key_value.db").display())
            );
            let mut inst = factor.instance_state(&labels(&["default"]));
            let s = inst.open("default".into()).await.unwrap();
            inst.set(borrow(&s), "counter".into(), b"41".to_vec())
                .await
                .unwrap();
            factor.set("default", "boot", b"strap").await.unwrap();
        }
        assert!(state.join("sqlite_key_value.db").is_file());
        let factor = KeyValueFactor::new(&BTreeMap::new(), Some(&state))
            .await
            .unwrap();
        let mut inst = factor.instance_state(&labels(&["default"]));
        let s = inst.open("default".into()).await.unwrap();
        assert_eq!(
            inst.get(borrow(&s), "counter".into()).await.unwrap(),
            Some(b"41".to_vec())
        );
        assert_eq!(
            inst.get(borrow(&s), "boot".into()).await.unwrap(),
            Some(b"strap".to_vec())
        );

        // Without a state dir, the default store is in memory.
        let mem = memory_factor().await;
        assert_eq!(
            mem.describe(),
            vec![("default".to_string(), "spin in-memory".to_string())]
        );
    }

    #[tokio::test]
    async fn key_and_value_size_limits() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let s = inst.open("default".into()).await.unwrap();

        inst.set(borrow(&s), "big".into(), vec![1; MAX_VALUE_BYTES])
            .await
            .unwrap();
        match inst
            .set(borrow(&s), "bigger".into(), vec![1; MAX_VALUE_BYTES + 1])
            .await
        {
            Err(Error::Other(msg)) => assert!(msg.contains("maximum value size"), "{msg}"),
            other => panic!("expected Other, got {other:?}"),
        }
        assert!(!inst.exists(borrow(&s), "bigger".into()).await.unwrap());

        inst.set(borrow(&s), "k".repeat(MAX_KEY_BYTES), b"v".to_vec())
            .await
            .unwrap();
        match inst
            .set(borrow(&s), "k".repeat(MAX_KEY_BYTES + 1), b"v".to_vec())
            .await
        {
            Err(Error::Other(msg)) => assert!(msg.contains("maximum key size"), "{msg}"),
            other => panic!("expected Other, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn store_table_full() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let mut handles = Vec::new();
        for _ in 0..MAX_OPEN_STORES {
            handles.push(inst.open("default".into()).await.unwrap());
        }
        assert!(matches!(
            inst.open("default".into()).await,
            Err(Error::StoreTableFull)
        ));
        inst.drop(handles.pop().unwrap()).await.unwrap();
        assert!(inst.open("default".into()).await.is_ok());
    }

    /// Needs the Redis server at 127.0.0.1:6379; fails (does not skip) when it is unreachable.
    #[tokio::test]
    async fn redis_backend_round_trip() {
        let url = "redis://127.0.0.1:6379/9";
        let configs = BTreeMap::from([(
            "cache".to_string(),
            KeyValueStoreConfig::Redis { url: url.into() },
        )]);
        let factor = KeyValueFactor::new(&configs, None)
            .await
            .expect("Redis must be running at 127.0.0.1:6379 for this test");
        assert!(
            factor
                .describe()
                .contains(&("cache".to_string(), format!("redis {url}")))
        );

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("bazaar-kv-test-{}-{nanos}:", std::process::id());
        let key = |k: &str| format!("{prefix}{k}");

        let mut inst = factor.instance_state(&labels(&["cache"]));
        let s = inst.open("cache".into()).await.unwrap();
        let result = async {
            assert_eq!(inst.get(borrow(&s), key("a")).await.unwrap(), None);
            assert!(!inst.exists(borrow(&s), key("a")).await.unwrap());
            inst.set(borrow(&s), key("a"), b"one".to_vec())
                .await
                .unwrap();
            inst.set(borrow(&s), key("b"), vec![0, 159, 146, 150])
                .await
                .unwrap(); // not UTF-8
            inst.set(borrow(&s), key("a"), b"uno".to_vec())
                .await
                .unwrap();
            assert_eq!(
                inst.get(borrow(&s), key("a")).await.unwrap(),
                Some(b"uno".to_vec())
            );
            assert_eq!(
                inst.get(borrow(&s), key("b")).await.unwrap(),
                Some(vec![0, 159, 146, 150])
            );
            assert!(inst.exists(borrow(&s), key("a")).await.unwrap());
            let mut mine: Vec<String> = inst
                .get_keys(borrow(&s))
                .await
                .unwrap()
                .into_iter()
                .filter(|k| k.starts_with(&prefix))
                .collect();
            mine.sort();
            assert_eq!(mine, vec![key("a"), key("b")]);
            inst.delete(borrow(&s), key("a")).await.unwrap();
            assert!(!inst.exists(borrow(&s), key("a")).await.unwrap());
            assert_eq!(inst.get(borrow(&s), key("a")).await.unwrap(), None);
        }
        .await;
        // Clean up whatever the test wrote, then report.
        for k in ["a", "b"] {
            let _ = inst.delete(borrow(&s), key(k)).await;
        }
        result
    }

    #[tokio::test]
    async fn unreachable_redis_fails_startup_with_the_label() {
        let configs = BTreeMap::from([(
            "cache".to_string(),
            KeyValueStoreConfig::Redis {
                url: "redis://:hunter2@127.0.0.1:1".into(),
            },
        )]);
        let started = std::time::Instant::now();
        let err = KeyValueFactor::new(&configs, None)
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            started.elapsed() < REDIS_CONNECT_TIMEOUT,
            "refused connections fail fast"
        );
        assert!(
            err.starts_with("key_value_stores label `cache`: cannot connect to Redis"),
            "{err}"
        );
        assert!(
            !err.contains("timed out"),
            "the real cause is reported: {err}"
        );
        assert!(!err.contains("hunter2"), "password must be redacted: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
