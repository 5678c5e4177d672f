//! LOCAL SANDBOX STAND-IN for the providers' APIs. Card network: a small in-memory server speaking the
//! shape of Stripe's PaymentIntents API (form-encoded requests, JSON answers, `Idempotency-Key`,
//! `Bearer` API keys, manual capture, refunds, decline codes and Stripe's test card numbers).
//! Wallet: PayPal's Orders v2 / Payments v2 shape (OAuth2 client-credentials token, orders with
//! `intent=AUTHORIZE`, vaulted payers approve at once, authorizations valid 29 days, capture,
//! void, refunds on captures, `PayPal-Request-Id` idempotency; a vault id containing `declined`
//! is refused with `INSTRUMENT_DECLINED`). Payers without a vault id approve at the wallet: the
//! order waits `PAYER_ACTION_REQUIRED` until the payer-side sandbox route
//! `POST /sandbox/wallet/orders/{id}/approve` approves it and delivers a signed
//! `CHECKOUT.ORDER.APPROVED` webhook to `wallet_webhook_url`.
//! Crypto: invoices in the shape of BTCPay Server's Greenfield API (`/api/v1/stores/{store}/…`,
//! `token` API keys, decimal amounts), plus payer-side sandbox routes
//! (`POST /sandbox/crypto/invoices/{id}/pay|expire`) that settle or expire an invoice and deliver
//! the signed webhook to `crypto_webhook_url`.
//! It is NOT a payment processor: nothing leaves this process. Swapping it for the real endpoint
//! is the plugin's `api_base` / `api_key` setting. Latency and a failure rate are configurable
//! so timeouts and provider outages can be exercised.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{OsRng, rand_core::RngCore};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};

use super::config::SimulatorConfig;

/// How long a card authorization stays capturable (Stripe: 7 days for most cards).
const AUTHORIZATION_VALIDITY_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone)]
struct Intent {
    id: String,
    amount: u64,
    currency: String,
    status: &'static str,
    amount_received: u64,
    amount_refunded: u64,
    capture_before: u64,
    created: u64,
    cancellation_reason: Option<&'static str>,
}

impl Intent {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": if self.status == "requires_capture" { self.amount } else { 0 },
            "amount_received": self.amount_received,
            "capture_method": "manual",
            "currency": self.currency,
            "status": self.status,
            "created": self.created,
            "cancellation_reason": self.cancellation_reason,
            "latest_charge": {
                "object": "charge",
                "amount_captured": self.amount_received,
                "amount_refunded": self.amount_refunded,
                "capture_before": self.capture_before,
            },
        })
    }
}

struct Invoice {
    id: String,
    amount: String,
    currency: String,
    status: &'static str,
    additional: &'static str,
    refunded_minor: u64,
    created: u64,
    expiration: u64,
}

impl Invoice {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "additionalStatus": self.additional,
            "createdTime": self.created,
            "expirationTime": self.expiration,
            "checkoutLink": format!("/sandbox/crypto/invoices/{}", self.id),
            // Simulator extension: Greenfield reports refunds as pull payments only.
            "refundedAmount": payment_plugin_kit::decimal::to_decimal(self.refunded_minor, &self.currency),
        })
    }
}

/// POSTs a signed webhook to `url` (plain HTTP; the local stand-in talks to a local host).
async fn deliver(url: &str, signature: &str, body: String) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url)?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("webhook URL without host"))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri(parsed.path())
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .header(payment_plugin_kit::signature::HEADER, signature)
        .body(Full::new(Bytes::from(body)))?;
    let response =
        tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await??;
    if !response.status().is_success() {
        anyhow::bail!("webhook answered {}", response.status());
    }
    Ok(())
}

/// Signs `event` with `secret` and delivers it to `url`; whether it was accepted (nothing is
/// sent unless both are configured).
async fn send_webhook(url: Option<&str>, secret: Option<&str>, event: &Value) -> bool {
    let (Some(url), Some(secret)) = (url, secret) else {
        return false;
    };
    let body = event.to_string();
    let signature =
        payment_plugin_kit::signature::header_value(secret, now_secs(), body.as_bytes());
    match deliver(url, &signature, body).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "simulator: webhook delivery failed");
            false
        }
    }
}

/// A PayPal-shaped order with at most one authorization.
struct PpOrder {
    id: String,
    reference_id: String,
    currency: String,
    amount: u64,
    status: &'static str,
    /// The payer approved with a funding instrument the wallet then refuses: authorizing the
    /// order answers `INSTRUMENT_DECLINED` (the sandbox's way to exercise a late decline).
    declines_authorization: bool,
    auth: Option<PpAuth>,
    captures: Vec<(String, u64)>,
    refunds: Vec<(String, u64)>,
}

struct PpAuth {
    id: String,
    status: &'static str,
    amount: u64,
    expires: u64,
}

/// PayPal's honour + validity window for an authorization.
const PAYPAL_AUTHORIZATION_SECS: u64 = 29 * 24 * 3600;

fn pp_money(minor: u64, currency: &str) -> Value {
    json!({"currency_code": currency, "value": payment_plugin_kit::decimal::to_decimal(minor, currency)})
}

fn rfc3339_secs(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl PpOrder {
    fn auth_json(&self, auth: &PpAuth) -> Value {
        json!({
            "id": auth.id,
            "status": auth.status,
            "amount": pp_money(auth.amount, &self.currency),
            "expiration_time": rfc3339_secs(auth.expires),
            // Simulator extension: the same instant as unix seconds.
            "expiration_time_unix": auth.expires,
            "supplementary_data": {"related_ids": {"order_id": self.id}},
        })
    }

    fn json(&self) -> Value {
        let mut payments = json!({});
        if let Some(auth) = &self.auth {
            payments["authorizations"] = json!([self.auth_json(auth)]);
            payments["captures"] = self
                .captures
                .iter()
                .map(|(id, amount)| json!({"id": id, "status": "COMPLETED", "amount": pp_money(*amount, &self.currency),
                    "supplementary_data": {"related_ids": {"order_id": self.id, "authorization_id": auth.id}}}))
                .collect();
            payments["refunds"] = self
                .refunds
                .iter()
                .map(|(id, amount)| json!({"id": id, "status": "COMPLETED", "amount": pp_money(*amount, &self.currency)}))
                .collect();
        }
        let mut links = vec![
            json!({"rel": "self", "href": format!("/v2/checkout/orders/{}", self.id), "method": "GET"}),
        ];
        if self.status == "PAYER_ACTION_REQUIRED" {
            links.push(json!({"rel": "payer-action", "href": format!("/sandbox/wallet/checkoutnow?token={}", self.id), "method": "GET"}));
        }
        json!({
            "id": self.id,
            "intent": "AUTHORIZE",
            "status": self.status,
            "purchase_units": [{"reference_id": self.reference_id, "amount": pp_money(self.amount, &self.currency), "payments": payments}],
            "links": links,
        })
    }
}

fn pp_error(status: u16, issue: &str, message: &str) -> (u16, Value) {
    let name = if status == 404 {
        "RESOURCE_NOT_FOUND"
    } else {
        "UNPROCESSABLE_ENTITY"
    };
    (
        status,
        json!({"name": name, "message": message, "details": [{"issue": issue, "description": message}]}),
    )
}

#[derive(Default)]
struct State {
    intents: HashMap<String, Intent>,
    invoices: HashMap<String, Invoice>,
    paypal_tokens: std::collections::HashSet<String>,
    orders: HashMap<String, PpOrder>,
    /// authorization id / capture id → order id
    pp_index: HashMap<String, String>,
    /// `Idempotency-Key` → the first answer, replayed for retries.
    idempotency: HashMap<String, (u16, Value)>,
}

pub struct Simulator {
    config: SimulatorConfig,
    state: Mutex<State>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    OsRng.fill_bytes(&mut b);
    format!("{prefix}_{}", hex::encode(b))
}

fn error(
    status: u16,
    kind: &str,
    code: &str,
    decline: Option<&str>,
    message: &str,
) -> (u16, Value) {
    let mut err = json!({"type": kind, "code": code, "message": message});
    if let Some(d) = decline {
        err["decline_code"] = json!(d);
    }
    (status, json!({"error": err}))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
        })
    }

    fn create(&self, f: &HashMap<String, String>) -> (u16, Value) {
        let Some(amount) = f
            .get("amount")
            .and_then(|a| a.parse::<u64>().ok())
            .filter(|a| *a > 0)
        else {
            return error(
                400,
                "invalid_request_error",
                "parameter_invalid_integer",
                None,
                "amount must be a positive integer",
            );
        };
        let Some(currency) = f.get("currency").filter(|c| c.len() == 3) else {
            return error(
                400,
                "invalid_request_error",
                "parameter_missing",
                None,
                "currency is required",
            );
        };
        let number = f
            .get("payment_method_data[card][number]")
            .map(String::as_str)
            .unwrap_or("");
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            // e.g. a vault token that was not swapped for the number.
            return error(
                402,
                "card_error",
                "invalid_number",
                Some("invalid_number"),
                "Your card number is invalid.",
            );
        }
        let decline = match number {
            "4000000000000002" => Some((
                "card_declined",
                "generic_decline",
                "Your card was declined.",
            )),
            "4000000000009995" => Some((
                "card_declined",
                "insufficient_funds",
                "Your card has insufficient funds.",
            )),
            "4100000000000019" => Some(("card_declined", "fraudulent", "Your card was declined.")),
            "4000000000000069" => Some(("expired_card", "expired_card", "Your card has expired.")),
            "4000000000000127" => Some((
                "incorrect_cvc",
                "incorrect_cvc",
                "Your card's security code is incorrect.",
            )),
            _ => None,
        };
        if let Some((code, decline_code, message)) = decline {
            return error(402, "card_error", code, Some(decline_code), message);
        }
        let now = now_secs();
        let intent = Intent {
            id: id("pi"),
            amount,
            currency: currency.to_ascii_lowercase(),
            status: "requires_capture",
            amount_received: 0,
            amount_refunded: 0,
            capture_before: now + AUTHORIZATION_VALIDITY_SECS,
            created: now,
            cancellation_reason: None,
        };
        let out = intent.json();
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .intents
            .insert(intent.id.clone(), intent);
        (200, out)
    }

    fn with_intent(
        &self,
        id: &str,
        f: impl FnOnce(&mut Intent) -> Result<(), (u16, Value)>,
    ) -> (u16, Value) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(intent) = state.intents.get_mut(id) else {
            return error(
                404,
                "invalid_request_error",
                "resource_missing",
                None,
                "No such payment_intent",
            );
        };
        // Lapsed authorizations are cancelled when next touched, as Stripe does asynchronously.
        if intent.status == "requires_capture" && now_secs() > intent.capture_before {
            intent.status = "canceled";
            intent.cancellation_reason = Some("expired");
        }
        match f(intent) {
            Ok(()) => (200, intent.json()),
            Err(e) => e,
        }
    }

    fn unexpected_state(status: &str) -> (u16, Value) {
        error(
            400,
            "invalid_request_error",
            "payment_intent_unexpected_state",
            None,
            &format!("This PaymentIntent's status is {status}."),
        )
    }

    async fn dispatch(&self, method: &Method, path: &str, body: &[u8]) -> (u16, Value) {
        let f = form(body);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["v1", "payment_intents"]) => self.create(&f),
            (&Method::GET, ["v1", "payment_intents", id]) => self.with_intent(id, |_| Ok(())),
            (&Method::POST, ["v1", "payment_intents", id, "capture"]) => {
                self.with_intent(id, |pi| {
                    if pi.status != "requires_capture" {
                        return Err(Self::unexpected_state(pi.status));
                    }
                    let amount = match f.get("amount_to_capture") {
                        Some(a) => a
                            .parse::<u64>()
                            .ok()
                            .filter(|a| *a > 0 && *a <= pi.amount)
                            .ok_or_else(|| {
                                error(
                                    400,
                                    "invalid_request_error",
                                    "amount_too_large",
                                    None,
                                    "amount_to_capture exceeds the capturable amount",
                                )
                            })?,
                        None => pi.amount,
                    };
                    pi.status = "succeeded";
                    pi.amount_received = amount;
                    Ok(())
                })
            }
            (&Method::POST, ["v1", "payment_intents", id, "cancel"]) => {
                self.with_intent(id, |pi| {
                    if pi.status != "requires_capture" {
                        return Err(Self::unexpected_state(pi.status));
                    }
                    pi.status = "canceled";
                    pi.cancellation_reason = Some("requested_by_customer");
                    Ok(())
                })
            }
            (&Method::POST, ["v1", "refunds"]) => {
                let Some(pi_id) = f.get("payment_intent") else {
                    return error(
                        400,
                        "invalid_request_error",
                        "parameter_missing",
                        None,
                        "payment_intent is required",
                    );
                };
                let mut refund_amount = 0;
                let (status, out) = self.with_intent(pi_id, |pi| {
                    if pi.status != "succeeded" {
                        return Err(error(
                            400,
                            "invalid_request_error",
                            "charge_not_refundable",
                            None,
                            "This charge cannot be refunded.",
                        ));
                    }
                    let refundable = pi.amount_received - pi.amount_refunded;
                    let amount = match f.get("amount") {
                        Some(a) => a.parse::<u64>().ok().filter(|a| *a > 0).ok_or_else(|| {
                            error(
                                400,
                                "invalid_request_error",
                                "parameter_invalid_integer",
                                None,
                                "amount must be a positive integer",
                            )
                        })?,
                        None => refundable,
                    };
                    if amount > refundable {
                        return Err(error(
                            400,
                            "invalid_request_error",
                            "charge_already_refunded",
                            None,
                            "Refund amount exceeds the refundable amount.",
                        ));
                    }
                    pi.amount_refunded += amount;
                    refund_amount = amount;
                    Ok(())
                });
                if status != 200 {
                    return (status, out);
                }
                (
                    200,
                    json!({"id": id("re"), "object": "refund", "amount": refund_amount, "payment_intent": pi_id, "status": "succeeded"}),
                )
            }
            (_, ["api", "v1", "stores", _store, rest @ ..]) => self.crypto(method, rest, body),
            (&Method::POST, ["v1", "oauth2", "token"]) => {
                let token = id("A21AA");
                self.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .paypal_tokens
                    .insert(token.clone());
                (
                    200,
                    json!({"access_token": token, "token_type": "Bearer", "expires_in": 32400}),
                )
            }
            (_, ["v2", rest @ ..]) => self.paypal(method, rest, body),
            (
                &Method::POST,
                [
                    "sandbox",
                    "crypto",
                    "invoices",
                    id,
                    action @ ("pay" | "expire"),
                ],
            ) => self.crypto_sandbox(id, action).await,
            (&Method::POST, ["sandbox", "wallet", "orders", id, "approve"]) => {
                self.wallet_sandbox_approve(id, body).await
            }
            _ => error(
                404,
                "invalid_request_error",
                "resource_missing",
                None,
                "Unrecognized request URL",
            ),
        }
    }

    // ---- wallet (PayPal Orders v2 / Payments v2 shape) ------------------------------------

    fn paypal(&self, method: &Method, rest: &[&str], body: &[u8]) -> (u16, Value) {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_secs();
        for order in state.orders.values_mut() {
            if let Some(auth) = &mut order.auth
                && auth.status == "CREATED"
                && now > auth.expires
            {
                auth.status = "EXPIRED";
            }
        }
        let money = |v: &Value, currency: &str| {
            v["value"]
                .as_str()
                .and_then(|x| payment_plugin_kit::decimal::from_decimal(x, currency))
        };
        match (method, rest) {
            (&Method::POST, ["checkout", "orders"]) => {
                let unit = &json["purchase_units"][0];
                let currency = unit["amount"]["currency_code"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let Some(amount) =
                    money(&unit["amount"], &currency).filter(|a| *a > 0 && currency.len() == 3)
                else {
                    return pp_error(
                        422,
                        "INVALID_PARAMETER_VALUE",
                        "purchase_units[0].amount is invalid",
                    );
                };
                if json["intent"] != "AUTHORIZE" {
                    return pp_error(
                        422,
                        "INVALID_PARAMETER_VALUE",
                        "only intent AUTHORIZE is simulated",
                    );
                }
                let vault = json["payment_source"]["paypal"]["vault_id"].as_str();
                if vault.is_some_and(|v| v.contains("declined")) {
                    return pp_error(
                        422,
                        "INSTRUMENT_DECLINED",
                        "The instrument presented was declined.",
                    );
                }
                let order = PpOrder {
                    id: id("ORDER").to_ascii_uppercase(),
                    reference_id: unit["reference_id"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    currency,
                    amount,
                    // A vaulted payer has approved already; anyone else must approve at PayPal.
                    status: if vault.is_some() {
                        "APPROVED"
                    } else {
                        "PAYER_ACTION_REQUIRED"
                    },
                    declines_authorization: false,
                    auth: None,
                    captures: Vec::new(),
                    refunds: Vec::new(),
                };
                let out = order.json();
                state.orders.insert(order.id.clone(), order);
                (201, out)
            }
            (&Method::GET, ["checkout", "orders", order_id]) => match state.orders.get(*order_id) {
                Some(order) => (200, order.json()),
                None => pp_error(404, "INVALID_RESOURCE_ID", "order not found"),
            },
            (&Method::POST, ["checkout", "orders", order_id, "authorize"]) => {
                let Some(order) = state.orders.get_mut(*order_id) else {
                    return pp_error(404, "INVALID_RESOURCE_ID", "order not found");
                };
                if order.status != "APPROVED" {
                    return pp_error(
                        422,
                        "ORDER_NOT_APPROVED",
                        "the payer has not approved the order",
                    );
                }
                if order.declines_authorization {
                    return pp_error(
                        422,
                        "INSTRUMENT_DECLINED",
                        "The instrument presented was declined.",
                    );
                }
                let auth_id = id("AUTH").to_ascii_uppercase();
                order.status = "COMPLETED";
                order.auth = Some(PpAuth {
                    id: auth_id.clone(),
                    status: "CREATED",
                    amount: order.amount,
                    expires: now + PAYPAL_AUTHORIZATION_SECS,
                });
                let out = order.json();
                let order_id = order.id.clone();
                state.pp_index.insert(auth_id, order_id);
                (201, out)
            }
            (_, ["payments", "authorizations", auth_id, action @ ..]) => {
                let Some(order_id) = state.pp_index.get(*auth_id).cloned() else {
                    return pp_error(404, "INVALID_RESOURCE_ID", "authorization not found");
                };
                let capture_id = id("CAP").to_ascii_uppercase();
                let order = state.orders.get_mut(&order_id).expect("indexed order");
                let currency = order.currency.clone();
                let auth = order.auth.as_mut().expect("indexed authorization");
                match (method, action) {
                    (&Method::GET, []) => {}
                    (&Method::POST, ["capture"]) => {
                        match auth.status {
                            "CREATED" => {}
                            "VOIDED" => {
                                return pp_error(
                                    422,
                                    "AUTHORIZATION_VOIDED",
                                    "authorization is voided",
                                );
                            }
                            "EXPIRED" => {
                                return pp_error(
                                    422,
                                    "AUTHORIZATION_EXPIRED",
                                    "authorization has expired",
                                );
                            }
                            _ => {
                                return pp_error(
                                    422,
                                    "AUTHORIZATION_ALREADY_CAPTURED",
                                    "authorization already captured",
                                );
                            }
                        }
                        let amount = match json.get("amount") {
                            Some(a) => {
                                match money(a, &currency).filter(|a| *a > 0 && *a <= auth.amount) {
                                    Some(a) => a,
                                    None => {
                                        return pp_error(
                                            422,
                                            "DECIMAL_PRECISION",
                                            "capture amount is invalid",
                                        );
                                    }
                                }
                            }
                            None => auth.amount,
                        };
                        auth.status = if amount == auth.amount {
                            "CAPTURED"
                        } else {
                            "PARTIALLY_CAPTURED"
                        };
                        order.captures.push((capture_id.clone(), amount));
                        let out = json!({"id": capture_id, "status": "COMPLETED", "amount": pp_money(amount, &currency),
                            "supplementary_data": {"related_ids": {"order_id": order_id, "authorization_id": auth_id}}});
                        state.pp_index.insert(capture_id, order_id);
                        return (201, out);
                    }
                    (&Method::POST, ["void"]) => {
                        if auth.status != "CREATED" {
                            return pp_error(
                                422,
                                "INVALID_RESOURCE_STATE",
                                "only a created authorization can be voided",
                            );
                        }
                        auth.status = "VOIDED";
                    }
                    _ => return pp_error(404, "INVALID_RESOURCE_ID", "unrecognized request URL"),
                }
                let order = &state.orders[&order_id];
                (
                    200,
                    order.auth_json(order.auth.as_ref().expect("indexed authorization")),
                )
            }
            (&Method::POST, ["payments", "captures", capture_id, "refund"]) => {
                let Some(order_id) = state.pp_index.get(*capture_id).cloned() else {
                    return pp_error(404, "INVALID_RESOURCE_ID", "capture not found");
                };
                let refund_id = id("REF").to_ascii_uppercase();
                let order = state.orders.get_mut(&order_id).expect("indexed order");
                let captured = order
                    .captures
                    .iter()
                    .find(|(c, _)| c == capture_id)
                    .map(|(_, a)| *a)
                    .unwrap_or(0);
                let refunded: u64 = order.refunds.iter().map(|(_, a)| *a).sum();
                let amount = match json.get("amount") {
                    Some(a) => match money(a, &order.currency).filter(|a| *a > 0) {
                        Some(a) => a,
                        None => {
                            return pp_error(422, "DECIMAL_PRECISION", "refund amount is invalid");
                        }
                    },
                    None => captured.saturating_sub(refunded),
                };
                if refunded >= captured {
                    return pp_error(
                        422,
                        "CAPTURE_FULLY_REFUNDED",
                        "the capture is fully refunded",
                    );
                }
                if refunded + amount > captured {
                    return pp_error(
                        422,
                        "REFUND_AMOUNT_EXCEEDED",
                        "the refund exceeds the captured amount",
                    );
                }
                order.refunds.push((refund_id.clone(), amount));
                (
                    201,
                    json!({"id": refund_id, "status": "COMPLETED", "amount": pp_money(amount, &order.currency)}),
                )
            }
            _ => pp_error(404, "INVALID_RESOURCE_ID", "unrecognized request URL"),
        }
    }

    // ---- crypto invoices (BTCPay Greenfield shape) ----------------------------------------

    fn crypto_error(status: u16, code: &str, message: &str) -> (u16, Value) {
        (status, json!({"code": code, "message": message}))
    }

    fn crypto(&self, method: &Method, rest: &[&str], body: &[u8]) -> (u16, Value) {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_secs();
        for invoice in state.invoices.values_mut() {
            if invoice.status == "New" && now > invoice.expiration {
                invoice.status = "Expired";
            }
        }
        match (method, rest) {
            (&Method::POST, ["invoices"]) => {
                let currency = json["currency"].as_str().unwrap_or("").to_string();
                let Some(amount) = json["amount"]
                    .as_str()
                    .filter(|a| a.parse::<f64>().is_ok_and(|v| v > 0.0))
                else {
                    return Self::crypto_error(
                        422,
                        "validation",
                        "amount must be a positive decimal string",
                    );
                };
                if currency.len() != 3 {
                    return Self::crypto_error(422, "validation", "currency is required");
                }
                let minutes = json["checkout"]["expirationMinutes"]
                    .as_u64()
                    .unwrap_or(15)
                    .clamp(1, 24 * 60);
                let invoice = Invoice {
                    id: id("inv"),
                    amount: amount.to_string(),
                    currency,
                    status: "New",
                    additional: "None",
                    refunded_minor: 0,
                    created: now,
                    expiration: now + minutes * 60,
                };
                let out = invoice.json();
                state.invoices.insert(invoice.id.clone(), invoice);
                (200, out)
            }
            (&Method::GET, ["invoices", id]) => match state.invoices.get(*id) {
                Some(invoice) => (200, invoice.json()),
                None => Self::crypto_error(404, "invoice-not-found", "invoice not found"),
            },
            (&Method::POST, ["invoices", id, "status"]) => match state.invoices.get_mut(*id) {
                Some(invoice) if invoice.status == "New" && json["status"] == "Invalid" => {
                    invoice.status = "Invalid";
                    invoice.additional = "Marked";
                    (200, invoice.json())
                }
                Some(_) => Self::crypto_error(
                    422,
                    "invalid-state",
                    "invoice cannot be marked in its state",
                ),
                None => Self::crypto_error(404, "invoice-not-found", "invoice not found"),
            },
            (&Method::POST, ["invoices", invoice_id, "refund"]) => {
                match state.invoices.get_mut(*invoice_id) {
                    Some(invoice) if invoice.status == "Settled" => {
                        let minor = |s: &str| {
                            payment_plugin_kit::decimal::from_decimal(s, &invoice.currency)
                        };
                        let total = minor(&invoice.amount).unwrap_or(0);
                        let Some(amount) = json["customAmount"]
                            .as_str()
                            .and_then(minor)
                            .filter(|a| *a > 0)
                        else {
                            return Self::crypto_error(
                                422,
                                "validation",
                                "customAmount must be a positive decimal string",
                            );
                        };
                        if invoice.refunded_minor + amount > total {
                            return Self::crypto_error(
                                422,
                                "validation",
                                "refund exceeds the settled amount",
                            );
                        }
                        invoice.refunded_minor += amount;
                        (
                            200,
                            json!({"id": id("pp"), "amount": json["customAmount"], "currency": invoice.currency}),
                        )
                    }
                    Some(_) => Self::crypto_error(
                        422,
                        "invalid-state",
                        "only settled invoices can be refunded",
                    ),
                    None => Self::crypto_error(404, "invoice-not-found", "invoice not found"),
                }
            }
            _ => Self::crypto_error(404, "not-found", "unrecognized request URL"),
        }
    }

    /// The payer's side: settles or expires an invoice and delivers the signed webhook.
    async fn crypto_sandbox(&self, invoice_id: &str, action: &str) -> (u16, Value) {
        let (event, invoice) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(invoice) = state.invoices.get_mut(invoice_id) else {
                return Self::crypto_error(404, "invoice-not-found", "invoice not found");
            };
            if invoice.status != "New" {
                return Self::crypto_error(422, "invalid-state", "invoice is not open");
            }
            invoice.status = if action == "pay" {
                "Settled"
            } else {
                "Expired"
            };
            let event = json!({
                "deliveryId": id("dlv"),
                "webhookId": "sandbox",
                "isRedelivery": false,
                "type": if action == "pay" { "InvoiceSettled" } else { "InvoiceExpired" },
                "timestamp": now_secs(),
                "storeId": "sandbox",
                "invoiceId": invoice.id,
            });
            (event, invoice.json())
        };
        let delivered = send_webhook(
            self.config.crypto_webhook_url.as_deref(),
            self.config.crypto_webhook_secret.as_deref(),
            &event,
        )
        .await;
        (
            200,
            json!({"invoice": invoice, "event": event, "delivered": delivered}),
        )
    }

    /// The payer's side of the wallet: approves an order waiting for the payer (PayPal's
    /// checkout page) and delivers the signed `CHECKOUT.ORDER.APPROVED` webhook. A body
    /// `{"instrument": "declined"}` approves with a funding instrument the wallet will refuse
    /// when the merchant authorizes. Approving an order twice is refused (422), as at PayPal.
    async fn wallet_sandbox_approve(&self, order_id: &str, body: &[u8]) -> (u16, Value) {
        let declined =
            serde_json::from_slice::<Value>(body).is_ok_and(|b| b["instrument"] == "declined");
        let event = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(order) = state.orders.get_mut(order_id) else {
                return pp_error(404, "INVALID_RESOURCE_ID", "order not found");
            };
            if order.status != "PAYER_ACTION_REQUIRED" {
                return pp_error(
                    422,
                    "ORDER_ALREADY_APPROVED",
                    "the order is not waiting for the payer",
                );
            }
            order.status = "APPROVED";
            order.declines_authorization = declined;
            let now = now_secs();
            json!({
                "id": id("WH").to_ascii_uppercase(),
                "event_version": "1.0",
                "create_time": rfc3339_secs(now),
                // Simulator extension: the same instant as unix seconds.
                "create_time_unix": now,
                "resource_type": "checkout-order",
                "event_type": "CHECKOUT.ORDER.APPROVED",
                "summary": "An order has been approved by buyer",
                "resource": order.json(),
            })
        };
        let delivered = send_webhook(
            self.config.wallet_webhook_url.as_deref(),
            self.config.wallet_webhook_secret.as_deref(),
            &event,
        )
        .await;
        (
            200,
            json!({"order": event["resource"], "event": event, "delivered": delivered}),
        )
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let reply = |status: u16, body: Value| {
            Ok(Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("static response parts"))
        };
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
        if self.config.failure_rate > 0.0
            && (OsRng.next_u32() as f64 / u32::MAX as f64) < self.config.failure_rate
        {
            let (s, b) = error(
                503,
                "api_error",
                "service_unavailable",
                None,
                "simulated outage",
            );
            return reply(s, b);
        }
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path_now = req.uri().path();
        let authorized = if path_now == "/v1/oauth2/token" {
            // PayPal: Basic base64(client_id:client_secret); the secret is the sandbox API key.
            use base64::Engine as _;
            header
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|pair| {
                    pair.split_once(':')
                        .map(|(_, secret)| secret == self.config.api_key)
                })
                .unwrap_or(false)
        } else if path_now.starts_with("/v2/") {
            header.strip_prefix("Bearer ").is_some_and(|t| {
                self.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .paypal_tokens
                    .contains(t)
            })
        } else {
            header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("token "))
                .is_some_and(|k| k == self.config.api_key)
        };
        // The sandbox routes play the payer (paying a crypto invoice, approving a wallet
        // order): no merchant key.
        let payer_side = req.uri().path().starts_with("/sandbox/");
        if !authorized && !payer_side {
            let (s, b) = error(
                401,
                "invalid_request_error",
                "api_key_invalid",
                None,
                "Invalid API key provided.",
            );
            return reply(s, b);
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let key = req
            .headers()
            .get("idempotency-key")
            .or_else(|| req.headers().get("paypal-request-id"))
            .and_then(|v| v.to_str().ok())
            .map(|k| format!("{method} {path} {k}"));
        let Ok(body) = Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
        else {
            let (s, b) = error(
                400,
                "invalid_request_error",
                "body_too_large",
                None,
                "request too large",
            );
            return reply(s, b);
        };
        let replay = key.as_ref().and_then(|key| {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .idempotency
                .get(key)
                .cloned()
        });
        if let Some((s, b)) = replay {
            return reply(s, b);
        }
        let (status, out) = self.dispatch(&method, &path, &body).await;
        // Server errors are not stored, so a retry can succeed (Stripe does the same).
        if let (Some(key), true) = (key, status < 500) {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .idempotency
                .insert(key, (status, out.clone()));
        }
        reply(status, out)
    }
}

/// Serves the card simulator on `listener` until the task is dropped.
pub async fn serve(sim: Arc<Simulator>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sim = sim.clone();
        let service = hyper::service::service_fn(move |req| sim.clone().handle(req));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
