//! The payment operations: payment methods, payments (create, read, capture, void, refund),
//! webhooks. Each runs in one component instance per request, so what the host-side core kept
//! in memory lives in the database here: idempotency claims (platform), a lease per payment
//! (serialising operations on it across instances) and the outbox.

use bazaar_platform::db::Database;
use bazaar_platform::idempotency::{self, Claimed};
use bazaar_platform::log::Logger;
use bazaar_platform::{FieldError, Problem, time};
use serde_json::{Value, json};

use crate::bindings::bazaar::payments::types::{
    AuthorizeRequest, CardSource, EventKind, Money, PaymentSource, SealedCard, WebhookEvent,
};
use crate::bindings::bazaar::payments::{providers, vault};
use crate::config::Config;
use crate::domain::Status;
use crate::fraud::{self, Decision, Signals};
use crate::requests::{
    CreatePayment, card_input, method_provider, optional_amount, wallet_vaulted,
};
use crate::rules::{self, Fail, Verdict};
use crate::store::{self, Claim, MethodRow, PaymentRow, Settle};

/// Who is calling, from the identity headers the Spin `payments` component forwards.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub admin: bool,
    pub client_addr: Option<String>,
}

/// A successful answer (or a replayed one, which may be a problem).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The stored answer of an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

/// How long claims and leases last, derived from the host's provider-call deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// A payment's lease: longer than one provider call plus the database work around it.
    pub lease_ms: i64,
    /// An unanswered idempotency claim older than this belonged to a request that died (no
    /// request runs this long), so a retry takes it over. Longer than the lease, so the
    /// takeover also finds the dead request's lease lapsed.
    pub claim_ttl_ms: i64,
}

impl Timings {
    pub fn from_call_deadline(deadline_ms: u64) -> Timings {
        let deadline = i64::try_from(deadline_ms)
            .unwrap_or(i64::MAX / 8)
            .min(i64::MAX / 8);
        Timings {
            lease_ms: 2 * deadline + 5_000,
            claim_ttl_ms: 3 * deadline + 10_000,
        }
    }
}

/// The operations `capture`, `void`, `refund`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Capture,
    Void,
    Refund,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "capture" => Some(Action::Capture),
            "void" => Some(Action::Void),
            "refund" => Some(Action::Refund),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Capture => "capture",
            Action::Void => "void",
            Action::Refund => "refund",
        }
    }
}

/// How a request's idempotency claim ends, from its answer. Answers that ask for a retry are
/// forgotten, so the retry with the same key runs again: server errors and `Retry-After`
/// answers — except a 502 from `create`, which is final (that payment failed, nothing was
/// charged). Everything else is stored and replayed.
pub fn settlement(create: bool, status: u16, retry_after: bool, body: &Value) -> Settle {
    if retry_after || (status >= 500 && !(create && status == 502)) {
        Settle::Release
    } else {
        Settle::Complete {
            status,
            body: body.to_string(),
        }
    }
}

pub struct Service<'a> {
    pub db: &'a Database,
    pub config: &'a Config,
    pub log: &'a Logger,
    pub request_id: &'a str,
    /// The request path, the `instance` of problems (also in stored answers).
    pub path: &'a str,
    pub timings: Timings,
    /// Identifies this request as a lease holder.
    pub holder: String,
}

fn not_found() -> Fail {
    Fail::from(Problem::not_found("no such payment"))
}

impl Service<'_> {
    pub fn problem_body(&self, problem: &Problem) -> Value {
        serde_json::to_value(problem.clone().with_instance(self.path)).unwrap_or(Value::Null)
    }

    fn settlement_of(&self, create: bool, result: &Result<Answer, Fail>) -> Settle {
        match result {
            Ok(a) => settlement(create, a.status, false, &a.body),
            Err(f) => settlement(
                create,
                f.problem.status,
                f.retry_after.is_some(),
                &self.problem_body(&f.problem),
            ),
        }
    }

    /// Runs `work` under the `Idempotency-Key` (if any): replays a stored answer, rejects a
    /// reused key with another request (422) and a concurrent duplicate (409), takes over a
    /// claim whose request died. `work` may settle the claim itself inside the transaction of
    /// its effect (see [`store::save`]); whatever it leaves unsettled is settled here.
    pub fn idempotent(
        &self,
        scope: String,
        key: Option<String>,
        fingerprint: &str,
        create: bool,
        work: impl FnOnce(Option<&Claim>) -> Result<Answer, Fail>,
    ) -> Result<Answer, Fail> {
        let Some(key) = key else {
            return work(None);
        };
        let claimed = idempotency::claim_with_token(
            self.db,
            &scope,
            &key,
            fingerprint,
            self.timings.claim_ttl_ms,
        )
        .map_err(|p| {
            if p.status == 409 {
                Fail::retry(p)
            } else {
                Fail::from(p)
            }
        })?;
        let token = match claimed {
            Claimed::Replay { status, body } => {
                return Ok(Answer {
                    replayed: true,
                    status,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                });
            }
            Claimed::TakeOver(token) => {
                self.log.warn(
                    "taking over a request whose first attempt died mid-flight",
                    &[("scope", scope.as_str().into())],
                );
                token
            }
            Claimed::New(token) => token,
        };
        let claim = Claim::new(scope, key, token);
        let result = work(Some(&claim));
        if claim.settled.get() {
            // Settled with the effect, in the effect's transaction.
            return result;
        }
        let how = self.settlement_of(create, &result);
        match store::settle_claim(self.db, &claim, &how) {
            Ok(_) => {}
            // The answer stands; the claim stays in flight and a retry takes it over later.
            Err(e) => self.log.error(
                "settling an idempotency claim failed",
                &[("error", e.to_string().into())],
            ),
        }
        result
    }

    fn configured(&self, provider: &str) -> bool {
        providers::list_providers().iter().any(|p| p == provider)
    }

    // ---- payment methods --------------------------------------------------------------

    pub fn save_method(
        &self,
        caller: &Caller,
        body: &Value,
        claim: Option<&Claim>,
    ) -> Result<Answer, Fail> {
        let provider = method_provider(body)?;
        let vaulted = wallet_vaulted(&provider, body)?;
        if !self.configured(&provider) {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "provider",
                "this provider is not configured",
            )])
            .into());
        }
        let row = if provider == "card" {
            let card = vault::tokenize_card(&card_input(body)).map_err(|errors| {
                Problem::unprocessable(
                    errors
                        .into_iter()
                        .map(|e| FieldError::new(e.field, e.message))
                        .collect(),
                )
            })?;
            MethodRow {
                token: card.token,
                user_id: caller.user_id.clone(),
                provider: provider.clone(),
                brand: Some(card.brand),
                last4: Some(card.last4),
                bin_country: self.config.fraud.bin_country(&card.bin),
                exp_month: Some(card.exp_month),
                exp_year: Some(card.exp_year),
                holder_name: Some(card.holder_name),
                key_id: Some(card.sealed.key_id),
                sealed: Some(card.sealed.ciphertext),
                wallet_payer: None,
            }
        } else {
            MethodRow {
                token: format!("pm_{}", bazaar_platform::ids::new_id()),
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
                // The stand-in for the payer's vaulted PayPal wallet id (a real integration
                // stores the id PayPal's vault returns when the payer saves the wallet).
                wallet_payer: (provider == "wallet" && vaulted)
                    .then(|| format!("payer-{}", caller.user_id)),
            }
        };
        let mut out = json!({"payment_method": row.token, "provider": provider});
        if let (Some(brand), Some(last4)) = (&row.brand, &row.last4) {
            out["brand"] = json!(brand);
            out["last4"] = json!(last4);
            out["exp_month"] = json!(row.exp_month);
            out["exp_year"] = json!(row.exp_year);
        }
        if provider == "wallet" {
            out["vaulted"] = json!(row.wallet_payer.is_some());
        }
        let settle = Settle::Complete {
            status: 201,
            body: out.to_string(),
        };
        self.db.transaction(|db| {
            store::insert_method(db, &row, time::now_millis())?;
            if let Some(claim) = claim {
                store::settle_claim(db, claim, &settle)?;
            }
            Ok::<_, bazaar_platform::DbError>(())
        })?;
        if let Some(claim) = claim {
            claim.settled.set(true);
        }
        self.log.info(
            "payment method saved",
            &[
                ("user_id", caller.user_id.as_str().into()),
                ("provider", provider.as_str().into()),
                ("brand", row.brand.as_deref().unwrap_or("").into()),
            ],
        );
        Ok(Answer {
            replayed: false,
            status: 201,
            body: out,
        })
    }

    // ---- reading ------------------------------------------------------------------------

    fn render(&self, p: &PaymentRow, caller: &Caller) -> Result<Value, Fail> {
        let method = store::method(self.db, &p.method_token)?;
        let fraud = if caller.admin {
            store::fraud_decision(self.db, &p.id)?
        } else {
            None
        };
        Ok(rules::render(p, method.as_ref(), fraud, caller.admin))
    }

    /// A payment the caller may see (owner or admin); others' payments are "not found" too, so
    /// their ids are not confirmed.
    fn visible(&self, id: &str, caller: &Caller) -> Result<PaymentRow, Fail> {
        if id.is_empty() || id.len() > 100 {
            return Err(not_found());
        }
        let p = store::payment(self.db, id)?.ok_or_else(not_found)?;
        if p.user_id != caller.user_id && !caller.admin {
            return Err(not_found());
        }
        Ok(p)
    }

    /// Applies a lapsed authorization (voided, with its event) before anything reads or acts.
    fn current(&self, mut p: PaymentRow) -> Result<PaymentRow, Fail> {
        let now = time::now_millis();
        if p.status == Status::Authorized
            && p.expires_at.is_some_and(|e| e <= now)
            && !store::expire_authorization(
                self.db,
                &mut p,
                now,
                &self.holder,
                Some(self.request_id),
            )?
        {
            // Someone else recorded a change meanwhile: read what it was.
            p = store::payment(self.db, &p.id)?.ok_or_else(not_found)?;
        }
        Ok(p)
    }

    pub fn get(&self, id: &str, caller: &Caller) -> Result<Answer, Fail> {
        let p = self.current(self.visible(id, caller)?)?;
        Ok(Answer {
            replayed: false,
            status: 200,
            body: self.render(&p, caller)?,
        })
    }

    pub fn events(&self, id: &str, caller: &Caller) -> Result<Answer, Fail> {
        let p = self.current(self.visible(id, caller)?)?;
        let items = store::events_for(self.db, &p.id)?;
        Ok(Answer {
            replayed: false,
            status: 200,
            body: json!({"items": items, "next_cursor": null}),
        })
    }

    // ---- the per-payment lease ----------------------------------------------------------

    /// Runs `work` holding the payment's lease; 409 with `Retry-After` while another request
    /// holds it. The lease is given back afterwards whatever `work` returned.
    fn leased<T>(&self, id: &str, work: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
        let now = time::now_millis();
        if !store::take_lease(self.db, id, &self.holder, now, now + self.timings.lease_ms)? {
            return Err(Fail::retry(
                Problem::conflict(
                    "another operation on this payment is in progress; retry shortly",
                )
                .with_extension("payment_id", id),
            ));
        }
        self.run_leased(id, work)
    }

    /// Runs `work` on a payment this request already leased, then gives the lease back.
    fn run_leased<T>(&self, id: &str, work: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
        let result = work();
        if let Err(e) = store::release_lease(self.db, id, &self.holder) {
            // It lapses by itself; until then the payment answers 409 + Retry-After.
            self.log.error(
                "releasing a payment lease failed",
                &[("payment_id", id.into()), ("error", e.to_string().into())],
            );
        }
        result
    }

    // ---- payments -----------------------------------------------------------------------

    pub fn create(
        &self,
        caller: &Caller,
        req: CreatePayment,
        claim: Option<&Claim>,
    ) -> Result<Answer, Fail> {
        let method = match store::method(self.db, &req.payment_method)? {
            Some(m) if m.user_id == caller.user_id => m,
            _ => {
                return Err(Problem::unprocessable(vec![FieldError::new(
                    "payment_method",
                    "no such payment method",
                )])
                .into());
            }
        };
        // The host substitutes the card number for the token in what the plugin sends its
        // provider; a token inside the description would put the number into a free-text field
        // at the provider.
        if req.description.contains(method.token.as_str()) {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "description",
                "must not contain a payment method token",
            )])
            .into());
        }
        if !self.configured(&method.provider) {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "payment_method",
                "its provider is not configured",
            )])
            .into());
        }
        // An earlier attempt for this very payment whose outcome is unknown (the provider did
        // not answer, or the request died): authorize it again under its id, which the
        // provider deduplicates by, instead of risking a second authorization.
        if let Some(p) = store::unanswered_authorization(
            self.db,
            &caller.user_id,
            &req.order_id,
            &method.token,
            req.amount,
            &req.currency,
        )? {
            self.log.warn(
                "retrying an authorization whose outcome is unknown",
                &[("payment_id", p.id.as_str().into())],
            );
            let id = p.id.clone();
            return self.leased(&id, || {
                // Re-read under the lease: a concurrent retry may have finished it.
                let p = store::payment(self.db, &id)?.ok_or_else(not_found)?;
                if matches!(p.status, Status::Failed | Status::Voided) {
                    // A concurrent retry ended it: answer what that retry learnt, never a 201.
                    return Err(rules::settled_payment_problem(&p));
                }
                if p.status != Status::RequiresAuthorization || p.provider_ref.is_some() {
                    return Ok(Answer {
                        replayed: false,
                        status: 201,
                        body: self.render(&p, caller)?,
                    });
                }
                self.authorize(caller, p, &method, &req.description, claim)
            });
        }

        let now = time::now_millis();
        let mut p = PaymentRow {
            id: format!("pay_{}", bazaar_platform::ids::new_id()),
            user_id: caller.user_id.clone(),
            order_id: req.order_id.clone(),
            provider: method.provider.clone(),
            method_token: method.token.clone(),
            status: Status::RequiresAuthorization,
            currency: req.currency.clone(),
            amount: req.amount,
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
            version: 0,
            created_at: now,
            updated_at: now,
        };
        // Scored before the row exists, so the history counts only earlier attempts.
        let history = store::fraud_history(
            self.db,
            &caller.user_id,
            &method.token,
            caller.client_addr.as_deref(),
            now,
        )?;
        let assessment = fraud::assess(
            &Signals {
                amount: req.amount,
                user_attempts_last_hour: history.by_user,
                card_attempts_last_hour: history.by_card,
                ip_attempts_last_hour: history.by_addr,
                user_failures_last_day: history.failures,
                user_history: history.amounts,
                bin_country: method.bin_country.clone(),
                shipping_country: req.shipping_country.clone(),
                account_age_days: req.account_age_days,
            },
            &self.config.fraud,
        );
        p.fraud_score = Some(assessment.score);
        p.fraud_decision = Some(assessment.decision.as_str().to_owned());
        let reasons = serde_json::to_value(&assessment.reasons).unwrap_or_default();
        store::insert_payment(
            self.db,
            &p,
            &self.holder,
            now + self.timings.lease_ms,
            &reasons,
        )?;
        self.log.info(
            "fraud assessment",
            &[
                ("payment_id", p.id.as_str().into()),
                ("user_id", p.user_id.as_str().into()),
                ("score", assessment.score.into()),
                ("decision", assessment.decision.as_str().into()),
            ],
        );
        let id = p.id.clone();
        self.run_leased(&id, || {
            if assessment.decision == Decision::Block {
                p.status = Status::Failed;
                p.failure_code = Some("fraud_blocked".into());
                p.failure_message = Some("the payment was blocked by fraud screening".into());
                p.updated_at = time::now_millis();
                let fail = Fail::from(
                    Problem::new(
                        http::StatusCode::UNPROCESSABLE_ENTITY,
                        "the payment was blocked by fraud screening",
                    )
                    .with_title("Payment Declined")
                    .with_extension("payment_id", p.id.as_str())
                    .with_extension("decline_code", "fraud_blocked"),
                );
                let settle = self.settlement_of(true, &Err(Fail::from(fail.problem.clone())));
                store::save(
                    self.db,
                    &mut p,
                    true,
                    Some(self.request_id),
                    claim.map(|c| (c, &settle)),
                )?;
                return Err(fail);
            }
            self.authorize(caller, p, &method, &req.description, claim)
        })
    }

    /// What the provider is told to charge: the card's public details and its sealed number
    /// (opened only by the host, for the plugin's egress), or the wallet / crypto source.
    fn source_for(&self, method: &MethodRow) -> Result<(PaymentSource, Option<SealedCard>), Fail> {
        match method.provider.as_str() {
            "card" => {
                let (Some(key_id), Some(ciphertext)) = (&method.key_id, &method.sealed) else {
                    self.log.error(
                        "a card method has no sealed number",
                        &[("payment_method", method.token.as_str().into())],
                    );
                    return Err(Problem::internal("the saved card cannot be used").into());
                };
                Ok((
                    PaymentSource::Card(CardSource {
                        token: method.token.clone(),
                        brand: method.brand.clone().unwrap_or_default(),
                        last4: method.last4.clone().unwrap_or_default(),
                        exp_month: method.exp_month.unwrap_or(0),
                        exp_year: method.exp_year.unwrap_or(0),
                        holder_name: method.holder_name.clone().unwrap_or_default(),
                    }),
                    Some(SealedCard {
                        key_id: key_id.clone(),
                        ciphertext: ciphertext.clone(),
                    }),
                ))
            }
            // No vaulted wallet (empty reference): the payer approves at the wallet.
            "wallet" => Ok((
                PaymentSource::Wallet(method.wallet_payer.clone().unwrap_or_default()),
                None,
            )),
            _ => Ok((PaymentSource::Crypto, None)),
        }
    }

    /// Authorizes `p` (leased by this request) and records the outcome, its event and the
    /// request's answer in one transaction.
    fn authorize(
        &self,
        caller: &Caller,
        mut p: PaymentRow,
        method: &MethodRow,
        description: &str,
        claim: Option<&Claim>,
    ) -> Result<Answer, Fail> {
        let (source, sealed) = self.source_for(method)?;
        let request = AuthorizeRequest {
            payment_id: p.id.clone(),
            amount: Money {
                amount: p.amount,
                currency: p.currency.clone(),
            },
            source,
            description: description.to_owned(),
        };
        let outcome = providers::authorize(&p.provider, &request, sealed.as_ref());
        if let Err(e) = &outcome {
            self.log.warn(
                "authorization refused or failed",
                &[
                    ("payment_id", p.id.as_str().into()),
                    ("kind", format!("{:?}", e.kind).into()),
                    ("code", e.code.as_str().into()),
                    ("reason", e.message.as_str().into()),
                ],
            );
        }
        p.updated_at = time::now_millis();
        let verdict = rules::authorization(&mut p, &outcome);
        let result = match rules::authorization_problem(&verdict, &p.id) {
            None => Ok(Answer {
                replayed: false,
                status: 201,
                body: self.render(&p, caller)?,
            }),
            Some(fail) => Err(fail),
        };
        let settle = self.settlement_of(true, &result);
        // An unknown outcome changes no status, so it publishes no event.
        let emit = verdict != Verdict::Unknown;
        store::save(
            self.db,
            &mut p,
            emit,
            Some(self.request_id),
            claim.map(|c| (c, &settle)),
        )?;
        result
    }

    pub fn act(
        &self,
        action: Action,
        id: &str,
        caller: &Caller,
        body: &Value,
        idempotency_key: Option<&str>,
        claim: Option<&Claim>,
    ) -> Result<Answer, Fail> {
        if action == Action::Refund && !caller.admin {
            return Err(Problem::forbidden("only an admin can refund").into());
        }
        let amount = match action {
            Action::Void => None,
            _ => optional_amount(body)?,
        };
        let id = self.visible(id, caller)?.id;
        self.leased(&id, || {
            // Read under the lease: the state every check below relies on.
            let p = store::payment(self.db, &id)?.ok_or_else(not_found)?;
            let mut p = self.current(p)?;
            let ledger = rules::ledger(&p);
            let conflict = |t: crate::domain::Transition| Fail::from(Problem::conflict(t.message));
            let amount = match action {
                Action::Capture => ledger.capture(amount).map_err(conflict)?,
                Action::Void => ledger.void().map(|()| 0).map_err(conflict)?,
                Action::Refund => ledger.refund(amount).map_err(conflict)?,
            };
            if !self.configured(&p.provider) {
                return Err(Problem::service_unavailable(
                    "the payment's provider is not configured",
                )
                .into());
            }
            let reference = p.provider_ref.clone().unwrap_or_default();
            let money = Money {
                amount,
                currency: p.currency.clone(),
            };
            let outcome = match action {
                Action::Capture => providers::capture(&p.provider, &reference, &money),
                Action::Void => providers::void(&p.provider, &reference),
                Action::Refund => {
                    // Deterministic per refund step, so a retried call cannot refund twice at
                    // the provider; the client's key is digested, not passed on.
                    let provider_key = match idempotency_key {
                        Some(k) => format!(
                            "refund-{}-{}",
                            p.id,
                            idempotency::fingerprint("refund", &p.id, k.as_bytes())
                        ),
                        None => format!("refund-{}-{}-{}", p.id, p.refunded, amount),
                    };
                    providers::refund(&p.provider, &reference, &money, &provider_key)
                }
            };
            let pp = outcome.map_err(|e| {
                self.log.warn(
                    "the provider refused or failed an operation",
                    &[
                        ("payment_id", p.id.as_str().into()),
                        ("action", action.as_str().into()),
                        ("code", e.code.as_str().into()),
                        ("reason", e.message.as_str().into()),
                    ],
                );
                rules::provider_problem(&e, &p.id)
            })?;
            rules::apply_provider(&mut p, &pp);
            p.updated_at = time::now_millis();
            let answer = Answer {
                replayed: false,
                status: 200,
                body: self.render(&p, caller)?,
            };
            let settle = settlement(false, 200, false, &answer.body);
            store::save(
                self.db,
                &mut p,
                true,
                Some(self.request_id),
                claim.map(|c| (c, &settle)),
            )?;
            if action == Action::Refund {
                self.log.info(
                    "refund issued",
                    &[
                        ("payment_id", p.id.as_str().into()),
                        ("amount", amount.into()),
                        ("admin", caller.user_id.as_str().into()),
                    ],
                );
            }
            Ok(answer)
        })
    }

    // ---- webhooks -----------------------------------------------------------------------

    pub fn webhook(
        &self,
        provider: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Answer, Fail> {
        if !self.configured(provider) {
            return Err(Problem::not_found("no such payment provider").into());
        }
        let event = providers::verify_webhook(provider, headers, body).map_err(|e| {
            self.log.warn(
                "webhook rejected",
                &[
                    ("provider", provider.into()),
                    ("code", e.code.as_str().into()),
                    ("reason", e.message.as_str().into()),
                ],
            );
            Fail::from(if e.code == rules::PLUGIN_FAILED {
                Problem::bad_request("webhook could not be verified")
            } else {
                Problem::bad_request(format!("webhook rejected: {}", e.message))
            })
        })?;
        let kind = rules::event_kind_name(event.kind);
        let now = time::now_millis();
        let duplicate = || {
            self.log.info(
                "duplicate webhook ignored",
                &[
                    ("provider", provider.into()),
                    ("event_id", event.event_id.as_str().into()),
                ],
            );
            Answer {
                replayed: false,
                status: 200,
                body: json!({"received": true, "duplicate": true}),
            }
        };
        let Some(payment) = store::payment_by_ref(self.db, provider, &event.reference)? else {
            // An event applied earlier whose reference the payment has since moved past (a
            // wallet order's approval, once the authorization id is the reference).
            if store::webhook_seen(self.db, provider, &event.event_id)? {
                return Ok(duplicate());
            }
            // A signed event about a reference no payment carries (any more, or yet: an
            // unknown-outcome authorization has not recorded its reference). Not recorded as
            // seen, so the event is not lost to deduplication if it comes again; the retried
            // authorization reconciles the payment with the provider's state anyway.
            self.log.info(
                "webhook for a reference no payment carries; not applied",
                &[
                    ("provider", provider.into()),
                    ("event_id", event.event_id.as_str().into()),
                ],
            );
            return Ok(Answer {
                replayed: false,
                status: 200,
                body: json!({"received": true, "applied": false}),
            });
        };
        // The event id is recorded in the same transaction as its effect, under the lease:
        // a webhook answered 409 (payment busy) is redelivered by the provider and applied then.
        let applied = if event.kind == EventKind::Approved {
            self.leased(&payment.id, || self.approved(provider, &event, &payment.id))?
        } else {
            self.leased(&payment.id, || {
                self.db.transaction(|db| {
                    if !store::record_webhook(
                        db,
                        provider,
                        &event.event_id,
                        Some(&payment.id),
                        kind,
                        now,
                    )? {
                        return Ok(None);
                    }
                    let Some(mut p) = store::payment(db, &payment.id)? else {
                        return Ok(Some(false));
                    };
                    let applied = rules::apply_webhook(&mut p, &event);
                    if applied {
                        p.updated_at = time::now_millis();
                        store::save(db, &mut p, true, Some(self.request_id), None)?;
                    }
                    Ok::<_, Fail>(Some(applied))
                })
            })?
        };
        let Some(applied) = applied else {
            return Ok(duplicate());
        };
        self.log.info(
            "webhook processed",
            &[
                ("provider", provider.into()),
                ("event_id", event.event_id.as_str().into()),
                ("payment_id", payment.id.as_str().into()),
                ("applied", applied.into()),
            ],
        );
        Ok(Answer {
            replayed: false,
            status: 200,
            body: json!({"received": true, "applied": applied}),
        })
    }

    /// The payer approved payment `id` (leased by this request) at the wallet: authorizes it
    /// now, under its own payment id so the plugin finds the approved provider payment, and
    /// records the outcome, its event and the webhook's id in one transaction. `None` when the
    /// event was seen before, else whether it changed the payment (a payment no longer waiting
    /// for the payer is left as it is). When the provider does not answer, nothing is recorded
    /// and the answer is 503, so the provider delivers the event again and it is retried then.
    fn approved(
        &self,
        provider: &str,
        event: &WebhookEvent,
        id: &str,
    ) -> Result<Option<bool>, Fail> {
        if store::webhook_seen(self.db, provider, &event.event_id)? {
            return Ok(None);
        }
        let kind = rules::event_kind_name(event.kind);
        let mut p = store::payment(self.db, id)?.ok_or_else(not_found)?;
        if p.status != Status::RequiresAuthorization {
            let now = time::now_millis();
            let recorded =
                store::record_webhook(self.db, provider, &event.event_id, Some(id), kind, now)?;
            return Ok(recorded.then_some(false));
        }
        let method = store::method(self.db, &p.method_token)?.ok_or_else(|| {
            self.log.error(
                "an approved payment's method is missing",
                &[("payment_id", id.into())],
            );
            Fail::from(Problem::internal("the payment's method cannot be found"))
        })?;
        let (source, sealed) = self.source_for(&method)?;
        let request = AuthorizeRequest {
            payment_id: p.id.clone(),
            amount: Money {
                amount: p.amount,
                currency: p.currency.clone(),
            },
            source,
            // The provider payment exists already (found by the payment id); its description
            // went with the request that created it and is not kept here.
            description: String::new(),
        };
        let outcome = providers::authorize(&p.provider, &request, sealed.as_ref());
        if let Err(e) = &outcome {
            self.log.warn(
                "authorization after the payer's approval refused or failed",
                &[
                    ("payment_id", id.into()),
                    ("kind", format!("{:?}", e.kind).into()),
                    ("code", e.code.as_str().into()),
                    ("reason", e.message.as_str().into()),
                ],
            );
        }
        let before = p.status;
        p.updated_at = time::now_millis();
        if rules::authorization(&mut p, &outcome) == Verdict::Unknown {
            return Err(Fail::retry(
                Problem::service_unavailable(
                    "the payment provider did not answer; the approval is applied when the \
                     webhook is delivered again",
                )
                .with_extension("payment_id", id),
            ));
        }
        let changed = p.status != before;
        let now = time::now_millis();
        self.db.transaction(|db| {
            if !store::record_webhook(db, provider, &event.event_id, Some(id), kind, now)? {
                return Ok(None);
            }
            if changed {
                store::save(db, &mut p, true, Some(self.request_id), None)?;
            }
            Ok::<_, Fail>(Some(changed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_outlive_leases_which_outlive_a_provider_call() {
        let t = Timings::from_call_deadline(5_000);
        assert!(t.lease_ms > 5_000);
        assert!(t.claim_ttl_ms > t.lease_ms);
        assert_eq!(t, Timings::from_call_deadline(5_000), "derived, not random");
        let slow = Timings::from_call_deadline(60_000);
        assert!(
            slow.claim_ttl_ms > t.claim_ttl_ms,
            "follows the host's deadline"
        );
        let absurd = Timings::from_call_deadline(u64::MAX);
        assert!(absurd.claim_ttl_ms > absurd.lease_ms, "no overflow");
    }

    #[test]
    fn answers_asking_for_a_retry_are_forgotten_the_rest_replayed() {
        let body = json!({});
        let complete = |s| matches!(s, Settle::Complete { .. });
        assert!(complete(settlement(true, 201, false, &body)));
        assert!(complete(settlement(true, 422, false, &body)));
        assert!(complete(settlement(false, 409, false, &body)));
        assert!(
            complete(settlement(true, 502, false, &body)),
            "a failed create is final"
        );
        assert_eq!(settlement(false, 502, false, &body), Settle::Release);
        assert_eq!(settlement(true, 503, true, &body), Settle::Release);
        assert_eq!(settlement(true, 500, false, &body), Settle::Release);
        assert_eq!(
            settlement(false, 409, true, &body),
            Settle::Release,
            "a busy payment: retry"
        );
    }

    #[test]
    fn actions() {
        for a in [Action::Capture, Action::Void, Action::Refund] {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("events"), None);
    }
}
