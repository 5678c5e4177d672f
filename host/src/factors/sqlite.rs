//! SQLite capability: `fermyon:spin/sqlite@2.0.0` and `spin:sqlite/sqlite@3.0.0`.
//!
//! One [`SqliteFactor`] is built per app at startup from `[sqlite_database.<label>]` in the
//! runtime config (spin-reference §5.3). The label `default` always exists: unless the runtime
//! config redefines it, it is the file `<state_dir>/sqlite_db.db` (in-memory when there is no
//! state dir). Each guest instance gets a [`SqliteInstance`] that only lets it open the labels
//! listed in its component's `sqlite_databases`.
//!
//! Every guest `open` gets its own rusqlite connection, so a guest's `BEGIN` … `COMMIT` across
//! several `execute` calls is its own transaction and concurrent instances do not interleave.
//! File databases use WAL and a 5 s busy timeout: readers see the last committed state while a
//! writer's transaction is open, and a second writer waits rather than failing with SQLITE_BUSY.
//! In-memory databases live in SQLite's `memdb` VFS under a process-unique name: every connection
//! of the process sees the same data, and the factor keeps one connection open so the data lives
//! as long as the app. memdb has no WAL and its locking is coarser (while one connection has a
//! write transaction open, other connections' reads wait for it, under the same busy timeout);
//! there are still no dirty reads and no interleaving. (A `mode=memory&cache=shared` database was
//! not used because shared-cache table locks fail immediately with SQLITE_LOCKED instead of
//! honouring the busy timeout.)
//!
//! `allow_attach_file = false` (the default) installs an SQLite authorizer on each connection that
//! refuses `ATTACH` of anything but a private in-memory/temporary database (`':memory:'` or `''`).

use std::collections::{BTreeMap, HashSet};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bazaar_manifest::runtime_config::SqliteDatabaseConfig;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::{spin2::sqlite as v2, sqlite3 as v3};

/// File name of the implicit `default` database inside the state dir.
pub const DEFAULT_DATABASE_FILE: &str = "sqlite_db.db";
/// How long a connection waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections one instance may have open at once (`database-full` beyond that, as
/// Spin reports a full connection table).
const MAX_OPEN_CONNECTIONS: usize = 256;

/// Guest-visible handle of an open SQLite connection (resource `connection`, both versions).
pub struct ConnectionHandle {
    label: String,
    conn: Arc<Mutex<Connection>>,
    /// `sqlite3_last_insert_rowid` / `sqlite3_changes` after the latest `execute`.
    last_insert_rowid: i64,
    changes: u64,
}

impl ConnectionHandle {
    /// The database label this connection was opened with.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// All SQLite databases of the app. Cheap to clone.
#[derive(Clone)]
pub struct SqliteFactor {
    databases: Arc<BTreeMap<String, Arc<Database>>>,
}

/// Per-instance SQLite state: the labels the component may open and its open connections.
pub struct SqliteInstance {
    databases: Arc<BTreeMap<String, Arc<Database>>>,
    allowed: HashSet<String>,
    table: ResourceTable,
}

struct Database {
    label: String,
    location: Location,
    allow_attach_file: bool,
    /// An idle connection held for the life of the app: keeps an in-memory database alive, and
    /// keeps a file database's WAL from being checkpointed and removed at every guest close.
    _keep_alive: Option<Mutex<Connection>>,
}

enum Location {
    File(PathBuf),
    /// A `file:/<name>?vfs=memdb` URI (the leading `/` makes it shared within the process).
    Memory(String),
}

impl SqliteFactor {
    /// Builds every database: `default` (unless `configs` defines it) plus each configured label.
    /// Each is opened once now (creating the file and its directory), so a bad path fails startup
    /// with a one-line error naming the label.
    pub async fn new(
        configs: &BTreeMap<String, SqliteDatabaseConfig>,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut all: BTreeMap<String, SqliteDatabaseConfig> = BTreeMap::new();
        if !configs.contains_key("default") {
            let path = state_dir.map(|dir| dir.join(DEFAULT_DATABASE_FILE));
            all.insert(
                "default".to_string(),
                SqliteDatabaseConfig::Spin {
                    path,
                    allow_attach_file: false,
                },
            );
        }
        all.extend(configs.iter().map(|(k, v)| (k.clone(), v.clone())));

        let mut databases = BTreeMap::new();
        for (label, config) in all {
            let task_label = label.clone();
            let database =
                tokio::task::spawn_blocking(move || Database::create(task_label, &config))
                    .await
                    .context("SQLite open task failed")?
                    .map_err(|e| anyhow::anyhow!("sqlite_databases label `{label}`: {e:#}"))?;
            databases.insert(label, Arc::new(database));
        }
        Ok(Self {
            databases: Arc::new(databases),
        })
    }

    /// Startup validation of one component's `sqlite_databases`: every label must exist.
    pub fn check_component(&self, component_id: &str, labels: &[String]) -> anyhow::Result<()> {
        for label in labels {
            if !self.databases.contains_key(label) {
                anyhow::bail!(
                    "component `{component_id}`: unknown sqlite_databases label `{label}`"
                );
            }
        }
        Ok(())
    }

    /// Fresh per-instance state for a component whose `sqlite_databases` is `allowed`.
    pub fn instance_state(&self, allowed: &[String]) -> SqliteInstance {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_OPEN_CONNECTIONS);
        SqliteInstance {
            databases: self.databases.clone(),
            allowed: allowed.iter().cloned().collect(),
            table,
        }
    }

    /// One `(label, description)` per database, for the startup output.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.databases
            .values()
            .map(|db| {
                let mut what = match &db.location {
                    Location::File(path) => format!("spin file {}", path.display()),
                    Location::Memory(_) => "spin in-memory".to_string(),
                };
                if db.allow_attach_file {
                    what.push_str(" (ATTACH of files allowed)");
                }
                (db.label.clone(), what)
            })
            .collect()
    }

    /// Runs a batch of SQL statements against `label` from the host side (e.g. `--sqlite` at
    /// startup). Several `;`-separated statements are allowed.
    pub async fn execute_batch(&self, label: &str, sql: &str) -> anyhow::Result<()> {
        let db = self
            .databases
            .get(label)
            .cloned()
            .with_context(|| format!("unknown sqlite_databases label `{label}`"))?;
        let sql = sql.to_string();
        let label = label.to_string();
        tokio::task::spawn_blocking(move || {
            let conn = db.connect()?;
            conn.execute_batch(&sql)
                .map_err(|e| anyhow::anyhow!("sqlite_databases label `{label}`: {e}"))
        })
        .await
        .context("SQLite task failed")?
    }
}

/// Process-wide counter making in-memory database names unique.
static MEMORY_DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Database {
    fn create(label: String, config: &SqliteDatabaseConfig) -> anyhow::Result<Self> {
        let SqliteDatabaseConfig::Spin {
            path,
            allow_attach_file,
        } = config;
        let allow_attach_file = *allow_attach_file;
        match path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("cannot create directory `{}`", parent.display())
                    })?;
                }
                let mut db = Self {
                    label,
                    location: Location::File(path.clone()),
                    allow_attach_file,
                    _keep_alive: None,
                };
                let conn = db.connect()?;
                // WAL is a property of the file, so setting it once is enough. Keep going if the
                // file system refuses it (the busy timeout still applies).
                let _: rusqlite::Result<String> =
                    conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0));
                // Holding one connection open means a guest closing its connection is never the
                // last one, so closes stay cheap (no checkpoint + WAL removal on every request).
                db._keep_alive = Some(Mutex::new(conn));
                Ok(db)
            }
            None => {
                let safe_label: String = label
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let uri = format!(
                    "file:/bazaar-{}-{}-{safe_label}?vfs=memdb",
                    std::process::id(),
                    MEMORY_DB_COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                let mut db = Self {
                    label,
                    location: Location::Memory(uri),
                    allow_attach_file,
                    _keep_alive: None,
                };
                db._keep_alive = Some(Mutex::new(db.connect()?));
                Ok(db)
            }
        }
    }

    /// Opens a new connection to this database with the busy timeout and ATTACH policy applied.
    fn connect(&self) -> anyhow::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.location {
            Location::File(path) => Connection::open_with_flags(path, flags)
                .with_context(|| format!("cannot open SQLite file `{}`", path.display()))?,
            Location::Memory(uri) => Connection::open_with_flags(uri, flags)
                .context("cannot open in-memory SQLite database")?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if !self.allow_attach_file {
            deny_attach_files(&conn);
        }
        Ok(conn)
    }
}

/// SQLite authorizer callback: refuses `ATTACH` unless the target is a private in-memory
/// (`':memory:'`) or temporary (`''`) database. Every other action is allowed.
unsafe extern "C" fn attach_authorizer(
    _user_data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    _arg2: *const c_char,
    _db_name: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    if action != rusqlite::ffi::SQLITE_ATTACH {
        return rusqlite::ffi::SQLITE_OK;
    }
    if arg1.is_null() {
        return rusqlite::ffi::SQLITE_OK;
    }
    // SAFETY: for SQLITE_ATTACH, SQLite passes the file name as a NUL-terminated string that is
    // valid for the duration of the callback.
    let file = unsafe { std::ffi::CStr::from_ptr(arg1) }.to_bytes();
    if file.is_empty() || file == b":memory:" {
        rusqlite::ffi::SQLITE_OK
    } else {
        rusqlite::ffi::SQLITE_DENY
    }
}

fn deny_attach_files(conn: &Connection) {
    // SAFETY: the handle is valid while `conn` lives; the callback is a plain function with no
    // user data, and it is replaced/removed together with the connection.
    unsafe {
        rusqlite::ffi::sqlite3_set_authorizer(
            conn.handle(),
            Some(attach_authorizer),
            std::ptr::null_mut(),
        );
    }
}

/// Version-neutral result and error types; converted into each WIT version's types.
enum ExecError {
    NoSuchDatabase,
    AccessDenied,
    InvalidConnection,
    DatabaseFull,
    Io(String),
}

struct Output {
    columns: Vec<String>,
    rows: Vec<Vec<SqlValue>>,
    last_insert_rowid: i64,
    changes: u64,
}

/// Runs one statement with its parameters and reads every row.
fn run_statement(
    conn: &Connection,
    allow_attach_file: bool,
    statement: &str,
    params: Vec<SqlValue>,
) -> Result<Output, String> {
    let result = (|| -> rusqlite::Result<(Vec<String>, Vec<Vec<SqlValue>>)> {
        let mut stmt = conn.prepare(statement)?;
        let columns: Vec<String> = stmt
            .column_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let width = columns.len();
        let mut rows = Vec::new();
        let mut cursor = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = cursor.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(n) => SqlValue::Integer(n),
                    ValueRef::Real(x) => SqlValue::Real(x),
                    ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                });
            }
            rows.push(values);
        }
        Ok((columns, rows))
    })();
    match result {
        Ok((columns, rows)) => Ok(Output {
            columns,
            rows,
            last_insert_rowid: conn.last_insert_rowid(),
            changes: conn.changes(),
        }),
        Err(e) => {
            let denied = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::AuthorizationForStatementDenied)
            );
            if denied && !allow_attach_file && statement.to_ascii_lowercase().contains("attach") {
                Err(format!(
                    "{e}: ATTACH of database files is disabled for this database \
                     (set allow_attach_file = true in its [sqlite_database] runtime config)"
                ))
            } else {
                Err(e.to_string())
            }
        }
    }
}

impl SqliteInstance {
    async fn open_connection(
        &mut self,
        database: String,
    ) -> Result<Resource<ConnectionHandle>, ExecError> {
        // Spin checks the component's allow-list first: an undeclared label is `access-denied`
        // whether or not it exists.
        if !self.allowed.contains(&database) {
            return Err(ExecError::AccessDenied);
        }
        let db = self
            .databases
            .get(&database)
            .cloned()
            .ok_or(ExecError::NoSuchDatabase)?;
        let conn = tokio::task::spawn_blocking(move || db.connect())
            .await
            .map_err(|e| ExecError::Io(format!("SQLite open task failed: {e}")))?
            .map_err(|e| ExecError::Io(format!("{e:#}")))?;
        let handle = ConnectionHandle {
            label: database,
            conn: Arc::new(Mutex::new(conn)),
            last_insert_rowid: 0,
            changes: 0,
        };
        self.table.push(handle).map_err(|_| ExecError::DatabaseFull)
    }

    async fn execute_statement(
        &mut self,
        handle: &Resource<ConnectionHandle>,
        statement: String,
        params: Vec<SqlValue>,
    ) -> Result<Output, ExecError> {
        let entry = self
            .table
            .get(handle)
            .map_err(|_| ExecError::InvalidConnection)?;
        let conn = entry.conn.clone();
        let allow_attach_file = self
            .databases
            .get(&entry.label)
            .map(|db| db.allow_attach_file)
            .unwrap_or(false);
        let output = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            run_statement(&conn, allow_attach_file, &statement, params)
        })
        .await
        .map_err(|e| ExecError::Io(format!("SQLite task failed: {e}")))?
        .map_err(ExecError::Io)?;
        if let Ok(entry) = self.table.get_mut(handle) {
            entry.last_insert_rowid = output.last_insert_rowid;
            entry.changes = output.changes;
        }
        Ok(output)
    }

    fn close(&mut self, handle: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        // Dropping the last Arc closes the connection (rolling back any open transaction).
        self.table.delete(handle)?;
        Ok(())
    }
}

// ---- fermyon:spin/sqlite@2.0.0 ----

impl From<ExecError> for v2::Error {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::NoSuchDatabase => v2::Error::NoSuchDatabase,
            ExecError::AccessDenied => v2::Error::AccessDenied,
            ExecError::InvalidConnection => v2::Error::InvalidConnection,
            ExecError::DatabaseFull => v2::Error::DatabaseFull,
            ExecError::Io(msg) => v2::Error::Io(msg),
        }
    }
}

fn from_v2(value: v2::Value) -> SqlValue {
    match value {
        v2::Value::Integer(n) => SqlValue::Integer(n),
        v2::Value::Real(x) => SqlValue::Real(x),
        v2::Value::Text(s) => SqlValue::Text(s),
        v2::Value::Blob(b) => SqlValue::Blob(b),
        v2::Value::Null => SqlValue::Null,
    }
}

fn to_v2(value: SqlValue) -> v2::Value {
    match value {
        SqlValue::Integer(n) => v2::Value::Integer(n),
        SqlValue::Real(x) => v2::Value::Real(x),
        SqlValue::Text(s) => v2::Value::Text(s),
        SqlValue::Blob(b) => v2::Value::Blob(b),
        SqlValue::Null => v2::Value::Null,
    }
}

impl v2::Host for SqliteInstance {}

impl v2::HostConnection for SqliteInstance {
    async fn open(&mut self, database: String) -> Result<Resource<ConnectionHandle>, v2::Error> {
        Ok(self.open_connection(database).await?)
    }

    async fn execute(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        parameters: Vec<v2::Value>,
    ) -> Result<v2::QueryResult, v2::Error> {
        let params = parameters.into_iter().map(from_v2).collect();
        let out = self.execute_statement(&self_, statement, params).await?;
        Ok(v2::QueryResult {
            columns: out.columns,
            rows: out
                .rows
                .into_iter()
                .map(|row| v2::RowResult {
                    values: row.into_iter().map(to_v2).collect(),
                })
                .collect(),
        })
    }

    async fn drop(&mut self, rep: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.close(rep)
    }
}

// ---- spin:sqlite/sqlite@3.0.0 ----

impl From<ExecError> for v3::Error {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::NoSuchDatabase => v3::Error::NoSuchDatabase,
            ExecError::AccessDenied => v3::Error::AccessDenied,
            ExecError::InvalidConnection => v3::Error::InvalidConnection,
            ExecError::DatabaseFull => v3::Error::DatabaseFull,
            ExecError::Io(msg) => v3::Error::Io(msg),
        }
    }
}

fn from_v3(value: v3::Value) -> SqlValue {
    match value {
        v3::Value::Integer(n) => SqlValue::Integer(n),
        v3::Value::Real(x) => SqlValue::Real(x),
        v3::Value::Text(s) => SqlValue::Text(s),
        v3::Value::Blob(b) => SqlValue::Blob(b),
        v3::Value::Null => SqlValue::Null,
    }
}

fn to_v3(value: SqlValue) -> v3::Value {
    match value {
        SqlValue::Integer(n) => v3::Value::Integer(n),
        SqlValue::Real(x) => v3::Value::Real(x),
        SqlValue::Text(s) => v3::Value::Text(s),
        SqlValue::Blob(b) => v3::Value::Blob(b),
        SqlValue::Null => v3::Value::Null,
    }
}

impl v3::Host for SqliteInstance {}

impl v3::HostConnection for SqliteInstance {
    async fn open(&mut self, database: String) -> Result<Resource<ConnectionHandle>, v3::Error> {
        Ok(self.open_connection(database).await?)
    }

    async fn execute(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> Result<v3::QueryResult, v3::Error> {
        let params = parameters.into_iter().map(from_v3).collect();
        let out = self.execute_statement(&self_, statement, params).await?;
        Ok(v3::QueryResult {
            columns: out.columns,
            rows: out
                .rows
                .into_iter()
                .map(|row| v3::RowResult {
                    values: row.into_iter().map(to_v3).collect(),
                })
                .collect(),
        })
    }

    async fn last_insert_rowid(&mut self, self_: Resource<ConnectionHandle>) -> i64 {
        self.table
            .get(&self_)
            .map(|h| h.last_insert_rowid)
            .unwrap_or(0)
    }

    async fn changes(&mut self, self_: Resource<ConnectionHandle>) -> u64 {
        self.table.get(&self_).map(|h| h.changes).unwrap_or(0)
    }

    async fn drop(&mut self, rep: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.close(rep)
    }
}

/// `HasData` marker: the generated linker functions hand out `&mut SqliteInstance`.
struct SqliteData;

impl HasData for SqliteData {
    type Data<'a> = &'a mut SqliteInstance;
}

/// Links `fermyon:spin/sqlite@2.0.0` and `spin:sqlite/sqlite@3.0.0` into `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SqliteInstance,
) -> anyhow::Result<()> {
    v2::add_to_linker::<T, SqliteData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking fermyon:spin/sqlite@2.0.0")
    })?;
    v3::add_to_linker::<T, SqliteData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking spin:sqlite/sqlite@3.0.0")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn borrow(handle: &Resource<ConnectionHandle>) -> Resource<ConnectionHandle> {
        Resource::new_borrow(handle.rep())
    }

    async fn memory_factor() -> SqliteFactor {
        SqliteFactor::new(&BTreeMap::new(), None).await.unwrap()
    }

    /// Runs `sql` through the 2.0.0 interface and returns the rows.
    async fn exec2(
        inst: &mut SqliteInstance,
        conn: &Resource<ConnectionHandle>,
        sql: &str,
        params: Vec<v2::Value>,
    ) -> Result<v2::QueryResult, v2::Error> {
        v2::HostConnection::execute(inst, borrow(conn), sql.to_string(), params).await
    }

    async fn exec3(
        inst: &mut SqliteInstance,
        conn: &Resource<ConnectionHandle>,
        sql: &str,
        params: Vec<v3::Value>,
    ) -> Result<v3::QueryResult, v3::Error> {
        v3::HostConnection::execute(inst, borrow(conn), sql.to_string(), params).await
    }

    async fn open2(
        inst: &mut SqliteInstance,
        label: &str,
    ) -> Result<Resource<ConnectionHandle>, v2::Error> {
        v2::HostConnection::open(inst, label.to_string()).await
    }

    async fn count(
        inst: &mut SqliteInstance,
        conn: &Resource<ConnectionHandle>,
        table: &str,
    ) -> i64 {
        let rows = exec2(inst, conn, &format!("SELECT COUNT(*) FROM {table}"), vec![])
            .await
            .unwrap()
            .rows;
        match rows[0].values[0] {
            v2::Value::Integer(n) => n,
            ref other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn round_trip_every_value_type_v2() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let c = open2(&mut inst, "default").await.unwrap();
        let created = exec2(
            &mut inst,
            &c,
            "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)",
            vec![],
        )
        .await
        .unwrap();
        assert!(created.columns.is_empty() && created.rows.is_empty());
        let params = vec![
            v2::Value::Integer(-42),
            v2::Value::Real(2.5),
            v2::Value::Text("héllo".into()),
            v2::Value::Blob(vec![0, 1, 254, 255]),
            v2::Value::Null,
        ];
        exec2(
            &mut inst,
            &c,
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            params,
        )
        .await
        .unwrap();
        exec2(
            &mut inst,
            &c,
            "INSERT INTO t VALUES (?1, ?1, ?1, ?1, ?1)",
            vec![v2::Value::Integer(i64::MAX)],
        )
        .await
        .unwrap();

        let result = exec2(
            &mut inst,
            &c,
            "SELECT i, r, s, b, n AS nil FROM t ORDER BY rowid",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(result.columns, vec!["i", "r", "s", "b", "nil"]);
        assert_eq!(result.rows.len(), 2);
        let mut rows = result
            .rows
            .into_iter()
            .map(|r| r.values.into_iter().map(from_v2).collect::<Vec<_>>());
        assert_eq!(
            rows.next().unwrap(),
            vec![
                SqlValue::Integer(-42),
                SqlValue::Real(2.5),
                SqlValue::Text("héllo".into()),
                SqlValue::Blob(vec![0, 1, 254, 255]),
                SqlValue::Null,
            ]
        );
        // SQLite's dynamic typing decides the returned type: column affinity converts the integer.
        assert_eq!(
            rows.next().unwrap(),
            vec![
                SqlValue::Integer(i64::MAX),
                SqlValue::Real(i64::MAX as f64),
                SqlValue::Text(i64::MAX.to_string()),
                SqlValue::Integer(i64::MAX),
                SqlValue::Integer(i64::MAX),
            ]
        );

        // Parameter filter, and a query returning no rows still reports its columns.
        let empty = exec2(
            &mut inst,
            &c,
            "SELECT s FROM t WHERE i = ?",
            vec![v2::Value::Integer(7)],
        )
        .await
        .unwrap();
        assert_eq!(empty.columns, vec!["s"]);
        assert!(empty.rows.is_empty());

        // SQL errors are `io` with SQLite's message.
        match exec2(&mut inst, &c, "SELECT * FROM missing_table", vec![]).await {
            Err(v2::Error::Io(msg)) => assert!(msg.contains("no such table"), "{msg}"),
            other => panic!("expected io error, got {other:?}"),
        }
        match exec2(&mut inst, &c, "SELECT ?", vec![]).await {
            Err(v2::Error::Io(_)) => {}
            other => panic!("expected io error for a missing parameter, got {other:?}"),
        }

        v2::HostConnection::drop(&mut inst, c).await.unwrap();
        assert!(inst.table.is_empty());
    }

    #[tokio::test]
    async fn v3_round_trip_last_insert_rowid_and_changes() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let c = v3::HostConnection::open(&mut inst, "default".into())
            .await
            .unwrap();
        assert_eq!(
            v3::HostConnection::last_insert_rowid(&mut inst, borrow(&c)).await,
            0
        );
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 0);

        exec3(
            &mut inst,
            &c,
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, img BLOB)",
            vec![],
        )
        .await
        .unwrap();
        exec3(
            &mut inst,
            &c,
            "INSERT INTO items (id, name, price, img) VALUES (10, ?, ?, ?)",
            vec![
                v3::Value::Text("a".into()),
                v3::Value::Real(1.25),
                v3::Value::Blob(vec![9]),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            v3::HostConnection::last_insert_rowid(&mut inst, borrow(&c)).await,
            10
        );
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 1);

        exec3(
            &mut inst,
            &c,
            "INSERT INTO items (name) VALUES ('b'), ('c')",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(
            v3::HostConnection::last_insert_rowid(&mut inst, borrow(&c)).await,
            12
        );
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 2);

        exec3(
            &mut inst,
            &c,
            "UPDATE items SET price = 3 WHERE id > ?",
            vec![v3::Value::Integer(0)],
        )
        .await
        .unwrap();
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 3);

        let rows = exec3(
            &mut inst,
            &c,
            "SELECT id, name, price, img FROM items WHERE id = 10",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(rows.columns, vec!["id", "name", "price", "img"]);
        let values: Vec<SqlValue> = rows
            .rows
            .into_iter()
            .next()
            .unwrap()
            .values
            .into_iter()
            .map(from_v3)
            .collect();
        assert_eq!(
            values,
            vec![
                SqlValue::Integer(10),
                SqlValue::Text("a".into()),
                SqlValue::Real(3.0),
                SqlValue::Blob(vec![9])
            ]
        );
        // A SELECT leaves `changes` at the last INSERT/UPDATE/DELETE, as sqlite3_changes does.
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 3);

        exec3(
            &mut inst,
            &c,
            "DELETE FROM items WHERE name IN ('b', 'c')",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c)).await, 2);

        // The 2.0.0 and 3.0.0 interfaces share one connection table.
        let c2 = open2(&mut inst, "default").await.unwrap();
        assert_eq!(count(&mut inst, &c2, "items").await, 1);
        // Each connection has its own counters.
        assert_eq!(v3::HostConnection::changes(&mut inst, borrow(&c2)).await, 0);
    }

    /// Runs the isolation scenario on `factor`'s `default` database. With WAL (files) a reader
    /// sees the last committed state while a writer's transaction is open; with the in-memory
    /// (memdb) VFS a reader waits for the writer instead. Either way there is no dirty read, and a
    /// second writer waits for the first instead of failing.
    async fn check_transaction_isolation(factor: &SqliteFactor, readers_wait_for_writer: bool) {
        let mut a = factor.instance_state(&labels(&["default"]));
        let mut b = factor.instance_state(&labels(&["default"]));
        let ca = open2(&mut a, "default").await.unwrap();
        let cb = open2(&mut b, "default").await.unwrap();
        exec2(&mut a, &ca, "CREATE TABLE t (x INTEGER)", vec![])
            .await
            .unwrap();

        exec2(&mut a, &ca, "BEGIN", vec![]).await.unwrap();
        exec2(&mut a, &ca, "INSERT INTO t VALUES (1)", vec![])
            .await
            .unwrap();
        assert_eq!(count(&mut a, &ca, "t").await, 1, "A sees its own write");

        // B reads, then writes, while A's transaction is open.
        let cb_borrow = borrow(&cb);
        let other = tokio::spawn(async move {
            let seen = count(&mut b, &cb_borrow, "t").await;
            let r = exec2(&mut b, &cb_borrow, "INSERT INTO t VALUES (2)", vec![])
                .await
                .map(|_| ());
            (b, seen, r)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.is_finished(), "B must wait for A's transaction");
        exec2(&mut a, &ca, "COMMIT", vec![]).await.unwrap();
        let (mut b, seen, result) = other.await.unwrap();
        result.expect("B's write succeeds once A commits");
        let expected_seen = if readers_wait_for_writer { 1 } else { 0 };
        assert_eq!(seen, expected_seen, "B never sees A's uncommitted row");
        assert_eq!(count(&mut a, &ca, "t").await, 2);
        assert_eq!(count(&mut b, &cb, "t").await, 2);

        // A rolled-back transaction leaves nothing behind; dropping a connection mid-transaction
        // rolls back too.
        exec2(&mut a, &ca, "BEGIN", vec![]).await.unwrap();
        exec2(&mut a, &ca, "INSERT INTO t VALUES (3)", vec![])
            .await
            .unwrap();
        exec2(&mut a, &ca, "ROLLBACK", vec![]).await.unwrap();
        exec2(&mut a, &ca, "BEGIN", vec![]).await.unwrap();
        exec2(&mut a, &ca, "INSERT INTO t VALUES (4)", vec![])
            .await
            .unwrap();
        v2::HostConnection::drop(&mut a, ca).await.unwrap();
        assert_eq!(count(&mut b, &cb, "t").await, 2);
    }

    #[tokio::test]
    async fn transactions_are_per_connection_on_files() {
        let dir = tempfile::tempdir().unwrap();
        let factor = SqliteFactor::new(&BTreeMap::new(), Some(dir.path()))
            .await
            .unwrap();
        check_transaction_isolation(&factor, false).await;
        let conn = Connection::open(dir.path().join(DEFAULT_DATABASE_FILE)).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn transactions_are_per_connection_in_memory() {
        check_transaction_isolation(&memory_factor().await, true).await;
    }

    #[tokio::test]
    async fn in_memory_database_is_shared_across_opens_and_instances() {
        let factor = memory_factor().await;
        let mut a = factor.instance_state(&labels(&["default"]));
        let ca = open2(&mut a, "default").await.unwrap();
        exec2(&mut a, &ca, "CREATE TABLE t (x)", vec![])
            .await
            .unwrap();
        exec2(&mut a, &ca, "INSERT INTO t VALUES ('kept')", vec![])
            .await
            .unwrap();
        v2::HostConnection::drop(&mut a, ca).await.unwrap();
        drop(a); // no guest connection is open any more; the data must survive

        let mut b = factor.instance_state(&labels(&["default"]));
        let cb = open2(&mut b, "default").await.unwrap();
        let rows = exec2(&mut b, &cb, "SELECT x FROM t", vec![])
            .await
            .unwrap()
            .rows;
        let values: Vec<SqlValue> = rows
            .into_iter()
            .next()
            .unwrap()
            .values
            .into_iter()
            .map(from_v2)
            .collect();
        assert_eq!(values, vec![SqlValue::Text("kept".into())]);

        // A different label, and a different factor, are different databases.
        let configs = BTreeMap::from([(
            "other".to_string(),
            SqliteDatabaseConfig::Spin {
                path: None,
                allow_attach_file: false,
            },
        )]);
        let second = SqliteFactor::new(&configs, None).await.unwrap();
        let mut c = second.instance_state(&labels(&["default", "other"]));
        for label in ["default", "other"] {
            let conn = open2(&mut c, label).await.unwrap();
            assert!(
                exec2(&mut c, &conn, "SELECT x FROM t", vec![])
                    .await
                    .is_err(),
                "{label}"
            );
        }
    }

    #[tokio::test]
    async fn access_denied_and_unknown_labels() {
        let configs = BTreeMap::from([(
            "reports".to_string(),
            SqliteDatabaseConfig::Spin {
                path: None,
                allow_attach_file: false,
            },
        )]);
        let factor = SqliteFactor::new(&configs, None).await.unwrap();
        let mut inst = factor.instance_state(&labels(&["default"]));
        assert!(matches!(
            open2(&mut inst, "reports").await,
            Err(v2::Error::AccessDenied)
        ));
        assert!(matches!(
            open2(&mut inst, "nowhere").await,
            Err(v2::Error::AccessDenied)
        ));
        assert!(matches!(
            v3::HostConnection::open(&mut inst, "reports".into()).await,
            Err(v3::Error::AccessDenied)
        ));
        let mut none = factor.instance_state(&[]);
        assert!(matches!(
            open2(&mut none, "default").await,
            Err(v2::Error::AccessDenied)
        ));
        let mut ghost = factor.instance_state(&labels(&["ghost"]));
        assert!(matches!(
            open2(&mut ghost, "ghost").await,
            Err(v2::Error::NoSuchDatabase)
        ));

        factor
            .check_component("cart", &labels(&["default", "reports"]))
            .unwrap();
        let err = factor
            .check_component("cart", &labels(&["ghost"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "component `cart`: unknown sqlite_databases label `ghost`"
        );
    }

    #[tokio::test]
    async fn closed_connection_is_invalid() {
        let factor = memory_factor().await;
        let mut inst = factor.instance_state(&labels(&["default"]));
        let c = open2(&mut inst, "default").await.unwrap();
        let stale = borrow(&c);
        v2::HostConnection::drop(&mut inst, c).await.unwrap();
        assert!(matches!(
            v2::HostConnection::execute(&mut inst, stale, "SELECT 1".into(), vec![]).await,
            Err(v2::Error::InvalidConnection)
        ));
    }

    #[tokio::test]
    async fn attach_is_denied_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        let attach = format!("ATTACH DATABASE '{}' AS other", other.display());
        let configs = BTreeMap::from([
            (
                "locked".to_string(),
                SqliteDatabaseConfig::Spin {
                    path: None,
                    allow_attach_file: false,
                },
            ),
            (
                "open".to_string(),
                SqliteDatabaseConfig::Spin {
                    path: Some(dir.path().join("open.db")),
                    allow_attach_file: true,
                },
            ),
        ]);
        let factor = SqliteFactor::new(&configs, None).await.unwrap();
        let mut inst = factor.instance_state(&labels(&["locked", "open"]));

        let locked = open2(&mut inst, "locked").await.unwrap();
        match exec2(&mut inst, &locked, &attach, vec![]).await {
            Err(v2::Error::Io(msg)) => assert!(msg.contains("allow_attach_file"), "{msg}"),
            other => panic!("expected ATTACH to be denied, got {other:?}"),
        }
        assert!(!other.exists(), "no file was created");
        // A private in-memory attachment is harmless and still allowed.
        exec2(
            &mut inst,
            &locked,
            "ATTACH DATABASE ':memory:' AS scratch",
            vec![],
        )
        .await
        .unwrap();
        // Other statements are unaffected.
        exec2(&mut inst, &locked, "CREATE TABLE t (x)", vec![])
            .await
            .unwrap();

        let open = open2(&mut inst, "open").await.unwrap();
        exec2(&mut inst, &open, &attach, vec![]).await.unwrap();
        exec2(&mut inst, &open, "CREATE TABLE other.t (x)", vec![])
            .await
            .unwrap();
        assert!(other.exists());
        assert!(factor.describe().contains(&(
            "open".to_string(),
            format!(
                "spin file {} (ATTACH of files allowed)",
                dir.path().join("open.db").display()
            )
        )));
    }

    #[tokio::test]
    async fn default_database_persists_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".spin");
        {
            let factor = SqliteFactor::new(&BTreeMap::new(), Some(&state))
                .await
                .unwrap();
            assert_eq!(
                factor.describe(),
                vec![(
                    "default".to_string(),
                    format!("spin file {}", state.join("sqlite_db.db").display())
                )]
            );
            factor
                .execute_batch(
                    "default",
                    "CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1);",
                )
                .await
                .unwrap();
            let mut inst = factor.instance_state(&labels(&["default"]));
            let c = open2(&mut inst, "default").await.unwrap();
            exec2(&mut inst, &c, "INSERT INTO t VALUES (2)", vec![])
                .await
                .unwrap();
        }
        let factor = SqliteFactor::new(&BTreeMap::new(), Some(&state))
            .await
            .unwrap();
        let mut inst = factor.instance_state(&labels(&["default"]));
        let c = open2(&mut inst, "default").await.unwrap();
        assert_eq!(count(&mut inst, &c, "t").await, 2);

        assert!(factor.execute_batch("nope", "SELECT 1").await.is_err());
        let err = factor
            .execute_batch("default", "SELEKT 1")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sqlite_databases label `default`:"),
            "{err}"
        );

        assert_eq!(
            memory_factor().await.describe(),
            vec![("default".to_string(), "spin in-memory".to_string())]
        );
    }

    #[tokio::test]
    async fn bad_path_fails_startup_with_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let configs = BTreeMap::from([(
            "broken".to_string(),
            SqliteDatabaseConfig::Spin {
                path: Some(file.join("db.sqlite")),
                allow_attach_file: false,
            },
        )]);
        let err = SqliteFactor::new(&configs, None)
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.starts_with("sqlite_databases label `broken`:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
