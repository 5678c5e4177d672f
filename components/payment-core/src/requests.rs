//! Request bodies of the payment API: parsed and validated here, free of I/O, so every rule is
//! unit-tested. Field errors come in the order of the fields, all of them at once.

use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::{FieldError, Problem};
use serde_json::Value;

use crate::bindings::bazaar::payments::vault::CardInput;
use crate::domain::{Amount, Currency, MAX_AMOUNT};

/// JSON bodies are small; card data and webhook events fit comfortably.
pub const MAX_BODY: usize = DEFAULT_JSON_LIMIT;

/// A JSON object body (413 over [`MAX_BODY`], 415 not JSON, 400 malformed, 422 not an object).
pub fn json_object(content_type: Option<&str>, body: &[u8]) -> Result<Value, Problem> {
    let value: Value = parse_json(content_type, body, MAX_BODY)?;
    if !value.is_object() {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    Ok(value)
}

/// The optional body of capture / void / refund: empty means `{}`; any content type.
pub fn action_body(body: &[u8]) -> Result<Value, Problem> {
    if body.len() > MAX_BODY {
        return Err(Problem::payload_too_large(MAX_BODY));
    }
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    json_object(Some("application/json"), body)
}

/// Strings the client sends: bounded, no control characters, trimmed.
fn text(
    body: &Value,
    field: &str,
    max: usize,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match &body[field] {
        Value::Null if !required => None,
        Value::String(s)
            if !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
        {
            Some(s.trim().to_string())
        }
        Value::Null => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        _ => {
            errors.push(FieldError::new(
                field,
                format!("must be a non-empty string of at most {max} characters"),
            ));
            None
        }
    }
}

/// `POST /api/v1/payments`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePayment {
    pub order_id: String,
    pub payment_method: String,
    pub description: String,
    pub amount: u64,
    pub currency: String,
    pub shipping_country: Option<String>,
    pub account_age_days: Option<u64>,
}

pub fn create_payment(body: &Value) -> Result<CreatePayment, Problem> {
    let mut errors = Vec::new();
    let order_id = text(body, "order_id", 128, true, &mut errors);
    let payment_method = text(body, "payment_method", 128, true, &mut errors);
    let description = text(body, "description", 500, false, &mut errors).unwrap_or_default();
    let amount = body["amount"]["amount"].as_i64().and_then(Amount::parse);
    if amount.is_none() {
        errors.push(FieldError::new(
            "amount.amount",
            format!("must be an integer of minor units, 1..={MAX_AMOUNT}"),
        ));
    }
    let currency = body["amount"]["currency"]
        .as_str()
        .and_then(Currency::parse);
    if currency.is_none() {
        errors.push(FieldError::new(
            "amount.currency",
            "must be an ISO 4217 code such as EUR",
        ));
    }
    let shipping_country = match &body["shipping_country"] {
        Value::Null => None,
        Value::String(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        _ => {
            errors.push(FieldError::new(
                "shipping_country",
                "must be an ISO 3166-1 alpha-2 code",
            ));
            None
        }
    };
    let account_age_days = match &body["account_age_days"] {
        Value::Null => None,
        v => {
            let days = v.as_u64();
            if days.is_none() {
                errors.push(FieldError::new(
                    "account_age_days",
                    "must be a non-negative integer",
                ));
            }
            days
        }
    };
    match (order_id, payment_method, amount, currency) {
        (Some(order_id), Some(payment_method), Some(amount), Some(currency))
            if errors.is_empty() =>
        {
            Ok(CreatePayment {
                order_id,
                payment_method,
                description,
                amount: amount.get(),
                currency: currency.as_str().to_owned(),
                shipping_country,
                account_age_days,
            })
        }
        _ => Err(Problem::unprocessable(errors)),
    }
}

/// The providers a payment method can be saved for.
pub const PROVIDERS: [&str; 3] = ["card", "wallet", "crypto"];

/// `POST /api/v1/payments/methods`: which provider (default `card`).
pub fn method_provider(body: &Value) -> Result<String, Problem> {
    match &body["provider"] {
        Value::Null => Ok("card".to_owned()),
        Value::String(p) if PROVIDERS.contains(&p.as_str()) => Ok(p.clone()),
        _ => Err(Problem::unprocessable(vec![FieldError::new(
            "provider",
            "must be one of card, wallet, crypto",
        )])),
    }
}

/// `POST /api/v1/payments/methods` for a wallet: `vaulted` (default `true`) saves a vaulted
/// wallet that pays without the payer; `false` makes the payer approve every payment at the
/// wallet. Other providers have no such choice, so the field is refused for them.
pub fn wallet_vaulted(provider: &str, body: &Value) -> Result<bool, Problem> {
    let refuse = |message: &str| Problem::unprocessable(vec![FieldError::new("vaulted", message)]);
    match (&body["vaulted"], provider) {
        (Value::Null, _) => Ok(true),
        (Value::Bool(vaulted), "wallet") => Ok(*vaulted),
        (_, "wallet") => Err(refuse("must be true or false")),
        _ => Err(refuse("applies to wallet payment methods only")),
    }
}

/// The card fields as the client sent them, for the vault; a mistyped field is `None`, so the
/// vault reports it (its messages and order are the contract's).
pub fn card_input(body: &Value) -> CardInput {
    let text = |f: &str| body[f].as_str().map(str::to_owned);
    CardInput {
        number: text("number"),
        exp_month: body["exp_month"].as_i64(),
        exp_year: body["exp_year"].as_i64(),
        cvc: text("cvc"),
        holder_name: text("name"),
    }
}

/// The fields whose values must never reach storage or logs, not even inside an idempotency
/// fingerprint.
pub const SECRET_FIELDS: [&str; 2] = ["number", "cvc"];

/// What identifies "the same request" when saving a method: the canonical body with the card
/// number and CVC replaced by `digest` of them (the vault's keyed digest). Any JSON type is
/// digested (a number as its JSON text), so no card number enters the fingerprint unkeyed.
pub fn method_fingerprint_body(body: &Value, digest: impl Fn(&str) -> String) -> String {
    let mut body = body.clone();
    for field in SECRET_FIELDS {
        let secret = match body.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        body[field] = Value::String(digest(&secret));
    }
    body.to_string()
}

/// The optional `amount` of capture / refund (default: everything possible).
pub fn optional_amount(body: &Value) -> Result<Option<u64>, Problem> {
    match &body["amount"] {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .and_then(Amount::parse)
            .map(|a| Some(a.get()))
            .ok_or_else(|| {
                Problem::unprocessable(vec![FieldError::new(
                    "amount",
                    "must be a positive integer of minor units",
                )])
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(p: Problem) -> Vec<String> {
        assert_eq!(p.status, 422);
        p.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_payment_request_is_parsed_and_normalised() {
        let p = create_payment(&json!({
            "order_id": " ord_1 ", "payment_method": "pm_x",
            "amount": {"amount": 2500, "currency": "EUR"},
            "shipping_country": "de", "account_age_days": 3
        }))
        .unwrap();
        assert_eq!(p.order_id, "ord_1");
        assert_eq!((p.amount, p.currency.as_str()), (2500, "EUR"));
        assert_eq!(p.shipping_country.as_deref(), Some("DE"));
        assert_eq!(p.account_age_days, Some(3));
        assert_eq!(p.description, "");
    }

    #[test]
    fn every_invalid_payment_field_is_reported_in_order() {
        let err = create_payment(&json!({
            "order_id": "", "amount": {"amount": -5, "currency": "euro"}, "payment_method": 7
        }))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "order_id",
                "payment_method",
                "amount.amount",
                "amount.currency"
            ]
        );
        let err = create_payment(&json!({
            "order_id": "o", "payment_method": "pm", "amount": {"amount": 1.5, "currency": "EUR"},
            "shipping_country": "DEU", "account_age_days": -1, "description": "a\u{7}b"
        }))
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "description",
                "amount.amount",
                "shipping_country",
                "account_age_days"
            ]
        );
        let err = create_payment(&json!({})).unwrap_err();
        assert_eq!(err.errors[0].message, "is required");
    }

    #[test]
    fn method_requests() {
        assert_eq!(method_provider(&json!({})).unwrap(), "card");
        assert_eq!(
            method_provider(&json!({"provider": "wallet"})).unwrap(),
            "wallet"
        );
        assert!(method_provider(&json!({"provider": "bank"})).is_err());
        assert!(wallet_vaulted("wallet", &json!({"provider": "wallet"})).unwrap());
        assert!(!wallet_vaulted("wallet", &json!({"vaulted": false})).unwrap());
        let refused = |provider, body| wallet_vaulted(provider, &body).unwrap_err().status;
        assert_eq!(refused("wallet", json!({"vaulted": "no"})), 422);
        assert_eq!(refused("crypto", json!({"vaulted": false})), 422);
        assert!(method_provider(&json!({"provider": 1})).is_err());
        let card = card_input(&json!({
            "number": 4242424242424242u64, "exp_month": 12, "exp_year": "2040", "cvc": "123",
            "name": "Ada"
        }));
        assert_eq!(
            card.number, None,
            "a mistyped number is left for the vault to report"
        );
        assert_eq!(card.exp_month, Some(12));
        assert_eq!(card.exp_year, None);
        assert_eq!(card.cvc.as_deref(), Some("123"));
        assert_eq!(card.holder_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn method_fingerprints_never_hold_a_card_number_or_cvc_of_any_type() {
        let digest = |s: &str| format!("H({})", s.len());
        for body in [
            json!({"number": "4242424242424242", "cvc": "123", "exp_month": 12}),
            json!({"number": 4242424242424242u64, "cvc": 123, "exp_month": 12}),
            json!({"number": ["4242424242424242"], "cvc": {"v": "123"}, "exp_month": 12}),
        ] {
            let fp = method_fingerprint_body(&body, digest);
            assert!(!fp.contains("4242"), "{fp}");
            assert!(!fp.contains("123"), "{fp}");
            assert!(fp.contains("\"exp_month\":12"), "{fp}");
        }
        // Absent secrets stay absent; different cards give different fingerprints.
        let wallet = method_fingerprint_body(&json!({"provider": "wallet"}), digest);
        assert_eq!(wallet, r#"{"provider":"wallet"}"#);
        let keyed = |s: &str| format!("K{s}K");
        assert_ne!(
            method_fingerprint_body(&json!({"number": "4242424242424242"}), keyed),
            method_fingerprint_body(&json!({"number": "5555555555554444"}), keyed)
        );
    }

    #[test]
    fn bodies_and_amounts() {
        assert_eq!(action_body(b"").unwrap(), json!({}));
        assert_eq!(action_body(br#"{"amount": 5}"#).unwrap()["amount"], 5);
        assert_eq!(action_body(b"[1]").unwrap_err().status, 422);
        assert_eq!(action_body(b"{nope").unwrap_err().status, 400);
        assert_eq!(
            action_body(&vec![b' '; MAX_BODY + 1]).unwrap_err().status,
            413
        );
        assert_eq!(
            json_object(Some("text/plain"), b"{}").unwrap_err().status,
            415
        );
        assert_eq!(optional_amount(&json!({})).unwrap(), None);
        assert_eq!(optional_amount(&json!({"amount": 600})).unwrap(), Some(600));
        for bad in [json!(0), json!(-1), json!("5"), json!(1.5)] {
            assert!(optional_amount(&json!({ "amount": bad })).is_err());
        }
    }
}
