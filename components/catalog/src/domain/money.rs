//! Money in integer minor units with an ISO 4217 currency code. Never floats.

use std::fmt;

use bazaar_platform::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest amount the catalog accepts (10^15 minor units). It keeps every computation
/// (`amount * percent`) far away from `i64` overflow, in Rust and in SQL.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Three upper-case ASCII letters (`EUR`, `USD`). The code list itself is not checked: new codes
/// appear and the shape is what storage and arithmetic rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err("must be an ISO 4217 code: three upper-case letters".to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount of minor units (at most [`MAX_AMOUNT`]) in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMoney", into = "RawMoney")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

#[derive(Serialize, Deserialize)]
struct RawMoney {
    amount: i64,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = String;
    fn try_from(raw: RawMoney) -> Result<Self, String> {
        Money::new(raw.amount, raw.currency)
    }
}

impl From<Money> for RawMoney {
    fn from(m: Money) -> RawMoney {
        RawMoney {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, String> {
        if (0..=MAX_AMOUNT).contains(&amount) {
            Ok(Money { amount, currency })
        } else {
            Err(format!(
                "amount must be an integer from 0 to {MAX_AMOUNT} (minor units)"
            ))
        }
    }

    pub fn amount(&self) -> i64 {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The same currency with another amount, clamped into the valid range (prices never go
    /// below zero).
    pub fn with_amount(&self, amount: i64) -> Money {
        Money {
            amount: amount.clamp(0, MAX_AMOUNT),
            currency: self.currency,
        }
    }

    /// Parses `{ "amount": <integer>, "currency": "<ISO 4217>" }`, reporting problems under
    /// `field.amount` / `field.currency`.
    pub fn from_json(value: &Value, field: &str) -> Result<Money, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new(
                field,
                "must be an object {amount, currency}",
            )]);
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if key != "amount" && key != "currency" {
                errors.push(FieldError::new(format!("{field}.{key}"), "unknown field"));
            }
        }
        let amount = match object.get("amount") {
            None => {
                errors.push(FieldError::new(format!("{field}.amount"), "is required"));
                None
            }
            Some(v) => match v.as_i64() {
                Some(n) if (0..=MAX_AMOUNT).contains(&n) => Some(n),
                _ => {
                    errors.push(FieldError::new(
                        format!("{field}.amount"),
                        format!("must be an integer from 0 to {MAX_AMOUNT} (minor units)"),
                    ));
                    None
                }
            },
        };
        let currency = match object.get("currency") {
            None => {
                errors.push(FieldError::new(format!("{field}.currency"), "is required"));
                None
            }
            Some(v) => match v.as_str().map(Currency::parse) {
                Some(Ok(c)) => Some(c),
                Some(Err(message)) => {
                    errors.push(FieldError::new(format!("{field}.currency"), message));
                    None
                }
                None => {
                    errors.push(FieldError::new(
                        format!("{field}.currency"),
                        "must be a string",
                    ));
                    None
                }
            },
        };
        match (amount, currency) {
            (Some(amount), Some(currency)) if errors.is_empty() => Ok(Money { amount, currency }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn money_parses_integers_in_range_only() {
        let m = Money::from_json(&json!({"amount": 1999, "currency": "USD"}), "price").unwrap();
        assert_eq!((m.amount(), m.currency().as_str()), (1999, "USD"));
        assert!(Money::from_json(&json!({"amount": 0, "currency": "USD"}), "price").is_ok());
        for (bad, field) in [
            (json!({"amount": -1, "currency": "USD"}), "price.amount"),
            (json!({"amount": 19.99, "currency": "USD"}), "price.amount"),
            (json!({"amount": "1999", "currency": "USD"}), "price.amount"),
            (
                json!({"amount": MAX_AMOUNT + 1, "currency": "USD"}),
                "price.amount",
            ),
            (json!({"amount": 1, "currency": "usd"}), "price.currency"),
            (json!({"amount": 1}), "price.currency"),
            (json!({"currency": "USD"}), "price.amount"),
            (json!({"amount": 1, "currency": "USD", "x": 1}), "price.x"),
            (json!(1999), "price"),
        ] {
            let errors = Money::from_json(&bad, "price").unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{bad} → {errors:?}"
            );
        }
    }

    #[test]
    fn money_round_trips_through_serde_and_rejects_invalid_stored_values() {
        let m = Money::new(5, Currency::parse("JPY").unwrap()).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"amount":5,"currency":"JPY"}"#);
        assert_eq!(serde_json::from_str::<Money>(&text).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":-5,"currency":"JPY"}"#).is_err());
        assert_eq!(m.with_amount(-3).amount(), 0);
    }
}
