//! Mapping between Stripe's PaymentIntent JSON and the plugin world's types.

use crate::bazaar::payments::types::{
    ErrorKind, EventKind, ProviderError, ProviderPayment, ProviderStatus, WebhookEvent,
};
use crate::error;
use serde_json::Value;

/// Provider ids go into URL paths; anything beyond Stripe's id alphabet is refused so a
/// reference can never rewrite the path.
pub fn path_segment(reference: &str) -> Result<&str, ProviderError> {
    let ok = !reference.is_empty()
        && reference.len() <= 128
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(reference)
    } else {
        Err(error(
            ErrorKind::InvalidRequest,
            "invalid_reference",
            "malformed provider reference",
        ))
    }
}

/// Turns an HTTP answer into its JSON, or Stripe's error object into a `ProviderError`.
pub fn interpret(status: u16, body: &[u8]) -> Result<Value, ProviderError> {
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        error(
            ErrorKind::Unavailable,
            "bad_gateway",
            format!("provider answered {status} without JSON"),
        )
    })?;
    if (200..300).contains(&status) {
        return Ok(json);
    }
    let err = &json["error"];
    let code = err["decline_code"]
        .as_str()
        .or_else(|| err["code"].as_str())
        .unwrap_or("unknown")
        .to_string();
    let message = err["message"]
        .as_str()
        .unwrap_or("provider error")
        .to_string();
    let kind = match (status, err["type"].as_str()) {
        (402, _) | (_, Some("card_error")) => ErrorKind::Declined,
        (401, _) => ErrorKind::Authentication,
        (404, _) => ErrorKind::NotFound,
        (400, _) if code == "payment_intent_unexpected_state" => ErrorKind::InvalidState,
        (400, _) | (409, _) => ErrorKind::InvalidRequest,
        _ => ErrorKind::Unavailable,
    };
    Err(ProviderError {
        kind,
        code,
        message,
    })
}

fn amount(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub fn payment_intent(intent: &Value) -> Result<ProviderPayment, ProviderError> {
    let reference = intent["id"]
        .as_str()
        .ok_or_else(|| {
            error(
                ErrorKind::Unavailable,
                "bad_gateway",
                "payment intent without id",
            )
        })?
        .to_string();
    let charge = &intent["latest_charge"];
    let status = match intent["status"].as_str() {
        Some("requires_capture") => ProviderStatus::Authorized,
        Some("succeeded") => ProviderStatus::Captured,
        Some("canceled") if intent["cancellation_reason"].as_str() == Some("expired") => {
            ProviderStatus::Expired
        }
        Some("canceled") => ProviderStatus::Voided,
        Some("requires_action") | Some("processing") => ProviderStatus::RequiresAction,
        _ => ProviderStatus::Failed,
    };
    Ok(ProviderPayment {
        reference,
        status,
        authorized: amount(&intent["amount"]),
        captured: amount(&intent["amount_received"]),
        refunded: amount(&charge["amount_refunded"]),
        expires_at: charge["capture_before"].as_u64().map(|s| s * 1000),
        next_action: None,
    })
}

pub fn webhook_event(body: &[u8]) -> Result<WebhookEvent, ProviderError> {
    let invalid = |m: &str| error(ErrorKind::InvalidSignature, "invalid_payload", m);
    let event: Value = serde_json::from_slice(body).map_err(|_| invalid("event is not JSON"))?;
    let event_id = event["id"]
        .as_str()
        .ok_or_else(|| invalid("event without id"))?;
    let object = &event["data"]["object"];
    let (kind, amount) = match event["type"].as_str() {
        Some("payment_intent.amount_capturable_updated") => {
            (EventKind::Authorized, object["amount_capturable"].as_u64())
        }
        Some("payment_intent.succeeded") => {
            (EventKind::Captured, object["amount_received"].as_u64())
        }
        Some("payment_intent.canceled") => (EventKind::Voided, None),
        Some("payment_intent.payment_failed") => (EventKind::Failed, None),
        Some("charge.refunded") => (EventKind::Refunded, object["amount_refunded"].as_u64()),
        _ => return Err(invalid("unsupported event type")),
    };
    let reference = object["payment_intent"]
        .as_str()
        .or_else(|| object["id"].as_str())
        .ok_or_else(|| invalid("event without payment reference"))?;
    Ok(WebhookEvent {
        event_id: event_id.to_string(),
        reference: reference.to_string(),
        kind,
        amount,
        occurred_at: event["created"].as_u64().unwrap_or(0) * 1000,
    })
}
