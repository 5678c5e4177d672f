//! PostgreSQL capability: `spin:postgres/postgres@4.0.0` and `@3.0.0` (spin-sdk's `pg4` and `pg3`).
//!
//! A guest opens a connection with a connection string (`postgres://user:pass@host:port/db` or
//! the `key=value` form). Every host it names (and every `hostaddr`) must be allowed by the
//! component's `allowed_outbound_hosts` as `postgres://host:port` (port 5432 by default);
//! otherwise `open` fails with `connection-failed("address postgres://h:p is not permitted…")`,
//! which is what Spin's factor-outbound-pg returns. Unix-domain sockets are refused.
//!
//! Driver: `tokio-postgres` pooled by `deadpool-postgres`, the pair Spin itself uses. That keeps
//! guest-visible behaviour the same as on Spin: the same parameter/column type rules, the same
//! server error fields (SQLSTATE, detail, hint, …) and the same connection-string grammar. sqlx
//! would bring its own type mapping and error shapes, and it does not hand out a column's raw
//! binary value, which `unsupported(list<u8>)` needs.
//!
//! Pooling: one [`PostgresFactor`] per app holds one pool per distinct connection string, shared
//! by all components (at most [`MAX_POOLS`], least recently used evicted). An open `connection`
//! resource holds one pooled connection until the guest drops it (or the instance ends), as in
//! Spin; connections are cleaned on reuse (`DISCARD`-like reset: temp tables, session settings,
//! advisory locks), so no session state leaks between instances.
//!
//! Statements are prepared per call (no cross-call statement cache, so DDL never hits a stale
//! cached plan). Query results carry their columns even when there are no rows (Spin reports
//! none then). 3.0.0 is served by the same code, with the values it lacks mapped to
//! `unsupported`/`other` and query errors flattened to text, as Spin does. TLS is not
//! supported: `sslmode=require` fails with `connection-failed`.

mod convert;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bazaar_routing::allowed_hosts::AllowedHosts;
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::types::ToSql;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "bazaar:runner/postgres-host",
        imports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "spin:postgres/postgres@4.0.0.connection": crate::factors::postgres::ConnectionHandle,
            "spin:postgres/postgres@3.0.0.connection": crate::factors::postgres::ConnectionHandle,
        },
    });
}

pub use bindings::spin::postgres3_0_0::postgres as v3;
pub use bindings::spin::postgres4_0_0::postgres as v4;

/// Distinct connection strings with a live pool; beyond this the least recently used pool is
/// closed (its connections in use stay valid until released). Spin keeps 16 as well.
pub const MAX_POOLS: usize = 16;
/// Connections per pool. Below Postgres' default `max_connections` (100) so that a few pools
/// and other clients still fit.
const POOL_MAX_SIZE: usize = 32;

/// Run on a pooled connection before it is handed out again: end any transaction the previous
/// user left open (a warning, not an error, when there is none), then deadpool's own
/// "clean" reset of session state.
const RESET_ON_REUSE: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;";

/// Connections one instance may hold open at once (`connection-failed` beyond that). Below the
/// pool size, so one instance cannot exhaust a pool on its own.
const MAX_OPEN_CONNECTIONS: usize = 16;
/// Bound on establishing a new connection, unless the connection string sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for a connection when the pool is exhausted.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on resetting a pooled connection before reuse.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Port assumed when the connection string names none (libpq's default).
const DEFAULT_PORT: u16 = 5432;

/// Guest-visible handle of an open connection (resource `connection` of both versions): one
/// connection checked out of the app-wide pool for its connection string.
pub struct ConnectionHandle {
    client: deadpool_postgres::Object,
}

/// The app-wide pools, keyed by connection string. Cheap to clone.
#[derive(Clone, Default)]
pub struct PostgresFactor {
    pools: Arc<Mutex<Pools>>,
}

#[derive(Default)]
struct Pools {
    by_address: HashMap<String, PoolEntry>,
    /// Logical clock for least-recently-used eviction.
    clock: u64,
}

struct PoolEntry {
    pool: Pool,
    last_used: u64,
}

impl PostgresFactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh per-instance state for a component with these `allowed_outbound_hosts`.
    pub fn instance_state(&self, allowed_hosts: Arc<AllowedHosts>) -> PostgresInstance {
        PostgresInstance {
            factor: self.clone(),
            allowed_hosts,
            table: ResourceTable::new(),
            open_connections: 0,
        }
    }

    /// The pool for `address`, created on first use (creating a pool does not connect).
    fn pool(&self, address: &str, mut config: tokio_postgres::Config) -> Result<Pool, String> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.clock += 1;
        let now = pools.clock;
        if let Some(entry) = pools.by_address.get_mut(address) {
            entry.last_used = now;
            return Ok(entry.pool.clone());
        }
        if pools.by_address.len() >= MAX_POOLS {
            let oldest = pools
                .by_address
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone());
            if let Some(entry) = oldest.and_then(|key| pools.by_address.remove(&key)) {
                entry.pool.close();
            }
        }

        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("bazaar");
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                // Reset session state on reuse: the pool is shared by every instance and
                // component of the app. ROLLBACK first: an instance that ended inside a
                // transaction (trap, timeout, missing COMMIT) must not hand it to the next
                // one, whose statements would join it and never commit.
                recycling_method: RecyclingMethod::Custom(RESET_ON_REUSE.to_owned()),
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_MAX_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| format!("cannot create a connection pool: {e}"))?;
        pools.by_address.insert(
            address.to_owned(),
            PoolEntry {
                pool: pool.clone(),
                last_used: now,
            },
        );
        Ok(pool)
    }

    /// A connection from the pool for `address`; the error is the guest-facing message.
    async fn connect(
        &self,
        address: &str,
        config: tokio_postgres::Config,
    ) -> Result<deadpool_postgres::Object, String> {
        let pool = self.pool(address, config)?;
        pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => error_text(&e),
            PoolError::Timeout(TimeoutType::Wait) => format!(
                "timed out after {}s waiting for a free connection ({POOL_MAX_SIZE} in use)",
                POOL_WAIT_TIMEOUT.as_secs()
            ),
            PoolError::Timeout(TimeoutType::Create) => "timed out connecting".to_owned(),
            other => other.to_string(),
        })
    }

    /// Number of live pools (one per distinct connection string used so far).
    pub fn pool_count(&self) -> usize {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_address
            .len()
    }
}

/// Per-instance PostgreSQL state: the component's sandbox and its open connections.
pub struct PostgresInstance {
    factor: PostgresFactor,
    allowed_hosts: Arc<AllowedHosts>,
    table: ResourceTable,
    /// Entries in `table`; checked before taking a connection from a pool.
    open_connections: usize,
}

/// An error and its causes on one line: tokio-postgres keeps the cause (the server's message,
/// the OS error) out of its `Display`.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `connection-failed` carries a plain message.
fn connection_failed(message: impl Into<String>) -> v4::Error {
    v4::Error::ConnectionFailed(message.into())
}

// The error type is the WIT's; its `db-error` record makes it large, which is fine for a value
// returned once per failed guest call.
#[allow(clippy::result_large_err)]
impl PostgresInstance {
    async fn open_connection(
        &mut self,
        address: &str,
    ) -> Result<Resource<ConnectionHandle>, v4::Error> {
        let config = address.parse::<tokio_postgres::Config>().map_err(|e| {
            let cause = e.source().map_or_else(|| e.to_string(), error_text);
            connection_failed(format!("invalid connection string: {cause}"))
        })?;
        check_allowed(&self.allowed_hosts, &config)?;
        if self.open_connections >= MAX_OPEN_CONNECTIONS {
            return Err(connection_failed(format!(
                "too many open connections (at most {MAX_OPEN_CONNECTIONS} per instance)"
            )));
        }
        let client = self
            .factor
            .connect(address, config)
            .await
            .map_err(connection_failed)?;
        let handle = self
            .table
            .push(ConnectionHandle { client })
            .map_err(|e| v4::Error::Other(format!("cannot store the connection: {e}")))?;
        self.open_connections += 1;
        Ok(handle)
    }

    fn close_connection(&mut self, handle: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        // Dropping the pooled object returns the connection to its pool.
        self.table.delete(handle)?;
        self.open_connections -= 1;
        Ok(())
    }

    fn client(
        &self,
        connection: &Resource<ConnectionHandle>,
    ) -> Result<&deadpool_postgres::Object, v4::Error> {
        self.table
            .get(connection)
            .map(|handle| &handle.client)
            .map_err(|_| connection_failed("invalid connection handle"))
    }

    async fn run_query(
        &mut self,
        connection: &Resource<ConnectionHandle>,
        statement: &str,
        params: &[v4::ParameterValue],
    ) -> Result<v4::RowSet, v4::Error> {
        let client = self.client(connection)?;
        let prepared = client.prepare(statement).await.map_err(query_error)?;
        let params = bind_params(&prepared, params)?;
        let rows = client
            .query(&prepared, &param_refs(&params))
            .await
            .map_err(query_error)?;
        let columns = prepared
            .columns()
            .iter()
            .map(|column| v4::Column {
                name: column.name().to_owned(),
                data_type: convert::data_type(column.type_()),
            })
            .collect();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|index| {
                        convert::column_value(row, index).map_err(|e| {
                            let cause = e.source().map_or_else(|| e.to_string(), error_text);
                            v4::Error::ValueConversionFailed(format!(
                                "column `{}`: {cause}",
                                row.columns()[index].name()
                            ))
                        })
                    })
                    .collect()
            })
            .collect::<Result<_, _>>()?;
        Ok(v4::RowSet { columns, rows })
    }

    async fn run_execute(
        &mut self,
        connection: &Resource<ConnectionHandle>,
        statement: &str,
        params: &[v4::ParameterValue],
    ) -> Result<u64, v4::Error> {
        let client = self.client(connection)?;
        let prepared = client.prepare(statement).await.map_err(query_error)?;
        let params = bind_params(&prepared, params)?;
        client
            .execute(&prepared, &param_refs(&params))
            .await
            .map_err(query_error)
    }
}

/// Checks every destination named by the connection string against the sandbox.
#[allow(clippy::result_large_err)]
fn check_allowed(allowed: &AllowedHosts, config: &tokio_postgres::Config) -> Result<(), v4::Error> {
    let hosts = config.get_hosts();
    let hostaddrs = config.get_hostaddrs();
    if hosts.is_empty() && hostaddrs.is_empty() {
        return Err(connection_failed("the connection string names no host"));
    }
    // tokio-postgres pairs ports with hosts by position; a single port applies to all.
    let ports = config.get_ports();
    let port_for = |i: usize| match ports {
        [] => DEFAULT_PORT,
        [only] => *only,
        _ => ports.get(i).copied().unwrap_or(DEFAULT_PORT),
    };
    let mut destinations = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        match host {
            tokio_postgres::config::Host::Tcp(name) => {
                destinations.push((name.clone(), port_for(i)))
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => {
                return Err(connection_failed(format!(
                    "Unix-domain sockets are not supported (host {})",
                    path.display()
                )));
            }
        }
    }
    // `hostaddr` is where tokio-postgres actually connects, so it is checked too.
    destinations.extend(
        hostaddrs
            .iter()
            .enumerate()
            .map(|(i, ip)| (ip.to_string(), port_for(i))),
    );
    for (host, port) in destinations {
        let address = if host.contains(':') {
            format!("postgres://[{host}]:{port}")
        } else {
            format!("postgres://{host}:{port}")
        };
        let permitted = url::Url::parse(&address).is_ok_and(|url| allowed.allows(&url));
        if !permitted {
            tracing::debug!(%address, "PostgreSQL connection denied by allowed_outbound_hosts");
            return Err(connection_failed(format!(
                "address {address} is not permitted (add it to the component's allowed_outbound_hosts)"
            )));
        }
    }
    Ok(())
}

/// Checks the guest's parameters against the prepared statement's parameter types, so a
/// mismatch is a `bad-parameter` naming the parameter rather than a driver error.
#[allow(clippy::result_large_err)]
fn bind_params<'a>(
    prepared: &tokio_postgres::Statement,
    params: &'a [v4::ParameterValue],
) -> Result<Vec<convert::Param<'a>>, v4::Error> {
    let types = prepared.params();
    if types.len() != params.len() {
        return Err(v4::Error::BadParameter(format!(
            "the statement has {} parameter(s) but {} value(s) were given",
            types.len(),
            params.len()
        )));
    }
    for (i, (value, ty)) in params.iter().zip(types).enumerate() {
        if !convert::param_accepts(value, ty) {
            return Err(v4::Error::BadParameter(format!(
                "parameter ${}: a {} value cannot be used as {}",
                i + 1,
                convert::param_kind(value),
                ty.name()
            )));
        }
    }
    Ok(params
        .iter()
        .enumerate()
        .map(|(index, value)| convert::Param { index, value })
        .collect())
}

fn param_refs<'a>(params: &'a [convert::Param<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Maps a driver error from preparing or running a statement. Server errors keep their
/// structure (SQLSTATE in `code`); a parameter value that could not be encoded is
/// `bad-parameter`; anything else (e.g. a dropped connection) is `query-failed(text)`.
fn query_error(e: tokio_postgres::Error) -> v4::Error {
    if let Some(bad) = e
        .source()
        .and_then(|s| s.downcast_ref::<convert::ParamError>())
    {
        return v4::Error::BadParameter(bad.to_string());
    }
    let as_text = error_text(&e);
    v4::Error::QueryFailed(match e.as_db_error() {
        Some(db) => v4::QueryError::DbError(v4::DbError {
            as_text,
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: db_error_extras(db),
        }),
        None => v4::QueryError::Text(as_text),
    })
}

/// The optional fields of a server error, under the names Spin uses (`where_` included).
fn db_error_extras(db: &tokio_postgres::error::DbError) -> Vec<(String, String)> {
    let fields = [
        ("column", db.column().map(str::to_owned)),
        ("constraint", db.constraint().map(str::to_owned)),
        ("routine", db.routine().map(str::to_owned)),
        ("hint", db.hint().map(str::to_owned)),
        ("table", db.table().map(str::to_owned)),
        ("datatype", db.datatype().map(str::to_owned)),
        ("schema", db.schema().map(str::to_owned)),
        ("file", db.file().map(str::to_owned)),
        ("line", db.line().map(|l| l.to_string())),
        ("where_", db.where_().map(str::to_owned)),
    ];
    fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// spin:postgres/postgres@4.0.0
// ---------------------------------------------------------------------------------------------

impl v4::Host for PostgresInstance {}

impl v4::HostConnection for PostgresInstance {
    async fn open(&mut self, address: String) -> Result<Resource<ConnectionHandle>, v4::Error> {
        self.open_connection(&address).await
    }

    async fn query(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> Result<v4::RowSet, v4::Error> {
        self.run_query(&self_, &statement, &params).await
    }

    async fn execute(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> Result<u64, v4::Error> {
        self.run_execute(&self_, &statement, &params).await
    }

    async fn drop(&mut self, rep: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.close_connection(rep)
    }
}

// ---------------------------------------------------------------------------------------------
// spin:postgres/postgres@3.0.0: the 4.0.0 implementation behind Spin's conversions
// ---------------------------------------------------------------------------------------------

impl v3::Host for PostgresInstance {}

impl v3::HostConnection for PostgresInstance {
    async fn open(&mut self, address: String) -> Result<Resource<ConnectionHandle>, v3::Error> {
        self.open_connection(&address).await.map_err(v3_error)
    }

    async fn query(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> Result<v3::RowSet, v3::Error> {
        let params: Vec<_> = params.into_iter().map(v3_param).collect();
        let rows = self
            .run_query(&self_, &statement, &params)
            .await
            .map_err(v3_error)?;
        Ok(v3::RowSet {
            columns: rows
                .columns
                .into_iter()
                .map(|c| v3::Column {
                    name: c.name,
                    data_type: v3_data_type(c.data_type),
                })
                .collect(),
            rows: rows
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(v3_value).collect())
                .collect(),
        })
    }

    async fn execute(
        &mut self,
        self_: Resource<ConnectionHandle>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> Result<u64, v3::Error> {
        let params: Vec<_> = params.into_iter().map(v3_param).collect();
        self.run_execute(&self_, &statement, &params)
            .await
            .map_err(v3_error)
    }

    async fn drop(&mut self, rep: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.close_connection(rep)
    }
}

fn v3_param(p: v3::ParameterValue) -> v4::ParameterValue {
    use v3::ParameterValue as P3;
    use v4::ParameterValue as P4;
    match p {
        P3::Boolean(v) => P4::Boolean(v),
        P3::Int8(v) => P4::Int8(v),
        P3::Int16(v) => P4::Int16(v),
        P3::Int32(v) => P4::Int32(v),
        P3::Int64(v) => P4::Int64(v),
        P3::Floating32(v) => P4::Floating32(v),
        P3::Floating64(v) => P4::Floating64(v),
        P3::Str(v) => P4::Str(v),
        P3::Binary(v) => P4::Binary(v),
        P3::Date(v) => P4::Date(v),
        P3::Time(v) => P4::Time(v),
        P3::Datetime(v) => P4::Datetime(v),
        P3::Timestamp(v) => P4::Timestamp(v),
        P3::DbNull => P4::DbNull,
    }
}

/// 3.0.0 has no value for the types 4.0.0 added: they read as `unsupported`.
fn v3_value(v: v4::DbValue) -> v3::DbValue {
    use v3::DbValue as V3;
    use v4::DbValue as V4;
    match v {
        V4::Boolean(v) => V3::Boolean(v),
        V4::Int8(v) => V3::Int8(v),
        V4::Int16(v) => V3::Int16(v),
        V4::Int32(v) => V3::Int32(v),
        V4::Int64(v) => V3::Int64(v),
        V4::Floating32(v) => V3::Floating32(v),
        V4::Floating64(v) => V3::Floating64(v),
        V4::Str(v) => V3::Str(v),
        V4::Binary(v) => V3::Binary(v),
        V4::Date(v) => V3::Date(v),
        V4::Time(v) => V3::Time(v),
        V4::Datetime(v) => V3::Datetime(v),
        V4::Timestamp(v) => V3::Timestamp(v),
        V4::DbNull => V3::DbNull,
        V4::Uuid(_)
        | V4::Jsonb(_)
        | V4::Decimal(_)
        | V4::RangeInt32(_)
        | V4::RangeInt64(_)
        | V4::RangeDecimal(_)
        | V4::ArrayInt32(_)
        | V4::ArrayInt64(_)
        | V4::ArrayDecimal(_)
        | V4::ArrayStr(_)
        | V4::Interval(_)
        | V4::Unsupported(_) => V3::Unsupported,
    }
}

fn v3_data_type(t: v4::DbDataType) -> v3::DbDataType {
    use v3::DbDataType as T3;
    use v4::DbDataType as T4;
    match t {
        T4::Boolean => T3::Boolean,
        T4::Int8 => T3::Int8,
        T4::Int16 => T3::Int16,
        T4::Int32 => T3::Int32,
        T4::Int64 => T3::Int64,
        T4::Floating32 => T3::Floating32,
        T4::Floating64 => T3::Floating64,
        T4::Str => T3::Str,
        T4::Binary => T3::Binary,
        T4::Date => T3::Date,
        T4::Time => T3::Time,
        T4::Datetime => T3::Datetime,
        T4::Timestamp => T3::Timestamp,
        T4::Uuid
        | T4::Jsonb
        | T4::Decimal
        | T4::RangeInt32
        | T4::RangeInt64
        | T4::RangeDecimal
        | T4::ArrayInt32
        | T4::ArrayInt64
        | T4::ArrayDecimal
        | T4::ArrayStr
        | T4::Interval
        | T4::Other(_) => T3::Other,
    }
}

/// 3.0.0's `query-failed` is text: a server error's full text (`as-text`).
fn v3_error(e: v4::Error) -> v3::Error {
    match e {
        v4::Error::ConnectionFailed(m) => v3::Error::ConnectionFailed(m),
        v4::Error::BadParameter(m) => v3::Error::BadParameter(m),
        v4::Error::QueryFailed(v4::QueryError::Text(m)) => v3::Error::QueryFailed(m),
        v4::Error::QueryFailed(v4::QueryError::DbError(db)) => v3::Error::QueryFailed(db.as_text),
        v4::Error::ValueConversionFailed(m) => v3::Error::ValueConversionFailed(m),
        v4::Error::Other(m) => v3::Error::Other(m),
    }
}

// ---------------------------------------------------------------------------------------------
// Linking
// ---------------------------------------------------------------------------------------------

/// `HasData` marker: the generated linker functions hand out `&mut PostgresInstance`.
struct PostgresData;

impl HasData for PostgresData {
    type Data<'a> = &'a mut PostgresInstance;
}

/// Links `spin:postgres/postgres@4.0.0` and `@3.0.0` into `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PostgresInstance,
) -> anyhow::Result<()> {
    v4::add_to_linker::<T, PostgresData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking spin:postgres/postgres@4.0.0")
    })?;
    v3::add_to_linker::<T, PostgresData>(linker, get).map_err(|e| {
        anyhow::Error::from_boxed(e.into()).context("linking spin:postgres/postgres@3.0.0")
    })
}
