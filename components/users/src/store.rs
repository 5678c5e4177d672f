//! The users service's tables and every SQL statement it runs, over `platform::db` (SQLite
//! locally, PostgreSQL in a cluster; portable SQL, `?` placeholders, BIGINT unix millis).

use bazaar_platform::db::Row;
use bazaar_platform::{Database, DbError, Migration, Role};

use crate::domain::refresh::StoredToken;
use crate::domain::throttle::{Counter, Policy};

/// Versioned schema. Append new versions; never edit an applied one.
pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "users, refresh token families, login throttling, identity links",
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        email_key TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('customer', 'vendor', 'admin')),
        password_hash TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX users_email_key ON users (email_key);
    CREATE INDEX users_role ON users (role);
    CREATE TABLE refresh_families (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id),
        created_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revoked_reason TEXT
    );
    CREATE INDEX refresh_families_user ON refresh_families (user_id);
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id TEXT NOT NULL REFERENCES refresh_families (id),
        issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
    CREATE TABLE login_failures (
        subject TEXT PRIMARY KEY,
        window_start BIGINT NOT NULL,
        failures BIGINT NOT NULL
    );
    CREATE TABLE identity_links (
        provider TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id),
        email TEXT NOT NULL,
        linked_at BIGINT NOT NULL,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identity_links_user ON identity_links (user_id);",
)];

/// The schema version this code needs (readiness answers 503 below it).
pub fn required_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `None` for accounts created by social login: password login must fail for them.
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const USER_COLUMNS: &str = "id, email, name, role, password_hash, created_at, updated_at";

fn user_of(row: &Row) -> Result<UserRecord, DbError> {
    let role = row.text("role")?;
    Ok(UserRecord {
        id: row.text("id")?,
        email: row.text("email")?,
        name: row.text("name")?,
        role: role
            .parse()
            .map_err(|()| DbError::Decode(format!("unknown role {role:?}")))?,
        password_hash: row.opt_text("password_hash")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
    })
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: Option<&'a str>,
    pub now: i64,
}

/// Inserts a user; a taken e-mail is `DbError::UniqueViolation`.
pub fn insert_user(db: &Database, user: &NewUser<'_>) -> Result<UserRecord, DbError> {
    db.execute(
        "INSERT INTO users (id, email, email_key, name, role, password_hash, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            user.id.into(),
            user.email.into(),
            user.email_key.into(),
            user.name.into(),
            user.role.as_str().into(),
            user.password_hash.into(),
            user.now.into(),
            user.now.into(),
        ],
    )?;
    Ok(UserRecord {
        id: user.id.to_owned(),
        email: user.email.to_owned(),
        name: user.name.to_owned(),
        role: user.role,
        password_hash: user.password_hash.map(str::to_owned),
        created_at: user.now,
        updated_at: user.now,
    })
}

pub fn find_by_id(db: &Database, id: &str) -> Result<Option<UserRecord>, DbError> {
    db.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"),
        &[id.into()],
    )?
    .as_ref()
    .map(user_of)
    .transpose()
}

/// Locks the row on PostgreSQL (inside a transaction).
pub fn find_by_id_for_update(db: &Database, id: &str) -> Result<Option<UserRecord>, DbError> {
    db.query_opt(
        &format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?{}",
            db.for_update()
        ),
        &[id.into()],
    )?
    .as_ref()
    .map(user_of)
    .transpose()
}

pub fn find_by_email_key(db: &Database, email_key: &str) -> Result<Option<UserRecord>, DbError> {
    db.query_opt(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE email_key = ?"),
        &[email_key.into()],
    )?
    .as_ref()
    .map(user_of)
    .transpose()
}

pub fn update_name(db: &Database, id: &str, name: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET name = ?, updated_at = ? WHERE id = ?",
        &[name.into(), now.into(), id.into()],
    )?;
    Ok(())
}

pub fn update_role(db: &Database, id: &str, role: Role, now: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET role = ?, updated_at = ? WHERE id = ?",
        &[role.as_str().into(), now.into(), id.into()],
    )?;
    Ok(())
}

/// Counts admins, locking their rows on PostgreSQL so two concurrent demotions cannot both see
/// "two admins left" (SQLite's `BEGIN IMMEDIATE` already serialises writers).
pub fn count_admins_locked(db: &Database) -> Result<u64, DbError> {
    let rows = db.query(
        &format!(
            "SELECT id FROM users WHERE role = 'admin'{}",
            db.for_update()
        ),
        &[],
    )?;
    Ok(rows.len() as u64)
}

// --- refresh tokens ---------------------------------------------------------------------------

pub fn insert_family(db: &Database, id: &str, user_id: &str, now: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO refresh_families (id, user_id, created_at) VALUES (?, ?, ?)",
        &[id.into(), user_id.into(), now.into()],
    )?;
    Ok(())
}

pub fn insert_token(
    db: &Database,
    digest: &str,
    family_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, issued_at, expires_at) VALUES (?, ?, ?, ?)",
        &[digest.into(), family_id.into(), now.into(), expires_at.into()],
    )?;
    Ok(())
}

/// A presented token's state, its family and owner.
pub struct TokenLookup {
    pub state: StoredToken,
    pub family_id: String,
    pub user_id: String,
}

/// Looks a token up by digest, locking it and its family on PostgreSQL.
pub fn find_token_for_update(db: &Database, digest: &str) -> Result<Option<TokenLookup>, DbError> {
    let row = db.query_opt(
        &format!(
            "SELECT t.family_id AS family_id, t.expires_at AS expires_at, t.used_at AS used_at, \
                    f.revoked_at AS revoked_at, f.user_id AS user_id \
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
             WHERE t.token_hash = ?{}",
            db.for_update()
        ),
        &[digest.into()],
    )?;
    row.map(|row| {
        Ok(TokenLookup {
            state: StoredToken {
                expires_at: row.i64("expires_at")?,
                used_at: row.opt_i64("used_at")?,
                family_revoked: row.opt_i64("revoked_at")?.is_some(),
            },
            family_id: row.text("family_id")?,
            user_id: row.text("user_id")?,
        })
    })
    .transpose()
}

/// Marks a token used; `false` if a concurrent refresh got there first.
pub fn mark_used(db: &Database, digest: &str, now: i64) -> Result<bool, DbError> {
    Ok(db.execute(
        "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
        &[now.into(), digest.into()],
    )? == 1)
}

/// Revokes a family (idempotent: the first reason is kept).
pub fn revoke_family(
    db: &Database,
    family_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE refresh_families SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
        &[now.into(), reason.into(), family_id.into()],
    )?;
    Ok(())
}

/// Deletes refresh families that can no longer yield a token (revoked, or every token expired)
/// with their tokens; returns (families, tokens) deleted. Families with a live token are kept
/// whole, so reuse of an old token of a live family is still detected.
pub fn prune_families(db: &Database, now: i64) -> Result<(u64, u64), DbError> {
    const DEAD: &str = "SELECT f.id FROM refresh_families f WHERE f.revoked_at IS NOT NULL \
         OR NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id AND t.expires_at > ?)";
    let tokens = db.execute(
        &format!("DELETE FROM refresh_tokens WHERE family_id IN ({DEAD})"),
        &[now.into()],
    )?;
    let families = db.execute(
        "DELETE FROM refresh_families WHERE NOT EXISTS \
         (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id)",
        &[],
    )?;
    Ok((families, tokens))
}

// --- login throttling -------------------------------------------------------------------------

pub fn read_counter(db: &Database, subject: &str) -> Result<Option<Counter>, DbError> {
    db.query_opt(
        "SELECT window_start, failures FROM login_failures WHERE subject = ?",
        &[subject.into()],
    )?
    .map(|row| {
        Ok(Counter {
            window_start: row.i64("window_start")?,
            failures: row.i64("failures")?,
        })
    })
    .transpose()
}

/// One atomic upsert implementing `throttle::after_failure`: concurrent failures each count.
pub fn record_failure(
    db: &Database,
    subject: &str,
    policy: Policy,
    now: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO login_failures (subject, window_start, failures) VALUES (?, ?, 1) \
         ON CONFLICT (subject) DO UPDATE SET \
           failures = CASE WHEN login_failures.window_start + ? <= ? THEN 1 \
                           ELSE login_failures.failures + 1 END, \
           window_start = CASE WHEN login_failures.window_start + ? <= ? THEN ? \
                               ELSE login_failures.window_start END",
        &[
            subject.into(),
            now.into(),
            policy.window_ms.into(),
            now.into(),
            policy.window_ms.into(),
            now.into(),
            now.into(),
        ],
    )?;
    Ok(())
}

/// Deletes counters whose window ended (they no longer throttle anything).
pub fn prune_counters(db: &Database, window_ms: i64, now: i64) -> Result<u64, DbError> {
    db.execute(
        "DELETE FROM login_failures WHERE window_start + ? <= ?",
        &[window_ms.into(), now.into()],
    )
}

pub fn clear_counter(db: &Database, subject: &str) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM login_failures WHERE subject = ?",
        &[subject.into()],
    )?;
    Ok(())
}

// --- identity provider links ------------------------------------------------------------------

pub fn find_linked_user(
    db: &Database,
    provider: &str,
    subject: &str,
) -> Result<Option<UserRecord>, DbError> {
    let columns: String = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    db.query_opt(
        &format!(
            "SELECT {columns} FROM identity_links l JOIN users u ON u.id = l.user_id \
             WHERE l.provider = ? AND l.subject = ?"
        ),
        &[provider.into(), subject.into()],
    )?
    .as_ref()
    .map(user_of)
    .transpose()
}

pub fn insert_link(
    db: &Database,
    provider: &str,
    subject: &str,
    user_id: &str,
    email: &str,
    now: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO identity_links (provider, subject, user_id, email, linked_at) VALUES (?, ?, ?, ?, ?)",
        &[
            provider.into(),
            subject.into(),
            user_id.into(),
            email.into(),
            now.into(),
        ],
    )?;
    Ok(())
}
