//! The order event store and its projection, in SQL (`platform::db`).
//!
//! `order_events` is the source of truth: one row per event, `(order_id, version)` unique, so
//! two writers that read the same version cannot both append (optimistic concurrency — the
//! loser gets [`StoreError::Concurrency`]). `orders` is the read model (CQRS), updated in the
//! same transaction together with the outbox row, so the stream, the projection and the
//! published event never disagree.

use bazaar_platform::db::{Database, DbError, Migration};
use bazaar_platform::outbox::{self, NewEvent};
use bazaar_platform::{idempotency, time};

use crate::domain::{Event, Illegal, Order};

pub const CHANNEL: &str = "orders";

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "order events, projection and sagas",
        "CREATE TABLE order_events (
  order_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  event_type TEXT NOT NULL,
  data TEXT NOT NULL,
  occurred_at BIGINT NOT NULL,
  request_id TEXT,
  PRIMARY KEY (order_id, version)
);
CREATE TABLE orders (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  status TEXT NOT NULL,
  version BIGINT NOT NULL,
  state TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, created_at, id);
CREATE INDEX orders_by_created ON orders (created_at, id);
CREATE TABLE sagas (
  order_id TEXT PRIMARY KEY,
  lease_until BIGINT NOT NULL,
  attempts BIGINT NOT NULL,
  last_error TEXT,
  idem_scope TEXT,
  idem_key TEXT,
  done BOOLEAN NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX sagas_open ON sagas (done, lease_until);",
    ),
    outbox::migration(2),
    idempotency::migration(3),
    Migration::portable(
        4,
        "sagas remember a requested cancellation",
        "ALTER TABLE sagas ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;",
    ),
    // Catch-up positions in commit order (a concurrent commit can no longer be skipped).
    outbox::migration_v2(5),
    // A checkout whose payment waits for the customer (wallet approval, crypto invoice) is
    // polled until this deadline instead of counting stalls; the payment's id and link are
    // kept so the order can show the customer where to act without asking payments per read.
    Migration::portable(
        6,
        "sagas remember a payment waiting for the customer",
        "ALTER TABLE sagas ADD COLUMN wait_until BIGINT;
ALTER TABLE sagas ADD COLUMN pending_payment TEXT;",
    ),
];

#[derive(Debug)]
pub enum StoreError {
    /// Someone appended first; reload and decide again.
    Concurrency,
    Illegal(Illegal),
    Db(DbError),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::UniqueViolation(_) => StoreError::Concurrency,
            other => StoreError::Db(other),
        }
    }
}

/// A stored order with its timestamps.
#[derive(Debug, Clone)]
pub struct Stored {
    pub order: Order,
    pub created_at: i64,
    pub updated_at: i64,
}

fn decode(row: &bazaar_platform::db::Row) -> Result<Stored, DbError> {
    let events: Vec<Event> = serde_json::from_str(&row.text("state")?)
        .map_err(|e| DbError::Decode(format!("order state: {e}")))?;
    let id = row.text("id")?;
    let order = Order::replay(&id, &events).map_err(|e| DbError::Decode(e.0))?;
    Ok(Stored {
        order,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
    })
}

pub fn load(db: &Database, id: &str) -> Result<Option<Stored>, DbError> {
    db.query_opt(
        "SELECT id, state, created_at, updated_at FROM orders WHERE id = ?",
        &[id.into()],
    )?
    .map(|r| decode(&r))
    .transpose()
}

/// The stream, oldest first: (version, type, data, occurred_at).
pub fn events(db: &Database, id: &str) -> Result<Vec<serde_json::Value>, DbError> {
    db.query(
        "SELECT version, event_type, data, occurred_at FROM order_events WHERE order_id = ? \
         ORDER BY version",
        &[id.into()],
    )?
    .iter()
    .map(|r| {
        let data: serde_json::Value =
            serde_json::from_str(&r.text("data")?).map_err(|e| DbError::Decode(e.to_string()))?;
        Ok(serde_json::json!({
            "version": r.i64("version")?,
            "type": r.text("event_type")?,
            "data": data,
            "occurred_at": time::millis_to_rfc3339(r.i64("occurred_at")?),
        }))
    })
    .collect()
}

/// Appends `event` to `order`'s stream at `order.version + 1` (or creates the stream when
/// `order` is `None`), updates the projection and writes the outbox row, in one transaction.
pub fn append(
    db: &Database,
    id: &str,
    current: Option<&Stored>,
    event: &Event,
    request_id: Option<&str>,
) -> Result<Stored, StoreError> {
    let now = time::now_millis();
    let (order, created_at) = match current {
        None => (Order::start(id, event).map_err(StoreError::Illegal)?, now),
        Some(stored) => {
            let mut order = stored.order.clone();
            order.apply(event).map_err(StoreError::Illegal)?;
            (order, stored.created_at)
        }
    };
    let data =
        serde_json::to_string(event).map_err(|e| StoreError::Db(DbError::Decode(e.to_string())))?;
    db.transaction(|db| {
        db.execute(
            "INSERT INTO order_events (order_id, version, event_type, data, occurred_at, request_id) \
             VALUES (?, ?, ?, ?, ?, ?)",
            &[
                id.into(),
                order.version.into(),
                event.name().into(),
                data.clone().into(),
                now.into(),
                request_id.map(str::to_owned).into(),
            ],
        )?;
        // The projection keeps the stream itself (small) so reads need one row.
        let stream: Vec<Event> = match current {
            None => vec![event.clone()],
            Some(_) => {
                let previous = db
                    .query_opt("SELECT state FROM orders WHERE id = ?", &[id.into()])?
                    .ok_or_else(|| DbError::Decode("projection missing".into()))?;
                let mut stream: Vec<Event> = serde_json::from_str(&previous.text("state")?)
                    .map_err(|e| DbError::Decode(e.to_string()))?;
                stream.push(event.clone());
                stream
            }
        };
        let state = serde_json::to_string(&stream).map_err(|e| DbError::Decode(e.to_string()))?;
        if current.is_none() {
            db.execute(
                "INSERT INTO orders (id, user_id, status, version, state, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                &[
                    id.into(),
                    order.user_id.clone().into(),
                    order.status.as_str().into(),
                    order.version.into(),
                    state.into(),
                    now.into(),
                    now.into(),
                ],
            )?;
        } else {
            let changed = db.execute(
                "UPDATE orders SET status = ?, version = ?, state = ?, updated_at = ? \
                 WHERE id = ? AND version = ?",
                &[
                    order.status.as_str().into(),
                    order.version.into(),
                    state.into(),
                    now.into(),
                    id.into(),
                    (order.version - 1).into(),
                ],
            )?;
            if changed != 1 {
                return Err(StoreError::Concurrency);
            }
        }
        outbox::append(
            db,
            NewEvent {
                channel: CHANNEL,
                event_type: event.name(),
                source: "orders",
                aggregate_id: id,
                version: order.version,
                request_id,
                data: serde_json::json!({ "order_id": id, "user_id": order.user_id, "event": event }),
            },
        )?;
        Ok(())
    })?;
    Ok(Stored {
        order,
        created_at,
        updated_at: now,
    })
}

/// Keyset page of orders, newest first; `user` narrows to one customer.
pub fn list(
    db: &Database,
    user: Option<&str>,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<Stored>, DbError> {
    let mut sql = String::from("SELECT id, state, created_at, updated_at FROM orders WHERE 1 = 1");
    let mut params: Vec<bazaar_platform::Value> = Vec::new();
    if let Some(user) = user {
        sql.push_str(" AND user_id = ?");
        params.push(user.into());
    }
    if let Some((created_at, id)) = after {
        sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
        params.extend([created_at.into(), created_at.into(), id.into()]);
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    params.push(i64::from(limit + 1).into());
    db.query(&sql, &params)?.iter().map(decode).collect()
}

/// Starts (or re-leases) the saga of `order_id` for `lease_ms`. False when another worker
/// holds an unexpired lease.
pub fn lease_saga(
    db: &Database,
    order_id: &str,
    lease_ms: i64,
    idem: Option<(&str, &str)>,
) -> Result<bool, DbError> {
    let now = time::now_millis();
    let inserted = db.execute(
        "INSERT INTO sagas (order_id, lease_until, attempts, idem_scope, idem_key, done, updated_at) \
         VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        &[
            order_id.into(),
            (now + lease_ms).into(),
            idem.map(|(s, _)| s.to_owned()).into(),
            idem.map(|(_, k)| k.to_owned()).into(),
            false.into(),
            now.into(),
        ],
    )?;
    if inserted == 1 {
        return Ok(true);
    }
    // A finished checkout can still be leased by a later operation on the order (cancel);
    // only an unexpired lease blocks.
    let taken = db.execute(
        "UPDATE sagas SET lease_until = ?, attempts = attempts + 1, updated_at = ? \
         WHERE order_id = ? AND lease_until <= ?",
        &[
            (now + lease_ms).into(),
            now.into(),
            order_id.into(),
            now.into(),
        ],
    )?;
    Ok(taken == 1)
}

/// Ends the saga (its order reached a resting state) and frees the lease. Nothing waits for
/// the customer any more.
pub fn finish_saga(db: &Database, order_id: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE sagas SET done = ?, lease_until = 0, wait_until = NULL, pending_payment = NULL, \
         updated_at = ? WHERE order_id = ?",
        &[true.into(), time::now_millis().into(), order_id.into()],
    )?;
    Ok(())
}

/// Gives the lease back while the payment waits for the customer: records the deadline and
/// the payment (its JSON for the order's readers) and starts the stall count afresh, because
/// waiting for a person is not a failed attempt — only the deadline ends the wait.
pub fn await_customer(
    db: &Database,
    order_id: &str,
    wait_until: i64,
    payment: &serde_json::Value,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE sagas SET lease_until = 0, attempts = 0, wait_until = ?, pending_payment = ?, \
         last_error = ?, updated_at = ? WHERE order_id = ?",
        &[
            wait_until.into(),
            payment.to_string().into(),
            "waiting for the customer to authorize the payment".into(),
            time::now_millis().into(),
            order_id.into(),
        ],
    )?;
    Ok(())
}

/// The deadline recorded when the order's payment started waiting for the customer, if it is.
pub fn customer_wait(db: &Database, order_id: &str) -> Result<Option<i64>, DbError> {
    Ok(db
        .query_opt(
            "SELECT wait_until FROM sagas WHERE order_id = ?",
            &[order_id.into()],
        )?
        .map(|r| r.opt_i64("wait_until"))
        .transpose()?
        .flatten())
}

/// The payment the order waits on the customer for (as [`await_customer`] recorded it).
pub fn pending_payment(
    db: &Database,
    order_id: &str,
) -> Result<Option<serde_json::Value>, DbError> {
    let Some(row) = db.query_opt(
        "SELECT pending_payment FROM sagas WHERE order_id = ? AND done = ?",
        &[order_id.into(), false.into()],
    )?
    else {
        return Ok(None);
    };
    row.opt_text("pending_payment")?
        .map(|text| serde_json::from_str(&text).map_err(|e| DbError::Decode(e.to_string())))
        .transpose()
}

/// Forgets the saga of an order that was never created (its checkout failed before the first
/// event, or died there).
pub fn drop_saga(db: &Database, order_id: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM sagas WHERE order_id = ?", &[order_id.into()])?;
    Ok(())
}

/// Gives the lease back after a failed attempt, recording why, so the recovery job retries.
pub fn pause_saga(db: &Database, order_id: &str, error: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE sagas SET lease_until = 0, last_error = ?, updated_at = ? WHERE order_id = ?",
        &[error.into(), time::now_millis().into(), order_id.into()],
    )?;
    Ok(())
}

/// A saga to resume: its order, attempts so far, the checkout's idempotency scope and key, and
/// whether a cancellation was requested (then recovery finishes the cancel, never the checkout).
pub type StalledSaga = (String, i64, Option<(String, String)>, bool);

/// Records that the customer asked to cancel: from now on the saga only compensates.
pub fn request_cancel(db: &Database, order_id: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE sagas SET cancel_requested = ?, done = ?, updated_at = ? WHERE order_id = ?",
        &[
            true.into(),
            false.into(),
            time::now_millis().into(),
            order_id.into(),
        ],
    )?;
    Ok(())
}

/// Whether a cancellation was requested for the order's saga.
pub fn cancel_requested(db: &Database, order_id: &str) -> Result<bool, DbError> {
    Ok(db
        .query_opt(
            "SELECT cancel_requested FROM sagas WHERE order_id = ?",
            &[order_id.into()],
        )?
        .map(|r| r.bool("cancel_requested"))
        .transpose()?
        .unwrap_or(false))
}

/// Sagas whose lease ran out without finishing (their request died or gave up).
pub fn stalled_sagas(db: &Database, limit: u32) -> Result<Vec<StalledSaga>, DbError> {
    db.query(
        "SELECT order_id, attempts, idem_scope, idem_key, cancel_requested FROM sagas \
         WHERE done = ? AND lease_until <= ? \
         ORDER BY updated_at LIMIT ?",
        &[
            false.into(),
            time::now_millis().into(),
            i64::from(limit).into(),
        ],
    )?
    .iter()
    .map(|r| {
        let idem = match (r.opt_text("idem_scope")?, r.opt_text("idem_key")?) {
            (Some(s), Some(k)) => Some((s, k)),
            _ => None,
        };
        Ok((
            r.text("order_id")?,
            r.i64("attempts")?,
            idem,
            r.bool("cancel_requested")?,
        ))
    })
    .collect()
}
