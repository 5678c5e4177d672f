//! Time-bounded discounts and the price a customer pays at a given instant.
//!
//! Rules (docs/catalog.md, "Pricing"):
//! * a discount is `percent_off` (1..=100) xor `amount_off` (≥ 1 minor unit, in the product's
//!   currency, at most the list price when set);
//! * it is active on `[starts_at, ends_at)` (either bound optional);
//! * percent discounts round the *discount* down to the minor unit
//!   (`price = list - floor(list * percent / 100)`), so the shop never gives more than promised;
//! * the price never goes below zero (an amount discount can outlive a later list-price cut).
//!
//! The same formula is written once more in SQL (`store::CURRENT_PRICE_SQL`) so price filters
//! and sorts agree with what the product shows; `store::tests::sql_and_rust_prices_agree` checks it.

use bazaar_platform::FieldError;
use bazaar_platform::time::{millis_to_rfc3339, parse_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::money::{MAX_AMOUNT, Money};

/// How much comes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// 1..=100 percent of the list price.
    Percent(u8),
    /// A fixed amount in the product's currency, ≥ 1.
    Amount(i64),
}

/// A discount with its validity window, in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDiscount", into = "RawDiscount")]
pub struct Discount {
    reduction: Reduction,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct RawDiscount {
    reduction: Reduction,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
}

impl TryFrom<RawDiscount> for Discount {
    type Error = String;
    fn try_from(raw: RawDiscount) -> Result<Self, String> {
        Discount::new(raw.reduction, raw.starts_at, raw.ends_at)
    }
}

impl From<Discount> for RawDiscount {
    fn from(d: Discount) -> RawDiscount {
        RawDiscount {
            reduction: d.reduction,
            starts_at: d.starts_at,
            ends_at: d.ends_at,
        }
    }
}

impl Discount {
    /// The invariants every stored discount satisfies (the list-price bound is checked when the
    /// discount is set, see [`Discount::from_json`]).
    pub fn new(
        reduction: Reduction,
        starts_at: Option<i64>,
        ends_at: Option<i64>,
    ) -> Result<Self, String> {
        match reduction {
            Reduction::Percent(p) if !(1..=100).contains(&p) => {
                return Err("percent_off must be from 1 to 100".into());
            }
            Reduction::Amount(a) if !(1..=MAX_AMOUNT).contains(&a) => {
                return Err("amount_off must be at least 1 minor unit".into());
            }
            _ => {}
        }
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && e <= s
        {
            return Err("ends_at must be after starts_at".into());
        }
        Ok(Discount {
            reduction,
            starts_at,
            ends_at,
        })
    }

    pub fn reduction(&self) -> Reduction {
        self.reduction
    }
    pub fn starts_at(&self) -> Option<i64> {
        self.starts_at
    }
    pub fn ends_at(&self) -> Option<i64> {
        self.ends_at
    }

    /// Whether the discount applies at `now` (Unix ms): `starts_at <= now < ends_at`.
    pub fn is_active(&self, now: i64) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && self.ends_at.is_none_or(|e| now < e)
    }

    /// Parses a `PUT .../discount` body for a product whose list price is `list_price`, at `now`.
    /// Every problem is reported, each under its field.
    pub fn from_json(value: &Value, list_price: &Money, now: i64) -> Result<Self, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !["percent_off", "amount_off", "starts_at", "ends_at"].contains(&key.as_str()) {
                errors.push(FieldError::new(key.as_str(), "unknown field"));
            }
        }
        let percent = match object.get("percent_off") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(p @ 1..=100) => Some(p as u8),
                _ => {
                    errors.push(FieldError::new(
                        "percent_off",
                        "must be an integer from 1 to 100",
                    ));
                    None
                }
            },
        };
        let amount = match object.get("amount_off") {
            None | Some(Value::Null) => None,
            Some(v) => match Money::from_json(v, "amount_off") {
                Ok(m) if m.currency() != list_price.currency() => {
                    errors.push(FieldError::new(
                        "amount_off.currency",
                        format!("must be the product's currency {}", list_price.currency()),
                    ));
                    None
                }
                Ok(m) if m.amount() < 1 => {
                    errors.push(FieldError::new("amount_off.amount", "must be at least 1"));
                    None
                }
                Ok(m) if m.amount() > list_price.amount() => {
                    errors.push(FieldError::new(
                        "amount_off.amount",
                        format!("must not exceed the list price {}", list_price.amount()),
                    ));
                    None
                }
                Ok(m) => Some(m.amount()),
                Err(mut e) => {
                    errors.append(&mut e);
                    None
                }
            },
        };
        let present = |k: &str| !matches!(object.get(k), None | Some(Value::Null));
        if present("percent_off") && present("amount_off") {
            errors.push(FieldError::new(
                "percent_off",
                "give either percent_off or amount_off, not both",
            ));
        } else if !present("percent_off") && !present("amount_off") {
            errors.push(FieldError::new(
                "percent_off",
                "one of percent_off or amount_off is required (DELETE the discount to remove it)",
            ));
        }
        let mut timestamp = |field: &str| match object.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str().and_then(parse_rfc3339) {
                Some(t) => Some(t),
                None => {
                    errors.push(FieldError::new(field, "must be an RFC 3339 timestamp"));
                    None
                }
            },
        };
        let starts_at = timestamp("starts_at");
        let ends_at = timestamp("ends_at");
        if let Some(e) = ends_at {
            if starts_at.is_some_and(|s| e <= s) {
                errors.push(FieldError::new("ends_at", "must be after starts_at"));
            } else if e <= now {
                errors.push(FieldError::new("ends_at", "must be in the future"));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let reduction = match (percent, amount) {
            (Some(p), None) => Reduction::Percent(p),
            (None, Some(a)) => Reduction::Amount(a),
            _ => return Err(vec![FieldError::new("percent_off", "invalid discount")]),
        };
        Discount::new(reduction, starts_at, ends_at).map_err(|m| vec![FieldError::new("body", m)])
    }

    /// The JSON shape shown on a product.
    pub fn to_json(&self, list_price: &Money, now: i64) -> Value {
        let mut object = serde_json::Map::new();
        match self.reduction {
            Reduction::Percent(p) => {
                object.insert("percent_off".into(), p.into());
            }
            Reduction::Amount(a) => {
                object.insert(
                    "amount_off".into(),
                    serde_json::json!({"amount": a, "currency": list_price.currency().as_str()}),
                );
            }
        }
        object.insert(
            "starts_at".into(),
            self.starts_at.map(millis_to_rfc3339).into(),
        );
        object.insert("ends_at".into(), self.ends_at.map(millis_to_rfc3339).into());
        object.insert("active".into(), self.is_active(now).into());
        Value::Object(object)
    }
}

/// What the customer pays at `now` for a product listed at `list_price`.
pub fn current_price(list_price: &Money, discount: Option<&Discount>, now: i64) -> Money {
    match discount {
        Some(d) if d.is_active(now) => {
            let list = list_price.amount();
            let price = match d.reduction {
                Reduction::Percent(p) => list - list * i64::from(p) / 100,
                Reduction::Amount(a) => list - a,
            };
            list_price.with_amount(price)
        }
        _ => *list_price,
    }
}

/// The next instant after `now` at which [`current_price`] may change (a discount starting or
/// ending), for logs and cache hints.
pub fn next_price_change(discount: Option<&Discount>, now: i64) -> Option<i64> {
    let d = discount?;
    [d.starts_at, d.ends_at]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;
    use serde_json::json;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn percent_rounds_the_discount_down() {
        let d = Discount::new(Reduction::Percent(15), None, None).unwrap();
        // 15% of 999 = 149.85 → 149 off → 850.
        assert_eq!(current_price(&eur(999), Some(&d), NOW).amount(), 850);
        let all = Discount::new(Reduction::Percent(100), None, None).unwrap();
        assert_eq!(current_price(&eur(999), Some(&all), NOW).amount(), 0);
        assert_eq!(current_price(&eur(0), Some(&d), NOW).amount(), 0);
    }

    #[test]
    fn amount_never_goes_below_zero() {
        let d = Discount::new(Reduction::Amount(500), None, None).unwrap();
        assert_eq!(current_price(&eur(1200), Some(&d), NOW).amount(), 700);
        assert_eq!(current_price(&eur(300), Some(&d), NOW).amount(), 0);
    }

    #[test]
    fn window_is_half_open() {
        let d = Discount::new(Reduction::Percent(50), Some(NOW), Some(NOW + 1000)).unwrap();
        assert_eq!(current_price(&eur(100), Some(&d), NOW - 1).amount(), 100);
        assert_eq!(current_price(&eur(100), Some(&d), NOW).amount(), 50);
        assert_eq!(current_price(&eur(100), Some(&d), NOW + 999).amount(), 50);
        assert_eq!(current_price(&eur(100), Some(&d), NOW + 1000).amount(), 100);
        assert_eq!(next_price_change(Some(&d), NOW - 5), Some(NOW));
        assert_eq!(next_price_change(Some(&d), NOW), Some(NOW + 1000));
        assert_eq!(next_price_change(Some(&d), NOW + 1000), None);
        assert_eq!(current_price(&eur(100), None, NOW).amount(), 100);
    }

    #[test]
    fn constructor_keeps_invariants() {
        assert!(Discount::new(Reduction::Percent(0), None, None).is_err());
        assert!(Discount::new(Reduction::Percent(101), None, None).is_err());
        assert!(Discount::new(Reduction::Amount(0), None, None).is_err());
        assert!(Discount::new(Reduction::Percent(5), Some(10), Some(10)).is_err());
        let stored = r#"{"reduction":{"percent":150},"starts_at":null,"ends_at":null}"#;
        assert!(serde_json::from_str::<Discount>(stored).is_err());
        let d = Discount::new(Reduction::Amount(7), Some(1), None).unwrap();
        let back: Discount = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    fn field_errors(body: Value) -> Vec<String> {
        Discount::from_json(&body, &eur(1000), NOW)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn json_validation_names_each_field() {
        let ok = Discount::from_json(
            &json!({"percent_off": 20, "starts_at": "2027-01-15T08:00:00Z", "ends_at": "2027-02-01T00:00:00Z"}),
            &eur(1000),
            NOW,
        )
        .unwrap();
        assert_eq!(ok.reduction(), Reduction::Percent(20));
        let amount = Discount::from_json(
            &json!({"amount_off": {"amount": 1000, "currency": "EUR"}}),
            &eur(1000),
            NOW,
        )
        .unwrap();
        assert_eq!(amount.reduction(), Reduction::Amount(1000));

        assert_eq!(field_errors(json!({})), ["percent_off"]);
        assert_eq!(
            field_errors(
                json!({"percent_off": 10, "amount_off": {"amount": 1, "currency": "EUR"}})
            ),
            ["percent_off"]
        );
        assert_eq!(field_errors(json!({"percent_off": 0})), ["percent_off"]);
        assert!(field_errors(json!({"percent_off": 101})).contains(&"percent_off".to_owned()));
        assert!(field_errors(json!({"percent_off": 12.5})).contains(&"percent_off".to_owned()));
        assert_eq!(
            field_errors(json!({"amount_off": {"amount": 1, "currency": "USD"}})),
            ["amount_off.currency"]
        );
        assert_eq!(
            field_errors(json!({"amount_off": {"amount": 1001, "currency": "EUR"}})),
            ["amount_off.amount"]
        );
        assert_eq!(
            field_errors(json!({"percent_off": 5, "starts_at": "yesterday"})),
            ["starts_at"]
        );
        assert_eq!(
            field_errors(
                json!({"percent_off": 5, "starts_at": "2027-02-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"})
            ),
            ["ends_at"]
        );
        assert_eq!(
            field_errors(json!({"percent_off": 5, "ends_at": "2020-01-01T00:00:00Z"})),
            ["ends_at"]
        );
        assert_eq!(
            field_errors(json!({"percent_off": 5, "extra": true})),
            ["extra"]
        );
        assert_eq!(field_errors(json!([1])), ["body"]);
    }
}
