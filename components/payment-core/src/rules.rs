//! How provider answers and webhook events change a payment, and what the client is told: pure
//! functions over a [`PaymentRow`], unit-tested without a database or a provider.

use bazaar_platform::Problem;
use http::StatusCode;
use serde_json::{Value, json};

use crate::bindings::bazaar::payments::types::{
    ErrorKind, EventKind, ProviderError, ProviderPayment, ProviderStatus, WebhookEvent,
};
use crate::domain::{Ledger, Status};
use crate::store::{MethodRow, PaymentRow};

/// The code the payment host gives a provider error when the plugin itself failed (trapped,
/// ran out of fuel or memory, overran its deadline): its instance was killed, so its request
/// was abandoned and nothing was charged.
pub const PLUGIN_FAILED: &str = "plugin_failed";
/// `failure_code` of a payment whose authorization may or may not have happened.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// Seconds a client waits before retrying an answer whose outcome is not final.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A failed request: the problem, and for answers that ask for a retry, `Retry-After`.
#[derive(Debug)]
pub struct Fail {
    pub problem: Problem,
    pub retry_after: Option<u32>,
    /// The `Allow` header of a 405.
    pub allow: Option<String>,
}

impl Fail {
    pub fn retry(problem: Problem) -> Self {
        Fail {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Fail::from(problem)
        }
    }

    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> Self {
        Fail {
            allow: Some(allowed.join(", ")),
            ..Fail::from(Problem::method_not_allowed(method, allowed))
        }
    }
}

impl From<Problem> for Fail {
    fn from(problem: Problem) -> Self {
        Fail {
            problem,
            retry_after: None,
            allow: None,
        }
    }
}

impl From<bazaar_platform::DbError> for Fail {
    fn from(e: bazaar_platform::DbError) -> Self {
        let conflict = matches!(e, bazaar_platform::DbError::Conflict(_));
        let problem = Problem::from(e);
        if conflict {
            Fail::retry(problem)
        } else {
            Fail::from(problem)
        }
    }
}

pub fn ledger(p: &PaymentRow) -> Ledger {
    Ledger {
        status: p.status,
        authorized: p.authorized,
        captured: p.captured,
        refunded: p.refunded,
    }
}

/// Takes over the provider's view of the payment.
pub fn apply_provider(p: &mut PaymentRow, pp: &ProviderPayment) {
    p.provider_ref = Some(pp.reference.clone());
    // A provider's amounts are not trusted to be consistent: none exceeds the payment's amount
    // and refunded never exceeds captured (the ledger's arithmetic relies on it).
    p.authorized = pp.authorized.min(p.amount);
    p.captured = pp.captured.min(p.amount);
    p.refunded = pp.refunded.min(p.captured);
    p.next_action = pp.next_action.clone();
    p.expires_at = pp.expires_at.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
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

/// What an authorization attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The provider answered with a live payment (authorized, or waiting for the payer): 201.
    Accepted,
    /// The provider reported the payment failed: 422.
    ProviderFailed,
    /// The provider declined (`code`): 422.
    Declined(String),
    /// The provider found the request unacceptable: 422.
    Rejected(String),
    /// The plugin failed and was stopped; its request was abandoned, so the payment failed and
    /// nothing was charged: 502.
    PluginFailed,
    /// Any other definite provider error (credentials refused ...): the payment failed, 502.
    Failed,
    /// The provider could not be reached or did not answer: it may have authorized. The payment
    /// stays `requires_authorization` for a retry under the same payment id: 503.
    Unknown,
}

/// Applies the outcome of `providers.authorize` to `p` and classifies it.
pub fn authorization(
    p: &mut PaymentRow,
    outcome: &Result<ProviderPayment, ProviderError>,
) -> Verdict {
    match outcome {
        Ok(pp) => {
            // A retry after an unknown outcome got its answer now.
            p.failure_code = None;
            p.failure_message = None;
            apply_provider(p, pp);
            if p.status == Status::Failed {
                Verdict::ProviderFailed
            } else {
                Verdict::Accepted
            }
        }
        Err(e) if e.kind == ErrorKind::Unavailable && e.code != PLUGIN_FAILED => {
            p.failure_code = Some(OUTCOME_UNKNOWN.into());
            p.failure_message = Some(format!(
                "the provider did not answer ({}); the authorization is retried under the same payment id",
                e.code
            ));
            Verdict::Unknown
        }
        Err(e) => {
            p.status = Status::Failed;
            if e.code == PLUGIN_FAILED {
                p.failure_code = Some("provider_error".into());
                p.failure_message = Some("the provider plugin failed".into());
                return Verdict::PluginFailed;
            }
            p.failure_code = Some(e.code.clone());
            p.failure_message = Some(e.message.clone());
            match e.kind {
                ErrorKind::Declined => Verdict::Declined(e.code.clone()),
                ErrorKind::InvalidRequest => Verdict::Rejected(e.message.clone()),
                _ => Verdict::Failed,
            }
        }
    }
}

/// The answer for a payment that already ended `failed` or `voided` when a retry of its
/// authorization finds it: the same kind of answer the attempt that ended it gave.
pub fn settled_payment_problem(p: &PaymentRow) -> Fail {
    let code = p.failure_code.as_deref().unwrap_or("provider_failed");
    Fail::from(
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the payment was not authorized: {code}"),
        )
        .with_title("Payment Declined")
        .with_extension("decline_code", code)
        .with_extension("payment_id", p.id.as_str()),
    )
}

/// The problem for a verdict other than [`Verdict::Accepted`].
pub fn authorization_problem(verdict: &Verdict, payment_id: &str) -> Option<Fail> {
    let with_id = |p: Problem| p.with_extension("payment_id", payment_id);
    let fail = match verdict {
        Verdict::Accepted => return None,
        Verdict::ProviderFailed => Fail::from(with_id(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the provider did not authorize the payment",
            )
            .with_title("Payment Declined")
            .with_extension("decline_code", "provider_failed"),
        )),
        Verdict::Declined(code) => Fail::from(with_id(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the payment was declined: {code}"),
            )
            .with_title("Payment Declined")
            .with_extension("decline_code", code.as_str()),
        )),
        Verdict::Rejected(message) => Fail::from(with_id(
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, message.as_str())
                .with_title("Payment Rejected"),
        )),
        Verdict::PluginFailed => Fail::from(with_id(Problem::bad_gateway(
            "the payment provider failed; the payment failed and nothing was charged",
        ))),
        Verdict::Failed => Fail::from(with_id(Problem::bad_gateway(
            "the payment provider is unavailable; the payment failed and nothing was charged",
        ))),
        Verdict::Unknown => Fail::retry(with_id(Problem::service_unavailable(
            "the payment provider did not answer, so whether it authorized is unknown; retry \
             with the same Idempotency-Key (the same payment is authorized again, never a second)",
        ))),
    };
    Some(fail)
}

/// The answer when a provider refused or failed a capture, void or refund. A refusal or a
/// plugin that sent nothing changed nothing; a provider that did not answer a request it was
/// sent may have acted, so that outcome is unknown: 503 with `Retry-After` (the key is
/// released, and the retry's provider call carries the same provider idempotency key).
pub fn provider_problem(e: &ProviderError, payment_id: &str) -> Fail {
    match e.kind {
        ErrorKind::InvalidState | ErrorKind::InvalidRequest | ErrorKind::Declined => Fail::from(
            Problem::conflict(format!("the provider refused: {}", e.message))
                .with_extension("provider_code", e.code.as_str()),
        ),
        _ if e.code == PLUGIN_FAILED => Fail::from(
            Problem::bad_gateway("the payment provider failed; nothing changed")
                .with_extension("payment_id", payment_id),
        ),
        ErrorKind::Unavailable => Fail::retry(
            Problem::service_unavailable(
                "the payment provider did not answer, so whether it acted is unknown; retry \
                 with the same Idempotency-Key",
            )
            .with_extension("payment_id", payment_id),
        ),
        _ => Fail::from(
            Problem::bad_gateway("the payment provider failed; nothing changed")
                .with_extension("payment_id", payment_id),
        ),
    }
}

pub fn event_kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Authorized => "authorized",
        EventKind::Captured => "captured",
        EventKind::Voided => "voided",
        EventKind::Refunded => "refunded",
        EventKind::Failed => "failed",
        EventKind::Expired => "expired",
        EventKind::Approved => "approved",
    }
}

/// Applies a verified provider webhook; `true` when it changed the payment. Events that do not
/// fit the payment's state (late, out of order) change nothing.
pub fn apply_webhook(p: &mut PaymentRow, event: &WebhookEvent) -> bool {
    let (before, refunded_before) = (p.status, p.refunded);
    match event.kind {
        EventKind::Authorized if p.status == Status::RequiresAuthorization => {
            p.status = Status::Authorized;
            p.authorized = event.amount.unwrap_or(p.amount).min(p.amount);
            p.failure_code = None;
            p.failure_message = None;
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
            p.failure_code = None;
            p.failure_message = None;
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
        EventKind::Refunded if matches!(p.status, Status::Captured | Status::PartiallyRefunded) => {
            // The event carries the provider's cumulative refunded amount.
            if let Some(total) = event.amount.filter(|t| *t > p.refunded && *t <= p.captured) {
                p.status = ledger(p).after_refund(total);
                p.refunded = total;
            }
        }
        _ => {}
    }
    p.status != before || p.refunded != refunded_before
}

fn money(amount: u64, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency})
}

/// A payment as the API shows it. Admins also see the provider reference and the fraud
/// decision.
pub fn render(
    p: &PaymentRow,
    method: Option<&MethodRow>,
    fraud: Option<(u32, String, Value)>,
    admin: bool,
) -> Value {
    let time = bazaar_platform::time::millis_to_rfc3339;
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
        "created_at": time(p.created_at),
        "updated_at": time(p.updated_at),
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
        out["authorization_expires_at"] = json!(time(e));
    }
    if let Some(code) = &p.failure_code {
        out["failure_code"] = json!(code);
        out["failure_message"] = json!(p.failure_message);
    }
    if admin {
        out["provider_reference"] = json!(p.provider_ref);
        if let Some((score, decision, reasons)) = fraud {
            out["fraud"] = json!({"score": score, "decision": decision, "reasons": reasons});
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: Status) -> PaymentRow {
        PaymentRow {
            id: "pay_1".into(),
            user_id: "u".into(),
            order_id: "o".into(),
            provider: "card".into(),
            method_token: "pm_1".into(),
            status,
            currency: "EUR".into(),
            amount: 1000,
            authorized: 0,
            captured: 0,
            refunded: 0,
            provider_ref: None,
            next_action: None,
            expires_at: None,
            failure_code: None,
            failure_message: None,
            client_addr: None,
            fraud_score: None,
            fraud_decision: None,
            version: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn provider_payment(status: ProviderStatus, captured: u64, refunded: u64) -> ProviderPayment {
        ProviderPayment {
            reference: "pi_1".into(),
            status,
            authorized: 1000,
            captured,
            refunded,
            expires_at: Some(5_000),
            next_action: None,
        }
    }

    fn error(kind: ErrorKind, code: &str) -> ProviderError {
        ProviderError {
            kind,
            code: code.into(),
            message: format!("{code} happened"),
        }
    }

    #[test]
    fn provider_statuses_map_onto_the_state_machine() {
        let cases = [
            (
                ProviderStatus::RequiresAction,
                0,
                0,
                Status::RequiresAuthorization,
            ),
            (ProviderStatus::Authorized, 0, 0, Status::Authorized),
            (ProviderStatus::Captured, 600, 0, Status::Captured),
            (
                ProviderStatus::Captured,
                600,
                200,
                Status::PartiallyRefunded,
            ),
            (ProviderStatus::Captured, 600, 600, Status::Refunded),
            (ProviderStatus::Voided, 0, 0, Status::Voided),
            (ProviderStatus::Expired, 0, 0, Status::Voided),
            (ProviderStatus::Failed, 0, 0, Status::Failed),
        ];
        for (status, captured, refunded, expected) in cases {
            let mut p = payment(Status::RequiresAuthorization);
            apply_provider(&mut p, &provider_payment(status, captured, refunded));
            assert_eq!(p.status, expected, "{status:?}");
            assert_eq!(p.provider_ref.as_deref(), Some("pi_1"));
            assert_eq!((p.captured, p.refunded), (captured, refunded));
            assert_eq!(p.expires_at, Some(5_000));
        }
    }

    #[test]
    fn an_unavailable_provider_leaves_the_authorization_open_for_a_retry() {
        let mut p = payment(Status::RequiresAuthorization);
        let verdict = authorization(&mut p, &Err(error(ErrorKind::Unavailable, "timeout")));
        assert_eq!(verdict, Verdict::Unknown);
        assert_eq!(p.status, Status::RequiresAuthorization);
        assert_eq!(p.failure_code.as_deref(), Some(OUTCOME_UNKNOWN));
        assert_eq!(p.provider_ref, None, "a retry finds and reuses it");
        let fail = authorization_problem(&verdict, &p.id).unwrap();
        assert_eq!(fail.problem.status, 503);
        assert_eq!(fail.retry_after, Some(RETRY_AFTER_SECS));
        assert_eq!(fail.problem.extensions["payment_id"], "pay_1");

        // The retry gets an answer: the unknown outcome is forgotten.
        let verdict = authorization(
            &mut p,
            &Ok(provider_payment(ProviderStatus::Authorized, 0, 0)),
        );
        assert_eq!(verdict, Verdict::Accepted);
        assert_eq!(p.status, Status::Authorized);
        assert_eq!(p.failure_code, None);
        assert!(authorization_problem(&verdict, &p.id).is_none());
    }

    #[test]
    fn a_stopped_plugin_is_a_definite_failure_nothing_charged() {
        let mut p = payment(Status::RequiresAuthorization);
        let verdict = authorization(&mut p, &Err(error(ErrorKind::Unavailable, PLUGIN_FAILED)));
        assert_eq!(verdict, Verdict::PluginFailed);
        assert_eq!(p.status, Status::Failed);
        assert_eq!(p.failure_code.as_deref(), Some("provider_error"));
        let fail = authorization_problem(&verdict, &p.id).unwrap();
        assert_eq!(fail.problem.status, 502);
        assert_eq!(fail.retry_after, None);
        assert!(fail.problem.detail.contains("nothing was charged"));
    }

    #[test]
    fn definite_provider_answers_fail_the_payment() {
        let cases = [
            (
                ErrorKind::Declined,
                "insufficient_funds",
                422,
                Some("insufficient_funds"),
            ),
            (ErrorKind::InvalidRequest, "bad_amount", 422, None),
            (ErrorKind::Authentication, "bad_key", 502, None),
        ];
        for (kind, code, status, decline_code) in cases {
            let mut p = payment(Status::RequiresAuthorization);
            let verdict = authorization(&mut p, &Err(error(kind, code)));
            assert_eq!(p.status, Status::Failed, "{code}");
            assert_eq!(p.failure_code.as_deref(), Some(code));
            let fail = authorization_problem(&verdict, &p.id).unwrap();
            assert_eq!(fail.problem.status, status, "{code}");
            assert_eq!(
                fail.problem
                    .extensions
                    .get("decline_code")
                    .and_then(|v| v.as_str()),
                decline_code
            );
        }
        let mut p = payment(Status::RequiresAuthorization);
        let verdict = authorization(&mut p, &Ok(provider_payment(ProviderStatus::Failed, 0, 0)));
        let fail = authorization_problem(&verdict, &p.id).unwrap();
        assert_eq!(fail.problem.extensions["decline_code"], "provider_failed");
    }

    #[test]
    fn refused_operations_are_conflicts_and_failures_are_bad_gateways() {
        let p = provider_problem(&error(ErrorKind::InvalidState, "already_captured"), "pay_1");
        assert_eq!(p.problem.status, 409);
        assert_eq!(p.problem.extensions["provider_code"], "already_captured");
        // A plugin that failed sent nothing: nothing changed.
        let p = provider_problem(&error(ErrorKind::Unavailable, PLUGIN_FAILED), "pay_1");
        assert_eq!((p.problem.status, p.retry_after), (502, None));
        assert_eq!(p.problem.extensions["payment_id"], "pay_1");
        // A provider that did not answer may have acted: unknown, retry.
        let p = provider_problem(&error(ErrorKind::Unavailable, "timeout"), "pay_1");
        assert_eq!(p.problem.status, 503);
        assert!(p.retry_after.is_some());
        assert_eq!(p.problem.extensions["payment_id"], "pay_1");
    }

    fn webhook(kind: EventKind, amount: Option<u64>) -> WebhookEvent {
        WebhookEvent {
            event_id: "evt".into(),
            reference: "pi_1".into(),
            kind,
            amount,
            occurred_at: 0,
        }
    }

    #[test]
    fn webhooks_apply_only_where_the_state_allows() {
        let mut p = payment(Status::RequiresAuthorization);
        assert!(apply_webhook(
            &mut p,
            &webhook(EventKind::Authorized, Some(5000))
        ));
        assert_eq!(
            (p.status, p.authorized),
            (Status::Authorized, 1000),
            "capped at the amount"
        );
        assert!(
            !apply_webhook(&mut p, &webhook(EventKind::Authorized, None)),
            "a replay"
        );
        assert!(
            !apply_webhook(&mut p, &webhook(EventKind::Failed, None)),
            "too late"
        );
        assert!(apply_webhook(
            &mut p,
            &webhook(EventKind::Captured, Some(600))
        ));
        assert_eq!((p.status, p.captured), (Status::Captured, 600));
        assert!(!apply_webhook(&mut p, &webhook(EventKind::Voided, None)));
        assert!(apply_webhook(
            &mut p,
            &webhook(EventKind::Refunded, Some(200))
        ));
        assert_eq!((p.status, p.refunded), (Status::PartiallyRefunded, 200));
        assert!(
            !apply_webhook(&mut p, &webhook(EventKind::Refunded, Some(100))),
            "cumulative amounts never go back"
        );
        assert!(!apply_webhook(
            &mut p,
            &webhook(EventKind::Refunded, Some(700))
        ));
        assert!(apply_webhook(
            &mut p,
            &webhook(EventKind::Refunded, Some(600))
        ));
        assert_eq!(p.status, Status::Refunded);

        let mut open = payment(Status::Authorized);
        assert!(apply_webhook(&mut open, &webhook(EventKind::Expired, None)));
        assert_eq!(open.status, Status::Voided);
        assert_eq!(open.failure_code.as_deref(), Some("expired"));
    }

    #[test]
    fn rendering_shows_admin_details_only_to_admins() {
        let mut p = payment(Status::Authorized);
        p.provider_ref = Some("pi_1".into());
        let method = MethodRow {
            token: "pm_1".into(),
            user_id: "u".into(),
            provider: "card".into(),
            brand: Some("visa".into()),
            last4: Some("4242".into()),
            bin_country: Some("US".into()),
            exp_month: Some(12),
            exp_year: Some(2040),
            holder_name: Some("A".into()),
            key_id: Some("k1".into()),
            sealed: Some(vec![1, 2, 3]),
            wallet_payer: None,
        };
        let fraud = || Some((10, "allow".to_string(), json!([])));
        let customer = render(&p, Some(&method), fraud(), false);
        assert_eq!(customer["card"], json!({"brand": "visa", "last4": "4242"}));
        assert_eq!(
            customer["amount"],
            json!({"amount": 1000, "currency": "EUR"})
        );
        assert!(customer.get("fraud").is_none());
        assert!(customer.get("provider_reference").is_none());
        assert!(!customer.to_string().contains("k1"), "no vault data");
        let admin = render(&p, Some(&method), fraud(), true);
        assert_eq!(admin["fraud"]["decision"], "allow");
        assert_eq!(admin["provider_reference"], "pi_1");
    }
}
