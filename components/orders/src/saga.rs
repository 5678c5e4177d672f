//! The checkout saga: reserve stock → authorize payment → confirm → commit stock → capture,
//! each step's outcome appended to the order's stream before the next starts.
//!
//! Capture happens at confirmation (not at shipment): the order is `paid` when checkout
//! returns. Stock is committed just before the capture, so money is never taken for stock
//! whose hold lapsed; a refused capture puts the committed stock back. On a definite failure the completed
//! steps are compensated (void the authorization, release the reservation) and the order ends
//! `failed` with the reason. On an unknown outcome (a service unreachable mid-call) the saga
//! stops where it is; every step is idempotent (reservation id and payment idempotency keys are
//! derived from the order id), so the recovery job simply runs it again from the current state.
//! A payment that waits for the customer (wallet approval, crypto invoice) is neither: the saga
//! answers [`Outcome::AwaitingCustomer`] and the recovery job polls the payment, without counting
//! it as a stalled attempt, until it settles or [`customer_deadline`] passes (then void, release,
//! `payment_expired`).

use bazaar_platform::Database;
use serde_json::{Value, json};
use spin_sdk::http::Method;

use crate::clients::{self, Answer, INVENTORY, PAYMENTS, Unreachable, as_user, call};
use crate::domain::{Event, Money, Order, Status};
use crate::store::{self, StoreError, Stored};

/// How a saga run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The order is paid (or already past that).
    Paid(Stored),
    /// The order ended `failed` (nothing reserved or charged); `status` is the HTTP answer.
    Failed {
        order: Stored,
        status: u16,
        code: String,
        detail: String,
    },
    /// Stopped on an unknown outcome; resume later.
    Stalled(String),
    /// The payment waits for the customer (wallet approval, crypto invoice): the order stays
    /// `pending` and the recovery job polls the payment until it settles or `payment.wait_until`.
    AwaitingCustomer {
        order: Stored,
        payment: PendingPayment,
    },
}

/// A payment that needs the customer to act before it is authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPayment {
    pub id: String,
    /// Where the customer acts (approval link, invoice checkout link).
    pub next_action: String,
    /// When the provider gives the authorization up, as the payment answer says (RFC 3339).
    pub authorization_expires_at: Option<String>,
    /// When the saga gives up waiting (Unix ms): see [`customer_deadline`].
    pub wait_until: i64,
}

impl PendingPayment {
    /// The `payment` member of a checkout answer and of the order while it waits.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": "requires_authorization",
            "next_action": self.next_action,
            "authorization_expires_at": self.authorization_expires_at,
        })
    }
}

/// How long the saga waits for a customer to authorize a payment whose answer names no expiry
/// (`customer_action_timeout_secs`).
pub const DEFAULT_CUSTOMER_ACTION_TIMEOUT_SECS: i64 = 600;

/// The `customer_action_timeout_secs` variable in milliseconds; the default when unset or not
/// a positive number of seconds (pure, unit-tested).
pub fn customer_action_timeout_ms(raw: Option<&str>) -> i64 {
    raw.and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|secs| *secs > 0)
        .unwrap_or(DEFAULT_CUSTOMER_ACTION_TIMEOUT_SECS)
        .saturating_mul(1000)
}

fn configured_customer_action_timeout_ms() -> i64 {
    customer_action_timeout_ms(
        spin_sdk::variables::get("customer_action_timeout_secs")
            .ok()
            .as_deref(),
    )
}

/// When the saga stops waiting for the customer (Unix ms, pure): the payment's own expiry when
/// the provider gives one (the authorization cannot complete after it), but never later than
/// the saga's own limit — the deadline the first wait recorded, so polling never pushes it
/// forward, else `timeout_ms` from now. The limit keeps the wait inside the stock hold
/// (`customer_action_timeout_secs` is set below `reservation_ttl_secs`): a payer approving
/// after the hold lapsed would only see the order fail `reservation_expired`.
pub fn customer_deadline(
    expires_at: Option<i64>,
    recorded: Option<i64>,
    now: i64,
    timeout_ms: i64,
) -> i64 {
    let limit = recorded.unwrap_or_else(|| now.saturating_add(timeout_ms));
    expires_at.map_or(limit, |expiry| expiry.min(limit))
}

pub struct Saga<'a> {
    pub db: &'a Database,
    pub request_id: &'a str,
}

fn reservation_id(order_id: &str) -> String {
    format!("res_{}", order_id.trim_start_matches("ord_"))
}

impl Saga<'_> {
    fn append(&self, stored: &Stored, event: Event) -> Result<Stored, String> {
        match store::append(
            self.db,
            &stored.order.id,
            Some(stored),
            &event,
            Some(self.request_id),
        ) {
            Ok(next) => Ok(next),
            // Another worker moved the order on: continue from what it wrote.
            Err(StoreError::Concurrency) => store::load(self.db, &stored.order.id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "order vanished".to_owned()),
            Err(StoreError::Illegal(i)) => Err(i.0),
            Err(StoreError::Db(e)) => Err(e.to_string()),
        }
    }

    fn user_headers<'b>(&'b self, stored: &'b Stored) -> Vec<(&'b str, &'b str)> {
        as_user(self.request_id, &stored.order.user_id, "customer")
    }

    /// Drives the order as far as it can go.
    pub async fn run(&self, mut stored: Stored) -> Outcome {
        loop {
            let order = &stored.order;
            let step = match order.status {
                Status::Pending if order.reservation_id.is_none() => self.reserve(&stored).await,
                Status::Pending if order.payment_id.is_none() => self.authorize(&stored).await,
                Status::Pending => self
                    .append(&stored, Event::Confirmed)
                    .map(|s| Step::Next(Box::new(s))),
                Status::Confirmed => self.capture(&stored).await,
                Status::Cancelled => {
                    // Cancelled before this run (e.g. a checkout retried after a cancel): not a
                    // successful checkout.
                    return Outcome::Failed {
                        status: 409,
                        code: "cancelled".into(),
                        detail: "The order was cancelled".into(),
                        order: stored,
                    };
                }
                Status::Failed => {
                    let failure = order.failure.clone();
                    return Outcome::Failed {
                        status: match failure.as_ref().map(|f| f.code.as_str()) {
                            Some("out_of_stock") => 409,
                            // The payment was refused or the customer did not complete it: the
                            // customer's to fix (another method), not a gateway failure.
                            Some("payment_declined" | "payment_expired") => 422,
                            _ => 502,
                        },
                        code: failure.as_ref().map_or("failed".into(), |f| f.code.clone()),
                        detail: failure.map_or("The checkout failed".into(), |f| f.reason),
                        order: stored,
                    };
                }
                _ => return Outcome::Paid(stored),
            };
            match step {
                Ok(Step::Next(next)) => stored = *next,
                Ok(Step::Stall(why)) => return Outcome::Stalled(why),
                Ok(Step::AwaitCustomer(payment)) => {
                    return Outcome::AwaitingCustomer {
                        order: stored,
                        payment,
                    };
                }
                Err(why) => return Outcome::Stalled(why),
            }
        }
    }

    async fn reserve(&self, stored: &Stored) -> Result<Step, String> {
        let order = &stored.order;
        let id = reservation_id(&order.id);
        let items: Vec<Value> = order
            .items
            .iter()
            .map(|i| json!({"product_id": i.product_id, "quantity": i.quantity}))
            .collect();
        let answer = match call(
            Method::Post,
            &format!("{INVENTORY}/internal/reservations"),
            Some(&json!({"reservation_id": id, "items": items})),
            &[(bazaar_platform::REQUEST_ID_HEADER, self.request_id)],
        )
        .await
        {
            Ok(a) => a,
            Err(Unreachable(why)) => return Ok(Step::Stall(why)),
        };
        match answer.status {
            201 => self
                .append(stored, Event::StockReserved { reservation_id: id })
                .map(|s| Step::Next(Box::new(s))),
            409 if answer.body["title"] == "Out of stock" => {
                let detail = answer.body["detail"]
                    .as_str()
                    .unwrap_or("Not enough stock")
                    .to_owned();
                self.append(
                    stored,
                    Event::Failed {
                        reason: detail,
                        code: "out_of_stock".into(),
                    },
                )
                .map(|s| Step::Next(Box::new(s)))
            }
            status => Ok(Step::Stall(format!(
                "inventory answered {status}: {}",
                answer.body
            ))),
        }
    }

    /// Sends the authorize call under the order's key `checkout-<order>`. The body is derived
    /// from the order alone, so every resend is the same request and the payment service
    /// replays its first answer (or runs it, if it never ran).
    async fn send_authorize(&self, stored: &Stored) -> Result<Answer, Unreachable> {
        let order = &stored.order;
        let key = format!("checkout-{}", order.id);
        let mut headers = self.user_headers(stored);
        headers.push(("idempotency-key", &key));
        let country = order.shipping_address["country"].as_str().unwrap_or("");
        call(
            Method::Post,
            &format!("{PAYMENTS}/api/v1/payments"),
            Some(&json!({
                "order_id": order.id,
                "amount": order.total,
                "payment_method": order.payment_method,
                "shipping_country": country,
            })),
            &headers,
        )
        .await
    }

    async fn authorize(&self, stored: &Stored) -> Result<Step, String> {
        let answer = match self.send_authorize(stored).await {
            Ok(a) => a,
            Err(Unreachable(why)) => return Ok(Step::Stall(why)),
        };
        match classify_authorize(answer.status, &answer.body) {
            Authorization::Payment {
                id: payment_id,
                status,
            } => {
                // The answer stored under the key is the first one and may be stale while the
                // payment waited for the customer: the payment itself says where it stands.
                let payment = if status == "requires_authorization" {
                    self.payment_of(stored, &payment_id)
                        .await
                        .unwrap_or(answer.body)
                } else {
                    answer.body
                };
                match classify_payment(&payment) {
                    PaymentState::Authorized => self
                        .append(stored, Event::PaymentAuthorized { payment_id })
                        .map(|s| Step::Next(Box::new(s))),
                    PaymentState::AwaitingCustomer {
                        next_action,
                        authorization_expires_at,
                    } => {
                        let now = bazaar_platform::time::now_millis();
                        let recorded = store::customer_wait(self.db, &stored.order.id)
                            .map_err(|e| e.to_string())?;
                        let wait_until = customer_deadline(
                            authorization_expires_at
                                .as_deref()
                                .and_then(bazaar_platform::time::parse_rfc3339),
                            recorded,
                            now,
                            configured_customer_action_timeout_ms(),
                        );
                        if now >= wait_until {
                            return self.expire(stored).await;
                        }
                        Ok(Step::AwaitCustomer(PendingPayment {
                            id: payment_id,
                            next_action,
                            authorization_expires_at,
                            wait_until,
                        }))
                    }
                    PaymentState::Unsettled(why) => Ok(Step::Stall(why)),
                    PaymentState::Ended { code, reason } => {
                        self.release(stored).await?;
                        self.append(stored, Event::Failed { reason, code })
                            .map(|s| Step::Next(Box::new(s)))
                    }
                }
            }
            Authorization::Declined { reason } => {
                // Declined or blocked: release the stock, fail the order, say why.
                self.release(stored).await?;
                self.append(
                    stored,
                    Event::Failed {
                        reason,
                        code: "payment_declined".into(),
                    },
                )
                .map(|s| Step::Next(Box::new(s)))
            }
            Authorization::ProviderFailed => {
                self.release(stored).await?;
                self.append(
                    stored,
                    Event::Failed {
                        reason: "The payment provider is unavailable; nothing was charged".into(),
                        code: "payment_unavailable".into(),
                    },
                )
                .map(|s| Step::Next(Box::new(s)))
            }
            Authorization::Unknown(why) => Ok(Step::Stall(why)),
        }
    }

    /// The customer did not authorize in time: void the payment (so a late approval cannot
    /// authorize it), release the stock and fail the order `payment_expired`.
    async fn expire(&self, stored: &Stored) -> Result<Step, String> {
        self.void(stored).await?;
        self.release(stored).await?;
        self.append(
            stored,
            Event::Failed {
                reason: "The payment was not authorized by the customer in time".into(),
                code: "payment_expired".into(),
            },
        )
        .map(|s| Step::Next(Box::new(s)))
    }

    async fn capture(&self, stored: &Stored) -> Result<Step, String> {
        let order = &stored.order;
        // Stock first: once money is captured there must be stock for it. Committing is
        // idempotent, and a refused capture puts committed stock back (`release` → return).
        match self.inventory(stored, "commit").await {
            Ok(()) => {}
            Err(InventoryError::Refused(409, why)) => {
                // The hold lapsed before payment (it expired and was released): nothing is left
                // to sell, so the authorization is undone and the order fails.
                self.void(stored).await?;
                return self
                    .append(
                        stored,
                        Event::Failed {
                            reason: format!("The stock hold ended before payment: {why}"),
                            code: "reservation_expired".into(),
                        },
                    )
                    .map(|s| Step::Next(Box::new(s)));
            }
            Err(e) => return Ok(Step::Stall(e.to_string())),
        }
        let payment_id = order.payment_id.clone().unwrap_or_default();
        let key = format!("capture-{}", order.id);
        let mut headers = self.user_headers(stored);
        headers.push(("idempotency-key", &key));
        let answer = match call(
            Method::Post,
            &format!("{PAYMENTS}/api/v1/payments/{payment_id}/capture"),
            Some(&json!({})),
            &headers,
        )
        .await
        {
            Ok(a) => a,
            Err(Unreachable(why)) => return Ok(Step::Stall(why)),
        };
        match answer.status {
            200 | 201 => {
                let amount: Money =
                    serde_json::from_value(answer.body["captured"].clone()).unwrap_or(order.total);
                self.append(stored, Event::Paid { payment_id, amount })
                    .map(|s| Step::Next(Box::new(s)))
            }
            409 | 422 => {
                // A refusal is only final when the payment itself is over. The payment host
                // also answers 409 while another capture under our key is in flight — after a
                // crash mid-capture that one may have charged the card — so an authorization
                // that still looks capturable is an unknown outcome, not a failure.
                let current = match call(
                    Method::Get,
                    &format!("{PAYMENTS}/api/v1/payments/{payment_id}"),
                    None,
                    &self.user_headers(stored),
                )
                .await
                {
                    Ok(a) if a.status == 200 => a.body,
                    Ok(a) => {
                        return Ok(Step::Stall(format!(
                            "capture answered {}; reading the payment answered {}",
                            answer.status, a.status
                        )));
                    }
                    Err(Unreachable(why)) => return Ok(Step::Stall(why)),
                };
                match current["status"].as_str().unwrap_or("") {
                    "captured" | "partially_refunded" | "refunded" => {
                        let amount: Money = serde_json::from_value(current["captured"].clone())
                            .unwrap_or(order.total);
                        return self
                            .append(stored, Event::Paid { payment_id, amount })
                            .map(|s| Step::Next(Box::new(s)));
                    }
                    "voided" | "failed" => {}
                    other => {
                        return Ok(Step::Stall(format!(
                            "capture answered {} while the payment is {other}: {}",
                            answer.status, answer.body
                        )));
                    }
                }
                // The authorization is over (expired, voided): undo and fail.
                self.release(stored).await?;
                self.append(
                    stored,
                    Event::Failed {
                        reason: format!(
                            "The payment could not be captured: {}",
                            answer.body["detail"].as_str().unwrap_or("refused")
                        ),
                        code: "capture_failed".into(),
                    },
                )
                .map(|s| Step::Next(Box::new(s)))
            }
            status => Ok(Step::Stall(format!(
                "capture answered {status}: {}",
                answer.body
            ))),
        }
    }

    /// Releases the order's reservation (idempotent). Asked even when the stream has no
    /// `stock_reserved`: a crash between inventory's answer and that append leaves a hold the
    /// order does not know about, and only releasing by the derived id frees it before its
    /// TTL. "No such reservation" is then the expected answer.
    /// Stock the capture step already committed (it takes stock before money) goes back on the
    /// shelf instead.
    pub async fn release(&self, stored: &Stored) -> Result<(), String> {
        match self.inventory(stored, "release").await {
            Ok(()) => Ok(()),
            Err(InventoryError::Refused(404, _)) if stored.order.reservation_id.is_none() => Ok(()),
            Err(InventoryError::Refused(409, _)) => self
                .inventory(stored, "return")
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `commit`, `release` or `return` on the order's reservation.
    pub async fn inventory(&self, stored: &Stored, action: &str) -> Result<(), InventoryError> {
        let id = reservation_id(&stored.order.id);
        let answer = call(
            Method::Post,
            &format!("{INVENTORY}/internal/reservations/{id}/{action}"),
            None,
            &[(bazaar_platform::REQUEST_ID_HEADER, self.request_id)],
        )
        .await
        .map_err(|e| InventoryError::Unreachable(e.0))?;
        match answer.status {
            200 => Ok(()),
            status => Err(InventoryError::Refused(
                status,
                format!("inventory {action} answered {status}: {}", answer.body),
            )),
        }
    }

    /// The payment compensation must undo: the one the stream recorded or, when the stream
    /// stops where the authorize call may have run without its answer being recorded (a crash
    /// between the payment service's answer and the `payment_authorized` append), whatever
    /// that call created. The call is sent again under the same key: the payment service
    /// replays its stored answer, or authorizes now if the first attempt never reached it —
    /// either way the id that comes back is the one to void. `Err` when that cannot be known
    /// yet (the payment service did not answer, or is still running the first attempt):
    /// compensation must then wait rather than forget an authorization.
    async fn payment_to_undo(&self, stored: &Stored) -> Result<Option<String>, String> {
        if let Some(id) = &stored.order.payment_id {
            return Ok(Some(id.clone()));
        }
        if !authorize_may_have_run(&stored.order) {
            return Ok(None);
        }
        let answer = self.send_authorize(stored).await.map_err(|e| e.0)?;
        match classify_authorize(answer.status, &answer.body) {
            Authorization::Payment { id, .. } => Ok(Some(id)),
            // Nothing was authorized (the payment, if any, ended failed).
            Authorization::Declined { .. } | Authorization::ProviderFailed => Ok(None),
            Authorization::Unknown(why) => Err(format!(
                "cannot tell whether the checkout authorized a payment: {why}"
            )),
        }
    }

    /// Voids the order's authorization, including one the stream never recorded (see
    /// [`Saga::payment_to_undo`]). Idempotent at the payment host.
    pub async fn void(&self, stored: &Stored) -> Result<(), String> {
        let Some(payment_id) = self.payment_to_undo(stored).await? else {
            return Ok(());
        };
        let key = format!("void-{}", stored.order.id);
        let mut headers = self.user_headers(stored);
        headers.push(("idempotency-key", &key));
        let answer = call(
            Method::Post,
            &format!("{PAYMENTS}/api/v1/payments/{payment_id}/void"),
            Some(&json!({})),
            &headers,
        )
        .await
        .map_err(|e| e.0)?;
        match answer.status {
            200 => Ok(()),
            // Refused: fine if the payment already ended without money taken (voided, lapsed,
            // failed). The 409 body is a problem, so ask for the payment itself.
            409 => match self.payment_status_of(stored, &payment_id).await.as_deref() {
                Some("voided" | "failed") => Ok(()),
                other => Err(format!("void refused; the payment is {other:?}")),
            },
            status => Err(format!("void answered {status}: {}", answer.body)),
        }
    }

    /// The recorded payment's current status at the payment host, if it can be read.
    pub async fn payment_status(&self, stored: &Stored) -> Option<String> {
        let payment_id = stored.order.payment_id.as_ref()?;
        self.payment_status_of(stored, payment_id).await
    }

    /// The status of payment `payment_id` (read as the order's customer), if it can be read.
    async fn payment_status_of(&self, stored: &Stored, payment_id: &str) -> Option<String> {
        self.payment_of(stored, payment_id)
            .await
            .and_then(|p| p["status"].as_str().map(str::to_owned))
    }

    /// Payment `payment_id` as the payment service answers it (read as the order's customer),
    /// if it can be read.
    async fn payment_of(&self, stored: &Stored, payment_id: &str) -> Option<Value> {
        let answer = call(
            Method::Get,
            &format!("{PAYMENTS}/api/v1/payments/{payment_id}"),
            None,
            &self.user_headers(stored),
        )
        .await
        .ok()?;
        (answer.status == 200).then_some(answer.body)
    }

    /// Refunds what was captured. Refunds are admin-only at the payment host; the orders
    /// service issues them as the system (it is the only caller that can reach that route
    /// with a role, through private chaining).
    pub async fn refund(&self, stored: &Stored) -> Result<Money, String> {
        let payment_id = stored.order.payment_id.clone().unwrap_or_default();
        let key = format!("refund-{}", stored.order.id);
        let mut headers = as_user(self.request_id, "system:orders", "admin");
        headers.push(("idempotency-key", &key));
        let answer = clients::call(
            Method::Post,
            &format!("{PAYMENTS}/api/v1/payments/{payment_id}/refund"),
            Some(&json!({})),
            &headers,
        )
        .await
        .map_err(|e| e.0)?;
        match answer.status {
            200 | 201 => Ok(serde_json::from_value(answer.body["refunded"].clone())
                .unwrap_or(stored.order.total)),
            status => Err(format!("refund answered {status}: {}", answer.body)),
        }
    }
}

/// Why a reservation operation did not succeed.
#[derive(Debug)]
pub enum InventoryError {
    Unreachable(String),
    /// Inventory answered this status (message for logs).
    Refused(u16, String),
}

impl std::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InventoryError::Unreachable(why) | InventoryError::Refused(_, why) => f.write_str(why),
        }
    }
}

impl From<InventoryError> for String {
    fn from(e: InventoryError) -> Self {
        e.to_string()
    }
}

pub enum Step {
    Next(Box<Stored>),
    Stall(String),
    /// The payment waits for the customer; poll it, do not count it as a stall.
    AwaitCustomer(PendingPayment),
}

/// Where an existing payment stands for the authorize step.
#[derive(Debug, PartialEq, Eq)]
pub enum PaymentState {
    /// Authorized, or already settled (a crypto invoice paid goes straight to `captured`).
    Authorized,
    /// Waiting for the customer to act at `next_action`.
    AwaitingCustomer {
        next_action: String,
        authorization_expires_at: Option<String>,
    },
    /// `requires_authorization` with nothing for the customer to do (the provider's answer is
    /// unknown), or an unexpected answer: only asking again settles it.
    Unsettled(String),
    /// The payment ended without money held: the order fails with `code`.
    Ended { code: String, reason: String },
}

/// Reads a payment (its JSON as the payment service answers it) for the saga (pure,
/// unit-tested).
pub fn classify_payment(payment: &Value) -> PaymentState {
    let text = |field: &str| {
        payment[field]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    match payment["status"].as_str().unwrap_or("") {
        "authorized" | "captured" => PaymentState::Authorized,
        "requires_authorization" => match text("next_action") {
            Some(next_action) => PaymentState::AwaitingCustomer {
                next_action,
                authorization_expires_at: text("authorization_expires_at"),
            },
            None => PaymentState::Unsettled(format!(
                "the payment requires authorization with no customer action: {}",
                text("failure_code").unwrap_or_default()
            )),
        },
        // Voided before it was authorized: the wallet order or invoice expired (or the saga's
        // own deadline voided it).
        "voided" => PaymentState::Ended {
            code: "payment_expired".into(),
            reason: "The payment expired before the customer authorized it".into(),
        },
        "" => PaymentState::Unsettled(format!("payment answer without a status: {payment}")),
        other => PaymentState::Ended {
            code: "payment_declined".into(),
            reason: match text("failure_message") {
                Some(message) => format!("The payment ended {other}: {message}"),
                None => format!("The payment ended {other}"),
            },
        },
    }
}

/// What an answer of `POST /api/v1/payments` (authorize) means for the saga.
#[derive(Debug, PartialEq, Eq)]
pub enum Authorization {
    /// The payment exists, in `status` as the answer gave it (`authorized`,
    /// `requires_authorization`, …).
    Payment { id: String, status: String },
    /// Declined or blocked (fraud screening, forbidden): nothing was authorized.
    Declined { reason: String },
    /// The provider failed and nothing was charged (the payment API's 502).
    ProviderFailed,
    /// Nobody can tell yet: 503 (the payment host or the provider is unavailable, so the
    /// authorization may or may not exist), 409 (the first attempt under the key is still in
    /// flight), an answer without a payment id, anything unexpected. Only a retry under the same
    /// key settles it.
    Unknown(String),
}

/// Reads an authorize answer (pure, unit-tested).
pub fn classify_authorize(status: u16, body: &Value) -> Authorization {
    match status {
        200 | 201 => match body["id"].as_str() {
            Some(id) => Authorization::Payment {
                id: id.to_owned(),
                status: body["status"].as_str().unwrap_or("").to_owned(),
            },
            None => Authorization::Unknown("payment answer without id".into()),
        },
        422 | 402 | 403 => {
            let code = body["decline_code"].as_str().unwrap_or("declined");
            let detail = body["detail"]
                .as_str()
                .unwrap_or("The payment was declined");
            Authorization::Declined {
                reason: format!("{detail} ({code})"),
            }
        }
        502 => Authorization::ProviderFailed,
        status => Authorization::Unknown(format!("payments answered {status}: {body}")),
    }
}

/// Whether the authorize step may have run without the stream recording its answer: the saga
/// authorizes right after `stock_reserved` is recorded and records `payment_authorized` (or
/// fails the order) right after the answer, so a `pending` order holding stock but no payment
/// is the one state where an authorization can exist unrecorded.
pub fn authorize_may_have_run(order: &Order) -> bool {
    order.status == Status::Pending && order.reservation_id.is_some() && order.payment_id.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Item, String3};

    fn pending() -> Order {
        let eur = String3::try_from("EUR".to_owned()).unwrap();
        let money = Money {
            amount: 500,
            currency: eur,
        };
        Order::start(
            "ord_1",
            &Event::Created {
                user_id: "usr_1".into(),
                items: vec![Item {
                    product_id: "prd_1".into(),
                    quantity: 1,
                    unit_price: money,
                    line_total: money,
                }],
                total: money,
                shipping_address: json!({"country": "GB"}),
                payment_method: "pm_1".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn an_unavailable_payment_service_is_an_unknown_outcome_not_a_failure() {
        // 503 (provider or payment host unavailable, with Retry-After) pauses the saga: the
        // authorization may exist, so the order must neither fail nor release its stock.
        let unavailable = json!({"status": 503, "title": "Service Unavailable",
                                 "detail": "the provider is unavailable; retry"});
        assert!(matches!(
            classify_authorize(503, &unavailable),
            Authorization::Unknown(_)
        ));
        // Still in flight under the key, or no id to go on: unknown too.
        assert!(matches!(
            classify_authorize(409, &json!({})),
            Authorization::Unknown(_)
        ));
        assert!(matches!(
            classify_authorize(201, &json!({"status": "authorized"})),
            Authorization::Unknown(_)
        ));
        assert!(matches!(
            classify_authorize(500, &Value::Null),
            Authorization::Unknown(_)
        ));
    }

    #[test]
    fn definite_answers_are_read_as_such() {
        assert_eq!(
            classify_authorize(201, &json!({"id": "pay_1", "status": "authorized"})),
            Authorization::Payment {
                id: "pay_1".into(),
                status: "authorized".into()
            }
        );
        assert_eq!(
            classify_authorize(
                422,
                &json!({"decline_code": "generic_decline", "detail": "Declined"})
            ),
            Authorization::Declined {
                reason: "Declined (generic_decline)".into()
            }
        );
        assert_eq!(
            classify_authorize(502, &json!({"payment_id": "pay_2"})),
            Authorization::ProviderFailed
        );
    }

    #[test]
    fn only_a_pending_order_holding_stock_without_a_payment_can_hide_an_authorization() {
        let mut order = pending();
        // Before reserving, the authorize call has not been made.
        assert!(!authorize_may_have_run(&order));
        order
            .apply(&Event::StockReserved {
                reservation_id: "res_1".into(),
            })
            .unwrap();
        assert!(authorize_may_have_run(&order));
        let mut failed = order.clone();
        failed
            .apply(&Event::Failed {
                reason: "declined".into(),
                code: "payment_declined".into(),
            })
            .unwrap();
        assert!(
            !authorize_may_have_run(&failed),
            "a failed order recorded the authorize answer"
        );
        order
            .apply(&Event::PaymentAuthorized {
                payment_id: "pay_1".into(),
            })
            .unwrap();
        assert!(
            !authorize_may_have_run(&order),
            "a recorded payment is voided by its id"
        );
    }

    #[test]
    fn a_payment_waiting_for_the_customer_is_told_apart_from_an_unknown_outcome() {
        let waiting = json!({"id": "pay_1", "status": "requires_authorization",
                             "next_action": "/sandbox/wallet/checkoutnow?token=W1"});
        assert_eq!(
            classify_payment(&waiting),
            PaymentState::AwaitingCustomer {
                next_action: "/sandbox/wallet/checkoutnow?token=W1".into(),
                authorization_expires_at: None,
            }
        );
        let invoice = json!({"status": "requires_authorization", "next_action": "https://pay/i/1",
                             "authorization_expires_at": "2026-12-07T01:00:00Z"});
        assert_eq!(
            classify_payment(&invoice),
            PaymentState::AwaitingCustomer {
                next_action: "https://pay/i/1".into(),
                authorization_expires_at: Some("2026-12-07T01:00:00Z".into()),
            }
        );
        // Nothing for the customer to do: the provider's answer is unknown, so it stays a
        // stall (counted toward the attempt limit), not a wait.
        for unknown in [
            json!({"status": "requires_authorization", "failure_code": "outcome_unknown"}),
            json!({"status": "requires_authorization", "next_action": ""}),
            json!({"id": "pay_1"}),
        ] {
            assert!(
                matches!(classify_payment(&unknown), PaymentState::Unsettled(_)),
                "{unknown}"
            );
        }
    }

    #[test]
    fn a_settled_payment_moves_the_order_on_or_ends_it_with_why() {
        for status in ["authorized", "captured"] {
            assert_eq!(
                classify_payment(&json!({"status": status})),
                PaymentState::Authorized
            );
        }
        assert_eq!(
            classify_payment(&json!({"status": "voided"})),
            PaymentState::Ended {
                code: "payment_expired".into(),
                reason: "The payment expired before the customer authorized it".into(),
            }
        );
        assert_eq!(
            classify_payment(&json!({"status": "failed", "failure_message": "the payer declined"})),
            PaymentState::Ended {
                code: "payment_declined".into(),
                reason: "The payment ended failed: the payer declined".into(),
            }
        );
    }

    #[test]
    fn the_wait_ends_at_the_payment_expiry_else_at_the_first_waits_deadline() {
        let minute = 60_000;
        // A sooner provider expiry wins: the authorization cannot complete after it.
        assert_eq!(
            customer_deadline(Some(5 * minute), None, 0, 30 * minute),
            5 * minute
        );
        assert_eq!(
            customer_deadline(Some(5 * minute), Some(30 * minute), 0, 30 * minute),
            5 * minute
        );
        // No expiry: the first wait sets now + timeout, and later polls keep that deadline
        // rather than pushing it forward.
        // A provider expiry beyond the saga's limit does not extend the wait past the limit.
        assert_eq!(
            customer_deadline(Some(60 * minute), None, 0, 10 * minute),
            10 * minute
        );
        let first = customer_deadline(None, None, 1_000, 30 * minute);
        assert_eq!(first, 1_000 + 30 * minute);
        assert_eq!(
            customer_deadline(None, Some(first), 20 * minute, 30 * minute),
            first
        );
    }

    #[test]
    fn the_customer_action_timeout_is_whole_positive_seconds_else_the_default() {
        assert_eq!(customer_action_timeout_ms(None), 600_000);
        assert_eq!(customer_action_timeout_ms(Some("5")), 5_000);
        assert_eq!(customer_action_timeout_ms(Some(" 60 ")), 60_000);
        for bad in ["", "0", "-3", "1.5", "soon"] {
            assert_eq!(customer_action_timeout_ms(Some(bad)), 600_000, "{bad:?}");
        }
    }

    #[test]
    fn a_waiting_payment_shows_the_customer_where_to_act() {
        let payment = PendingPayment {
            id: "pay_1".into(),
            next_action: "/sandbox/wallet/checkoutnow?token=W1".into(),
            authorization_expires_at: None,
            wait_until: 42,
        };
        assert_eq!(
            payment.to_json(),
            json!({"id": "pay_1", "status": "requires_authorization",
                   "next_action": "/sandbox/wallet/checkoutnow?token=W1",
                   "authorization_expires_at": null})
        );
    }
}
