//! Payment state in the component's SQL database (SQLite locally, PostgreSQL in a cluster):
//! saved payment methods (sealed card numbers, never the number itself), payments, fraud
//! decisions, processed webhook events, plus the platform's idempotency and outbox tables.
//!
//! Every state change of a payment is written together with its outbox event (and, when the
//! request carries an `Idempotency-Key`, with its replayable answer) in one transaction, so a
//! crash can never leave an effect without its event or its answer.

use bazaar_platform::db::{Database, DbError, Migration, Row, Value};
use bazaar_platform::idempotency;
use bazaar_platform::outbox::{self, NewEvent};
use serde_json::json;

use crate::domain::Status;

/// The producer name in event envelopes (the component id in the payment host's manifest).
pub const SOURCE: &str = "payment-core";
/// The Redis channel payment events go to.
pub const CHANNEL: &str = "payments";

/// Migration 1's schema, the same on both engines except the sealed card number's column type
/// (`BLOB` on SQLite, `BYTEA` on PostgreSQL), which goes between `head` and `tail`.
macro_rules! payment_core_v1_schema {
    (head) => {
        "CREATE TABLE payment_methods (
  token TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  brand TEXT,
  last4 TEXT,
  bin_country TEXT,
  exp_month BIGINT,
  exp_year BIGINT,
  holder_name TEXT,
  key_id TEXT,
  sealed "
    };
    (tail) => {
        ",
  created_at BIGINT NOT NULL
);
CREATE TABLE payments (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  order_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  method_token TEXT NOT NULL,
  status TEXT NOT NULL,
  currency TEXT NOT NULL,
  amount BIGINT NOT NULL,
  authorized BIGINT NOT NULL,
  captured BIGINT NOT NULL,
  refunded BIGINT NOT NULL,
  provider_ref TEXT,
  next_action TEXT,
  expires_at BIGINT,
  failure_code TEXT,
  failure_message TEXT,
  client_addr TEXT,
  fraud_score BIGINT,
  fraud_decision TEXT,
  version BIGINT NOT NULL,
  lease_until BIGINT,
  lease_holder TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX payments_user ON payments (user_id, created_at);
CREATE INDEX payments_method ON payments (method_token, created_at);
CREATE INDEX payments_addr ON payments (client_addr, created_at);
CREATE INDEX payments_order ON payments (user_id, order_id, status);
CREATE UNIQUE INDEX payments_provider_ref ON payments (provider, provider_ref);
CREATE TABLE fraud_decisions (
  payment_id TEXT PRIMARY KEY,
  score BIGINT NOT NULL,
  decision TEXT NOT NULL,
  reasons TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE webhook_events (
  provider TEXT NOT NULL,
  event_id TEXT NOT NULL,
  payment_id TEXT,
  kind TEXT NOT NULL,
  received_at BIGINT NOT NULL,
  PRIMARY KEY (provider, event_id)
);"
    };
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "payment methods, payments, fraud decisions, webhook events",
        sqlite: concat!(
            payment_core_v1_schema!(head),
            "BLOB",
            payment_core_v1_schema!(tail)
        ),
        postgres: concat!(
            payment_core_v1_schema!(head),
            "BYTEA",
            payment_core_v1_schema!(tail)
        ),
    },
    idempotency::migration(2),
    outbox::migration(3),
    // `GET /api/v1/payments/{id}/events` reads one payment's events.
    Migration::portable(
        4,
        "outbox by aggregate",
        "CREATE INDEX outbox_aggregate ON outbox (aggregate_id, position);",
    ),
    // Catch-up positions in commit order (see bazaar_platform::outbox).
    outbox::migration_v2(5),
    // A wallet method's vaulted wallet id, or NULL for a payer who approves at the wallet each
    // time. Wallet methods saved before this column were all vaulted (`payer-<user>`).
    Migration::portable(
        6,
        "wallet payer of a payment method",
        "ALTER TABLE payment_methods ADD COLUMN wallet_payer TEXT;
UPDATE payment_methods SET wallet_payer = 'payer-' || user_id WHERE provider = 'wallet';",
    ),
];

#[derive(Debug, Clone, PartialEq)]
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
    /// A wallet method's vaulted wallet id (the payer need not be present); `None` when the
    /// payer approves every payment at the wallet.
    pub wallet_payer: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
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
    /// Events written for this payment so far (the envelope's `version` of the last one).
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An `Idempotency-Key` claim this request holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: String,
    pub key: String,
    pub token: idempotency::ClaimToken,
    /// Set once a committed transaction settled the claim together with its effect, so the
    /// request's end does not write the claim a second time.
    pub settled: std::cell::Cell<bool>,
}

impl Claim {
    pub fn new(scope: String, key: String, token: idempotency::ClaimToken) -> Claim {
        Claim {
            scope,
            key,
            token,
            settled: std::cell::Cell::new(false),
        }
    }
}

/// What becomes of a claim when its request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Store the answer for replays.
    Complete { status: u16, body: String },
    /// Forget the claim: the answer tells the client to retry with the same key.
    Release,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const PAYMENT_COLUMNS: &str = "id, user_id, order_id, provider, method_token, status, currency, amount, authorized, captured, refunded, provider_ref, next_action, expires_at, failure_code, failure_message, client_addr, fraud_score, fraud_decision, version, created_at, updated_at";

fn payment_from_row(row: &Row) -> Result<PaymentRow, DbError> {
    let status = row.text("status")?;
    Ok(PaymentRow {
        id: row.text("id")?,
        user_id: row.text("user_id")?,
        order_id: row.text("order_id")?,
        provider: row.text("provider")?,
        method_token: row.text("method_token")?,
        status: Status::parse(&status)
            .ok_or_else(|| DbError::Decode(format!("unknown payment status `{status}`")))?,
        currency: row.text("currency")?,
        amount: to_u64(row.i64("amount")?),
        authorized: to_u64(row.i64("authorized")?),
        captured: to_u64(row.i64("captured")?),
        refunded: to_u64(row.i64("refunded")?),
        provider_ref: row.opt_text("provider_ref")?,
        next_action: row.opt_text("next_action")?,
        expires_at: row.opt_i64("expires_at")?,
        failure_code: row.opt_text("failure_code")?,
        failure_message: row.opt_text("failure_message")?,
        client_addr: row.opt_text("client_addr")?,
        fraud_score: row.opt_i64("fraud_score")?.map(|v| v as u32),
        fraud_decision: row.opt_text("fraud_decision")?,
        version: row.i64("version")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
    })
}

fn opt_blob(row: &Row, column: &str) -> Result<Option<Vec<u8>>, DbError> {
    match row.value(column)? {
        Value::Null => Ok(None),
        Value::Blob(b) => Ok(Some(b.clone())),
        other => Err(DbError::Decode(format!(
            "column `{column}` holds {other:?}, not bytes"
        ))),
    }
}

pub fn insert_method(db: &Database, m: &MethodRow, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO payment_methods (token, user_id, provider, brand, last4, bin_country, \
         exp_month, exp_year, holder_name, key_id, sealed, wallet_payer, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            m.token.as_str().into(),
            m.user_id.as_str().into(),
            m.provider.as_str().into(),
            m.brand.clone().into(),
            m.last4.clone().into(),
            m.bin_country.clone().into(),
            m.exp_month.map(i64::from).into(),
            m.exp_year.map(i64::from).into(),
            m.holder_name.clone().into(),
            m.key_id.clone().into(),
            m.sealed.clone().into(),
            m.wallet_payer.clone().into(),
            now.into(),
        ],
    )?;
    Ok(())
}

pub fn method(db: &Database, token: &str) -> Result<Option<MethodRow>, DbError> {
    let Some(r) = db.query_opt(
        "SELECT token, user_id, provider, brand, last4, bin_country, exp_month, exp_year, \
         holder_name, key_id, sealed, wallet_payer FROM payment_methods WHERE token = ?",
        &[token.into()],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(MethodRow {
        token: r.text("token")?,
        user_id: r.text("user_id")?,
        provider: r.text("provider")?,
        brand: r.opt_text("brand")?,
        last4: r.opt_text("last4")?,
        bin_country: r.opt_text("bin_country")?,
        exp_month: r.opt_i64("exp_month")?.and_then(|v| u8::try_from(v).ok()),
        exp_year: r.opt_i64("exp_year")?.and_then(|v| u16::try_from(v).ok()),
        holder_name: r.opt_text("holder_name")?,
        key_id: r.opt_text("key_id")?,
        sealed: opt_blob(&r, "sealed")?,
        wallet_payer: r.opt_text("wallet_payer")?,
    }))
}

/// Inserts a new payment already leased by `lease_holder` until `lease_until`, with its fraud
/// decision, in one transaction.
pub fn insert_payment(
    db: &Database,
    p: &PaymentRow,
    lease_holder: &str,
    lease_until: i64,
    reasons: &serde_json::Value,
) -> Result<(), DbError> {
    db.transaction(|db| {
        db.execute(
            &format!(
                "INSERT INTO payments ({PAYMENT_COLUMNS}, lease_until, lease_holder) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            &[
                p.id.as_str().into(),
                p.user_id.as_str().into(),
                p.order_id.as_str().into(),
                p.provider.as_str().into(),
                p.method_token.as_str().into(),
                p.status.as_str().into(),
                p.currency.as_str().into(),
                to_i64(p.amount).into(),
                to_i64(p.authorized).into(),
                to_i64(p.captured).into(),
                to_i64(p.refunded).into(),
                p.provider_ref.clone().into(),
                p.next_action.clone().into(),
                p.expires_at.into(),
                p.failure_code.clone().into(),
                p.failure_message.clone().into(),
                p.client_addr.clone().into(),
                p.fraud_score.into(),
                p.fraud_decision.clone().into(),
                p.version.into(),
                p.created_at.into(),
                p.updated_at.into(),
                lease_until.into(),
                lease_holder.into(),
            ],
        )?;
        if let (Some(score), Some(decision)) = (p.fraud_score, &p.fraud_decision) {
            db.execute(
                "INSERT INTO fraud_decisions (payment_id, score, decision, reasons, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
                &[
                    p.id.as_str().into(),
                    score.into(),
                    decision.as_str().into(),
                    reasons.to_string().into(),
                    p.created_at.into(),
                ],
            )?;
        }
        Ok(())
    })
}

/// A payment whose authorization has no definite answer yet (never reached the provider's
/// answer: the request died, or the provider was unavailable) for this user, order, method and
/// amount. Reusing it — and so its id, the provider's idempotency key — makes a retried
/// authorization the same one at the provider, never a second.
pub fn unanswered_authorization(
    db: &Database,
    user_id: &str,
    order_id: &str,
    method_token: &str,
    amount: u64,
    currency: &str,
) -> Result<Option<PaymentRow>, DbError> {
    db.query_opt(
        &format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE user_id = ? AND order_id = ? \
             AND method_token = ? AND amount = ? AND currency = ? \
             AND status = 'requires_authorization' AND provider_ref IS NULL \
             ORDER BY created_at DESC LIMIT 1"
        ),
        &[
            user_id.into(),
            order_id.into(),
            method_token.into(),
            to_i64(amount).into(),
            currency.into(),
        ],
    )?
    .map(|r| payment_from_row(&r))
    .transpose()
}

pub fn payment(db: &Database, id: &str) -> Result<Option<PaymentRow>, DbError> {
    db.query_opt(
        &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?"),
        &[id.into()],
    )?
    .map(|r| payment_from_row(&r))
    .transpose()
}

pub fn payment_by_ref(
    db: &Database,
    provider: &str,
    reference: &str,
) -> Result<Option<PaymentRow>, DbError> {
    db.query_opt(
        &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = ? AND provider_ref = ?"),
        &[provider.into(), reference.into()],
    )?
    .map(|r| payment_from_row(&r))
    .transpose()
}

/// Takes the payment's lease for `holder` until `until` if nobody holds an unexpired one.
/// This serialises operations on one payment across instances (capture racing refund, a
/// webhook racing a void); `false` when another request holds it.
pub fn take_lease(
    db: &Database,
    id: &str,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, DbError> {
    let taken = db.execute(
        "UPDATE payments SET lease_until = ?, lease_holder = ? \
         WHERE id = ? AND (lease_until IS NULL OR lease_until < ?)",
        &[until.into(), holder.into(), id.into(), now.into()],
    )?;
    Ok(taken == 1)
}

/// Gives the lease back, unless it lapsed and another request holds it now.
pub fn release_lease(db: &Database, id: &str, holder: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET lease_until = NULL, lease_holder = NULL \
         WHERE id = ? AND lease_holder = ?",
        &[id.into(), holder.into()],
    )?;
    Ok(())
}

/// The event a state change publishes: the payment's fields as `data`, in the platform envelope.
pub fn event_name(status: Status) -> &'static str {
    match status {
        Status::RequiresAuthorization => "payment.requires_action",
        Status::Authorized => "payment.authorized",
        Status::Captured => "payment.captured",
        Status::PartiallyRefunded | Status::Refunded => "payment.refunded",
        Status::Voided => "payment.voided",
        Status::Failed => "payment.failed",
    }
}

pub fn event_data(p: &PaymentRow) -> serde_json::Value {
    let money = |amount: u64| json!({"amount": amount, "currency": p.currency});
    json!({
        "type": event_name(p.status),
        "payment_id": p.id,
        "order_id": p.order_id,
        "user_id": p.user_id,
        "provider": p.provider,
        "status": p.status.as_str(),
        "amount": money(p.amount),
        "captured": money(p.captured),
        "refunded": money(p.refunded),
        "failure_code": p.failure_code,
        "occurred_at": bazaar_platform::time::millis_to_rfc3339(p.updated_at),
    })
}

/// Writes the payment's mutable fields; with `emit`, bumps its version and appends its event to
/// the outbox; with `settle`, settles the request's idempotency claim — all in one transaction.
pub fn save(
    db: &Database,
    p: &mut PaymentRow,
    emit: bool,
    request_id: Option<&str>,
    settle: Option<(&Claim, &Settle)>,
) -> Result<(), DbError> {
    let version = if emit { p.version + 1 } else { p.version };
    db.transaction(|db| {
        db.execute(
            "UPDATE payments SET status = ?, authorized = ?, captured = ?, refunded = ?, \
             provider_ref = ?, next_action = ?, expires_at = ?, failure_code = ?, \
             failure_message = ?, version = ?, updated_at = ? WHERE id = ?",
            &[
                p.status.as_str().into(),
                to_i64(p.authorized).into(),
                to_i64(p.captured).into(),
                to_i64(p.refunded).into(),
                p.provider_ref.clone().into(),
                p.next_action.clone().into(),
                p.expires_at.into(),
                p.failure_code.clone().into(),
                p.failure_message.clone().into(),
                version.into(),
                p.updated_at.into(),
                p.id.as_str().into(),
            ],
        )?;
        if emit {
            append_event(db, p, version, request_id)?;
        }
        if let Some((claim, how)) = settle {
            settle_claim(db, claim, how)?;
        }
        Ok::<_, DbError>(())
    })?;
    if let Some((claim, _)) = settle {
        claim.settled.set(true);
    }
    p.version = version;
    Ok(())
}

fn append_event(
    db: &Database,
    p: &PaymentRow,
    version: i64,
    request_id: Option<&str>,
) -> Result<(), DbError> {
    outbox::append(
        db,
        NewEvent {
            channel: CHANNEL,
            event_type: event_name(p.status),
            source: SOURCE,
            aggregate_id: &p.id,
            version,
            request_id,
            data: event_data(p),
        },
    )?;
    Ok(())
}

/// Voids an authorization that lapsed before capture. Compare-and-set on the status, so of
/// several requests noticing the lapse (a read racing a capture) exactly one writes the change
/// and its event. Returns whether this call did.
/// Voids a lapsed authorization — unless another request holds the payment's lease (it may be
/// capturing right now; it applies the expiry itself if the capture does not happen). `holder`
/// is the calling request, which may hold the lease itself.
pub fn expire_authorization(
    db: &Database,
    p: &mut PaymentRow,
    now: i64,
    holder: &str,
    request_id: Option<&str>,
) -> Result<bool, DbError> {
    let mut next = p.clone();
    next.status = Status::Voided;
    next.failure_code = Some("authorization_expired".into());
    next.failure_message = Some("the authorization lapsed before capture".into());
    next.updated_at = now;
    next.version = p.version + 1;
    let changed = db.transaction(|db| {
        let changed = db.execute(
            "UPDATE payments SET status = 'voided', failure_code = ?, failure_message = ?, \
             version = version + 1, updated_at = ? \
             WHERE id = ? AND status = 'authorized' AND expires_at <= ? \
             AND (lease_until IS NULL OR lease_until < ? OR lease_holder = ?)",
            &[
                next.failure_code.clone().into(),
                next.failure_message.clone().into(),
                now.into(),
                p.id.as_str().into(),
                now.into(),
                now.into(),
                holder.into(),
            ],
        )?;
        if changed == 1 {
            append_event(db, &next, next.version, request_id)?;
        }
        Ok::<_, DbError>(changed == 1)
    })?;
    if changed {
        *p = next;
    }
    Ok(changed)
}

pub fn fraud_decision(
    db: &Database,
    payment_id: &str,
) -> Result<Option<(u32, String, serde_json::Value)>, DbError> {
    let Some(r) = db.query_opt(
        "SELECT score, decision, reasons FROM fraud_decisions WHERE payment_id = ?",
        &[payment_id.into()],
    )?
    else {
        return Ok(None);
    };
    let reasons = serde_json::from_str(&r.text("reasons")?)
        .map_err(|e| DbError::Decode(format!("fraud reasons: {e}")))?;
    Ok(Some((r.i64("score")? as u32, r.text("decision")?, reasons)))
}

/// What the fraud model counts: earlier attempts in the last hour by this user, this card and
/// this client address, the user's failures in the last day and the amounts of their earlier
/// successful payments (newest 50).
pub struct History {
    pub by_user: u64,
    pub by_card: u64,
    pub by_addr: u64,
    pub failures: u64,
    pub amounts: Vec<u64>,
}

pub fn fraud_history(
    db: &Database,
    user_id: &str,
    token: &str,
    client_addr: Option<&str>,
    now: i64,
) -> Result<History, DbError> {
    let hour = now - 3_600_000;
    let day = now - 86_400_000;
    let count = |sql: &str, a: &str, since: i64| -> Result<u64, DbError> {
        let row = db.query_opt(sql, &[a.into(), since.into()])?;
        Ok(row.map(|r| r.i64("n")).transpose()?.map_or(0, to_u64))
    };
    let by_user = count(
        "SELECT COUNT(*) AS n FROM payments WHERE user_id = ? AND created_at >= ?",
        user_id,
        hour,
    )?;
    let by_card = count(
        "SELECT COUNT(*) AS n FROM payments WHERE method_token = ? AND created_at >= ?",
        token,
        hour,
    )?;
    let by_addr = match client_addr {
        Some(addr) => count(
            "SELECT COUNT(*) AS n FROM payments WHERE client_addr = ? AND created_at >= ?",
            addr,
            hour,
        )?,
        None => 0,
    };
    let failures = count(
        "SELECT COUNT(*) AS n FROM payments WHERE user_id = ? AND status = 'failed' \
         AND created_at >= ?",
        user_id,
        day,
    )?;
    let amounts = db
        .query(
            "SELECT amount FROM payments WHERE user_id = ? \
             AND status IN ('authorized', 'captured', 'partially_refunded', 'refunded') \
             ORDER BY created_at DESC LIMIT 50",
            &[user_id.into()],
        )?
        .iter()
        .map(|r| r.i64("amount").map(to_u64))
        .collect::<Result<Vec<u64>, DbError>>()?;
    Ok(History {
        by_user,
        by_card,
        by_addr,
        failures,
        amounts,
    })
}

/// Whether a webhook event id was recorded already (checked before a provider call the event
/// would cause; [`record_webhook`] settles it in the transaction of the effect).
pub fn webhook_seen(db: &Database, provider: &str, event_id: &str) -> Result<bool, DbError> {
    Ok(db
        .query_opt(
            "SELECT event_id FROM webhook_events WHERE provider = ? AND event_id = ?",
            &[provider.into(), event_id.into()],
        )?
        .is_some())
}

/// Records a webhook event id; `false` when it was seen before (a replay or a duplicate).
pub fn record_webhook(
    db: &Database,
    provider: &str,
    event_id: &str,
    payment_id: Option<&str>,
    kind: &str,
    now: i64,
) -> Result<bool, DbError> {
    let inserted = db.execute(
        "INSERT INTO webhook_events (provider, event_id, payment_id, kind, received_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider, event_id) DO NOTHING",
        &[
            provider.into(),
            event_id.into(),
            payment_id.map(str::to_owned).into(),
            kind.into(),
            now.into(),
        ],
    )?;
    Ok(inserted == 1)
}

/// One payment's events, oldest first, as enveloped on the `payments` channel. `position` is
/// the event's catch-up position (`GET /internal/events?after=`), or `null` while the outbox has
/// not numbered it yet (it does so in commit order when publishing or serving catch-up).
pub fn events_for(db: &Database, payment_id: &str) -> Result<Vec<serde_json::Value>, DbError> {
    db.query(
        "SELECT seq, payload FROM outbox WHERE aggregate_id = ? ORDER BY position",
        &[payment_id.into()],
    )?
    .iter()
    .map(|row| {
        let mut value: serde_json::Value = serde_json::from_str(&row.text("payload")?)
            .map_err(|e| DbError::Decode(format!("outbox payload: {e}")))?;
        value["position"] = row.opt_i64("seq")?.into();
        Ok(value)
    })
    .collect()
}

/// Settles `claim` if this request still holds it (a slow first attempt whose claim a retry
/// took over must neither overwrite nor drop the retry's). Returns whether it still did.
pub fn settle_claim(db: &Database, claim: &Claim, how: &Settle) -> Result<bool, DbError> {
    match how {
        Settle::Complete { status, body } => {
            idempotency::complete_claim(db, &claim.scope, &claim.key, claim.token, *status, body)
        }
        Settle::Release => idempotency::release_claim(db, &claim.scope, &claim.key, claim.token),
    }
}
