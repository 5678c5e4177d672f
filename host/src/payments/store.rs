//! Payment state in SQLite (host-side, rusqlite): saved payment methods (sealed card numbers),
//! payments, fraud decisions, idempotency records, processed webhook events and the outbox.
//! One connection behind a mutex: the payment host's write rate is tiny next to SQLite's, and
//! single-writer keeps every read-modify-write atomic.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::domain::Status;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS payment_methods (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    brand TEXT,
    last4 TEXT,
    bin_country TEXT,
    exp_month INTEGER,
    exp_year INTEGER,
    holder_name TEXT,
    key_id TEXT,
    sealed BLOB,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    method_token TEXT NOT NULL,
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount INTEGER NOT NULL,
    authorized INTEGER NOT NULL DEFAULT 0,
    captured INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    provider_ref TEXT,
    next_action TEXT,
    expires_at INTEGER,
    failure_code TEXT,
    failure_message TEXT,
    client_addr TEXT,
    fraud_score INTEGER,
    fraud_decision TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_user ON payments (user_id, created_at);
CREATE INDEX IF NOT EXISTS payments_method ON payments (method_token, created_at);
CREATE INDEX IF NOT EXISTS payments_addr ON payments (client_addr, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS payments_provider_ref ON payments (provider, provider_ref);
CREATE TABLE IF NOT EXISTS fraud_decisions (
    payment_id TEXT PRIMARY KEY,
    score INTEGER NOT NULL,
    decision TEXT NOT NULL,
    reasons TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS webhook_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payment_id TEXT,
    kind TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    published_at INTEGER
);
"#;

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone)]
pub struct MethodRow {
    pub token: String,
    pub user_id: String,
    pub provider: String,
    pub brand: Option<String>,
    pub last4: Option<String>,
    pub bin_country: Option<String>,
    pub exp_month: Option<u8>,
    pub exp_year: Option<u16>,
    pub holder_name: Option<String>,
    pub key_id: Option<String>,
    pub sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: String,
    pub user_id: String,
    pub order_id: String,
    pub provider: String,
    pub method_token: String,
    pub status: Status,
    pub currency: String,
    pub amount: u64,
    pub authorized: u64,
    pub captured: u64,
    pub refunded: u64,
    pub provider_ref: Option<String>,
    pub next_action: Option<String>,
    pub expires_at: Option<i64>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub client_addr: Option<String>,
    pub fraud_score: Option<u32>,
    pub fraud_decision: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What an idempotency claim found.
pub enum Claim {
    /// No earlier request: this one owns the key now.
    New,
    /// The same request finished before: replay its answer.
    Replay { status: u16, body: String },
    /// The same key with a different request.
    Mismatch,
    /// The same request is still being processed.
    InFlight,
    /// The first request with this key died mid-flight (its claim outlived any request's
    /// deadline without an answer): this request takes the claim over and finishes the work.
    TakeOver,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const PAYMENT_COLUMNS: &str = "id, user_id, order_id, provider, method_token, status, currency, amount, authorized, captured, refunded, provider_ref, next_action, expires_at, failure_code, failure_message, client_addr, fraud_score, fraud_decision, created_at, updated_at";

fn payment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentRow> {
    let status: String = row.get(5)?;
    Ok(PaymentRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        order_id: row.get(2)?,
        provider: row.get(3)?,
        method_token: row.get(4)?,
        status: Status::parse(&status).unwrap_or(Status::Failed),
        currency: row.get(6)?,
        amount: to_u64(row.get(7)?),
        authorized: to_u64(row.get(8)?),
        captured: to_u64(row.get(9)?),
        refunded: to_u64(row.get(10)?),
        provider_ref: row.get(11)?,
        next_action: row.get(12)?,
        expires_at: row.get(13)?,
        failure_code: row.get(14)?,
        failure_message: row.get(15)?,
        client_addr: row.get(16)?,
        fraud_score: row.get::<_, Option<i64>>(17)?.map(|v| v as u32),
        fraud_decision: row.get(18)?,
        created_at: row.get(19)?,
        updated_at: row.get(20)?,
    })
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening payment database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)
            .context("creating the payment schema")?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(anyhow::Error::from)
    }

    pub fn ping(&self) -> anyhow::Result<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    pub fn insert_method(&self, m: &MethodRow, now: i64) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO payment_methods (token, user_id, provider, brand, last4, bin_country, exp_month, exp_year, holder_name, key_id, sealed, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![m.token, m.user_id, m.provider, m.brand, m.last4, m.bin_country, m.exp_month, m.exp_year, m.holder_name, m.key_id, m.sealed, now],
            )
            .map(|_| ())
        })
    }

    pub fn method(&self, token: &str) -> anyhow::Result<Option<MethodRow>> {
        self.with(|c| {
            c.query_row(
                "SELECT token, user_id, provider, brand, last4, bin_country, exp_month, exp_year, holder_name, key_id, sealed FROM payment_methods WHERE token = ?1",
                [token],
                |r| {
                    Ok(MethodRow {
                        token: r.get(0)?,
                        user_id: r.get(1)?,
                        provider: r.get(2)?,
                        brand: r.get(3)?,
                        last4: r.get(4)?,
                        bin_country: r.get(5)?,
                        exp_month: r.get(6)?,
                        exp_year: r.get(7)?,
                        holder_name: r.get(8)?,
                        key_id: r.get(9)?,
                        sealed: r.get(10)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn insert_payment(&self, p: &PaymentRow) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"),
                params![
                    p.id, p.user_id, p.order_id, p.provider, p.method_token, p.status.as_str(), p.currency,
                    to_i64(p.amount), to_i64(p.authorized), to_i64(p.captured), to_i64(p.refunded),
                    p.provider_ref, p.next_action, p.expires_at, p.failure_code, p.failure_message,
                    p.client_addr, p.fraud_score, p.fraud_decision, p.created_at, p.updated_at
                ],
            )
            .map(|_| ())
        })
    }

    /// The payment a create that died mid-authorization left behind: created for this order,
    /// method and amount, never answered by the provider. Reusing it (and so its id, the
    /// provider's idempotency key) makes the retried authorization the same one, not a second.
    pub fn abandoned_authorization(
        &self,
        user_id: &str,
        order_id: &str,
        method_token: &str,
        amount: u64,
        currency: &str,
    ) -> anyhow::Result<Option<PaymentRow>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE user_id = ?1 AND order_id = ?2 \
                     AND method_token = ?3 AND amount = ?4 AND currency = ?5 \
                     AND status = 'requires_authorization' AND provider_ref IS NULL \
                     ORDER BY created_at DESC LIMIT 1"
                ),
                params![user_id, order_id, method_token, to_i64(amount), currency],
                payment_from_row,
            )
            .optional()
        })
    }

    pub fn payment(&self, id: &str) -> anyhow::Result<Option<PaymentRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"),
                [id],
                payment_from_row,
            )
            .optional()
        })
    }

    pub fn payment_by_ref(
        &self,
        provider: &str,
        reference: &str,
    ) -> anyhow::Result<Option<PaymentRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = ?1 AND provider_ref = ?2"),
                [provider, reference],
                payment_from_row,
            )
            .optional()
        })
    }

    /// Writes the payment's mutable fields and queues `event` (if any) on the outbox in the same
    /// transaction, so an event exists exactly when its state change does.
    pub fn update_payment(
        &self,
        p: &PaymentRow,
        event: Option<&serde_json::Value>,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE payments SET status = ?2, authorized = ?3, captured = ?4, refunded = ?5, provider_ref = ?6, next_action = ?7, expires_at = ?8, failure_code = ?9, failure_message = ?10, fraud_score = ?11, fraud_decision = ?12, updated_at = ?13 WHERE id = ?1",
                params![
                    p.id, p.status.as_str(), to_i64(p.authorized), to_i64(p.captured), to_i64(p.refunded),
                    p.provider_ref, p.next_action, p.expires_at, p.failure_code, p.failure_message,
                    p.fraud_score, p.fraud_decision, p.updated_at
                ],
            )?;
            if let Some(event) = event {
                tx.execute(
                    "INSERT INTO outbox (channel, payload, created_at) VALUES ('payments', ?1, ?2)",
                    params![event.to_string(), p.updated_at],
                )?;
            }
            tx.commit()
        })
    }

    pub fn insert_fraud_decision(
        &self,
        payment_id: &str,
        score: u32,
        decision: &str,
        reasons: &serde_json::Value,
        now: i64,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO fraud_decisions (payment_id, score, decision, reasons, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![payment_id, score, decision, reasons.to_string(), now],
            )
            .map(|_| ())
        })
    }

    pub fn fraud_decision(
        &self,
        payment_id: &str,
    ) -> anyhow::Result<Option<(u32, String, serde_json::Value)>> {
        self.with(|c| {
            c.query_row(
                "SELECT score, decision, reasons FROM fraud_decisions WHERE payment_id = ?1",
                [payment_id],
                |r| {
                    let reasons: String = r.get(2)?;
                    Ok((
                        r.get::<_, i64>(0)? as u32,
                        r.get(1)?,
                        serde_json::from_str(&reasons).unwrap_or(serde_json::Value::Null),
                    ))
                },
            )
            .optional()
        })
    }

    /// Counts of earlier attempts for the fraud model: (by user in the last hour, by card in the
    /// last hour, by client address in the last hour, failures by user in the last day) and the
    /// user's earlier successful amounts.
    pub fn fraud_history(
        &self,
        user_id: &str,
        token: &str,
        client_addr: Option<&str>,
        now: i64,
    ) -> anyhow::Result<(u64, u64, u64, u64, Vec<u64>)> {
        let hour = now - 3_600_000;
        let day = now - 86_400_000;
        self.with(|c| {
            let count = |sql: &str, a: &str, since: i64| -> rusqlite::Result<u64> {
                c.query_row(sql, params![a, since], |r| r.get::<_, i64>(0)).map(to_u64)
            };
            let by_user = count("SELECT COUNT(*) FROM payments WHERE user_id = ?1 AND created_at >= ?2", user_id, hour)?;
            let by_card = count("SELECT COUNT(*) FROM payments WHERE method_token = ?1 AND created_at >= ?2", token, hour)?;
            let by_addr = match client_addr {
                Some(addr) => count("SELECT COUNT(*) FROM payments WHERE client_addr = ?1 AND created_at >= ?2", addr, hour)?,
                None => 0,
            };
            let failures = count("SELECT COUNT(*) FROM payments WHERE user_id = ?1 AND status = 'failed' AND created_at >= ?2", user_id, day)?;
            let mut stmt = c.prepare(
                "SELECT amount FROM payments WHERE user_id = ?1 AND status IN ('authorized','captured','partially_refunded','refunded') ORDER BY created_at DESC LIMIT 50",
            )?;
            let history = stmt
                .query_map([user_id], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u64))
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            Ok((by_user, by_card, by_addr, failures, history))
        })
    }

    /// Claims `key` in `scope` for a request whose canonical hash is `hash`.
    pub fn claim_idempotency(
        &self,
        scope: &str,
        key: &str,
        hash: &str,
        now: i64,
        abandoned_after_ms: i64,
    ) -> anyhow::Result<Claim> {
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<(String, Option<i64>, Option<String>, i64)> = tx
                .query_row(
                    "SELECT request_hash, status, body, created_at FROM idempotency WHERE scope = ?1 AND key = ?2",
                    [scope, key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let claim = match existing {
                None => {
                    tx.execute(
                        "INSERT INTO idempotency (scope, key, request_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![scope, key, hash, now],
                    )?;
                    Claim::New
                }
                Some((h, _, _, _)) if h != hash => Claim::Mismatch,
                Some((_, Some(status), Some(body), _)) => Claim::Replay { status: status as u16, body },
                Some((_, _, _, claimed_at)) if now - claimed_at >= abandoned_after_ms => {
                    // Compare-and-set on the claim time: of several retries, one takes over.
                    let taken = tx.execute(
                        "UPDATE idempotency SET created_at = ?3 WHERE scope = ?1 AND key = ?2 AND status IS NULL AND created_at = ?4",
                        params![scope, key, now, claimed_at],
                    )?;
                    if taken == 1 { Claim::TakeOver } else { Claim::InFlight }
                }
                Some(_) => Claim::InFlight,
            };
            tx.commit()?;
            Ok(claim)
        })
    }

    pub fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE idempotency SET status = ?3, body = ?4 WHERE scope = ?1 AND key = ?2",
                params![scope, key, i64::from(status), body],
            )
            .map(|_| ())
        })
    }

    /// Forgets a claim whose request failed in a way worth retrying (e.g. a 5xx).
    pub fn release_idempotency(&self, scope: &str, key: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM idempotency WHERE scope = ?1 AND key = ?2",
                [scope, key],
            )
            .map(|_| ())
        })
    }

    /// Records a webhook event id; `false` when it was seen before (a replay or duplicate).
    pub fn record_webhook(
        &self,
        provider: &str,
        event_id: &str,
        payment_id: Option<&str>,
        kind: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO webhook_events (provider, event_id, payment_id, kind, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![provider, event_id, payment_id, kind, now],
            )
            .map(|n| n == 1)
        })
    }

    pub fn unpublished(&self, limit: usize) -> anyhow::Result<Vec<(i64, String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT seq, channel, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?1")?;
            stmt.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }

    pub fn mark_published(&self, seq: i64, now: i64) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET published_at = ?2 WHERE seq = ?1",
                params![seq, now],
            )
            .map(|_| ())
        })
    }

    pub fn events_for(&self, payment_id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT payload FROM outbox WHERE json_extract(payload, '$.payment_id') = ?1 ORDER BY seq")?;
            stmt.query_map([payment_id], |r| r.get::<_, String>(0))?
                .map(|r| r.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_claim_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("payments.db")).unwrap();
        let claim = |now| {
            store
                .claim_idempotency("create:u", "k", "h", now, 30_000)
                .unwrap()
        };
        assert!(matches!(claim(1_000), Claim::New));
        assert!(
            matches!(claim(20_000), Claim::InFlight),
            "still within any deadline"
        );
        assert!(
            matches!(claim(31_000), Claim::TakeOver),
            "the first attempt died"
        );
        assert!(
            matches!(claim(32_000), Claim::InFlight),
            "the takeover holds the claim now"
        );
        assert!(matches!(
            store
                .claim_idempotency("create:u", "k", "other", 99_000, 30_000)
                .unwrap(),
            Claim::Mismatch
        ));
        store
            .complete_idempotency("create:u", "k", 201, "{}")
            .unwrap();
        assert!(matches!(claim(200_000), Claim::Replay { status: 201, .. }));
    }
}
