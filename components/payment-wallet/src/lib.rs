//! The wallet provider plugin, modelled on PayPal's Orders v2 and Payments v2 APIs: OAuth2
//! client-credentials token, `POST /v2/checkout/orders` with `intent=AUTHORIZE` and a vaulted
//! payer (`payment_source.paypal.vault_id`), `POST /v2/checkout/orders/{id}/authorize`, then
//! capture / void on the authorization and refunds on the capture. `PayPal-Request-Id` makes
//! every mutation idempotent. The provider reference is the authorization id.
//!
//! Amounts travel as decimal strings (`"12.34"`) and are converted by the currency's exponent.
//!
//! A payer without a vaulted wallet (an empty wallet reference) approves at PayPal first: the
//! order is created `PAYER_ACTION_REQUIRED`, `authorize` answers `requires-action` with the
//! order id as reference and the `payer-action` link as next action, and PayPal's
//! `CHECKOUT.ORDER.APPROVED` webhook becomes an `approved` event. The core then calls
//! `authorize` again with the same payment id: the same `PayPal-Request-Id` finds the order,
//! whose current state is read and, now approved, authorized.

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
use payment_plugin_kit::{decimal, form, http, setting, signature};
use serde_json::{Value, json};

struct WalletPlugin;

type Settings = Vec<(String, String)>;

fn error(kind: ErrorKind, code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError {
        kind,
        code: code.to_string(),
        message: message.into(),
    }
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
            "malformed authorization id",
        ))
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Api<'a> {
    base: &'a str,
    token: String,
}

fn interpret(status: u16, body: &[u8]) -> Result<Value, ProviderError> {
    let json: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    if (200..300).contains(&status) {
        return Ok(json);
    }
    let issue = json["details"][0]["issue"]
        .as_str()
        .or_else(|| json["name"].as_str())
        .unwrap_or("UNKNOWN")
        .to_string();
    let message = json["message"]
        .as_str()
        .unwrap_or("provider error")
        .to_string();
    let kind = match (status, issue.as_str()) {
        (401, _) => ErrorKind::Authentication,
        (404, _) => ErrorKind::NotFound,
        (422, "INSTRUMENT_DECLINED" | "PAYER_CANNOT_PAY" | "TRANSACTION_REFUSED") => {
            ErrorKind::Declined
        }
        (
            422,
            "AUTHORIZATION_ALREADY_CAPTURED"
            | "AUTHORIZATION_VOIDED"
            | "AUTHORIZATION_EXPIRED"
            | "CAPTURE_FULLY_REFUNDED"
            | "INVALID_RESOURCE_STATE",
        ) => ErrorKind::InvalidState,
        (400 | 422, _) => ErrorKind::InvalidRequest,
        _ => ErrorKind::Unavailable,
    };
    Err(ProviderError {
        kind,
        code: issue.to_ascii_lowercase(),
        message,
    })
}

impl<'a> Api<'a> {
    /// Exchanges the client credentials for an access token (instances live for one call).
    fn connect(config: &'a Settings) -> Result<Self, ProviderError> {
        let get = |name: &str| {
            setting(config, name).ok_or_else(|| {
                error(
                    ErrorKind::InvalidRequest,
                    "misconfigured",
                    format!("{name} is not set"),
                )
            })
        };
        let base = get("api_base")?.trim_end_matches('/');
        let basic = format!(
            "Basic {}",
            base64(format!("{}:{}", get("client_id")?, get("client_secret")?).as_bytes())
        );
        let body = form::encode(&[("grant_type", "client_credentials")]);
        let response = http::send(
            "POST",
            &format!("{base}/v1/oauth2/token"),
            &[
                ("authorization", &basic),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .map_err(|e| error(ErrorKind::Unavailable, "network_error", e.0))?;
        let json = interpret(response.status, &response.body)?;
        let token = json["access_token"]
            .as_str()
            .ok_or_else(|| error(ErrorKind::Unavailable, "bad_gateway", "no access token"))?
            .to_string();
        Ok(Self { base, token })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        request_id: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("prefer", "return=representation"),
        ];
        if let Some(id) = request_id {
            headers.push(("paypal-request-id", id));
        }
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let response = http::send(
            method,
            &format!("{}{}", self.base, path),
            &headers,
            payload.as_bytes(),
        )
        .map_err(|e| error(ErrorKind::Unavailable, "network_error", e.0))?;
        interpret(response.status, &response.body)
    }

    fn void_authorization(&self, authorization_id: &str) -> Result<ProviderPayment, ProviderError> {
        self.call(
            "POST",
            &format!(
                "/v2/payments/authorizations/{}/void",
                safe_id(authorization_id)?
            ),
            None,
            Some(&format!("void-{authorization_id}")),
        )?;
        self.payment(authorization_id)
    }

    /// Voids a payment whose reference is still its order (the payer had not approved, or the
    /// approval was not applied yet). An order authorized meanwhile has its authorization
    /// voided. One never authorized holds no money and cannot be voided at PayPal (it lapses
    /// unauthorized), so it is reported voided: the core then no longer authorizes it when an
    /// approval arrives.
    fn abandon_order(&self, order_id: &str) -> Result<ProviderPayment, ProviderError> {
        let order = self.call(
            "GET",
            &format!("/v2/checkout/orders/{}", safe_id(order_id)?),
            None,
            None,
        )?;
        if let Some(authorization_id) =
            order["purchase_units"][0]["payments"]["authorizations"][0]["id"].as_str()
        {
            return self.void_authorization(authorization_id);
        }
        Ok(ProviderPayment {
            reference: order_id.to_string(),
            status: ProviderStatus::Voided,
            authorized: 0,
            captured: 0,
            refunded: 0,
            expires_at: None,
            next_action: None,
        })
    }

    /// The payment as a whole, read from the order the authorization belongs to.
    fn payment(&self, authorization_id: &str) -> Result<ProviderPayment, ProviderError> {
        let auth = self.call(
            "GET",
            &format!("/v2/payments/authorizations/{}", safe_id(authorization_id)?),
            None,
            None,
        )?;
        let order_id = auth["supplementary_data"]["related_ids"]["order_id"]
            .as_str()
            .ok_or_else(|| {
                error(
                    ErrorKind::Unavailable,
                    "bad_gateway",
                    "authorization without order",
                )
            })?;
        let order = self.call(
            "GET",
            &format!("/v2/checkout/orders/{}", safe_id(order_id)?),
            None,
            None,
        )?;
        to_payment(&order)
    }
}

fn amount_of(value: &Value) -> u64 {
    let currency = value["currency_code"].as_str().unwrap_or("USD");
    value["value"]
        .as_str()
        .and_then(|v| decimal::from_decimal(v, currency))
        .unwrap_or(0)
}

fn to_payment(order: &Value) -> Result<ProviderPayment, ProviderError> {
    let payments = &order["purchase_units"][0]["payments"];
    let Some(auth) = payments["authorizations"].get(0) else {
        let link = order["links"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["rel"] == "payer-action"))
            .and_then(|l| l["href"].as_str());
        return Ok(ProviderPayment {
            reference: order["id"].as_str().unwrap_or_default().to_string(),
            status: ProviderStatus::RequiresAction,
            authorized: 0,
            captured: 0,
            refunded: 0,
            expires_at: None,
            next_action: link.map(str::to_string),
        });
    };
    let captures = payments["captures"].as_array().cloned().unwrap_or_default();
    let captured: u64 = captures
        .iter()
        .filter(|c| c["status"] != "DECLINED")
        .map(|c| amount_of(&c["amount"]))
        .sum();
    let refunded: u64 = payments["refunds"]
        .as_array()
        .map(|r| r.iter().map(|r| amount_of(&r["amount"])).sum())
        .unwrap_or(0);
    let status = match auth["status"].as_str() {
        Some("CREATED") | Some("PENDING") => ProviderStatus::Authorized,
        Some("CAPTURED") | Some("PARTIALLY_CAPTURED") => ProviderStatus::Captured,
        Some("VOIDED") => ProviderStatus::Voided,
        Some("EXPIRED") => ProviderStatus::Expired,
        _ => ProviderStatus::Failed,
    };
    Ok(ProviderPayment {
        reference: auth["id"].as_str().unwrap_or_default().to_string(),
        status,
        authorized: amount_of(&auth["amount"]),
        captured,
        refunded,
        expires_at: auth["expiration_time_unix"].as_u64().map(|s| s * 1000),
        next_action: None,
    })
}

impl Guest for WalletPlugin {
    fn authorize(
        config: Settings,
        request: AuthorizeRequest,
    ) -> Result<ProviderPayment, ProviderError> {
        let PaymentSource::Wallet(payer) = &request.source else {
            return Err(error(
                ErrorKind::InvalidRequest,
                "unsupported_source",
                "the wallet provider only accepts wallet payment methods",
            ));
        };
        // A vaulted wallet pays at once; without one the payer approves at PayPal first.
        let payment_source = if payer.is_empty() {
            json!({"paypal": {}})
        } else {
            json!({"paypal": {"vault_id": payer}})
        };
        let api = Api::connect(&config)?;
        let mut order = api.call(
            "POST",
            "/v2/checkout/orders",
            Some(json!({
                "intent": "AUTHORIZE",
                "purchase_units": [{
                    "reference_id": request.payment_id,
                    "description": request.description,
                    "amount": {"currency_code": request.amount.currency, "value": decimal::to_decimal(request.amount.amount, &request.amount.currency)},
                }],
                "payment_source": payment_source,
            })),
            Some(&format!("order-{}", request.payment_id)),
        )?;
        // The same PayPal-Request-Id answers with the order as first created: one that waited
        // for the payer may have been approved (or authorized) since, so read where it stands.
        if order["status"] == "PAYER_ACTION_REQUIRED" {
            let order_id = safe_id(order["id"].as_str().unwrap_or_default())?;
            order = api.call(
                "GET",
                &format!("/v2/checkout/orders/{order_id}"),
                None,
                None,
            )?;
        }
        if order["status"] != "APPROVED" {
            return to_payment(&order);
        }
        let order_id = safe_id(order["id"].as_str().unwrap_or_default())?.to_string();
        let authorized = api.call(
            "POST",
            &format!("/v2/checkout/orders/{order_id}/authorize"),
            Some(json!({})),
            Some(&format!("authorize-{}", request.payment_id)),
        )?;
        to_payment(&authorized)
    }

    fn capture(
        config: Settings,
        reference: String,
        amount: Money,
    ) -> Result<ProviderPayment, ProviderError> {
        let api = Api::connect(&config)?;
        api.call(
            "POST",
            &format!("/v2/payments/authorizations/{}/capture", safe_id(&reference)?),
            Some(json!({"amount": {"currency_code": amount.currency, "value": decimal::to_decimal(amount.amount, &amount.currency)}, "final_capture": true})),
            Some(&format!("capture-{reference}")),
        )?;
        api.payment(&reference)
    }

    fn void(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        let api = Api::connect(&config)?;
        match api.void_authorization(&reference) {
            // Not an authorization: the order of a payment still waiting for the payer.
            Err(e) if e.kind == ErrorKind::NotFound => api.abandon_order(&reference),
            other => other,
        }
    }

    fn refund(
        config: Settings,
        reference: String,
        amount: Money,
        idempotency_key: String,
    ) -> Result<ProviderPayment, ProviderError> {
        let api = Api::connect(&config)?;
        let auth = api.call(
            "GET",
            &format!("/v2/payments/authorizations/{}", safe_id(&reference)?),
            None,
            None,
        )?;
        let order_id = auth["supplementary_data"]["related_ids"]["order_id"]
            .as_str()
            .unwrap_or_default();
        let order = api.call(
            "GET",
            &format!("/v2/checkout/orders/{}", safe_id(order_id)?),
            None,
            None,
        )?;
        let capture_id = order["purchase_units"][0]["payments"]["captures"][0]["id"]
            .as_str()
            .ok_or_else(|| {
                error(
                    ErrorKind::InvalidState,
                    "not_captured",
                    "nothing captured to refund",
                )
            })?;
        api.call(
            "POST",
            &format!("/v2/payments/captures/{}/refund", safe_id(capture_id)?),
            Some(json!({"amount": {"currency_code": amount.currency, "value": decimal::to_decimal(amount.amount, &amount.currency)}})),
            Some(&idempotency_key),
        )?;
        api.payment(&reference)
    }

    fn status(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        Api::connect(&config)?.payment(&reference)
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
        let event_id = event["id"]
            .as_str()
            .ok_or_else(|| invalid("event without id"))?;
        let resource = &event["resource"];
        let (kind, reference, amount) = match event["event_type"].as_str() {
            // The payer approved the order: its reference until it is authorized.
            Some("CHECKOUT.ORDER.APPROVED") => (EventKind::Approved, resource["id"].as_str(), None),
            Some("PAYMENT.AUTHORIZATION.VOIDED") => {
                (EventKind::Voided, resource["id"].as_str(), None)
            }
            Some("PAYMENT.CAPTURE.COMPLETED") => (
                EventKind::Captured,
                resource["supplementary_data"]["related_ids"]["authorization_id"].as_str(),
                Some(amount_of(&resource["amount"])),
            ),
            Some("PAYMENT.CAPTURE.DENIED") => (
                EventKind::Failed,
                resource["supplementary_data"]["related_ids"]["authorization_id"].as_str(),
                None,
            ),
            _ => return Err(invalid("unsupported event type")),
        };
        Ok(WebhookEvent {
            event_id: event_id.to_string(),
            reference: reference
                .ok_or_else(|| invalid("event without a resource id"))?
                .to_string(),
            kind,
            amount,
            occurred_at: event["create_time_unix"].as_u64().unwrap_or(0) * 1000,
        })
    }
}

export!(WalletPlugin);
