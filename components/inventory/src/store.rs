//! Inventory in SQL (`platform::db`: SQLite locally, PostgreSQL in a cluster).
//!
//! Reservations never drive stock negative, under any concurrency, for two independent reasons:
//! every reservation runs in one transaction that locks the product's stock rows first
//! (`BEGIN IMMEDIATE` on SQLite, `SELECT … FOR UPDATE` on PostgreSQL), and each stock update is
//! conditional (`… WHERE on_hand - reserved >= ?`) on top of a `CHECK (reserved <= on_hand)`.

use bazaar_platform::db::{Database, DbError, Migration};
use bazaar_platform::outbox::{self, NewEvent};
use bazaar_platform::{FieldError, Problem};
use serde::Serialize;
use serde_json::json;

use crate::domain::{self, Allocation, ReservationState, StockAlert, Transition, WarehouseStock};

pub const CHANNEL: &str = "inventory";
pub const SOURCE: &str = "inventory";

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "stock and reservations",
        "CREATE TABLE stock (
  product_id TEXT NOT NULL,
  warehouse_id TEXT NOT NULL,
  on_hand BIGINT NOT NULL,
  reserved BIGINT NOT NULL DEFAULT 0,
  priority BIGINT NOT NULL DEFAULT 100,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (product_id, warehouse_id),
  CHECK (on_hand >= 0),
  CHECK (reserved >= 0),
  CHECK (reserved <= on_hand)
);
CREATE TABLE stock_thresholds (
  product_id TEXT PRIMARY KEY,
  threshold BIGINT NOT NULL
);
CREATE TABLE reservations (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX reservations_by_state ON reservations (state, expires_at);
CREATE TABLE reservation_lines (
  reservation_id TEXT NOT NULL,
  product_id TEXT NOT NULL,
  warehouse_id TEXT NOT NULL,
  quantity BIGINT NOT NULL,
  PRIMARY KEY (reservation_id, product_id, warehouse_id)
);
CREATE INDEX reservation_lines_by_product ON reservation_lines (product_id);",
    ),
    outbox::migration(2),
    // Catch-up positions in commit order (see the outbox module docs).
    outbox::migration_v2(3),
];

/// Stock of one product as the API shows it.
#[derive(Debug, Serialize)]
pub struct Inventory {
    pub product_id: String,
    pub available: i64,
    pub reserved: i64,
    pub on_hand: i64,
    pub low_stock_threshold: i64,
    pub warehouses: Vec<WarehouseView>,
}

#[derive(Debug, Serialize)]
pub struct WarehouseView {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub priority: i64,
}

/// A reservation as the internal API shows it.
#[derive(Debug, Serialize)]
pub struct ReservationView {
    pub reservation_id: String,
    pub state: &'static str,
    pub expires_at: String,
    pub lines: Vec<ReservationLine>,
}

#[derive(Debug, Serialize, Clone)]
pub struct ReservationLine {
    pub product_id: String,
    pub warehouse_id: String,
    pub quantity: i64,
}

/// Why a reservation was refused.
#[derive(Debug)]
pub enum ReserveError {
    OutOfStock {
        product_id: String,
        requested: i64,
        available: i64,
    },
    /// The id was used before and that reservation is over (released or expired).
    Finished(&'static str),
    Problem(Problem),
}

impl From<DbError> for ReserveError {
    fn from(e: DbError) -> Self {
        ReserveError::Problem(e.into())
    }
}

impl From<Problem> for ReserveError {
    fn from(p: Problem) -> Self {
        ReserveError::Problem(p)
    }
}

fn warehouse_rows(
    db: &Database,
    product_id: &str,
    lock: bool,
) -> Result<Vec<WarehouseStock>, DbError> {
    let sql = format!(
        "SELECT warehouse_id, priority, on_hand, reserved FROM stock WHERE product_id = ? \
         ORDER BY warehouse_id{}",
        if lock { db.for_update() } else { "" }
    );
    db.query(&sql, &[product_id.into()])?
        .iter()
        .map(|r| {
            Ok(WarehouseStock {
                warehouse_id: r.text("warehouse_id")?,
                priority: r.i64("priority")?,
                on_hand: r.i64("on_hand")?,
                reserved: r.i64("reserved")?,
            })
        })
        .collect()
}

fn threshold(db: &Database, product_id: &str) -> Result<i64, DbError> {
    Ok(db
        .query_opt(
            "SELECT threshold FROM stock_thresholds WHERE product_id = ?",
            &[product_id.into()],
        )?
        .map(|r| r.i64("threshold"))
        .transpose()?
        .unwrap_or(0))
}

fn available(rows: &[WarehouseStock]) -> i64 {
    rows.iter().map(WarehouseStock::available).sum()
}

/// Held-but-expired quantities of `product_id` per warehouse (still counted in `reserved`
/// until released).
fn expired_holds(db: &Database, product_id: &str, now: i64) -> Result<Vec<(String, i64)>, DbError> {
    db.query(
        "SELECT l.warehouse_id AS warehouse_id, CAST(SUM(l.quantity) AS BIGINT) AS quantity \
         FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id \
         WHERE l.product_id = ? AND r.state = 'held' AND r.expires_at <= ? \
         GROUP BY l.warehouse_id",
        &[product_id.into(), now.into()],
    )?
    .iter()
    .map(|r| Ok((r.text("warehouse_id")?, r.i64("quantity")?)))
    .collect()
}

/// Read-time view: expired holds are already excluded, even before the sweep releases them.
pub fn inventory(db: &Database, product_id: &str, now: i64) -> Result<Inventory, DbError> {
    let mut rows = warehouse_rows(db, product_id, false)?;
    for (warehouse, quantity) in expired_holds(db, product_id, now)? {
        if let Some(row) = rows.iter_mut().find(|r| r.warehouse_id == warehouse) {
            row.reserved = (row.reserved - quantity).max(0);
        }
    }
    Ok(Inventory {
        product_id: product_id.to_owned(),
        available: available(&rows),
        reserved: rows.iter().map(|r| r.reserved).sum(),
        on_hand: rows.iter().map(|r| r.on_hand).sum(),
        low_stock_threshold: threshold(db, product_id)?,
        warehouses: rows
            .iter()
            .map(|r| WarehouseView {
                warehouse_id: r.warehouse_id.clone(),
                on_hand: r.on_hand,
                reserved: r.reserved,
                available: r.available(),
                priority: r.priority,
            })
            .collect(),
    })
}

fn alert_event(
    db: &Database,
    product_id: &str,
    before: i64,
    after: i64,
    request_id: Option<&str>,
) -> Result<(), DbError> {
    let limit = threshold(db, product_id)?;
    if let Some(alert) = domain::crossing(before, after, limit) {
        outbox::append(
            db,
            NewEvent {
                channel: CHANNEL,
                event_type: alert.event_type(),
                source: SOURCE,
                aggregate_id: product_id,
                version: 0,
                request_id,
                data: json!({
                    "product_id": product_id,
                    "available": after,
                    "threshold": limit,
                    "alert": match alert { StockAlert::Low => "low", StockAlert::Restocked => "restocked" },
                }),
            },
        )?;
    }
    Ok(())
}

/// Sets a warehouse's on-hand count (and optionally its priority). Refuses to go below what is
/// reserved there: those units are promised to checkouts.
pub fn set_stock(
    db: &Database,
    product_id: &str,
    warehouse_id: &str,
    on_hand: i64,
    priority: Option<i64>,
    request_id: Option<&str>,
) -> Result<(), Problem> {
    let now = bazaar_platform::time::now_millis();
    db.transaction(|db| {
        release_expired(db, Some(product_id), now, request_id)?;
        let rows = warehouse_rows(db, product_id, true)?;
        let before = available(&rows);
        let current = rows.iter().find(|r| r.warehouse_id == warehouse_id);
        if let Some(row) = current
            && on_hand < row.reserved
        {
            return Err(Problem::conflict(format!(
                "{} units are reserved in this warehouse; on_hand cannot go below that",
                row.reserved
            )));
        }
        let priority = priority.or(current.map(|r| r.priority)).unwrap_or(100);
        db.execute(
            "INSERT INTO stock (product_id, warehouse_id, on_hand, reserved, priority, updated_at) \
             VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (product_id, warehouse_id) DO UPDATE \
             SET on_hand = excluded.on_hand, priority = excluded.priority, updated_at = excluded.updated_at",
            &[
                product_id.into(),
                warehouse_id.into(),
                on_hand.into(),
                priority.into(),
                now.into(),
            ],
        )?;
        let after = available(&warehouse_rows(db, product_id, false)?);
        outbox::append(
            db,
            NewEvent {
                channel: CHANNEL,
                event_type: "inventory.stock_set",
                source: SOURCE,
                aggregate_id: product_id,
                version: 0,
                request_id,
                data: json!({"product_id": product_id, "warehouse_id": warehouse_id,
                             "on_hand": on_hand, "available": after}),
            },
        )?;
        alert_event(db, product_id, before, after, request_id)?;
        Ok(())
    })
}

pub fn set_threshold(db: &Database, product_id: &str, threshold: i64) -> Result<(), Problem> {
    db.execute(
        "INSERT INTO stock_thresholds (product_id, threshold) VALUES (?, ?) \
         ON CONFLICT (product_id) DO UPDATE SET threshold = excluded.threshold",
        &[product_id.into(), threshold.into()],
    )?;
    Ok(())
}

fn reservation_lines(db: &Database, id: &str) -> Result<Vec<ReservationLine>, DbError> {
    db.query(
        "SELECT product_id, warehouse_id, quantity FROM reservation_lines \
         WHERE reservation_id = ? ORDER BY product_id, warehouse_id",
        &[id.into()],
    )?
    .iter()
    .map(|r| {
        Ok(ReservationLine {
            product_id: r.text("product_id")?,
            warehouse_id: r.text("warehouse_id")?,
            quantity: r.i64("quantity")?,
        })
    })
    .collect()
}

pub fn reservation(db: &Database, id: &str) -> Result<Option<ReservationView>, DbError> {
    let Some(row) = db.query_opt(
        "SELECT state, expires_at FROM reservations WHERE id = ?",
        &[id.into()],
    )?
    else {
        return Ok(None);
    };
    let state = ReservationState::parse(&row.text("state")?)
        .ok_or_else(|| DbError::Decode("reservation state".into()))?;
    Ok(Some(ReservationView {
        reservation_id: id.to_owned(),
        state: state.as_str(),
        expires_at: bazaar_platform::time::millis_to_rfc3339(row.i64("expires_at")?),
        lines: reservation_lines(db, id)?,
    }))
}

/// Reserves every item or nothing. Repeating a call with the same `id` returns the existing
/// reservation (the checkout saga retries safely).
pub fn reserve(
    db: &Database,
    id: &str,
    items: &[(String, i64)],
    ttl_ms: i64,
    request_id: Option<&str>,
) -> Result<ReservationView, ReserveError> {
    let now = bazaar_platform::time::now_millis();
    db.transaction(|db| {
        if let Some(existing) = reservation(db, id)? {
            return match existing.state {
                "held" | "committed" => Ok(existing),
                other => Err(ReserveError::Finished(if other == "released" {
                    "released"
                } else {
                    "expired"
                })),
            };
        }
        // Lock rows in one global order (product id) so two checkouts never deadlock.
        let mut items: Vec<(String, i64)> = items.to_vec();
        items.sort();
        let products: Vec<String> = items.iter().map(|(p, _)| p.clone()).collect();
        for product in &products {
            release_expired(db, Some(product), now, request_id)?;
        }
        let mut lines = Vec::new();
        for (product_id, quantity) in &items {
            let rows = warehouse_rows(db, product_id, true)?;
            let before = available(&rows);
            let allocations: Vec<Allocation> =
                domain::allocate(&rows, *quantity).map_err(|o| ReserveError::OutOfStock {
                    product_id: product_id.clone(),
                    requested: o.requested,
                    available: o.available,
                })?;
            for a in &allocations {
                let changed = db.execute(
                    "UPDATE stock SET reserved = reserved + ?, updated_at = ? \
                     WHERE product_id = ? AND warehouse_id = ? AND on_hand - reserved >= ?",
                    &[
                        a.quantity.into(),
                        now.into(),
                        product_id.into(),
                        a.warehouse_id.clone().into(),
                        a.quantity.into(),
                    ],
                )?;
                if changed != 1 {
                    // Unreachable while the rows are locked; refuse rather than oversell.
                    return Err(ReserveError::OutOfStock {
                        product_id: product_id.clone(),
                        requested: *quantity,
                        available: before,
                    });
                }
                db.execute(
                    "INSERT INTO reservation_lines (reservation_id, product_id, warehouse_id, quantity) \
                     VALUES (?, ?, ?, ?)",
                    &[
                        id.into(),
                        product_id.into(),
                        a.warehouse_id.clone().into(),
                        a.quantity.into(),
                    ],
                )?;
                lines.push(ReservationLine {
                    product_id: product_id.clone(),
                    warehouse_id: a.warehouse_id.clone(),
                    quantity: a.quantity,
                });
            }
            alert_event(db, product_id, before, before - quantity, request_id)?;
        }
        let expires_at = now + ttl_ms;
        db.execute(
            "INSERT INTO reservations (id, state, expires_at, created_at, updated_at) \
             VALUES (?, 'held', ?, ?, ?)",
            &[id.into(), expires_at.into(), now.into(), now.into()],
        )?;
        outbox::append(
            db,
            NewEvent {
                channel: CHANNEL,
                event_type: "inventory.reserved",
                source: SOURCE,
                aggregate_id: id,
                version: 1,
                request_id,
                data: json!({"reservation_id": id, "lines": lines,
                             "expires_at": bazaar_platform::time::millis_to_rfc3339(expires_at)}),
            },
        )?;
        Ok(ReservationView {
            reservation_id: id.to_owned(),
            state: "held",
            expires_at: bazaar_platform::time::millis_to_rfc3339(expires_at),
            lines,
        })
    })
}

/// Ends a held reservation: `commit` takes the units off the shelf (payment succeeded),
/// otherwise they return to available stock (`released`, or `expired` from the sweep).
fn finish(
    db: &Database,
    id: &str,
    end_state: ReservationState,
    request_id: Option<&str>,
) -> Result<ReservationView, Problem> {
    let commit = end_state == ReservationState::Committed;
    let now = bazaar_platform::time::now_millis();
    let row = db
        .query_opt(
            &format!(
                "SELECT state FROM reservations WHERE id = ?{}",
                db.for_update()
            ),
            &[id.into()],
        )?
        .ok_or_else(|| Problem::not_found("No such reservation"))?;
    let state = ReservationState::parse(&row.text("state")?)
        .ok_or_else(|| Problem::internal("Unknown reservation state"))?;
    let transition = match end_state {
        ReservationState::Committed => domain::commit_transition(state),
        ReservationState::Returned => domain::return_transition(state),
        _ => domain::release_transition(state),
    };
    match transition {
        Transition::AlreadyDone => {}
        Transition::Illegal => {
            return Err(Problem::conflict(format!(
                "The reservation is {}; it cannot be {}",
                state.as_str(),
                end_state.as_str()
            )));
        }
        Transition::Apply => {
            let lines = reservation_lines(db, id)?;
            let mut products: Vec<&str> = lines.iter().map(|l| l.product_id.as_str()).collect();
            products.dedup();
            let mut before = Vec::new();
            for product in &products {
                before.push(available(&warehouse_rows(db, product, true)?));
            }
            for line in &lines {
                let target: [bazaar_platform::Value; 3] = [
                    now.into(),
                    line.product_id.clone().into(),
                    line.warehouse_id.clone().into(),
                ];
                if end_state == ReservationState::Returned {
                    // Back on the shelf of the warehouse they left.
                    db.execute(
                        "UPDATE stock SET on_hand = on_hand + ?, updated_at = ? \
                         WHERE product_id = ? AND warehouse_id = ?",
                        &[&[line.quantity.into()][..], &target[..]].concat(),
                    )?;
                } else if commit {
                    // Sold: the units leave both the shelf and the reservation.
                    db.execute(
                        "UPDATE stock SET on_hand = on_hand - ?, reserved = reserved - ?, \
                         updated_at = ? WHERE product_id = ? AND warehouse_id = ?",
                        &[
                            &[line.quantity.into(), line.quantity.into()][..],
                            &target[..],
                        ]
                        .concat(),
                    )?;
                } else {
                    db.execute(
                        "UPDATE stock SET reserved = reserved - ?, updated_at = ? \
                         WHERE product_id = ? AND warehouse_id = ?",
                        &[&[line.quantity.into()][..], &target[..]].concat(),
                    )?;
                }
            }
            db.execute(
                "UPDATE reservations SET state = ?, updated_at = ? WHERE id = ?",
                &[end_state.as_str().into(), now.into(), id.into()],
            )?;
            outbox::append(
                db,
                NewEvent {
                    channel: CHANNEL,
                    event_type: match end_state {
                        ReservationState::Committed => "inventory.committed",
                        ReservationState::Expired => "inventory.expired",
                        ReservationState::Returned => "inventory.returned",
                        _ => "inventory.released",
                    },
                    source: SOURCE,
                    aggregate_id: id,
                    version: 2,
                    request_id,
                    data: json!({"reservation_id": id, "lines": lines}),
                },
            )?;
            if !commit {
                for (product, before) in products.iter().zip(before) {
                    let after = available(&warehouse_rows(db, product, false)?);
                    alert_event(db, product, before, after, request_id)?;
                }
            }
        }
    }
    reservation(db, id)?.ok_or_else(|| Problem::not_found("No such reservation"))
}

pub fn commit(
    db: &Database,
    id: &str,
    request_id: Option<&str>,
) -> Result<ReservationView, Problem> {
    db.transaction(|db| finish(db, id, ReservationState::Committed, request_id))
}

/// Puts a committed reservation's units back on the shelf (order cancelled after payment).
pub fn return_stock(
    db: &Database,
    id: &str,
    request_id: Option<&str>,
) -> Result<ReservationView, Problem> {
    db.transaction(|db| finish(db, id, ReservationState::Returned, request_id))
}

pub fn release(
    db: &Database,
    id: &str,
    request_id: Option<&str>,
) -> Result<ReservationView, Problem> {
    db.transaction(|db| finish(db, id, ReservationState::Released, request_id))
}

/// Expires held reservations whose time is up (all of them, or those touching `product`).
/// Runs inside the caller's transaction. Returns how many expired.
pub fn release_expired(
    db: &Database,
    product: Option<&str>,
    now: i64,
    request_id: Option<&str>,
) -> Result<usize, Problem> {
    let ids: Vec<String> = match product {
        Some(product) => db.query(
            "SELECT DISTINCT r.id AS id FROM reservations r \
             JOIN reservation_lines l ON l.reservation_id = r.id \
             WHERE r.state = 'held' AND r.expires_at <= ? AND l.product_id = ? ORDER BY r.id",
            &[now.into(), product.into()],
        )?,
        None => db.query(
            "SELECT id FROM reservations WHERE state = 'held' AND expires_at <= ? ORDER BY id LIMIT 500",
            &[now.into()],
        )?,
    }
    .iter()
    .map(|r| r.text("id"))
    .collect::<Result<_, _>>()?;
    for id in &ids {
        finish(db, id, ReservationState::Expired, request_id)?;
    }
    Ok(ids.len())
}

/// Validation of a reservation request's items (merged per product).
pub fn parse_items(raw: &[(String, i64)]) -> Result<Vec<(String, i64)>, Problem> {
    if raw.is_empty() || raw.len() > 100 {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "items",
            "must list 1 to 100 items",
        )]));
    }
    let mut merged: Vec<(String, i64)> = Vec::new();
    for (i, (product, quantity)) in raw.iter().enumerate() {
        if domain::parse_id(product).is_none() {
            return Err(Problem::unprocessable(vec![FieldError::new(
                format!("items[{i}].product_id"),
                "is not a valid product id",
            )]));
        }
        if !(1..=10_000).contains(quantity) {
            return Err(Problem::unprocessable(vec![FieldError::new(
                format!("items[{i}].quantity"),
                "must be from 1 to 10000",
            )]));
        }
        match merged.iter_mut().find(|(p, _)| p == product) {
            Some((_, q)) => *q += quantity,
            None => merged.push((product.clone(), *quantity)),
        }
    }
    Ok(merged)
}
