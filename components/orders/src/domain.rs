//! The order aggregate, event-sourced: an order is the fold of its events. Pure: unit-tested
//! natively, no I/O.
//!
//! State machine: `pending → confirmed → paid → shipped → delivered`; `failed` from `pending`
//! or `confirmed` (the checkout could not finish); `cancelled` from `pending`, `confirmed` or
//! `paid` (not once shipped). `refunded` is recorded as an event on a cancelled order whose
//! payment was captured; it does not change the status.

use serde::{Deserialize, Serialize};

/// Money in integer minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String3,
}

/// An ISO 4217 code (three upper-case letters), `Copy` and always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct String3([u8; 3]);

impl TryFrom<String> for String3 {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match <[u8; 3]>::try_from(value.as_bytes()) {
            Ok(b) if b.iter().all(u8::is_ascii_uppercase) => Ok(String3(b)),
            _ => Err("a currency is three upper-case letters".into()),
        }
    }
}

impl From<String3> for String {
    fn from(c: String3) -> String {
        String::from_utf8_lossy(&c.0).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Confirmed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }
}

/// What happened to an order. The JSON form (`type` + fields) is what the event stream and the
/// `orders` channel carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Created {
        user_id: String,
        items: Vec<Item>,
        total: Money,
        shipping_address: serde_json::Value,
        payment_method: String,
    },
    /// Stock is held for the order (saga step).
    StockReserved {
        reservation_id: String,
    },
    /// The payment is authorized (saga step).
    PaymentAuthorized {
        payment_id: String,
    },
    Confirmed,
    Paid {
        payment_id: String,
        amount: Money,
    },
    Shipped,
    Delivered,
    Cancelled {
        reason: String,
    },
    Failed {
        reason: String,
        code: String,
    },
    Refunded {
        payment_id: String,
        amount: Money,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Created { .. } => "order.created",
            Event::StockReserved { .. } => "order.stock_reserved",
            Event::PaymentAuthorized { .. } => "order.payment_authorized",
            Event::Confirmed => "order.confirmed",
            Event::Paid { .. } => "order.paid",
            Event::Shipped => "order.shipped",
            Event::Delivered => "order.delivered",
            Event::Cancelled { .. } => "order.cancelled",
            Event::Failed { .. } => "order.failed",
            Event::Refunded { .. } => "order.refunded",
        }
    }
}

/// The current state of an order: the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: Status,
    pub items: Vec<Item>,
    pub total: Money,
    pub shipping_address: serde_json::Value,
    pub payment_method: String,
    pub payment_id: Option<String>,
    pub reservation_id: Option<String>,
    pub captured: Option<Money>,
    pub refunded: Option<Money>,
    pub failure: Option<Failure>,
    /// Stream version: the number of events folded.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub code: String,
    pub reason: String,
}

/// Why an event cannot apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Illegal(pub String);

impl Order {
    /// Starts an order from its first event.
    pub fn start(id: &str, event: &Event) -> Result<Order, Illegal> {
        let Event::Created {
            user_id,
            items,
            total,
            shipping_address,
            payment_method,
        } = event
        else {
            return Err(Illegal("an order's first event must be `created`".into()));
        };
        Ok(Order {
            id: id.to_owned(),
            user_id: user_id.clone(),
            status: Status::Pending,
            items: items.clone(),
            total: *total,
            shipping_address: shipping_address.clone(),
            payment_method: payment_method.clone(),
            payment_id: None,
            reservation_id: None,
            captured: None,
            refunded: None,
            failure: None,
            version: 1,
        })
    }

    /// Checks that `event` may happen now, without applying it.
    pub fn check(&self, event: &Event) -> Result<(), Illegal> {
        use Status::*;
        let ok = match (event, self.status) {
            (Event::Created { .. }, _) => false,
            (Event::StockReserved { .. }, Pending) => self.reservation_id.is_none(),
            (Event::PaymentAuthorized { .. }, Pending) => self.payment_id.is_none(),
            (Event::Confirmed, Pending) => {
                self.reservation_id.is_some() && self.payment_id.is_some()
            }
            (Event::Paid { .. }, Confirmed) => true,
            (Event::Shipped, Paid) => true,
            (Event::Delivered, Shipped) => true,
            (Event::Cancelled { .. }, Pending | Confirmed | Paid) => true,
            (Event::Failed { .. }, Pending | Confirmed) => true,
            (Event::Refunded { .. }, Cancelled) => {
                self.captured.is_some() && self.refunded.is_none()
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Illegal(format!(
                "an order that is {} cannot be {}",
                self.status.as_str(),
                past_tense(event)
            )))
        }
    }

    /// Applies `event` (after [`Order::check`]).
    pub fn apply(&mut self, event: &Event) -> Result<(), Illegal> {
        self.check(event)?;
        match event {
            Event::Created { .. } => {}
            Event::StockReserved { reservation_id } => {
                self.reservation_id = Some(reservation_id.clone())
            }
            Event::PaymentAuthorized { payment_id } => self.payment_id = Some(payment_id.clone()),
            Event::Confirmed => self.status = Status::Confirmed,
            Event::Paid { amount, .. } => {
                self.status = Status::Paid;
                self.captured = Some(*amount);
            }
            Event::Shipped => self.status = Status::Shipped,
            Event::Delivered => self.status = Status::Delivered,
            Event::Cancelled { .. } => self.status = Status::Cancelled,
            Event::Failed { reason, code } => {
                self.status = Status::Failed;
                self.failure = Some(Failure {
                    code: code.clone(),
                    reason: reason.clone(),
                });
            }
            Event::Refunded { amount, .. } => self.refunded = Some(*amount),
        }
        self.version += 1;
        Ok(())
    }

    /// Rebuilds an order from its whole stream.
    pub fn replay(id: &str, events: &[Event]) -> Result<Order, Illegal> {
        let (first, rest) = events
            .split_first()
            .ok_or_else(|| Illegal("an order needs at least one event".into()))?;
        let mut order = Order::start(id, first)?;
        for event in rest {
            order.apply(event)?;
        }
        Ok(order)
    }
}

fn past_tense(event: &Event) -> &'static str {
    match event {
        Event::Created { .. } => "created again",
        Event::StockReserved { .. } => "given a stock reservation",
        Event::PaymentAuthorized { .. } => "given a payment authorization",
        Event::Confirmed => "confirmed",
        Event::Paid { .. } => "paid",
        Event::Shipped => "shipped",
        Event::Delivered => "delivered",
        Event::Cancelled { .. } => "cancelled",
        Event::Failed { .. } => "failed",
        Event::Refunded { .. } => "refunded",
    }
}

/// Builds the priced lines and total; every line must share one currency.
pub fn price_lines(lines: &[(String, i64, Money)]) -> Result<(Vec<Item>, Money), String> {
    let first = lines.first().ok_or("an order needs at least one item")?;
    let currency = first.2.currency;
    let mut items = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for (product_id, quantity, unit) in lines {
        if unit.currency != currency {
            return Err("all items of one order must be priced in one currency".into());
        }
        let line = unit
            .amount
            .checked_mul(*quantity)
            .ok_or("a line total is too large")?;
        total = total
            .checked_add(line)
            .ok_or("the order total is too large")?;
        items.push(Item {
            product_id: product_id.clone(),
            quantity: *quantity,
            unit_price: *unit,
            line_total: Money {
                amount: line,
                currency,
            },
        });
    }
    Ok((
        items,
        Money {
            amount: total,
            currency,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        Money {
            amount,
            currency: String3::try_from("EUR".to_owned()).unwrap(),
        }
    }

    fn created() -> Event {
        let (items, total) = price_lines(&[("p1".into(), 2, eur(500))]).unwrap();
        Event::Created {
            user_id: "u1".into(),
            items,
            total,
            shipping_address: serde_json::json!({"country": "ES"}),
            payment_method: "pm_1".into(),
        }
    }

    fn paid_order() -> Order {
        Order::replay(
            "o1",
            &[
                created(),
                Event::StockReserved {
                    reservation_id: "r".into(),
                },
                Event::PaymentAuthorized {
                    payment_id: "pay".into(),
                },
                Event::Confirmed,
                Event::Paid {
                    payment_id: "pay".into(),
                    amount: eur(1000),
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_happy_path_folds_to_delivered() {
        let mut order = paid_order();
        assert_eq!(order.status, Status::Paid);
        assert_eq!(order.total, eur(1000));
        order.apply(&Event::Shipped).unwrap();
        order.apply(&Event::Delivered).unwrap();
        assert_eq!(order.status, Status::Delivered);
        assert_eq!(order.version, 7);
    }

    #[test]
    fn confirmation_needs_stock_and_payment() {
        let mut order = Order::start("o", &created()).unwrap();
        assert!(order.check(&Event::Confirmed).is_err());
        order
            .apply(&Event::StockReserved {
                reservation_id: "r".into(),
            })
            .unwrap();
        assert!(order.check(&Event::Confirmed).is_err());
        assert!(
            order
                .apply(&Event::StockReserved {
                    reservation_id: "r2".into()
                })
                .is_err()
        );
        order
            .apply(&Event::PaymentAuthorized {
                payment_id: "p".into(),
            })
            .unwrap();
        order.apply(&Event::Confirmed).unwrap();
    }

    #[test]
    fn illegal_transitions_say_why() {
        let mut order = paid_order();
        order.apply(&Event::Shipped).unwrap();
        let err = order
            .apply(&Event::Cancelled {
                reason: "changed my mind".into(),
            })
            .unwrap_err();
        assert_eq!(err.0, "an order that is shipped cannot be cancelled");
        assert!(
            order
                .check(&Event::Failed {
                    reason: "x".into(),
                    code: "y".into()
                })
                .is_err()
        );
        let pending = Order::start("o", &created()).unwrap();
        assert!(pending.check(&Event::Shipped).is_err());
        assert!(
            pending
                .check(&Event::Paid {
                    payment_id: "p".into(),
                    amount: eur(1)
                })
                .is_err()
        );
        assert!(Order::replay("o", &[Event::Confirmed]).is_err());
        assert!(Order::replay("o", &[]).is_err());
    }

    #[test]
    fn refunds_only_after_a_captured_order_is_cancelled_and_once() {
        let mut order = paid_order();
        let refund = Event::Refunded {
            payment_id: "pay".into(),
            amount: eur(1000),
        };
        assert!(order.check(&refund).is_err());
        order
            .apply(&Event::Cancelled {
                reason: "customer".into(),
            })
            .unwrap();
        order.apply(&refund).unwrap();
        assert!(order.check(&refund).is_err());
        let mut unpaid = Order::start("o", &created()).unwrap();
        unpaid
            .apply(&Event::Cancelled { reason: "c".into() })
            .unwrap();
        assert!(unpaid.check(&refund).is_err());
    }

    #[test]
    fn events_round_trip_as_json() {
        for event in [
            created(),
            Event::Confirmed,
            Event::Failed {
                reason: "r".into(),
                code: "out_of_stock".into(),
            },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        }
        assert_eq!(
            serde_json::to_value(Event::Shipped).unwrap(),
            serde_json::json!({"type": "shipped"})
        );
    }

    #[test]
    fn pricing_is_exact_and_single_currency() {
        let (items, total) =
            price_lines(&[("a".into(), 3, eur(333)), ("b".into(), 1, eur(1))]).unwrap();
        assert_eq!(total, eur(1000));
        assert_eq!(items[0].line_total, eur(999));
        let usd = Money {
            amount: 1,
            currency: String3::try_from("USD".to_owned()).unwrap(),
        };
        assert!(price_lines(&[("a".into(), 1, eur(1)), ("b".into(), 1, usd)]).is_err());
        assert!(price_lines(&[("a".into(), 2, eur(i64::MAX))]).is_err());
        assert!(price_lines(&[]).is_err());
    }
}
