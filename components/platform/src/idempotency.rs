//! `Idempotency-Key` with Stripe's semantics (ARCHITECTURE principle 6), written once for every
//! route that moves money or stock.
//!
//! * same key + same request → the first response (status and body) replayed;
//! * same key + a different request → 422;
//! * same key while the first request is still running → 409;
//! * a first attempt that crashed (its claim older than the lock TTL, never completed) is taken
//!   over by the next retry.
//!
//! Records live in the service's own SQL database, not in key-value: claiming a key must be an
//! atomic insert-if-absent (Spin key-value has no compare-and-set), and storing the response in
//! the same transaction as the state change means a crash can never leave an effect without its
//! replayable answer. Keys are scoped (typically caller id + route), so one user's key never
//! collides with another's.

use sha2::{Digest, Sha256};

use crate::db::{Database, DbError, Migration};
use crate::problem::{FieldError, Problem};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// The idempotency table. Include it in the owning service's migration list.
pub const fn migration(version: u32) -> Migration {
    Migration::portable(
        version,
        "idempotency_keys",
        "CREATE TABLE idempotency_keys (
  scope TEXT NOT NULL,
  idem_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL,
  status BIGINT,
  body TEXT,
  created_at BIGINT NOT NULL,
  claimed_at BIGINT NOT NULL,
  PRIMARY KEY (scope, idem_key)
);",
    )
}

/// A well-formed key from the header: 1..=255 visible ASCII characters.
pub fn parse_key(header: Option<&str>) -> Result<String, Problem> {
    let problem = |message: &str| {
        Problem::unprocessable(vec![FieldError::new("Idempotency-Key", message)])
            .with_title("Invalid Idempotency-Key")
    };
    let Some(key) = header else {
        return Err(Problem::bad_request(
            "This route requires an Idempotency-Key header (1-255 characters)",
        )
        .with_title("Idempotency-Key required"));
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(problem("must be 1 to 255 characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(problem("must be visible ASCII characters"));
    }
    Ok(key.to_owned())
}

/// What identifies "the same request": method, path and the exact body bytes.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of claiming a key with [`claim`] (no holder check on [`complete`]/[`release`];
/// new code should prefer [`claim_with_token`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First use (or a takeover of a crashed attempt): run the request, then [`complete`] or
    /// [`release`].
    Proceed,
    /// Already answered: send this back unchanged.
    Replay { status: u16, body: String },
}

/// What the stored record says, decided purely (unit-tested).
fn decide(
    stored_fingerprint: &str,
    state: &str,
    claimed_at: i64,
    fingerprint: &str,
    now: i64,
    lock_ttl_ms: i64,
) -> Result<Option<()>, Problem> {
    if stored_fingerprint != fingerprint {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "Idempotency-Key",
            "was already used with a different request",
        )])
        .with_title("Idempotency-Key reused"));
    }
    match state {
        "done" => Ok(None),
        _ if now - claimed_at < lock_ttl_ms => Err(Problem::conflict(
            "A request with this Idempotency-Key is still in progress; retry later",
        )
        .with_title("Request in progress")),
        // In flight for longer than any request may run: its instance died. Take it over.
        _ => Ok(Some(())),
    }
}

/// Proof that the caller holds a claim: the claim's time, which identifies one holder of a key.
/// A takeover always moves it forward, so a first holder that was only slow (not dead) no
/// longer matches once a retry has taken its claim over, and [`complete_claim`] /
/// [`release_claim`] refuse to act for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(i64);

/// The outcome of [`claim_with_token`].
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    /// First use of the key: run the request, then [`complete_claim`] or [`release_claim`].
    New(ClaimToken),
    /// The first attempt stayed in flight longer than the lock TTL and is presumed dead; this
    /// request holds the key now (same follow-up as [`Claimed::New`]).
    TakeOver(ClaimToken),
    /// Already answered: send this back unchanged.
    Replay { status: u16, body: String },
}

/// Claims `key` in `scope` for a request with `fingerprint`. Run it outside the transaction of
/// the effect (the claim must be visible to concurrent duplicates at once).
pub fn claim(
    db: &Database,
    scope: &str,
    key: &str,
    fingerprint: &str,
    lock_ttl_ms: i64,
) -> Result<Claim, Problem> {
    Ok(
        match claim_with_token(db, scope, key, fingerprint, lock_ttl_ms)? {
            Claimed::New(_) | Claimed::TakeOver(_) => Claim::Proceed,
            Claimed::Replay { status, body } => Claim::Replay { status, body },
        },
    )
}

/// [`claim`], returning the [`ClaimToken`] that [`complete_claim`] and [`release_claim`] check,
/// so a holder whose claim was taken over cannot overwrite or drop the new holder's record.
pub fn claim_with_token(
    db: &Database,
    scope: &str,
    key: &str,
    fingerprint: &str,
    lock_ttl_ms: i64,
) -> Result<Claimed, Problem> {
    let now = crate::time::now_millis();
    let inserted = db.execute(
        "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, state, created_at, claimed_at) \
         VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT (scope, idem_key) DO NOTHING",
        &[
            scope.into(),
            key.into(),
            fingerprint.into(),
            now.into(),
            now.into(),
        ],
    )?;
    if inserted == 1 {
        return Ok(Claimed::New(ClaimToken(now)));
    }
    let Some(row) = db.query_opt(
        "SELECT fingerprint, state, status, body, claimed_at FROM idempotency_keys \
         WHERE scope = ? AND idem_key = ?",
        &[scope.into(), key.into()],
    )?
    else {
        // Released between our insert and select: claim again once.
        return claim_once_more(db, scope, key, fingerprint, now);
    };
    let claimed_at = row.i64("claimed_at")?;
    match decide(
        &row.text("fingerprint")?,
        &row.text("state")?,
        claimed_at,
        fingerprint,
        now,
        lock_ttl_ms,
    )? {
        None => Ok(Claimed::Replay {
            status: row.opt_i64("status")?.unwrap_or(200) as u16,
            body: row.opt_text("body")?.unwrap_or_default(),
        }),
        Some(()) => {
            // The new claim time is the new holder's token: it must differ from the old one
            // even if the lock TTL is zero, or the old holder would still match.
            let token = takeover_time(claimed_at, now);
            // Compare-and-set on the old claim time: of several retries, one wins.
            let taken = db.execute(
                "UPDATE idempotency_keys SET claimed_at = ? \
                 WHERE scope = ? AND idem_key = ? AND state = 'in_flight' AND claimed_at = ?",
                &[token.into(), scope.into(), key.into(), claimed_at.into()],
            )?;
            if taken == 1 {
                Ok(Claimed::TakeOver(ClaimToken(token)))
            } else {
                Err(Problem::conflict(
                    "A request with this Idempotency-Key is still in progress; retry later",
                ))
            }
        }
    }
}

/// The claim time a takeover writes: now, but always after the claim it replaces.
fn takeover_time(old_claimed_at: i64, now: i64) -> i64 {
    now.max(old_claimed_at + 1)
}

fn claim_once_more(
    db: &Database,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Claimed, Problem> {
    let inserted = db.execute(
        "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, state, created_at, claimed_at) \
         VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT (scope, idem_key) DO NOTHING",
        &[
            scope.into(),
            key.into(),
            fingerprint.into(),
            now.into(),
            now.into(),
        ],
    )?;
    if inserted == 1 {
        Ok(Claimed::New(ClaimToken(now)))
    } else {
        Err(Problem::conflict(
            "A request with this Idempotency-Key is still in progress; retry later",
        ))
    }
}

/// Stores the final answer, whoever holds the claim (e.g. a job finishing the work of a request
/// that died). An answer already stored is never replaced: the first answer is the one every
/// retry replays. Call it inside the transaction that commits the effect, so the effect and its
/// replayable answer commit together. A request that claimed the key itself should use
/// [`complete_claim`].
pub fn complete(
    db: &Database,
    scope: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE idempotency_keys SET state = 'done', status = ?, body = ? \
         WHERE scope = ? AND idem_key = ? AND state = 'in_flight'",
        &[
            i64::from(status).into(),
            body.into(),
            scope.into(),
            key.into(),
        ],
    )?;
    Ok(())
}

/// Stores the final answer if `token` still holds the claim; `false` when a retry took the
/// claim over (or it was answered already) — the current holder's answer then stands.
pub fn complete_claim(
    db: &Database,
    scope: &str,
    key: &str,
    token: ClaimToken,
    status: u16,
    body: &str,
) -> Result<bool, DbError> {
    let changed = db.execute(
        "UPDATE idempotency_keys SET state = 'done', status = ?, body = ? \
         WHERE scope = ? AND idem_key = ? AND state = 'in_flight' AND claimed_at = ?",
        &[
            i64::from(status).into(),
            body.into(),
            scope.into(),
            key.into(),
            token.0.into(),
        ],
    )?;
    Ok(changed == 1)
}

/// Forgets an in-flight claim whose request produced nothing worth replaying (a server error
/// or a rejected input before any effect), so the client's retry runs afresh. Drops whichever
/// claim is in flight; a request that claimed the key itself should use [`release_claim`].
pub fn release(db: &Database, scope: &str, key: &str) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM idempotency_keys WHERE scope = ? AND idem_key = ? AND state = 'in_flight'",
        &[scope.into(), key.into()],
    )?;
    Ok(())
}

/// [`release`] only if `token` still holds the claim; `false` when a retry took it over (its
/// claim must survive: that request is running).
pub fn release_claim(
    db: &Database,
    scope: &str,
    key: &str,
    token: ClaimToken,
) -> Result<bool, DbError> {
    let changed = db.execute(
        "DELETE FROM idempotency_keys \
         WHERE scope = ? AND idem_key = ? AND state = 'in_flight' AND claimed_at = ?",
        &[scope.into(), key.into(), token.0.into()],
    )?;
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key(Some("order-1")).unwrap(), "order-1");
        assert_eq!(
            parse_key(None).unwrap_err().status_code().as_u16(),
            400,
            "missing header"
        );
        for bad in ["", "has space", "tab\t", "ü"] {
            assert_eq!(
                parse_key(Some(bad)).unwrap_err().status_code().as_u16(),
                422,
                "{bad:?}"
            );
        }
        assert!(parse_key(Some(&"k".repeat(255))).is_ok());
        assert!(parse_key(Some(&"k".repeat(256))).is_err());
    }

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let base = fingerprint("POST", "/api/v1/orders", b"{}");
        assert_eq!(base, fingerprint("POST", "/api/v1/orders", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/api/v1/orders", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/v1/order", b"s{}"));
        assert_ne!(base, fingerprint("POST", "/api/v1/orders", b"{ }"));
    }

    #[test]
    fn stored_records_decide_replay_conflict_mismatch_or_takeover() {
        let ttl = 60_000;
        assert_eq!(decide("f", "done", 0, "f", 10, ttl), Ok(None));
        assert_eq!(
            decide("f", "done", 0, "g", 10, ttl)
                .unwrap_err()
                .status_code()
                .as_u16(),
            422
        );
        assert_eq!(
            decide("f", "in_flight", 1_000, "f", 30_000, ttl)
                .unwrap_err()
                .status_code()
                .as_u16(),
            409
        );
        assert_eq!(
            decide("f", "in_flight", 1_000, "f", 61_000, ttl),
            Ok(Some(()))
        );
        // A different request under a crashed key is still a mismatch, not a takeover.
        assert!(decide("f", "in_flight", 0, "g", 999_999, ttl).is_err());
    }

    #[test]
    fn a_takeover_token_never_matches_the_claim_it_replaced() {
        assert_eq!(takeover_time(1_000, 61_000), 61_000);
        // A clock that did not move (or a zero TTL) still yields a new token.
        assert_eq!(takeover_time(1_000, 1_000), 1_001);
        assert_eq!(takeover_time(1_000, 900), 1_001);
        assert_ne!(
            ClaimToken(takeover_time(1_000, 1_000)),
            ClaimToken(1_000),
            "the slow first holder must not match the new holder"
        );
    }
}
