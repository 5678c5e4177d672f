//! HTTP handlers: route, parse the body into domain types, call the store, shape the answer.
//! Every failure is a `Problem` (RFC 9457); nothing a client sends can panic.

use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::jwt::{self, Claims};
use bazaar_platform::{Ctx, Database, FieldError, Problem, Role, ids, time};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use spin_sdk::http::{Method, Request, Response};

use crate::config::Config;
use crate::crypto;
use crate::domain::refresh::{self, Decision};
use crate::domain::roles::{self, RoleChangeError};
use crate::domain::throttle::{self, PER_ACCOUNT, PER_CLIENT};
use crate::domain::{DisplayName, Email, Password};
use crate::store::{self, NewUser, UserRecord};

pub const COMPONENT: &str = "users";

/// The one answer for every failed password login, whatever the reason.
const BAD_CREDENTIALS: &str = "The e-mail address or password is incorrect";
/// The one answer for every refused refresh token.
const BAD_REFRESH: &str = "The refresh token is invalid, expired or revoked; log in again";

/// A user as the API shows it (never a password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            created_at: time::millis_to_rfc3339(u.created_at),
            updated_at: time::millis_to_rfc3339(u.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: i64,
}

/// Handles one request; `config` is read lazily because the liveness probe needs none.
pub fn handle(request: &Request, config: impl FnOnce() -> Result<Config, String>) -> Response {
    let ctx = Ctx::new(COMPONENT, request);
    let path = request.path().trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let method = request.method();
    let segments: Vec<&str> = path.split('/').skip(1).collect();

    let allowed: &[&str] = match segments.as_slice() {
        ["health", "live"] | ["health", "ready"] | ["internal", "jwks"] => &["GET"],
        ["internal", "admin", "migrate"]
        | ["internal", "admin", "create-admin"]
        | ["internal", "jobs", "prune"]
        | ["internal", "oidc", "login"]
        | ["auth", "register" | "login" | "refresh" | "logout"] => &["POST"],
        ["api", "v1", "users", "me"] => &["GET", "PATCH"],
        ["api", "v1", "users", _] => &["GET"],
        ["api", "v1", "users", _, "role"] => &["PUT"],
        _ => {
            return ctx
                .problem(Problem::not_found(format!("No route for {path}")).with_instance(path));
        }
    };
    if !allowed.contains(&method_name(method)) {
        let mut response = ctx
            .problem(Problem::method_not_allowed(method_name(method), allowed).with_instance(path));
        response.set_header("allow", allowed.join(", "));
        return response;
    }
    if let ["health", "live"] = segments.as_slice() {
        return ctx.json(200, &json!({"status": "ok"}));
    }
    let config = match config() {
        Ok(config) => config,
        Err(why) => {
            ctx.log
                .error("configuration is invalid", &[("error", why.into())]);
            return ctx.problem(
                Problem::internal("The users service is misconfigured").with_instance(path),
            );
        }
    };
    let service = Service {
        ctx: &ctx,
        config: &config,
        request,
    };
    let result = match (method_name(method), segments.as_slice()) {
        ("GET", ["health", "ready"]) => service.ready(),
        ("GET", ["internal", "jwks"]) => service.jwks(),
        ("POST", ["internal", "admin", "migrate"]) => service.migrate(),
        ("POST", ["internal", "admin", "create-admin"]) => service.create_admin(),
        ("POST", ["internal", "jobs", "prune"]) => service.prune(),
        ("POST", ["internal", "oidc", "login"]) => service.oidc_login(),
        ("POST", ["auth", "register"]) => service.register(),
        ("POST", ["auth", "login"]) => service.login(),
        ("POST", ["auth", "refresh"]) => service.refresh(),
        ("POST", ["auth", "logout"]) => service.logout(),
        ("GET", ["api", "v1", "users", "me"]) => service.me(),
        ("PATCH", ["api", "v1", "users", "me"]) => service.update_me(),
        ("GET", ["api", "v1", "users", id]) => service.get_user(id),
        ("PUT", ["api", "v1", "users", id, "role"]) => service.set_role(id),
        _ => Err(Problem::not_found(format!("No route for {path}"))),
    };
    ctx.respond(result.map_err(|p| p.with_instance(path)))
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
        Method::Other(_) => "OTHER",
    }
}

struct Service<'a> {
    ctx: &'a Ctx,
    config: &'a Config,
    request: &'a Request,
}

/// Collects field errors; `finish` turns any into one 422.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn check<T>(&mut self, field: &str, result: Result<T, &'static str>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::unprocessable(self.0))
        }
    }
}

fn required(value: &Option<String>) -> Result<&str, &'static str> {
    value.as_deref().ok_or("is required")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAdminBody {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcLoginBody {
    provider: String,
    subject: String,
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    name: Option<String>,
}

impl Service<'_> {
    fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        let content_type = self.request.header("content-type").and_then(|v| v.as_str());
        parse_json(content_type, self.request.body(), DEFAULT_JSON_LIMIT)
    }

    fn db(&self) -> Result<Database, Problem> {
        Database::open(&self.config.database).map_err(|e| {
            self.ctx
                .log
                .error("database unavailable", &[("error", e.to_string().into())]);
            Problem::service_unavailable("The users database is not reachable")
        })
    }

    // --- operations ---------------------------------------------------------------------------

    fn ready(&self) -> Result<Response, Problem> {
        let required = store::required_version();
        let version = self.db()?.schema_version().map_err(Problem::from)?;
        if version < required {
            return Err(Problem::service_unavailable(format!(
                "The database schema is at version {version}; this build needs {required} (run `bazaar admin migrate`)"
            )));
        }
        Ok(self
            .ctx
            .json(200, &json!({"status": "ok", "schema_version": version})))
    }

    fn jwks(&self) -> Result<Response, Problem> {
        let mut response = self.ctx.json(200, &jwt::jwks(&self.config.keys));
        // The gateway caches the set; a short lifetime lets a rotated-in key spread quickly.
        response.set_header("cache-control", "public, max-age=300");
        Ok(response)
    }

    fn migrate(&self) -> Result<Response, Problem> {
        let db = self.db()?;
        let applied = db.migrate(store::MIGRATIONS).map_err(|e| {
            self.ctx
                .log
                .error("migration failed", &[("error", e.to_string().into())]);
            Problem::internal(format!("Migration failed: {e}"))
        })?;
        let version = db.schema_version()?;
        self.ctx.log.info(
            "migrations applied",
            &[("applied", json!(applied)), ("version", version.into())],
        );
        Ok(self
            .ctx
            .json(200, &json!({"applied": applied, "version": version})))
    }

    /// The periodic clean-up job (idempotent; correctness never depends on it: expiry and
    /// windows are checked at read time).
    fn prune(&self) -> Result<Response, Problem> {
        let db = self.db()?;
        let now = time::now_millis();
        let (families, tokens) =
            db.transaction(|db| store::prune_families(db, now).map_err(Problem::from))?;
        let counters = store::prune_counters(&db, throttle::WINDOW_MS, now)?;
        let result = json!({
            "families_deleted": families,
            "tokens_deleted": tokens,
            "login_counters_deleted": counters,
        });
        self.ctx.log.info("pruned", &[("result", result.clone())]);
        Ok(self.ctx.json(200, &result))
    }

    fn register(&self) -> Result<Response, Problem> {
        let body: RegisterBody = self.body()?;
        let mut errors = Errors::default();
        let email = errors.check("email", required(&body.email).and_then(Email::parse));
        let password = errors.check(
            "password",
            required(&body.password).and_then(Password::parse),
        );
        let name = errors.check("name", required(&body.name).and_then(DisplayName::parse));
        errors.finish()?;
        let (Some(email), Some(password), Some(name)) = (email, password, name) else {
            return Err(Problem::internal("validation state is inconsistent"));
        };
        let db = self.db()?;
        // Cheap check first so a duplicate does not cost a password hash; the unique index
        // still decides races.
        if store::find_by_email_key(&db, email.key())?.is_some() {
            return Err(duplicate_email());
        }
        let hash = self.hash(&password)?;
        let user = store::insert_user(
            &db,
            &NewUser {
                id: &new_user_id(),
                email: email.as_str(),
                email_key: email.key(),
                name: name.as_str(),
                role: Role::Customer,
                password_hash: Some(&hash),
                now: time::now_millis(),
            },
        )
        .map_err(|e| match e {
            bazaar_platform::DbError::UniqueViolation(_) => duplicate_email(),
            other => other.into(),
        })?;
        self.ctx
            .log
            .info("user registered", &[("user_id", user.id.clone().into())]);
        Ok(self.ctx.json(201, &UserView::from(&user)))
    }

    fn hash(&self, password: &Password) -> Result<String, Problem> {
        let started = std::time::Instant::now();
        let hash = crypto::hash_password(password.as_str()).map_err(|e| {
            self.ctx
                .log
                .error("password hashing failed", &[("error", e.into())]);
            Problem::internal("The password could not be stored")
        })?;
        // The cost of the argon2 parameters as this host runs them (docs/users.md).
        self.ctx.log.info(
            "password hashed",
            &[(
                "duration_ms",
                json!(started.elapsed().as_secs_f64() * 1000.0),
            )],
        );
        Ok(hash)
    }

    fn login(&self) -> Result<Response, Problem> {
        let body: LoginBody = self.body()?;
        let db = self.db()?;
        let now = time::now_millis();
        // An address that cannot exist still counts against the client, and gets the same
        // answer as a wrong password.
        let email = Email::parse(&body.email).ok();
        let account = email.as_ref().map(|e| throttle::account_subject(e.key()));
        let client = self
            .ctx
            .client_addr
            .as_deref()
            .map(throttle::client_subject);

        let mut wait = 0u64;
        for (subject, policy) in [(&account, PER_ACCOUNT), (&client, PER_CLIENT)] {
            if let Some(subject) = subject
                && let Err(secs) = throttle::check(store::read_counter(&db, subject)?, policy, now)
            {
                wait = wait.max(secs);
            }
        }
        if wait > 0 {
            self.ctx
                .log
                .warn("login throttled", &[("retry_after_s", wait.into())]);
            return Ok(too_many_failures(self.ctx, wait));
        }

        let user = match &email {
            Some(email) => store::find_by_email_key(&db, email.key())?,
            None => None,
        };
        let verified = match user.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(hash) => crypto::verify_password(&body.password, hash),
            None => {
                crypto::burn_equivalent_work(&body.password);
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            for (subject, policy) in [(&account, PER_ACCOUNT), (&client, PER_CLIENT)] {
                if let Some(subject) = subject {
                    store::record_failure(&db, subject, policy, now)?;
                }
            }
            self.ctx.log.info("login failed", &[]);
            return Err(Problem::unauthorized(BAD_CREDENTIALS));
        };
        // The account's counter restarts after a success; the client's does not, so a client
        // that owns one account cannot use it to reset its budget for guessing others.
        if let Some(subject) = &account {
            store::clear_counter(&db, subject)?;
        }
        let pair = db.transaction(|db| self.start_family(db, &user, now))?;
        self.ctx
            .log
            .info("login succeeded", &[("user_id", user.id.clone().into())]);
        Ok(token_response(self.ctx, &pair))
    }

    /// A new refresh family for `user` and its first token pair.
    fn start_family(
        &self,
        db: &Database,
        user: &UserRecord,
        now: i64,
    ) -> Result<TokenPair, Problem> {
        let family = format!("rtf_{}", ids::new_id());
        store::insert_family(db, &family, &user.id, now)?;
        self.next_pair(db, user, &family, now)
    }

    /// Issues an access token and the next refresh token of `family`.
    fn next_pair(
        &self,
        db: &Database,
        user: &UserRecord,
        family: &str,
        now: i64,
    ) -> Result<TokenPair, Problem> {
        let refresh_token = crypto::new_refresh_token();
        store::insert_token(
            db,
            &crypto::token_digest(&refresh_token),
            family,
            now,
            now.saturating_add(self.config.refresh_ttl_secs.saturating_mul(1000)),
        )?;
        let issued = now / 1000;
        let claims = Claims {
            sub: user.id.clone(),
            role: user.role,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat: issued,
            nbf: issued,
            exp: issued + self.config.access_ttl_secs,
            jti: ids::new_id(),
        };
        Ok(TokenPair {
            access_token: jwt::sign(self.config.signing_key(), &claims),
            refresh_token,
            token_type: "Bearer",
            expires_in: self.config.access_ttl_secs,
        })
    }

    fn refresh(&self) -> Result<Response, Problem> {
        let body: RefreshBody = self.body()?;
        if !refresh::well_formed(&body.refresh_token) {
            return Err(Problem::unauthorized(BAD_REFRESH));
        }
        let digest = crypto::token_digest(&body.refresh_token);
        let db = self.db()?;
        let now = time::now_millis();
        // The transaction commits in every case: a detected reuse must stay revoked even though
        // the caller gets a 401.
        let outcome = db.transaction(|db| -> Result<Result<TokenPair, &'static str>, Problem> {
            let found = store::find_token_for_update(db, &digest)?;
            match refresh::decide(found.as_ref().map(|f| f.state), now) {
                Decision::Reject(why) => Ok(Err(why.as_str())),
                Decision::RevokeFamily => {
                    if let Some(found) = &found {
                        store::revoke_family(db, &found.family_id, "reuse", now)?;
                        self.ctx.log.warn(
                            "refresh token reuse: family revoked",
                            &[
                                ("user_id", found.user_id.clone().into()),
                                ("family_id", found.family_id.clone().into()),
                            ],
                        );
                    }
                    Ok(Err("reused"))
                }
                Decision::Rotate => {
                    let Some(found) = found else {
                        return Ok(Err("unknown"));
                    };
                    if !store::mark_used(db, &digest, now)? {
                        return Ok(Err("raced"));
                    }
                    let Some(user) = store::find_by_id(db, &found.user_id)? else {
                        return Ok(Err("user gone"));
                    };
                    self.next_pair(db, &user, &found.family_id, now).map(Ok)
                }
            }
        })?;
        match outcome {
            Ok(pair) => Ok(token_response(self.ctx, &pair)),
            Err(reason) => {
                self.ctx
                    .log
                    .info("refresh refused", &[("reason", reason.into())]);
                Err(Problem::unauthorized(BAD_REFRESH))
            }
        }
    }

    fn logout(&self) -> Result<Response, Problem> {
        let body: RefreshBody = self.body()?;
        // Idempotent: an unknown, used or already revoked token is simply "logged out".
        if refresh::well_formed(&body.refresh_token) {
            let digest = crypto::token_digest(&body.refresh_token);
            let db = self.db()?;
            let now = time::now_millis();
            db.transaction(|db| -> Result<(), Problem> {
                if let Some(found) = store::find_token_for_update(db, &digest)? {
                    store::revoke_family(db, &found.family_id, "logout", now)?;
                }
                Ok(())
            })?;
        }
        Ok(self.ctx.empty(204))
    }

    fn me(&self) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?;
        let user = store::find_by_id(&self.db()?, &identity.user_id)?
            .ok_or_else(|| Problem::not_found("This account no longer exists"))?;
        Ok(self.ctx.json(200, &UserView::from(&user)))
    }

    fn update_me(&self) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?.clone();
        let body: Map<String, Value> = self.body()?;
        let mut errors = Errors::default();
        let mut name = None;
        for (field, value) in &body {
            match (field.as_str(), value) {
                ("name", Value::String(raw)) => {
                    name = errors.check("name", DisplayName::parse(raw));
                }
                ("name", _) => errors.0.push(FieldError::new("name", "must be a string")),
                ("email", _) => errors.0.push(FieldError::new(
                    "email",
                    "cannot be changed here (e-mail changes need a verification flow)",
                )),
                (other, _) => errors
                    .0
                    .push(FieldError::new(other, "is not a known field")),
            }
        }
        errors.finish()?;
        let db = self.db()?;
        let user = db.transaction(|db| -> Result<UserRecord, Problem> {
            let mut user = store::find_by_id_for_update(db, &identity.user_id)?
                .ok_or_else(|| Problem::not_found("This account no longer exists"))?;
            if let Some(name) = &name {
                let now = time::now_millis();
                store::update_name(db, &user.id, name.as_str(), now)?;
                user.name = name.as_str().to_owned();
                user.updated_at = now;
            }
            Ok(user)
        })?;
        Ok(self.ctx.json(200, &UserView::from(&user)))
    }

    fn get_user(&self, id: &str) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?;
        identity.require_self_or_admin(id)?;
        let user = store::find_by_id(&self.db()?, id)?
            .ok_or_else(|| Problem::not_found(format!("No user {id}")))?;
        Ok(self.ctx.json(200, &UserView::from(&user)))
    }

    fn set_role(&self, id: &str) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?.clone();
        identity.require_role(&[Role::Admin])?;
        let body: RoleBody = self.body()?;
        let role = roles::parse_role(&body.role)
            .map_err(|m| Problem::unprocessable(vec![FieldError::new("role", m)]))?;
        let db = self.db()?;
        let user = db.transaction(|db| -> Result<UserRecord, Problem> {
            let admins = store::count_admins_locked(db)?;
            let mut user = store::find_by_id_for_update(db, id)?
                .ok_or_else(|| Problem::not_found(format!("No user {id}")))?;
            roles::check_change(user.role, role, admins).map_err(|e| match e {
                RoleChangeError::LastAdmin => {
                    Problem::conflict("This is the last admin; promote another admin first")
                }
            })?;
            if user.role != role {
                let now = time::now_millis();
                store::update_role(db, &user.id, role, now)?;
                user.role = role;
                user.updated_at = now;
            }
            Ok(user)
        })?;
        self.ctx.log.info(
            "role changed",
            &[
                ("user_id", user.id.clone().into()),
                ("role", user.role.as_str().into()),
                ("by", identity.user_id.clone().into()),
            ],
        );
        Ok(self.ctx.json(200, &UserView::from(&user)))
    }

    /// Creates an admin, or promotes the existing account with that e-mail when the password
    /// matches it (so re-running the admin process is harmless and cannot take over an account
    /// whose password the operator does not know).
    fn create_admin(&self) -> Result<Response, Problem> {
        let body: CreateAdminBody = self.body()?;
        let mut errors = Errors::default();
        let email = errors.check("email", required(&body.email).and_then(Email::parse));
        let password_text = errors
            .check("password", required(&body.password))
            .unwrap_or("");
        let name = match &body.name {
            Some(raw) => errors.check("name", DisplayName::parse(raw)),
            None => DisplayName::parse("Administrator").ok(),
        };
        errors.finish()?;
        let (Some(email), Some(name)) = (email, name) else {
            return Err(Problem::internal("validation state is inconsistent"));
        };
        let db = self.db()?;
        if let Some(existing) = store::find_by_email_key(&db, email.key())? {
            let matches = existing
                .password_hash
                .as_deref()
                .is_some_and(|h| crypto::verify_password(password_text, h));
            if !matches {
                return Err(Problem::conflict(
                    "An account with this e-mail exists and the password does not match it",
                ));
            }
            let user = db.transaction(|db| -> Result<UserRecord, Problem> {
                let mut user = store::find_by_id_for_update(db, &existing.id)?
                    .ok_or_else(|| Problem::conflict("The account disappeared; retry"))?;
                if user.role != Role::Admin {
                    let now = time::now_millis();
                    store::update_role(db, &user.id, Role::Admin, now)?;
                    user.role = Role::Admin;
                    user.updated_at = now;
                }
                Ok(user)
            })?;
            self.ctx.log.info(
                "account promoted to admin",
                &[("user_id", user.id.clone().into())],
            );
            return Ok(self.ctx.json(200, &UserView::from(&user)));
        }
        let password = Password::parse(password_text)
            .map_err(|m| Problem::unprocessable(vec![FieldError::new("password", m)]))?;
        let hash = self.hash(&password)?;
        let user = store::insert_user(
            &db,
            &NewUser {
                id: &new_user_id(),
                email: email.as_str(),
                email_key: email.key(),
                name: name.as_str(),
                role: Role::Admin,
                password_hash: Some(&hash),
                now: time::now_millis(),
            },
        )
        .map_err(|e| match e {
            bazaar_platform::DbError::UniqueViolation(_) => duplicate_email(),
            other => other.into(),
        })?;
        self.ctx
            .log
            .info("admin created", &[("user_id", user.id.clone().into())]);
        Ok(self.ctx.json(201, &UserView::from(&user)))
    }

    /// Social login, called by the `oidc` component after it verified the provider's ID token.
    fn oidc_login(&self) -> Result<Response, Problem> {
        let body: OidcLoginBody = self.body()?;
        let mut errors = Errors::default();
        let provider = errors.check("provider", parse_provider(&body.provider));
        let subject = errors.check("subject", parse_subject(&body.subject));
        let email = errors.check("email", required(&body.email).and_then(Email::parse));
        errors.finish()?;
        let (Some(provider), Some(subject), Some(email)) = (provider, subject, email) else {
            return Err(Problem::internal("validation state is inconsistent"));
        };
        let db = self.db()?;
        let now = time::now_millis();
        let (user, pair, created) = db.transaction(|db| -> Result<_, Problem> {
            if let Some(user) = store::find_linked_user(db, provider, subject)? {
                let pair = self.start_family(db, &user, now)?;
                return Ok((user, pair, false));
            }
            let (user, created) = match store::find_by_email_key(db, email.key())? {
                // Linking on an unverified e-mail would let anyone who can make a provider
                // account with a victim's address take over the victim's account.
                Some(_) if !body.email_verified => {
                    return Err(Problem::conflict(
                        "An account with this e-mail exists; the provider did not verify the e-mail, so it cannot be linked. Log in with the password instead.",
                    ));
                }
                Some(existing) => (existing, false),
                None => {
                    let name = DisplayName::from_provider(body.name.as_deref(), email.local_part());
                    let user = store::insert_user(
                        db,
                        &NewUser {
                            id: &new_user_id(),
                            email: email.as_str(),
                            email_key: email.key(),
                            name: name.as_str(),
                            role: Role::Customer,
                            password_hash: None,
                            now,
                        },
                    )?;
                    (user, true)
                }
            };
            store::insert_link(db, provider, subject, &user.id, email.as_str(), now)?;
            let pair = self.start_family(db, &user, now)?;
            Ok((user, pair, created))
        })?;
        self.ctx.log.info(
            "social login",
            &[
                ("user_id", user.id.clone().into()),
                ("provider", provider.into()),
                ("created", created.into()),
            ],
        );
        Ok(token_response(self.ctx, &pair))
    }
}

fn parse_provider(raw: &str) -> Result<&str, &'static str> {
    if (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Ok(raw)
    } else {
        Err("must be 1-64 characters of a-z, 0-9, - and _")
    }
}

fn parse_subject(raw: &str) -> Result<&str, &'static str> {
    if (1..=255).contains(&raw.len()) && !raw.chars().any(char::is_control) {
        Ok(raw)
    } else {
        Err("must be 1-255 characters without control characters")
    }
}

fn new_user_id() -> String {
    format!("usr_{}", ids::new_id())
}

fn duplicate_email() -> Problem {
    Problem::conflict("An account with this e-mail address already exists")
}

fn too_many_failures(ctx: &Ctx, retry_after_secs: u64) -> Response {
    let mut response = ctx.problem(Problem::too_many_requests(
        "Too many failed logins; wait before trying again",
    ));
    response.set_header("retry-after", retry_after_secs.to_string());
    response
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn token_response(ctx: &Ctx, pair: &TokenPair) -> Response {
    let mut response = ctx.json(200, pair);
    response.set_header("cache-control", "no-store");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_and_subject_rules() {
        assert!(parse_provider("google").is_ok());
        assert!(parse_provider("my_idp-2").is_ok());
        assert!(parse_provider("Google").is_err());
        assert!(parse_provider("").is_err());
        assert!(parse_subject("1234567890").is_ok());
        assert!(parse_subject("").is_err());
        assert!(parse_subject("a\nb").is_err());
        assert!(parse_subject(&"x".repeat(256)).is_err());
    }

    #[test]
    fn user_json_has_exactly_the_contract_fields() {
        let user = UserRecord {
            id: "usr_1".into(),
            email: "a@b.co".into(),
            name: "A".into(),
            role: Role::Vendor,
            password_hash: Some("$argon2id$secret".into()),
            created_at: 0,
            updated_at: 1_000,
        };
        let v = serde_json::to_value(UserView::from(&user)).unwrap();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["created_at", "email", "id", "name", "role", "updated_at"]
        );
        assert_eq!(v["role"], "vendor");
        assert_eq!(v["updated_at"], "1970-01-01T00:00:01.000Z");
        assert!(!v.to_string().contains("argon2"));
    }
}
