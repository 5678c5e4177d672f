//! The transactional outbox (ARCHITECTURE principle 4).
//!
//! A service writes its events with [`append`] in the same transaction as the state change,
//! then calls [`publish_pending`] after commit to push them to Redis right away. A scheduled job
//! calls [`publish_pending`] again to republish anything a crash or a Redis outage left unsent,
//! so publishing is at-least-once and consumers deduplicate by event `id`. Consumers that were
//! down catch up with [`events_after`] (exposed by each producer as `?after=<position>`).

use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, Migration, Value};

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

fn envelope(row: &crate::db::Row) -> Result<EventEnvelope, DbError> {
    let mut value: serde_json::Value = serde_json::from_str(&row.text("payload")?)
        .map_err(|e| DbError::Decode(format!("outbox payload: {e}")))?;
    value["position"] = row.i64("position")?.into();
    serde_json::from_value(value).map_err(|e| DbError::Decode(format!("outbox payload: {e}")))
}

/// Events after `position` (oldest first), at most `limit`, published or not.
pub fn events_after(
    db: &Database,
    position: i64,
    limit: u32,
) -> Result<Vec<EventEnvelope>, DbError> {
    db.query(
        "SELECT position, payload FROM outbox WHERE position > ? ORDER BY position LIMIT ?",
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
/// Stops at the first Redis failure (order is kept; the rest waits for the next call).
pub fn publish_pending(
    db: &Database,
    redis_address: &str,
    batch: u32,
) -> Result<usize, PublishError> {
    let rows = db
        .query(
            "SELECT position, channel, payload FROM outbox WHERE published_at IS NULL \
             ORDER BY position LIMIT ?",
            &[i64::from(batch).into()],
        )
        .map_err(PublishError::Db)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let redis = spin_sdk::redis::Connection::open(redis_address)
        .map_err(|e| PublishError::Redis(format!("{e:?}")))?;
    let mut sent = 0;
    for row in &rows {
        let position = row.i64("position").map_err(PublishError::Db)?;
        let channel = row.text("channel").map_err(PublishError::Db)?;
        let mut payload: serde_json::Value =
            serde_json::from_str(&row.text("payload").map_err(PublishError::Db)?)
                .map_err(|e| PublishError::Db(DbError::Decode(e.to_string())))?;
        payload["position"] = position.into();
        redis
            .publish(&channel, &payload.to_string().into_bytes())
            .map_err(|e| PublishError::Redis(format!("{e:?}")))?;
        db.execute(
            "UPDATE outbox SET published_at = ? WHERE position = ?",
            &[crate::time::now_millis().into(), Value::Int(position)],
        )
        .map_err(PublishError::Db)?;
        sent += 1;
    }
    Ok(sent)
}
