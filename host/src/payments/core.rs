//! The payment core: payment records, the state machine, idempotency, provider routing and the
//! fraud check. It implements the behaviour of the `payment-core` WIT world host-side (see
//! docs/payments.md for why and what moving it into a component takes); the HTTP layer
//! (`server`) only parses requests and renders answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::domain::{Amount, Currency, Ledger, Status};
use super::fraud::{self, Decision, FraudConfig, Signals};
use super::plugins::{
    AuthorizeRequest, CallError, CardSource, Detokenize, ErrorKind, EventKind, Money, Op, Output,
    PaymentSource, PluginHost, ProviderPayment, ProviderStatus,
};
use super::store::{Claim, MethodRow, PaymentRow, Store};
use super::vault::{self, KeyRing};

/// An idempotency claim older than this without an answer belonged to a request that died
/// (every plugin call has a deadline of a few seconds; 30 s leaves a wide margin), so a retry
/// with the same key takes it over instead of answering 409 forever.
const ABANDONED_CLAIM_MS: i64 = 30_000;

/// A failed request, rendered by the server as RFC 9457 problem+json.
#[derive(Debug)]
pub struct Problem {
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<(String, String)>,
    pub extra: Vec<(&'static str, Value)>,
}

impl Problem {
    pub fn new(status: u16, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            extra: Vec::new(),
        }
    }
    pub fn validation(errors: Vec<(String, String)>) -> Self {
        Self {
            errors,
            ..Self::new(422, "Unprocessable Content", "the request is not valid")
        }
    }
    pub fn field(field: &str, message: &str) -> Self {
        Self::validation(vec![(field.to_string(), message.to_string())])
    }
    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra.push((key, value));
        self
    }
    pub fn internal(err: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{err:#}"), "payment core internal error");
        Self::new(
            500,
            "Internal Server Error",
            "the payment host failed; the error is logged",
        )
    }
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect();
        }
        for (k, v) in &self.extra {
            body[*k] = v.clone();
        }
        body
    }
}

impl From<anyhow::Error> for Problem {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(err)
    }
}

/// Who is calling, from the gateway's identity headers (forwarded by the Spin payments component).
#[derive(Debug, Clone)]
pub struct Caller {
    /// For log lines (the gateway's request id, forwarded).
    pub request_id: String,
    pub user_id: String,
    pub admin: bool,
    pub client_addr: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub struct Core {
    pub store: Arc<Store>,
    pub vault: KeyRing,
    pub plugins: PluginHost,
    pub fraud: FraudConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn new_id(prefix: &str) -> String {
    // Same unguessable format as tokens, different prefix.
    let token = vault::new_token();
    format!("{prefix}_{}", &token[3..])
}

fn hash_request(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.len().to_le_bytes());
        hasher.update(p.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn money(amount: u64, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency})
}

fn event_name(status: Status) -> &'static str {
    match status {
        Status::RequiresAuthorization => "payment.requires_action",
        Status::Authorized => "payment.authorized",
        Status::Captured => "payment.captured",
        Status::PartiallyRefunded | Status::Refunded => "payment.refunded",
        Status::Voided => "payment.voided",
        Status::Failed => "payment.failed",
    }
}

fn event(p: &PaymentRow) -> Value {
    json!({
        "id": new_id("evt"),
        "type": event_name(p.status),
        "payment_id": p.id,
        "order_id": p.order_id,
        "user_id": p.user_id,
        "provider": p.provider,
        "status": p.status.as_str(),
        "amount": money(p.amount, &p.currency),
        "captured": money(p.captured, &p.currency),
        "refunded": money(p.refunded, &p.currency),
        "failure_code": p.failure_code,
        "occurred_at": rfc3339(p.updated_at),
    })
}

/// Strings the client sends: bounded, no control characters.
fn text(
    body: &Value,
    field: &str,
    max: usize,
    required: bool,
    errors: &mut Vec<(String, String)>,
) -> Option<String> {
    match &body[field] {
        Value::Null if !required => None,
        Value::String(s)
            if !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
        {
            Some(s.trim().to_string())
        }
        Value::Null => {
            errors.push((field.to_string(), "is required".into()));
            None
        }
        _ => {
            errors.push((
                field.to_string(),
                format!("must be a non-empty string of at most {max} characters"),
            ));
            None
        }
    }
}

impl Core {
    pub fn new(store: Arc<Store>, vault: KeyRing, plugins: PluginHost, fraud: FraudConfig) -> Self {
        Self {
            store,
            vault,
            plugins,
            fraud,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Serialises operations on one payment (capture racing refund, webhook racing void ...).
    async fn lock(&self, payment_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > 10_000 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(payment_id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    // ---- payment methods -------------------------------------------------------------

    pub fn tokenize(&self, caller: &Caller, body: &Value) -> Result<Answer, Problem> {
        let provider = match &body["provider"] {
            Value::Null => "card".to_string(),
            Value::String(p) if matches!(p.as_str(), "card" | "wallet" | "crypto") => p.clone(),
            _ => {
                return Err(Problem::field(
                    "provider",
                    "must be one of card, wallet, crypto",
                ));
            }
        };
        if self.plugins.get(&provider).is_none() {
            return Err(Problem::field(
                "provider",
                "this provider is not configured",
            ));
        }
        let now = now_ms();
        let token = vault::new_token();
        let row = if provider == "card" {
            let int = |f: &str| body[f].as_i64();
            let today = chrono::Utc::now();
            let (y, m) = (
                chrono::Datelike::year(&today),
                chrono::Datelike::month(&today),
            );
            let card = vault::parse_card(
                body["number"].as_str(),
                int("exp_month"),
                int("exp_year"),
                body["cvc"].as_str(),
                body["name"].as_str(),
                (y, m),
            )
            .map_err(|errs| {
                Problem::validation(errs.into_iter().map(|(f, m)| (f.to_string(), m)).collect())
            })?;
            // Bound to the token, so a sealed number cannot be replayed under another token.
            let (key_id, sealed) = self
                .vault
                .seal(card.pan.expose().as_bytes(), token.as_bytes());
            MethodRow {
                token: token.clone(),
                user_id: caller.user_id.clone(),
                provider: provider.clone(),
                brand: Some(card.pan.brand().as_str().to_string()),
                last4: Some(card.pan.last4().to_string()),
                bin_country: self.fraud.bin_country(card.pan.expose()),
                exp_month: Some(card.exp_month),
                exp_year: Some(card.exp_year),
                holder_name: Some(card.name.clone()),
                key_id: Some(key_id),
                sealed: Some(sealed),
            }
        } else {
            MethodRow {
                token: token.clone(),
                user_id: caller.user_id.clone(),
                provider: provider.clone(),
                brand: None,
                last4: None,
                bin_country: None,
                exp_month: None,
                exp_year: None,
                holder_name: None,
                key_id: None,
                sealed: None,
            }
        };
        self.store.insert_method(&row, now)?;
        tracing::info!(request_id = %caller.request_id, user_id = %caller.user_id, provider = %provider, brand = row.brand.as_deref().unwrap_or(""), "payment method saved");
        let mut out = json!({"payment_method": token, "provider": provider});
        if let (Some(brand), Some(last4)) = (&row.brand, &row.last4) {
            out["brand"] = json!(brand);
            out["last4"] = json!(last4);
            out["exp_month"] = json!(row.exp_month);
            out["exp_year"] = json!(row.exp_year);
        }
        Ok(Answer {
            status: 201,
            body: out,
        })
    }

    // ---- payments ----------------------------------------------------------------------

    pub fn render(&self, p: &PaymentRow, caller: &Caller) -> Value {
        let method = self.store.method(&p.method_token).ok().flatten();
        let mut out = json!({
            "id": p.id,
            "order_id": p.order_id,
            "user_id": p.user_id,
            "status": p.status.as_str(),
            "amount": money(p.amount, &p.currency),
            "captured": money(p.captured, &p.currency),
            "refunded": money(p.refunded, &p.currency),
            "provider": p.provider,
            "payment_method": p.method_token,
            "created_at": rfc3339(p.created_at),
            "updated_at": rfc3339(p.updated_at),
        });
        if let Some(MethodRow {
            brand: Some(brand),
            last4: Some(last4),
            ..
        }) = method
        {
            out["card"] = json!({"brand": brand, "last4": last4});
        }
        if let Some(a) = &p.next_action {
            out["next_action"] = json!(a);
        }
        if let Some(e) = p.expires_at {
            out["authorization_expires_at"] = json!(rfc3339(e));
        }
        if let Some(code) = &p.failure_code {
            out["failure_code"] = json!(code);
            out["failure_message"] = json!(p.failure_message);
        }
        if caller.admin {
            out["provider_reference"] = json!(p.provider_ref);
            if let Ok(Some((score, decision, reasons))) = self.store.fraud_decision(&p.id) {
                out["fraud"] = json!({"score": score, "decision": decision, "reasons": reasons});
            }
        }
        out
    }

    /// Loads a payment the caller may see (owner or admin); applies a lapsed authorization.
    fn load(&self, id: &str, caller: &Caller) -> Result<PaymentRow, Problem> {
        let not_found = || Problem::new(404, "Not Found", "no such payment");
        if id.is_empty() || id.len() > 100 {
            return Err(not_found());
        }
        let mut p = self.store.payment(id)?.ok_or_else(not_found)?;
        if p.user_id != caller.user_id && !caller.admin {
            // Same answer as a missing payment: ids of others' payments are not confirmed.
            return Err(not_found());
        }
        if p.status == Status::Authorized && p.expires_at.is_some_and(|e| e <= now_ms()) {
            p.status = Status::Voided;
            p.failure_code = Some("authorization_expired".into());
            p.failure_message = Some("the authorization lapsed before capture".into());
            p.updated_at = now_ms();
            self.store.update_payment(&p, Some(&event(&p)))?;
        }
        Ok(p)
    }

    pub fn get(&self, id: &str, caller: &Caller) -> Result<Answer, Problem> {
        let p = self.load(id, caller)?;
        Ok(Answer {
            status: 200,
            body: self.render(&p, caller),
        })
    }

    /// Runs `f` under the idempotency key (if any): replays a finished answer, rejects a reused
    /// key with a different request (422) and a concurrent duplicate (409).
    pub async fn idempotent<F, Fut>(
        &self,
        scope: String,
        key: Option<&str>,
        request: &[&str],
        f: F,
    ) -> Result<Answer, Problem>
    where
        F: FnOnce(bool) -> Fut,
        Fut: std::future::Future<Output = Result<Answer, Problem>>,
    {
        let Some(key) = key else {
            return f(false).await;
        };
        let hash = hash_request(request);
        let mut takeover = false;
        match self
            .store
            .claim_idempotency(&scope, key, &hash, now_ms(), ABANDONED_CLAIM_MS)?
        {
            Claim::Replay { status, body } => {
                return Ok(Answer {
                    status,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                });
            }
            Claim::Mismatch => {
                return Err(Problem::new(
                    422,
                    "Unprocessable Content",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            Claim::InFlight => {
                return Err(Problem::new(
                    409,
                    "Conflict",
                    "a request with this Idempotency-Key is still in progress",
                ));
            }
            Claim::TakeOver => {
                tracing::warn!(scope = %scope, "taking over a request whose first attempt died mid-flight");
                takeover = true;
            }
            Claim::New => {}
        }
        let result = f(takeover).await;
        let (status, body) = match &result {
            Ok(a) => (a.status, a.body.clone()),
            Err(p) => (p.status, p.to_json()),
        };
        // Our own failure, or a provider that was unavailable for capture/void/refund (nothing
        // changed, and the payment row is untouched): let the client retry with the same key.
        // A 502 from `create` is final: that payment row is marked failed.
        if status >= 500 && (status != 502 || !scope.starts_with("create:")) {
            // Our own failure: let the client retry with the same key.
            self.store.release_idempotency(&scope, key)?;
        } else {
            self.store
                .complete_idempotency(&scope, key, status, &body.to_string())?;
        }
        result
    }

    /// What identifies "the same request" when saving a card: the body with the card number
    /// and CVC replaced by keyed digests (the idempotency store never sees them).
    pub fn method_request_fingerprint(&self, body: &Value) -> String {
        let mut body = body.clone();
        for field in ["number", "cvc"] {
            if let Some(Value::String(secret)) = body.get(field) {
                let digest = self.vault.fingerprint(secret);
                body[field] = Value::String(digest);
            }
        }
        body.to_string()
    }

    /// `takeover`: the first request with this idempotency key died mid-flight; a payment it
    /// left unanswered is reused, so the provider sees the same authorization again.
    pub async fn create(
        &self,
        caller: &Caller,
        body: &Value,
        takeover: bool,
    ) -> Result<Answer, Problem> {
        let mut errors = Vec::new();
        let order_id = text(body, "order_id", 128, true, &mut errors);
        let token = text(body, "payment_method", 128, true, &mut errors);
        let description = text(body, "description", 500, false, &mut errors).unwrap_or_default();
        let amount = match body["amount"]["amount"].as_i64().and_then(Amount::parse) {
            Some(a) => Some(a),
            None => {
                errors.push((
                    "amount.amount".into(),
                    format!(
                        "must be an integer of minor units, 1..={}",
                        super::domain::MAX_AMOUNT
                    ),
                ));
                None
            }
        };
        let currency = match body["amount"]["currency"]
            .as_str()
            .and_then(Currency::parse)
        {
            Some(c) => Some(c),
            None => {
                errors.push((
                    "amount.currency".into(),
                    "must be an ISO 4217 code such as EUR".into(),
                ));
                None
            }
        };
        let shipping_country = match &body["shipping_country"] {
            Value::Null => None,
            Value::String(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            _ => {
                errors.push((
                    "shipping_country".into(),
                    "must be an ISO 3166-1 alpha-2 code".into(),
                ));
                None
            }
        };
        let account_age_days = match &body["account_age_days"] {
            Value::Null => None,
            v => match v.as_u64() {
                Some(d) => Some(d),
                None => {
                    errors.push((
                        "account_age_days".into(),
                        "must be a non-negative integer".into(),
                    ));
                    None
                }
            },
        };
        let (Some(order_id), Some(token), Some(amount), Some(currency)) =
            (order_id, token, amount, currency)
        else {
            return Err(Problem::validation(errors));
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let method = match self.store.method(&token)? {
            Some(m) if m.user_id == caller.user_id => m,
            _ => return Err(Problem::field("payment_method", "no such payment method")),
        };
        let Some(plugin) = self.plugins.get(&method.provider) else {
            return Err(Problem::field(
                "payment_method",
                "its provider is not configured",
            ));
        };
        if takeover
            && let Some(mut p) = self.store.abandoned_authorization(
                &caller.user_id,
                &order_id,
                &method.token,
                amount.get(),
                currency.as_str(),
            )?
        {
            tracing::warn!(request_id = %caller.request_id, payment_id = %p.id, "resuming an authorization interrupted by a crash");
            let (source, detokenize) = self.source_for(&method)?;
            let request = AuthorizeRequest {
                payment_id: p.id.clone(),
                amount: Money {
                    amount: p.amount,
                    currency: p.currency.clone(),
                },
                source,
                description,
            };
            let outcome = plugin
                .call(self.plugins.engine(), Op::Authorize(request), detokenize)
                .await;
            return self.finish_authorization(&mut p, outcome, caller);
        }
        let now = now_ms();
        let mut p = PaymentRow {
            id: new_id("pay"),
            user_id: caller.user_id.clone(),
            order_id,
            provider: method.provider.clone(),
            method_token: method.token.clone(),
            status: Status::RequiresAuthorization,
            currency: currency.as_str().to_string(),
            amount: amount.get(),
            authorized: 0,
            captured: 0,
            refunded: 0,
            provider_ref: None,
            next_action: None,
            expires_at: None,
            failure_code: None,
            failure_message: None,
            client_addr: caller.client_addr.clone(),
            fraud_score: None,
            fraud_decision: None,
            created_at: now,
            updated_at: now,
        };
        // Scored before the row exists, so the history counts only earlier attempts.
        let (by_user, by_card, by_addr, failures, history) = self.store.fraud_history(
            &caller.user_id,
            &method.token,
            caller.client_addr.as_deref(),
            now,
        )?;
        let assessment = fraud::assess(
            &Signals {
                amount: amount.get(),
                user_attempts_last_hour: by_user,
                card_attempts_last_hour: by_card,
                ip_attempts_last_hour: by_addr,
                user_failures_last_day: failures,
                user_history: history,
                bin_country: method.bin_country.clone(),
                shipping_country,
                account_age_days,
            },
            &self.fraud,
        );
        p.fraud_score = Some(assessment.score);
        p.fraud_decision = Some(assessment.decision.as_str().to_string());
        self.store.insert_payment(&p)?;
        self.store.insert_fraud_decision(
            &p.id,
            assessment.score,
            assessment.decision.as_str(),
            &serde_json::to_value(&assessment.reasons).unwrap_or_default(),
            now,
        )?;
        tracing::info!(request_id = %caller.request_id, payment_id = %p.id, user_id = %p.user_id, score = assessment.score, decision = assessment.decision.as_str(), "fraud assessment");
        if assessment.decision == Decision::Block {
            p.status = Status::Failed;
            p.failure_code = Some("fraud_blocked".into());
            p.failure_message = Some("the payment was blocked by fraud screening".into());
            p.updated_at = now_ms();
            self.store.update_payment(&p, Some(&event(&p)))?;
            return Err(Problem::new(
                422,
                "Payment Declined",
                "the payment was blocked by fraud screening",
            )
            .with("payment_id", json!(p.id))
            .with("decline_code", json!("fraud_blocked")));
        }
        let (source, detokenize) = self.source_for(&method)?;
        let request = AuthorizeRequest {
            payment_id: p.id.clone(),
            amount: Money {
                amount: p.amount,
                currency: p.currency.clone(),
            },
            source,
            description,
        };
        let outcome = plugin
            .call(self.plugins.engine(), Op::Authorize(request), detokenize)
            .await;
        self.finish_authorization(&mut p, outcome, caller)
    }

    fn source_for(
        &self,
        method: &MethodRow,
    ) -> Result<(PaymentSource, Option<Arc<Detokenize>>), Problem> {
        match method.provider.as_str() {
            "card" => {
                let (Some(kid), Some(sealed)) = (&method.key_id, &method.sealed) else {
                    return Err(Problem::internal(anyhow::anyhow!(
                        "card method without sealed data"
                    )));
                };
                let pan = self.vault.open(kid, sealed, method.token.as_bytes())?;
                let pan = String::from_utf8(pan)
                    .map_err(|_| anyhow::anyhow!("sealed card number is not text"))?;
                Ok((
                    PaymentSource::Card(CardSource {
                        token: method.token.clone(),
                        brand: method.brand.clone().unwrap_or_default(),
                        last4: method.last4.clone().unwrap_or_default(),
                        exp_month: method.exp_month.unwrap_or(0),
                        exp_year: method.exp_year.unwrap_or(0),
                        holder_name: method.holder_name.clone().unwrap_or_default(),
                    }),
                    Some(Arc::new(Detokenize {
                        token: method.token.clone(),
                        pan,
                    })),
                ))
            }
            "wallet" => Ok((
                PaymentSource::Wallet(format!("payer-{}", method.user_id)),
                None,
            )),
            _ => Ok((PaymentSource::Crypto, None)),
        }
    }

    fn apply_provider(p: &mut PaymentRow, pp: &ProviderPayment) {
        p.provider_ref = Some(pp.reference.clone());
        p.authorized = pp.authorized;
        p.captured = pp.captured;
        p.refunded = pp.refunded;
        p.next_action = pp.next_action.clone();
        p.expires_at = pp.expires_at.map(|e| e as i64);
        p.status = match pp.status {
            ProviderStatus::RequiresAction => Status::RequiresAuthorization,
            ProviderStatus::Authorized => Status::Authorized,
            ProviderStatus::Captured if pp.refunded == 0 => Status::Captured,
            ProviderStatus::Captured if pp.refunded >= pp.captured => Status::Refunded,
            ProviderStatus::Captured => Status::PartiallyRefunded,
            ProviderStatus::Voided | ProviderStatus::Expired => Status::Voided,
            ProviderStatus::Failed => Status::Failed,
        };
    }

    fn finish_authorization(
        &self,
        p: &mut PaymentRow,
        outcome: Result<Output, CallError>,
        caller: &Caller,
    ) -> Result<Answer, Problem> {
        p.updated_at = now_ms();
        match outcome {
            Ok(Output::Payment(pp)) => {
                Self::apply_provider(p, &pp);
                self.store.update_payment(p, Some(&event(p)))?;
                if p.status == Status::Failed {
                    return Err(Problem::new(
                        422,
                        "Payment Declined",
                        "the provider did not authorize the payment",
                    )
                    .with("payment_id", json!(p.id))
                    .with("decline_code", json!("provider_failed")));
                }
                Ok(Answer {
                    status: 201,
                    body: self.render(p, caller),
                })
            }
            Ok(Output::Event(_)) => Err(Problem::internal(anyhow::anyhow!(
                "authorize returned an event"
            ))),
            Err(CallError::Provider(e)) => {
                p.status = Status::Failed;
                p.failure_code = Some(e.code.clone());
                p.failure_message = Some(e.message.clone());
                self.store.update_payment(p, Some(&event(p)))?;
                match e.kind {
                    ErrorKind::Declined => Err(Problem::new(422, "Payment Declined", format!("the payment was declined: {}", e.code))
                        .with("payment_id", json!(p.id))
                        .with("decline_code", json!(e.code))),
                    ErrorKind::InvalidRequest => Err(Problem::new(422, "Payment Rejected", e.message).with("payment_id", json!(p.id))),
                    _ => Err(Problem::new(502, "Bad Gateway", "the payment provider is unavailable; the payment failed and nothing was charged")
                        .with("payment_id", json!(p.id))),
                }
            }
            Err(CallError::Plugin(reason)) => {
                p.status = Status::Failed;
                p.failure_code = Some("provider_error".into());
                p.failure_message = Some("the provider plugin failed".into());
                self.store.update_payment(p, Some(&event(p)))?;
                tracing::warn!(request_id = %caller.request_id, payment_id = %p.id, reason = %reason, "authorization failed in the plugin");
                Err(Problem::new(
                    502,
                    "Bad Gateway",
                    "the payment provider failed; the payment failed and nothing was charged",
                )
                .with("payment_id", json!(p.id)))
            }
        }
    }

    fn provider_problem(p: &PaymentRow, err: CallError) -> Problem {
        match err {
            CallError::Provider(e) => match e.kind {
                ErrorKind::InvalidState | ErrorKind::InvalidRequest | ErrorKind::Declined => {
                    Problem::new(
                        409,
                        "Conflict",
                        format!("the provider refused: {}", e.message),
                    )
                    .with("provider_code", json!(e.code))
                }
                _ => Problem::new(
                    502,
                    "Bad Gateway",
                    "the payment provider is unavailable; nothing changed",
                )
                .with("payment_id", json!(p.id)),
            },
            CallError::Plugin(reason) => {
                tracing::warn!(payment_id = %p.id, reason = %reason, "plugin failure");
                Problem::new(
                    502,
                    "Bad Gateway",
                    "the payment provider failed; nothing changed",
                )
                .with("payment_id", json!(p.id))
            }
        }
    }

    fn optional_amount(body: &Value) -> Result<Option<u64>, Problem> {
        match &body["amount"] {
            Value::Null => Ok(None),
            v => v
                .as_i64()
                .and_then(Amount::parse)
                .map(|a| Some(a.get()))
                .ok_or_else(|| {
                    Problem::field("amount", "must be a positive integer of minor units")
                }),
        }
    }

    pub async fn capture(
        &self,
        id: &str,
        caller: &Caller,
        body: &Value,
    ) -> Result<Answer, Problem> {
        let amount = Self::optional_amount(body)?;
        let _guard = self.lock(id).await;
        let mut p = self.load(id, caller)?;
        let ledger = Ledger {
            status: p.status,
            authorized: p.authorized,
            captured: p.captured,
            refunded: p.refunded,
        };
        let amount = ledger
            .capture(amount)
            .map_err(|t| Problem::new(409, "Conflict", t.message))?;
        let plugin = self
            .plugins
            .get(&p.provider)
            .ok_or_else(|| Problem::new(503, "Service Unavailable", "provider not configured"))?;
        let reference = p.provider_ref.clone().unwrap_or_default();
        let out = plugin
            .call(
                self.plugins.engine(),
                Op::Capture(
                    reference,
                    Money {
                        amount,
                        currency: p.currency.clone(),
                    },
                ),
                None,
            )
            .await
            .map_err(|e| Self::provider_problem(&p, e))?;
        if let Output::Payment(pp) = out {
            Self::apply_provider(&mut p, &pp);
        }
        p.updated_at = now_ms();
        self.store.update_payment(&p, Some(&event(&p)))?;
        Ok(Answer {
            status: 200,
            body: self.render(&p, caller),
        })
    }

    pub async fn void(&self, id: &str, caller: &Caller) -> Result<Answer, Problem> {
        let _guard = self.lock(id).await;
        let mut p = self.load(id, caller)?;
        let ledger = Ledger {
            status: p.status,
            authorized: p.authorized,
            captured: p.captured,
            refunded: p.refunded,
        };
        ledger
            .void()
            .map_err(|t| Problem::new(409, "Conflict", t.message))?;
        let plugin = self
            .plugins
            .get(&p.provider)
            .ok_or_else(|| Problem::new(503, "Service Unavailable", "provider not configured"))?;
        let reference = p.provider_ref.clone().unwrap_or_default();
        let out = plugin
            .call(self.plugins.engine(), Op::Void(reference), None)
            .await
            .map_err(|e| Self::provider_problem(&p, e))?;
        if let Output::Payment(pp) = out {
            Self::apply_provider(&mut p, &pp);
        }
        p.updated_at = now_ms();
        self.store.update_payment(&p, Some(&event(&p)))?;
        Ok(Answer {
            status: 200,
            body: self.render(&p, caller),
        })
    }

    pub async fn refund(
        &self,
        id: &str,
        caller: &Caller,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Problem> {
        if !caller.admin {
            return Err(Problem::new(403, "Forbidden", "only an admin can refund"));
        }
        let amount = Self::optional_amount(body)?;
        let _guard = self.lock(id).await;
        let mut p = self.load(id, caller)?;
        let ledger = Ledger {
            status: p.status,
            authorized: p.authorized,
            captured: p.captured,
            refunded: p.refunded,
        };
        let amount = ledger
            .refund(amount)
            .map_err(|t| Problem::new(409, "Conflict", t.message))?;
        let plugin = self
            .plugins
            .get(&p.provider)
            .ok_or_else(|| Problem::new(503, "Service Unavailable", "provider not configured"))?;
        // Deterministic per refund step, so a retried call cannot refund twice at the provider.
        let provider_key = match idempotency_key {
            Some(k) => format!("refund-{}-{}", p.id, hash_request(&[k])),
            None => format!("refund-{}-{}-{}", p.id, p.refunded, amount),
        };
        let reference = p.provider_ref.clone().unwrap_or_default();
        let out = plugin
            .call(
                self.plugins.engine(),
                Op::Refund(
                    reference,
                    Money {
                        amount,
                        currency: p.currency.clone(),
                    },
                    provider_key,
                ),
                None,
            )
            .await
            .map_err(|e| Self::provider_problem(&p, e))?;
        if let Output::Payment(pp) = out {
            Self::apply_provider(&mut p, &pp);
        }
        p.updated_at = now_ms();
        self.store.update_payment(&p, Some(&event(&p)))?;
        tracing::info!(request_id = %caller.request_id, payment_id = %p.id, amount, admin = %caller.user_id, "refund issued");
        Ok(Answer {
            status: 200,
            body: self.render(&p, caller),
        })
    }

    pub fn events(&self, id: &str, caller: &Caller) -> Result<Answer, Problem> {
        let p = self.load(id, caller)?;
        let items = self.store.events_for(&p.id)?;
        Ok(Answer {
            status: 200,
            body: json!({"items": items, "next_cursor": null}),
        })
    }

    // ---- webhooks ----------------------------------------------------------------------

    pub async fn webhook(
        &self,
        provider: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Answer, Problem> {
        let Some(plugin) = self.plugins.get(provider) else {
            return Err(Problem::new(404, "Not Found", "no such payment provider"));
        };
        let out = plugin
            .call(
                self.plugins.engine(),
                Op::VerifyWebhook(headers, body, now_ms() as u64),
                None,
            )
            .await;
        let event = match out {
            Ok(Output::Event(e)) => e,
            Ok(Output::Payment(_)) => {
                return Err(Problem::internal(anyhow::anyhow!(
                    "verify-webhook returned a payment"
                )));
            }
            Err(CallError::Provider(e)) => {
                tracing::warn!(provider, code = %e.code, reason = %e.message, "webhook rejected");
                return Err(Problem::new(
                    400,
                    "Bad Request",
                    format!("webhook rejected: {}", e.message),
                ));
            }
            Err(CallError::Plugin(reason)) => {
                tracing::warn!(provider, reason = %reason, "webhook verification failed in the plugin");
                return Err(Problem::new(
                    400,
                    "Bad Request",
                    "webhook could not be verified",
                ));
            }
        };
        let payment = self.store.payment_by_ref(provider, &event.reference)?;
        let kind = format!("{:?}", event.kind).to_ascii_lowercase();
        if !self.store.record_webhook(
            provider,
            &event.event_id,
            payment.as_ref().map(|p| p.id.as_str()),
            &kind,
            now_ms(),
        )? {
            tracing::info!(provider, event_id = %event.event_id, "duplicate webhook ignored");
            return Ok(Answer {
                status: 200,
                body: json!({"received": true, "duplicate": true}),
            });
        }
        let Some(payment) = payment else {
            tracing::info!(provider, event_id = %event.event_id, "webhook for an unknown payment ignored");
            return Ok(Answer {
                status: 200,
                body: json!({"received": true, "applied": false}),
            });
        };
        let _guard = self.lock(&payment.id).await;
        // Re-read under the lock: an API call may have changed it meanwhile.
        let Some(mut p) = self.store.payment(&payment.id)? else {
            return Ok(Answer {
                status: 200,
                body: json!({"received": true, "applied": false}),
            });
        };
        let before = p.status;
        match event.kind {
            EventKind::Authorized if p.status == Status::RequiresAuthorization => {
                p.status = Status::Authorized;
                p.authorized = event.amount.unwrap_or(p.amount).min(p.amount);
            }
            EventKind::Captured
                if matches!(p.status, Status::RequiresAuthorization | Status::Authorized) =>
            {
                let ceiling = if p.authorized > 0 {
                    p.authorized
                } else {
                    p.amount
                };
                p.status = Status::Captured;
                p.authorized = p.authorized.max(ceiling);
                p.captured = event.amount.unwrap_or(ceiling).min(ceiling);
            }
            EventKind::Voided | EventKind::Expired
                if matches!(p.status, Status::RequiresAuthorization | Status::Authorized) =>
            {
                p.status = Status::Voided;
                if event.kind == EventKind::Expired {
                    p.failure_code = Some("expired".into());
                }
            }
            EventKind::Failed if p.status == Status::RequiresAuthorization => {
                p.status = Status::Failed;
                p.failure_code = Some("provider_failed".into());
            }
            EventKind::Refunded
                if matches!(p.status, Status::Captured | Status::PartiallyRefunded) =>
            {
                // The event carries the provider's cumulative refunded amount.
                if let Some(total) = event.amount.filter(|t| *t > p.refunded && *t <= p.captured) {
                    p.refunded = total;
                    p.status = Ledger {
                        status: p.status,
                        authorized: p.authorized,
                        captured: p.captured,
                        refunded: p.refunded,
                    }
                    .after_refund(total);
                }
            }
            _ => {}
        }
        let applied = p.status != before || p.refunded != payment.refunded;
        if applied {
            p.updated_at = now_ms();
            self.store.update_payment(&p, Some(&self::event(&p)))?;
        }
        tracing::info!(provider, event_id = %event.event_id, payment_id = %p.id, applied, "webhook processed");
        Ok(Answer {
            status: 200,
            body: json!({"received": true, "applied": applied}),
        })
    }
}
