//! The crypto provider plugin: invoices in the shape of BTCPay Server's Greenfield API
//! (`/api/v1/stores/{store}/invoices`, `Authorization: token …`, decimal amounts as strings).
//! An invoice has an amount and an expiry; the payer pays it outside our system and the
//! provider reports settlement by webhook (`InvoiceSettled`), which the payment core applies as
//! the capture. Capturing through the API is therefore refused: crypto settles, it is not
//! captured. Refunds create a refund (pull payment) for part or all of the settled amount.

// Only the wasm build is a plugin: natively the wit-bindgen imports cannot be linked, so the
// crate is empty there and is exercised through the payment host's contract tests.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../wit",
    world: "bazaar:payments/payment-provider",
    generate_all,
});

use bazaar::payments::types::{
    AuthorizeRequest, ErrorKind, EventKind, Money, PaymentSource, ProviderError, ProviderPayment,
    ProviderStatus, WebhookEvent,
};
use exports::bazaar::payments::provider::Guest;
use payment_plugin_kit::{decimal, http, setting, signature};
use serde_json::{Value, json};

struct CryptoPlugin;

type Settings = Vec<(String, String)>;

fn error(kind: ErrorKind, code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError {
        kind,
        code: code.to_string(),
        message: message.into(),
    }
}

struct Api<'a> {
    base: &'a str,
    key: &'a str,
    store: &'a str,
}

fn safe_id(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(error(
            ErrorKind::InvalidRequest,
            "invalid_reference",
            "malformed invoice id",
        ))
    }
}

impl<'a> Api<'a> {
    fn from(config: &'a Settings) -> Result<Self, ProviderError> {
        let get = |name: &str| {
            setting(config, name).ok_or_else(|| {
                error(
                    ErrorKind::InvalidRequest,
                    "misconfigured",
                    format!("{name} is not set"),
                )
            })
        };
        Ok(Self {
            base: get("api_base")?.trim_end_matches('/'),
            key: get("api_key")?,
            store: safe_id(get("store_id")?)?,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, ProviderError> {
        let auth = format!("token {}", self.key);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let url = format!("{}/api/v1/stores/{}{}", self.base, self.store, path);
        let response = http::send(method, &url, &headers, payload.as_bytes())
            .map_err(|e| error(ErrorKind::Unavailable, "network_error", e.0))?;
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        match response.status {
            200..=299 => Ok(json),
            status => {
                let code = json["code"].as_str().unwrap_or("unknown").to_string();
                let message = json["message"]
                    .as_str()
                    .unwrap_or("provider error")
                    .to_string();
                let kind = match status {
                    401 | 403 => ErrorKind::Authentication,
                    404 => ErrorKind::NotFound,
                    400 | 422 if code == "invalid-state" => ErrorKind::InvalidState,
                    400 | 422 => ErrorKind::InvalidRequest,
                    _ => ErrorKind::Unavailable,
                };
                Err(ProviderError {
                    kind,
                    code,
                    message,
                })
            }
        }
    }

    fn invoice(&self, id: &str) -> Result<ProviderPayment, ProviderError> {
        let invoice = self.call("GET", &format!("/invoices/{}", safe_id(id)?), None)?;
        to_payment(&invoice)
    }
}

fn to_payment(invoice: &Value) -> Result<ProviderPayment, ProviderError> {
    let bad = || error(ErrorKind::Unavailable, "bad_gateway", "malformed invoice");
    let reference = invoice["id"].as_str().ok_or_else(bad)?.to_string();
    let currency = invoice["currency"].as_str().ok_or_else(bad)?;
    let amount = invoice["amount"]
        .as_str()
        .and_then(|a| decimal::from_decimal(a, currency))
        .ok_or_else(bad)?;
    let refunded = invoice["refundedAmount"]
        .as_str()
        .and_then(|a| decimal::from_decimal(a, currency))
        .unwrap_or(0);
    let status = match invoice["status"].as_str() {
        Some("New") | Some("Processing") => ProviderStatus::RequiresAction,
        Some("Settled") => ProviderStatus::Captured,
        Some("Expired") => ProviderStatus::Expired,
        Some("Invalid") if invoice["additionalStatus"].as_str() == Some("Marked") => {
            ProviderStatus::Voided
        }
        _ => ProviderStatus::Failed,
    };
    let settled = status == ProviderStatus::Captured;
    Ok(ProviderPayment {
        reference,
        status,
        authorized: amount,
        captured: if settled { amount } else { 0 },
        refunded,
        expires_at: invoice["expirationTime"].as_u64().map(|s| s * 1000),
        next_action: invoice["checkoutLink"].as_str().map(str::to_string),
    })
}

impl Guest for CryptoPlugin {
    fn authorize(
        config: Settings,
        request: AuthorizeRequest,
    ) -> Result<ProviderPayment, ProviderError> {
        if !matches!(request.source, PaymentSource::Crypto) {
            return Err(error(
                ErrorKind::InvalidRequest,
                "unsupported_source",
                "the crypto provider only accepts crypto payment methods",
            ));
        }
        let api = Api::from(&config)?;
        let minutes: u64 = setting(&config, "invoice_expiry_minutes")
            .and_then(|m| m.parse().ok())
            .unwrap_or(15);
        let invoice = api.call(
            "POST",
            "/invoices",
            Some(json!({
                "amount": decimal::to_decimal(request.amount.amount, &request.amount.currency),
                "currency": request.amount.currency,
                "metadata": {"orderId": request.payment_id, "itemDesc": request.description},
                "checkout": {"expirationMinutes": minutes},
            })),
        )?;
        to_payment(&invoice)
    }

    fn capture(
        _config: Settings,
        _reference: String,
        _amount: Money,
    ) -> Result<ProviderPayment, ProviderError> {
        Err(error(
            ErrorKind::InvalidState,
            "settles_by_payment",
            "crypto invoices are settled by the payer, not captured",
        ))
    }

    fn void(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        let invoice = api.call(
            "POST",
            &format!("/invoices/{}/status", safe_id(&reference)?),
            Some(json!({"status": "Invalid"})),
        )?;
        to_payment(&invoice)
    }

    fn refund(
        config: Settings,
        reference: String,
        amount: Money,
        idempotency_key: String,
    ) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        api.call(
            "POST",
            &format!("/invoices/{}/refund", safe_id(&reference)?),
            Some(json!({
                "refundVariant": "Custom",
                "customAmount": decimal::to_decimal(amount.amount, &amount.currency),
                "customCurrency": amount.currency,
                "name": idempotency_key,
            })),
        )?;
        api.invoice(&reference)
    }

    fn status(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        Api::from(&config)?.invoice(&reference)
    }

    fn verify_webhook(
        config: Settings,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        now: u64,
    ) -> Result<WebhookEvent, ProviderError> {
        let secrets = signature::secrets(setting(&config, "webhook_secrets"));
        signature::verify(&headers, &body, &secrets, now / 1000).map_err(|e| {
            error(
                ErrorKind::InvalidSignature,
                "invalid_signature",
                e.message(),
            )
        })?;
        let invalid = |m: &str| error(ErrorKind::InvalidSignature, "invalid_payload", m);
        let event: Value =
            serde_json::from_slice(&body).map_err(|_| invalid("event is not JSON"))?;
        // A redelivery carries the original delivery id: deduplicate on that.
        let event_id = event["originalDeliveryId"]
            .as_str()
            .or_else(|| event["deliveryId"].as_str())
            .ok_or_else(|| invalid("event without deliveryId"))?;
        let reference = event["invoiceId"]
            .as_str()
            .ok_or_else(|| invalid("event without invoiceId"))?;
        let kind = match event["type"].as_str() {
            Some("InvoiceSettled") => EventKind::Captured,
            Some("InvoiceExpired") => EventKind::Expired,
            Some("InvoiceInvalid") => EventKind::Failed,
            _ => return Err(invalid("unsupported event type")),
        };
        Ok(WebhookEvent {
            event_id: event_id.to_string(),
            reference: reference.to_string(),
            kind,
            amount: None,
            occurred_at: event["timestamp"].as_u64().unwrap_or(0) * 1000,
        })
    }
}

export!(CryptoPlugin);
