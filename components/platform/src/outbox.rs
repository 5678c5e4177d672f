//! The transactional outbox (ARCHITECTURE principle 4).
//!
//! A service writes its events with [`append`] in the same transaction as the state change,
//! then calls [`publish_pending`] after commit to push them to Redis right away. A scheduled job
//! calls [`publish_pending`] again to republish anything a crash or a Redis outage left unsent,
//! so publishing is at-least-once and consumers deduplicate by event `id`. Consumers that were
//! down catch up with [`events_after`] (exposed by each producer as `?after=<position>`).
//!
//! **Catch-up positions follow commit order.** The row's own `position` (`BIGSERIAL` /
//! `AUTOINCREMENT`) is handed out at insert time, and on PostgreSQL transactions commit in any
//! order: a reader could see position 11 before 10 commits, move its cursor past 10 and never
//! see it. A table migrated with [`migration_v2`] therefore carries a second number, `seq`,
//! given only to rows already committed, in one serialised step (a transaction-scoped advisory
//! lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so `seq` only ever grows with commit time;
//! the envelope's `position` is that `seq`, and only numbered rows are published or served.
//! Tables without the column (services that have not added [`migration_v2`] yet) keep the old
//! behaviour, where the cursor is the insert position.
//!
//! **One publisher per row.** On PostgreSQL a publisher locks the rows it sends
//! (`FOR UPDATE SKIP LOCKED`) until it has marked them sent, so a request and the job
//! publishing concurrently never send the same row twice; each takes rows the other has not.
//! SQLite is not locked that way (holding its single write lock across Redis calls would stop
//! every writer of the service); there, a concurrent request and job may still send a row twice,
//! which the at-least-once contract allows.

use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, Dialect, Migration, Value};

/// The outbox table. Include it in the owning service's migration list (any version number).
pub const fn migration(version: u32) -> Migration {
    Migration {
        version,
        name: "outbox",
        sqlite: "CREATE TABLE outbox (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  channel TEXT NOT NULL,
  event_type TEXT NOT NULL,
  aggregate_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  payload TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (published_at, position);",
        postgres: "CREATE TABLE outbox (
  position BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  channel TEXT NOT NULL,
  event_type TEXT NOT NULL,
  aggregate_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  payload TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (published_at, position);",
    }
}

/// Adds the commit-ordered catch-up position `seq` to the table [`migration`] created (see the
/// module docs). Append it to the owning service's migration list after [`migration`]; existing
/// rows keep their positions as `seq`, so consumers' saved cursors stay valid.
pub const fn migration_v2(version: u32) -> Migration {
    Migration::portable(
        version,
        "outbox positions in commit order",
        "ALTER TABLE outbox ADD COLUMN seq BIGINT;
UPDATE outbox SET seq = position;
CREATE UNIQUE INDEX outbox_by_seq ON outbox (seq);
CREATE INDEX outbox_unnumbered ON outbox (position) WHERE seq IS NULL;
CREATE INDEX outbox_unpublished_by_seq ON outbox (published_at, seq);",
    )
}

/// The JSON encoding of every Bazaar event, on Redis channels and in catch-up answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique per event; consumers deduplicate on it.
    pub id: String,
    /// `<aggregate>.<what happened>`, e.g. `product.price_changed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The producing service (Spin component id).
    pub source: String,
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first).
    pub version: i64,
    /// RFC 3339 UTC.
    pub occurred_at: String,
    /// The producer's outbox position: `after=<position>` resumes after this event.
    pub position: i64,
    /// The request that caused the event (also the trace correlation id in logs).
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

/// An event to write; the outbox assigns id, position and timestamp.
pub struct NewEvent<'a> {
    pub channel: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub aggregate_id: &'a str,
    pub version: i64,
    pub request_id: Option<&'a str>,
    pub data: serde_json::Value,
}

/// Writes `event` to the outbox. Call inside the transaction that changes the state.
pub fn append(db: &Database, event: NewEvent<'_>) -> Result<String, DbError> {
    let id = format!("evt_{}", crate::ids::new_id());
    let now = crate::time::now_millis();
    let payload = serde_json::json!({
        "id": id,
        "type": event.event_type,
        "source": event.source,
        "aggregate_id": event.aggregate_id,
        "version": event.version,
        "occurred_at": crate::time::millis_to_rfc3339(now),
        "request_id": event.request_id,
        "data": event.data,
    });
    db.execute(
        "INSERT INTO outbox (id, channel, event_type, aggregate_id, version, payload, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        &[
            id.clone().into(),
            event.channel.into(),
            event.event_type.into(),
            event.aggregate_id.into(),
            event.version.into(),
            payload.to_string().into(),
            now.into(),
        ],
    )?;
    Ok(id)
}

/// Which catch-up cursor a service's outbox table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Migrated with [`migration_v2`]: `seq`, given in commit order.
    Numbered,
    /// Only [`migration`]: the insert position (sound on SQLite, which commits in insert order).
    Legacy,
}

impl Layout {
    fn detect(db: &Database) -> Result<Layout, DbError> {
        // Asked from the catalog rather than by selecting the column: a failed statement would
        // abort an enclosing PostgreSQL transaction.
        let sql = match db.dialect() {
            Dialect::Sqlite => "SELECT name FROM pragma_table_info('outbox') WHERE name = 'seq'",
            Dialect::Postgres => {
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'outbox' \
                 AND column_name = 'seq'"
            }
        };
        Ok(if db.query_opt(sql, &[])?.is_some() {
            Layout::Numbered
        } else {
            Layout::Legacy
        })
    }

    /// The column consumers resume from.
    fn cursor(self) -> &'static str {
        match self {
            Layout::Numbered => "seq",
            Layout::Legacy => "position",
        }
    }
}

/// The advisory lock that serialises numbering on PostgreSQL ("outbox" in ASCII). Advisory
/// locks are per database, and each service has its own.
const NUMBERING_LOCK: i64 = 0x6F75_7462_6F78;
/// Most rows one numbering step covers (the next step continues).
const NUMBERING_BATCH: i64 = 1000;

/// Gives every committed, unnumbered row its catch-up position, in insert order, after every
/// position handed out before. Serialised: on PostgreSQL by an advisory lock held until commit
/// (the next numbering statement runs after that commit and so sees every row this one saw, and
/// any committed since), on SQLite by its write lock. A row still uncommitted is invisible here
/// and gets a later number once it commits, so no reader can pass it by.
fn number_committed(db: &Database) -> Result<(), DbError> {
    // Most calls find nothing to do; checking first keeps readers off the write lock.
    if db
        .query_opt("SELECT position FROM outbox WHERE seq IS NULL LIMIT 1", &[])?
        .is_none()
    {
        return Ok(());
    }
    db.transaction(|db| {
        if db.dialect() == Dialect::Postgres {
            // pg_advisory_xact_lock returns void, which the driver cannot decode: wrap it.
            db.query(
                "SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(?)) AS l",
                &[NUMBERING_LOCK.into()],
            )?;
        }
        let rows = db.query(
            "SELECT position FROM outbox WHERE seq IS NULL ORDER BY position LIMIT ?",
            &[NUMBERING_BATCH.into()],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let top = db
            .query_opt("SELECT MAX(seq) AS top FROM outbox", &[])?
            .map(|r| r.opt_i64("top"))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        for (n, row) in (1..).zip(&rows) {
            db.execute(
                "UPDATE outbox SET seq = ? WHERE position = ?",
                &[(top + n).into(), row.i64("position")?.into()],
            )?;
        }
        Ok(())
    })
}

fn envelope(row: &crate::db::Row) -> Result<EventEnvelope, DbError> {
    let mut value: serde_json::Value = serde_json::from_str(&row.text("payload")?)
        .map_err(|e| DbError::Decode(format!("outbox payload: {e}")))?;
    value["position"] = row.i64("cursor")?.into();
    serde_json::from_value(value).map_err(|e| DbError::Decode(format!("outbox payload: {e}")))
}

/// Events after `position` (oldest first), at most `limit`, published or not. On a table with
/// [`migration_v2`], committed rows are numbered first, so catch-up never waits for a publisher,
/// and a row that commits later always comes after every position already returned.
pub fn events_after(
    db: &Database,
    position: i64,
    limit: u32,
) -> Result<Vec<EventEnvelope>, DbError> {
    let layout = Layout::detect(db)?;
    if layout == Layout::Numbered {
        number_committed(db)?;
    }
    let cursor = layout.cursor();
    db.query(
        &format!(
            "SELECT {cursor} AS cursor, payload FROM outbox WHERE {cursor} > ? \
             ORDER BY {cursor} LIMIT ?"
        ),
        &[position.into(), i64::from(limit).into()],
    )?
    .iter()
    .map(envelope)
    .collect()
}

/// Why publishing stopped early.
#[derive(Debug)]
pub enum PublishError {
    Db(DbError),
    /// Redis refused or is unreachable; the events stay in the outbox for the next sweep.
    Redis(String),
}

impl From<DbError> for PublishError {
    fn from(e: DbError) -> Self {
        PublishError::Db(e)
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Db(e) => write!(f, "{e}"),
            PublishError::Redis(m) => write!(f, "redis publish failed: {m}"),
        }
    }
}

/// Publishes up to `batch` unsent events in outbox order to their channels on the Redis at
/// `redis_address`, marking each as sent after Redis accepted it. Returns how many were sent.
/// Stops at the first Redis failure (order is kept; the rest waits for the next call); what was
/// sent before it stays marked. Call it outside any transaction.
pub fn publish_pending(
    db: &Database,
    redis_address: &str,
    batch: u32,
) -> Result<usize, PublishError> {
    let layout = Layout::detect(db)?;
    if layout == Layout::Numbered {
        number_committed(db)?;
    }
    match db.dialect() {
        // The row locks live as long as the transaction: publish and mark inside it.
        Dialect::Postgres => {
            let (sent, stopped) = db.transaction(|db| {
                Ok::<_, PublishError>(publish_rows(
                    db,
                    layout,
                    redis_address,
                    batch,
                    " FOR UPDATE SKIP LOCKED",
                ))
            })?;
            stopped.map_or(Ok(sent), Err)
        }
        Dialect::Sqlite => {
            let (sent, stopped) = publish_rows(db, layout, redis_address, batch, "");
            stopped.map_or(Ok(sent), Err)
        }
    }
}

/// Sends the unsent rows `lock` lets this publisher take; returns how many were sent and why it
/// stopped early, if it did (the caller commits what was marked either way).
fn publish_rows(
    db: &Database,
    layout: Layout,
    redis_address: &str,
    batch: u32,
    lock: &str,
) -> (usize, Option<PublishError>) {
    let cursor = layout.cursor();
    let numbered = match layout {
        Layout::Numbered => " AND seq IS NOT NULL",
        Layout::Legacy => "",
    };
    let rows = match db.query(
        &format!(
            "SELECT position, {cursor} AS cursor, channel, payload FROM outbox \
             WHERE published_at IS NULL{numbered} ORDER BY {cursor} LIMIT ?{lock}"
        ),
        &[i64::from(batch).into()],
    ) {
        Ok(rows) if rows.is_empty() => return (0, None),
        Ok(rows) => rows,
        Err(e) => return (0, Some(e.into())),
    };
    let redis = match spin_sdk::redis::Connection::open(redis_address) {
        Ok(redis) => redis,
        Err(e) => return (0, Some(PublishError::Redis(format!("{e:?}")))),
    };
    let mut sent = 0;
    for row in &rows {
        let attempt = (|| {
            let position = row.i64("position")?;
            let channel = row.text("channel")?;
            let mut payload: serde_json::Value = serde_json::from_str(&row.text("payload")?)
                .map_err(|e| PublishError::Db(DbError::Decode(e.to_string())))?;
            payload["position"] = row.i64("cursor")?.into();
            redis
                .publish(&channel, &payload.to_string().into_bytes())
                .map_err(|e| PublishError::Redis(format!("{e:?}")))?;
            db.execute(
                "UPDATE outbox SET published_at = ? WHERE position = ?",
                &[crate::time::now_millis().into(), Value::Int(position)],
            )?;
            Ok::<_, PublishError>(())
        })();
        if let Err(e) = attempt {
            return (sent, Some(e));
        }
        sent += 1;
    }
    (sent, None)
}
