//! One SQL API over Spin's two relational interfaces, so a service's `.wasm` runs on the embedded
//! SQLite database locally and on PostgreSQL in a cluster — chosen by a variable, never by code.
//!
//! * `sqlite:<label>` → `fermyon:spin/sqlite@2.0.0` (the label must be listed in the component's
//!   `sqlite_databases`);
//! * `postgres://…` / `postgresql://…` → `spin:postgres/postgres@3.0.0` (the host must be in the
//!   component's `allowed_outbound_hosts`). 3.0.0 rather than 4.x because every Spin 3.x host
//!   and the SpinKube shim provide it.
//!
//! Portable SQL rules the services follow (and the reason this layer can stay small):
//! * write placeholders as `?`; they are rewritten to `$1, $2, …` for PostgreSQL
//!   ([`to_postgres_placeholders`]);
//! * integers are `BIGINT` (PostgreSQL will not bind an `i64` to `INTEGER`), booleans `BOOLEAN`
//!   (SQLite stores 0/1, [`Row::bool`] reads both), timestamps are `BIGINT` Unix milliseconds,
//!   money is `BIGINT` minor units, bytes are `BLOB`/`BYTEA` (the only type whose DDL differs,
//!   which is why a [`Migration`] carries one script per dialect);
//! * row locks: append [`Database::for_update`] to a `SELECT` inside [`Database::transaction`];
//!   on SQLite the transaction itself is `BEGIN IMMEDIATE`, which takes the write lock up front.

use std::fmt;
use std::rc::Rc;

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Which SQL engine is behind a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A database failure, classified so services can answer 409 for a unique violation and retry a
/// serialization failure without parsing engine messages themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// A UNIQUE / PRIMARY KEY constraint rejected the write.
    UniqueViolation(String),
    /// The engine aborted the transaction because of a concurrent one (PostgreSQL 40001/40P01,
    /// SQLite "database is locked"); retrying the whole transaction is safe.
    Conflict(String),
    /// A column was missing or held an unexpected type.
    Decode(String),
    /// The database URL is not one this layer understands.
    Config(String),
    /// Anything else the engine reported.
    Other(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::UniqueViolation(m) => write!(f, "unique constraint violated: {m}"),
            DbError::Conflict(m) => write!(f, "concurrent transaction conflict: {m}"),
            DbError::Decode(m) => write!(f, "unexpected column value: {m}"),
            DbError::Config(m) => write!(f, "database configuration: {m}"),
            DbError::Other(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// Classifies an engine's error text. SQLite and `spin:postgres@3.0.0` only give text, so
    /// this matches the stable phrases both engines use for these conditions.
    pub fn classify(message: String) -> Self {
        let lower = message.to_ascii_lowercase();
        if lower.contains("unique constraint")
            || lower.contains("duplicate key value")
            || lower.contains("23505")
        {
            DbError::UniqueViolation(message)
        } else if lower.contains("could not serialize access")
            || lower.contains("deadlock detected")
            || lower.contains("database is locked")
            || lower.contains("40001")
            || lower.contains("40p01")
        {
            DbError::Conflict(message)
        } else {
            DbError::Other(message)
        }
    }
}

/// One result row: values by column name.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Rc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn new(columns: Rc<[String]>, values: Vec<Value>) -> Self {
        Row { columns, values }
    }

    /// The raw value of `column`.
    pub fn value(&self, column: &str) -> Result<&Value, DbError> {
        self.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| DbError::Decode(format!("no column `{column}` in the result")))
    }

    pub fn i64(&self, column: &str) -> Result<i64, DbError> {
        self.opt_i64(column)?
            .ok_or_else(|| DbError::Decode(format!("`{column}` is NULL")))
    }

    pub fn opt_i64(&self, column: &str) -> Result<Option<i64>, DbError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Bool(b) => Ok(Some(i64::from(*b))),
            other => Err(DbError::Decode(format!(
                "`{column}` is {other:?}, not an integer"
            ))),
        }
    }

    pub fn bool(&self, column: &str) -> Result<bool, DbError> {
        match self.value(column)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            other => Err(DbError::Decode(format!(
                "`{column}` is {other:?}, not a boolean"
            ))),
        }
    }

    pub fn text(&self, column: &str) -> Result<String, DbError> {
        self.opt_text(column)?
            .ok_or_else(|| DbError::Decode(format!("`{column}` is NULL")))
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            other => Err(DbError::Decode(format!(
                "`{column}` is {other:?}, not text"
            ))),
        }
    }

    pub fn blob(&self, column: &str) -> Result<Vec<u8>, DbError> {
        match self.value(column)? {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            other => Err(DbError::Decode(format!(
                "`{column}` is {other:?}, not bytes"
            ))),
        }
    }
}

/// Rewrites `?` placeholders to PostgreSQL's `$n`, leaving `?` inside string literals, quoted
/// identifiers and comments alone.
pub fn to_postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // A doubled quote inside a literal is an escaped quote: the loop re-enters.
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// A versioned schema change. `version`s are applied in ascending order, each in its own
/// transaction, and recorded in `schema_migrations`; a version already recorded is skipped.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// Statements separated by `;` at the end of a line.
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL is the same on both engines.
    pub const fn portable(version: u32, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }

    fn script(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// Splits a migration script into statements at `;` that end a line (so `;` inside a literal
/// on the same line as other text is not a split point).
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("--") {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix(';') {
            current.push_str(body);
            if !current.trim().is_empty() {
                statements.push(current.trim().to_owned());
            }
            current.clear();
        } else {
            current.push_str(trimmed);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_owned());
    }
    statements
}

/// Which migrations of `all` are not in `applied`, in version order; rejects a list whose
/// versions are not strictly increasing (two migrations with one number is a merge mistake).
pub fn pending<'a>(all: &'a [Migration], applied: &[u32]) -> Result<Vec<&'a Migration>, DbError> {
    for pair in all.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(DbError::Config(format!(
                "migration versions must increase: {} after {}",
                pair[1].version, pair[0].version
            )));
        }
    }
    Ok(all
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

enum Connection {
    Sqlite(spin_sdk::sqlite::Connection),
    Postgres(spin_sdk::pg3::Connection),
}

/// An open connection. Cheap to open per request (Spin pools PostgreSQL connections host-side).
pub struct Database {
    connection: Connection,
    /// Inside [`Database::transaction`]: lock errors are then the transaction's to handle.
    in_transaction: std::cell::Cell<bool>,
}

/// Attempts for a statement that failed only because another connection held the lock.
const LOCK_RETRIES: u32 = 6;

/// Runs `attempt` again while it fails with [`DbError::Conflict`] outside a transaction.
///
/// SQLite answers "database is locked" once its busy timeout runs out; under a burst of
/// writers that wait can exceed the timeout. A statement (or `BEGIN`) that failed this way did
/// nothing, so repeating it after a short pause is always safe — unlike a statement inside a
/// transaction, whose retry is the caller's decision.
fn retry_locked<T>(
    in_transaction: bool,
    mut attempt: impl FnMut() -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut tries = 0;
    loop {
        match attempt() {
            Err(DbError::Conflict(_)) if !in_transaction && tries < LOCK_RETRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25 << tries.min(5)));
            }
            other => return other,
        }
    }
}

impl Database {
    /// Opens `url`: `sqlite:<label>` or `postgres://user@host:port/db`.
    pub fn open(url: &str) -> Result<Self, DbError> {
        let url = url.trim();
        let connection = if let Some(label) = url.strip_prefix("sqlite:") {
            let label = label.trim_start_matches("//");
            Connection::Sqlite(
                spin_sdk::sqlite::Connection::open(label)
                    .map_err(|e| DbError::Config(format!("sqlite database `{label}`: {e:?}")))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Connection::Postgres(
                spin_sdk::pg3::Connection::open(url)
                    .map_err(|e| DbError::Config(format!("postgres: {}", pg_message(e))))?,
            )
        } else {
            return Err(DbError::Config(
                "the database URL must start with sqlite: or postgres://".to_owned(),
            ));
        };
        Ok(Database {
            connection,
            in_transaction: std::cell::Cell::new(false),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.connection {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Postgres(_) => Dialect::Postgres,
        }
    }

    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite (whose `BEGIN IMMEDIATE` already holds
    /// the database's write lock).
    pub fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        retry_locked(self.in_transaction.get(), || self.execute_once(sql, params))
    }

    fn execute_once(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match &self.connection {
            Connection::Sqlite(conn) => {
                conn.execute(sql, &sqlite_params(params))
                    .map_err(|e| DbError::classify(format!("{e:?}")))?;
                let changes = conn
                    .execute("SELECT changes()", &[])
                    .map_err(|e| DbError::classify(format!("{e:?}")))?;
                Ok(changes
                    .rows
                    .first()
                    .and_then(|r| r.values.first())
                    .and_then(|v| match v {
                        spin_sdk::sqlite::Value::Integer(n) => u64::try_from(*n).ok(),
                        _ => None,
                    })
                    .unwrap_or(0))
            }
            Connection::Postgres(conn) => conn
                .execute(&to_postgres_placeholders(sql), &pg_params(params))
                .map_err(|e| DbError::classify(pg_message(e))),
        }
    }

    /// Runs a query and returns every row.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        retry_locked(self.in_transaction.get(), || self.query_once(sql, params))
    }

    fn query_once(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match &self.connection {
            Connection::Sqlite(conn) => {
                let result = conn
                    .execute(sql, &sqlite_params(params))
                    .map_err(|e| DbError::classify(format!("{e:?}")))?;
                let columns: Rc<[String]> = result.columns.into();
                Ok(result
                    .rows
                    .into_iter()
                    .map(|row| {
                        Row::new(
                            columns.clone(),
                            row.values.into_iter().map(from_sqlite).collect(),
                        )
                    })
                    .collect())
            }
            Connection::Postgres(conn) => {
                let result = conn
                    .query(&to_postgres_placeholders(sql), &pg_params(params))
                    .map_err(|e| DbError::classify(pg_message(e)))?;
                let columns: Rc<[String]> = result.columns.into_iter().map(|c| c.name).collect();
                result
                    .rows
                    .into_iter()
                    .map(|row| {
                        let values = row
                            .into_iter()
                            .map(from_pg)
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(Row::new(columns.clone(), values))
                    })
                    .collect()
            }
        }
    }

    /// The first row, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_transaction.get() {
            // Already inside one: the outer transaction commits or rolls back everything.
            return work(self);
        }
        let begin = match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        self.execute(begin, &[])?;
        self.in_transaction.set(true);
        let result = work(self);
        let end = match &result {
            Ok(_) => self.execute("COMMIT", &[]),
            Err(_) => self.execute("ROLLBACK", &[]),
        };
        if end.is_err() {
            let _ = self.execute("ROLLBACK", &[]);
        }
        self.in_transaction.set(false);
        match (result, end) {
            (Ok(value), Ok(_)) => Ok(value),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        }
    }

    /// Applies the pending `migrations` and returns the versions applied now. Meant for the
    /// one-off admin process (`bazaar admin migrate`), never for the request path.
    pub fn migrate(&self, migrations: &[Migration]) -> Result<Vec<u32>, DbError> {
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            &[],
        )?;
        let applied: Vec<u32> = self
            .query("SELECT version FROM schema_migrations", &[])?
            .iter()
            .map(|r| r.i64("version").map(|v| v as u32))
            .collect::<Result<_, _>>()?;
        let mut done = Vec::new();
        for migration in pending(migrations, &applied)? {
            self.transaction(|db| {
                // A concurrent migrator may have applied it since we looked.
                if db
                    .query_opt(
                        "SELECT version FROM schema_migrations WHERE version = ?",
                        &[i64::from(migration.version).into()],
                    )?
                    .is_some()
                {
                    return Ok::<_, DbError>(());
                }
                for statement in split_statements(migration.script(db.dialect())) {
                    db.execute(&statement, &[])?;
                }
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    &[
                        i64::from(migration.version).into(),
                        migration.name.into(),
                        crate::time::now_millis().into(),
                    ],
                )?;
                done.push(migration.version);
                Ok(())
            })?;
        }
        Ok(done)
    }

    /// The highest applied migration version (0 when none), for readiness checks: a service
    /// whose schema is behind its code answers 503 instead of failing requests one by one.
    pub fn schema_version(&self) -> Result<u32, DbError> {
        match self.query_opt("SELECT MAX(version) AS v FROM schema_migrations", &[]) {
            Ok(Some(row)) => Ok(row.opt_i64("v")?.unwrap_or(0) as u32),
            Ok(None) => Ok(0),
            Err(DbError::Other(m)) if m.contains("schema_migrations") => Ok(0),
            Err(e) => Err(e),
        }
    }
}

fn sqlite_params(params: &[Value]) -> Vec<spin_sdk::sqlite::Value> {
    use spin_sdk::sqlite::Value as S;
    params
        .iter()
        .map(|v| match v {
            Value::Null => S::Null,
            Value::Int(i) => S::Integer(*i),
            Value::Bool(b) => S::Integer(i64::from(*b)),
            Value::Text(s) => S::Text(s.clone()),
            Value::Blob(b) => S::Blob(b.clone()),
        })
        .collect()
}

fn from_sqlite(v: spin_sdk::sqlite::Value) -> Value {
    use spin_sdk::sqlite::Value as S;
    match v {
        S::Null => Value::Null,
        S::Integer(i) => Value::Int(i),
        // Services store no floats (money is minor units); surface one as text, not silently
        // truncated.
        S::Real(f) => Value::Text(f.to_string()),
        S::Text(s) => Value::Text(s),
        S::Blob(b) => Value::Blob(b),
    }
}

fn pg_params(params: &[Value]) -> Vec<spin_sdk::pg3::ParameterValue> {
    use spin_sdk::pg3::ParameterValue as P;
    params
        .iter()
        .map(|v| match v {
            Value::Null => P::DbNull,
            Value::Int(i) => P::Int64(*i),
            Value::Bool(b) => P::Boolean(*b),
            Value::Text(s) => P::Str(s.clone()),
            Value::Blob(b) => P::Binary(b.clone()),
        })
        .collect()
}

fn from_pg(v: spin_sdk::pg3::DbValue) -> Result<Value, DbError> {
    use spin_sdk::pg3::DbValue as D;
    Ok(match v {
        D::DbNull => Value::Null,
        D::Boolean(b) => Value::Bool(b),
        D::Int8(i) => Value::Int(i64::from(i)),
        D::Int16(i) => Value::Int(i64::from(i)),
        D::Int32(i) => Value::Int(i64::from(i)),
        D::Int64(i) => Value::Int(i),
        D::Str(s) => Value::Text(s),
        D::Binary(b) => Value::Blob(b),
        D::Floating32(f) => Value::Text(f.to_string()),
        D::Floating64(f) => Value::Text(f.to_string()),
        D::Timestamp(t) => Value::Int(t),
        other => {
            return Err(DbError::Decode(format!(
                "unsupported PostgreSQL column value {other:?}; use BIGINT/TEXT/BOOLEAN/BYTEA"
            )));
        }
    })
}

fn pg_message(e: spin_sdk::pg3::PgError) -> String {
    use spin_sdk::pg3::PgError as E;
    match e {
        E::ConnectionFailed(m) => format!("connection failed: {m}"),
        E::BadParameter(m) => format!("bad parameter: {m}"),
        E::QueryFailed(m) => m,
        E::ValueConversionFailed(m) => format!("value conversion failed: {m}"),
        E::Other(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        assert_eq!(
            to_postgres_placeholders("SELECT * FROM t WHERE a = ? AND b = '?' AND c = ?"),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c = $2"
        );
        assert_eq!(
            to_postgres_placeholders("SELECT 'it''s ?' , ? -- what?\n, ?"),
            "SELECT 'it''s ?' , $1 -- what?\n, $2"
        );
        assert_eq!(
            to_postgres_placeholders("SELECT \"we?ird\" FROM t WHERE x = ?"),
            "SELECT \"we?ird\" FROM t WHERE x = $1"
        );
    }

    #[test]
    fn statements_split_at_line_end_semicolons() {
        let script = "-- users\nCREATE TABLE a (x TEXT DEFAULT ';');\nCREATE INDEX i ON a (x);\n\n";
        assert_eq!(
            split_statements(script),
            vec![
                "CREATE TABLE a (x TEXT DEFAULT ';')".to_owned(),
                "CREATE INDEX i ON a (x)".to_owned()
            ]
        );
    }

    #[test]
    fn pending_migrations_skip_applied_and_reject_disorder() {
        let all = [
            Migration::portable(1, "a", "x"),
            Migration::portable(2, "b", "y"),
            Migration::portable(3, "c", "z"),
        ];
        let versions: Vec<u32> = pending(&all, &[1, 3])
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, vec![2]);
        let bad = [
            Migration::portable(2, "a", "x"),
            Migration::portable(2, "b", "y"),
        ];
        assert!(matches!(pending(&bad, &[]), Err(DbError::Config(_))));
    }

    #[test]
    fn engine_errors_are_classified() {
        assert!(matches!(
            DbError::classify("UNIQUE constraint failed: users.email".into()),
            DbError::UniqueViolation(_)
        ));
        assert!(matches!(
            DbError::classify(
                "db error: ERROR: duplicate key value violates unique constraint \"users_email\""
                    .into()
            ),
            DbError::UniqueViolation(_)
        ));
        assert!(matches!(
            DbError::classify("ERROR: could not serialize access due to concurrent update".into()),
            DbError::Conflict(_)
        ));
        assert!(matches!(
            DbError::classify("syntax error".into()),
            DbError::Other(_)
        ));
    }

    #[test]
    fn rows_read_by_name_and_accept_sqlite_booleans() {
        let cols: Rc<[String]> = vec!["id".to_owned(), "active".to_owned(), "n".to_owned()].into();
        let row = Row::new(
            cols,
            vec![Value::Text("x".into()), Value::Int(1), Value::Null],
        );
        assert_eq!(row.text("ID").unwrap(), "x");
        assert!(row.bool("active").unwrap());
        assert_eq!(row.opt_i64("n").unwrap(), None);
        assert!(row.i64("n").is_err());
        assert!(row.value("missing").is_err());
    }
}
