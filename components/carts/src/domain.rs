//! Cart rules, free of I/O: quantities, line limits, merging a guest cart into a user's cart,
//! and totals from prices looked up at read time.

use serde::{Deserialize, Serialize};

use bazaar_platform::{FieldError, Problem};

/// Most units of one product in one cart line.
pub const MAX_QUANTITY: u32 = 999;
/// Most distinct products in one cart.
pub const MAX_LINES: usize = 100;
/// Longest product id accepted (ids are opaque, but bounded).
const MAX_PRODUCT_ID_LEN: usize = 64;

/// A product id as the catalog issues them: 1..=64 of `[A-Za-z0-9_-]`, so it is safe in a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProductId(String);

impl ProductId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value.is_empty()
            || value.len() > MAX_PRODUCT_ID_LEN
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("must be a product id (1-64 characters of A-Z, a-z, 0-9, _ and -)".into());
        }
        Ok(ProductId(value))
    }
}

impl From<ProductId> for String {
    fn from(id: ProductId) -> String {
        id.0
    }
}

/// A quantity in a cart line: 1..=999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub fn get(self) -> u32 {
        self.0
    }

    /// Adds, capped at [`MAX_QUANTITY`] (merging two carts never fails on the cap).
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity((self.0 + other.0).min(MAX_QUANTITY))
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        if (1..=i64::from(MAX_QUANTITY)).contains(&value) {
            Ok(Quantity(value as u32))
        } else {
            Err(format!("must be an integer from 1 to {MAX_QUANTITY}"))
        }
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

/// A validated `POST /api/v1/cart/items` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// A validated `PATCH /api/v1/cart/items/{product_id}` body: 0 removes the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewQuantity(pub u32);

/// The fields of a JSON object body, every unknown field reported (clients learn of typos
/// instead of having them ignored).
fn object<'a>(
    body: &'a serde_json::Value,
    known: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
    let Some(map) = body.as_object() else {
        errors.push(FieldError::new("body", "must be a JSON object"));
        return None;
    };
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(FieldError::new(key.as_str(), "unknown field"));
    }
    Some(map)
}

/// A JSON integer (not a float, not a string), or the field error.
fn integer(
    map: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<i64, FieldError> {
    match map.get(field) {
        None | Some(serde_json::Value::Null) => Err(FieldError::new(field, "is required")),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| FieldError::new(field, "must be an integer")),
    }
}

impl NewLine {
    pub fn from_json(body: &serde_json::Value) -> Result<NewLine, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(map) = object(body, &["product_id", "quantity"], &mut errors) else {
            return Err(errors);
        };
        let product_id = match map.get("product_id") {
            None | Some(serde_json::Value::Null) => {
                errors.push(FieldError::new("product_id", "is required"));
                None
            }
            Some(serde_json::Value::String(s)) => match ProductId::try_from(s.clone()) {
                Ok(id) => Some(id),
                Err(m) => {
                    errors.push(FieldError::new("product_id", m));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("product_id", "must be a string"));
                None
            }
        };
        let quantity = match integer(map, "quantity") {
            Ok(n) => match Quantity::try_from(n) {
                Ok(q) => Some(q),
                Err(m) => {
                    errors.push(FieldError::new("quantity", m));
                    None
                }
            },
            Err(e) => {
                errors.push(e);
                None
            }
        };
        match (product_id, quantity) {
            (Some(product_id), Some(quantity)) if errors.is_empty() => Ok(NewLine {
                product_id,
                quantity,
            }),
            _ => Err(errors),
        }
    }
}

impl NewQuantity {
    pub fn from_json(body: &serde_json::Value) -> Result<NewQuantity, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(map) = object(body, &["quantity"], &mut errors) else {
            return Err(errors);
        };
        match integer(map, "quantity") {
            Ok(n) if (0..=i64::from(MAX_QUANTITY)).contains(&n) && errors.is_empty() => {
                Ok(NewQuantity(n as u32))
            }
            Ok(n) if (0..=i64::from(MAX_QUANTITY)).contains(&n) => Err(errors),
            Ok(_) => {
                errors.push(FieldError::new(
                    "quantity",
                    format!("must be an integer from 0 to {MAX_QUANTITY}"),
                ));
                Err(errors)
            }
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// Whose cart it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Guest(String),
    User(String),
}

/// A stored cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub id: String,
    pub lines: Vec<Line>,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Guest carts expire (Unix milliseconds); user carts do not.
    pub expires_at: Option<i64>,
}

impl Cart {
    pub fn new(id: String, now: i64, expires_at: Option<i64>) -> Cart {
        Cart {
            id,
            lines: Vec::new(),
            updated_at: now,
            expires_at,
        }
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub fn quantity_of(&self, product: &ProductId) -> Option<Quantity> {
        self.lines
            .iter()
            .find(|l| &l.product_id == product)
            .map(|l| l.quantity)
    }

    /// Adds `quantity` units (to an existing line or as a new one).
    pub fn add(&mut self, product: ProductId, quantity: Quantity) -> Result<(), Problem> {
        if let Some(line) = self.lines.iter_mut().find(|l| l.product_id == product) {
            let total = line.quantity.get() + quantity.get();
            if total > MAX_QUANTITY {
                return Err(Problem::unprocessable(vec![FieldError::new(
                    "quantity",
                    format!(
                        "the cart would hold {total} units; at most {MAX_QUANTITY} per product"
                    ),
                )]));
            }
            line.quantity = Quantity(total);
            return Ok(());
        }
        if self.lines.len() >= MAX_LINES {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "product_id",
                format!("a cart holds at most {MAX_LINES} different products"),
            )]));
        }
        self.lines.push(Line {
            product_id: product,
            quantity,
        });
        Ok(())
    }

    /// Sets a line's quantity; 0 removes it. 404 when the product is not in the cart.
    pub fn set_quantity(&mut self, product: &ProductId, quantity: u32) -> Result<(), Problem> {
        let Some(index) = self.lines.iter().position(|l| &l.product_id == product) else {
            return Err(Problem::not_found("That product is not in the cart"));
        };
        if quantity == 0 {
            self.lines.remove(index);
        } else {
            self.lines[index].quantity = Quantity::try_from(i64::from(quantity))
                .map_err(|m| Problem::unprocessable(vec![FieldError::new("quantity", m)]))?;
        }
        Ok(())
    }

    /// Removes a line; removing an absent product is not an error (DELETE is idempotent).
    pub fn remove(&mut self, product: &ProductId) {
        self.lines.retain(|l| &l.product_id != product);
    }

    /// Folds a guest cart into this (user) cart: quantities add up (capped), new products are
    /// appended in the guest cart's order until the line limit.
    pub fn merge_from(&mut self, guest: &Cart) {
        for line in &guest.lines {
            if let Some(mine) = self
                .lines
                .iter_mut()
                .find(|l| l.product_id == line.product_id)
            {
                mine.quantity = mine.quantity.saturating_add(line.quantity);
            } else if self.lines.len() < MAX_LINES {
                self.lines.push(line.clone());
            }
        }
    }
}

/// Money as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

/// ISO 4217 code, three upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let bytes: [u8; 3] = value
            .as_bytes()
            .try_into()
            .map_err(|_| "a currency is three upper-case letters".to_owned())?;
        if bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency(bytes))
        } else {
            Err("a currency is three upper-case letters".to_owned())
        }
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        String::from_utf8_lossy(&c.0).into_owned()
    }
}

/// What the catalog says about a product right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    Available {
        name: String,
        price: Money,
    },
    /// Deleted, deactivated or unknown: kept in the cart (the shopper decides), priced at 0 and
    /// flagged.
    Unavailable,
}

/// A priced line as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedLine {
    pub product_id: ProductId,
    pub name: Option<String>,
    pub quantity: u32,
    pub unit_price: Option<Money>,
    pub line_total: Option<Money>,
    pub available: bool,
}

/// The cart as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedCart {
    /// `None` for a guest cart that is not stored yet (nothing added): no id is issued until
    /// one names a stored cart.
    pub id: Option<String>,
    pub items: Vec<PricedLine>,
    /// Sum of available lines; `null` for an empty cart (no currency to state).
    pub total: Option<Money>,
    pub item_count: u32,
}

/// Prices `cart` with `offers` (one per line, same order). Lines in a currency other than the
/// first available line's are flagged unavailable rather than summed into a wrong total.
pub fn price(cart: &Cart, offers: &[Offer]) -> Result<PricedCart, Problem> {
    let mut items = Vec::with_capacity(cart.lines.len());
    let mut total: Option<Money> = None;
    let mut count = 0u32;
    for (line, offer) in cart.lines.iter().zip(offers) {
        let quantity = line.quantity.get();
        count += quantity;
        let priced = match offer {
            Offer::Available { name, price }
                if total.is_none_or(|t| t.currency == price.currency) =>
            {
                let line_total = price
                    .amount
                    .checked_mul(i64::from(quantity))
                    .ok_or_else(|| Problem::internal("A line total overflowed"))?;
                let sum = total.map_or(0, |t| t.amount);
                total = Some(Money {
                    amount: sum
                        .checked_add(line_total)
                        .ok_or_else(|| Problem::internal("The cart total overflowed"))?,
                    currency: price.currency,
                });
                PricedLine {
                    product_id: line.product_id.clone(),
                    name: Some(name.clone()),
                    quantity,
                    unit_price: Some(*price),
                    line_total: Some(Money {
                        amount: line_total,
                        currency: price.currency,
                    }),
                    available: true,
                }
            }
            _ => PricedLine {
                product_id: line.product_id.clone(),
                name: None,
                quantity,
                unit_price: None,
                line_total: None,
                available: false,
            },
        };
        items.push(priced);
    }
    Ok(PricedCart {
        id: Some(cart.id.clone()),
        items,
        total,
        item_count: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ProductId {
        ProductId::try_from(s.to_owned()).unwrap()
    }
    fn q(n: i64) -> Quantity {
        Quantity::try_from(n).unwrap()
    }
    fn eur(amount: i64) -> Money {
        Money {
            amount,
            currency: Currency::try_from("EUR".to_owned()).unwrap(),
        }
    }

    #[test]
    fn ids_and_quantities_are_parsed() {
        assert!(ProductId::try_from("prd_1-a".to_owned()).is_ok());
        for bad in ["", "a/b", "../x", "x y", &"a".repeat(65)] {
            assert!(ProductId::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(Quantity::try_from(0).is_err());
        assert!(Quantity::try_from(1000).is_err());
        assert!(Quantity::try_from(-1).is_err());
        assert_eq!(q(999).get(), 999);
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        let json = serde_json::to_value(&errors).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn request_bodies_are_parsed_with_field_errors() {
        use serde_json::json;
        assert_eq!(
            NewLine::from_json(&json!({"product_id": "prd_1", "quantity": 3})).unwrap(),
            NewLine {
                product_id: pid("prd_1"),
                quantity: q(3)
            }
        );
        for (body, expected) in [
            (
                json!({"product_id": "prd_1", "quantity": 0}),
                vec!["quantity"],
            ),
            (
                json!({"product_id": "prd_1", "quantity": 1000}),
                vec!["quantity"],
            ),
            (
                json!({"product_id": "prd_1", "quantity": 1.5}),
                vec!["quantity"],
            ),
            (
                json!({"product_id": "prd_1", "quantity": "2"}),
                vec!["quantity"],
            ),
            (
                json!({"product_id": "a/b", "quantity": 1}),
                vec!["product_id"],
            ),
            (json!({"product_id": 7, "quantity": 1}), vec!["product_id"]),
            (json!({"quantity": 1}), vec!["product_id"]),
            (json!({}), vec!["product_id", "quantity"]),
            (
                json!({"product_id": "p", "quantity": 1, "price": 1}),
                vec!["price"],
            ),
            (json!([1]), vec!["body"]),
        ] {
            assert_eq!(
                fields(NewLine::from_json(&body).unwrap_err()),
                expected,
                "{body}"
            );
        }
        assert_eq!(
            NewQuantity::from_json(&json!({"quantity": 0})).unwrap(),
            NewQuantity(0)
        );
        assert_eq!(
            NewQuantity::from_json(&json!({"quantity": 999})).unwrap(),
            NewQuantity(999)
        );
        for body in [
            json!({"quantity": 1000}),
            json!({"quantity": -1}),
            json!({"quantity": null}),
            json!({"quantity": 2, "extra": true}),
            json!("x"),
        ] {
            assert!(NewQuantity::from_json(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn adding_accumulates_and_respects_limits() {
        let mut cart = Cart::new("c".into(), 0, None);
        cart.add(pid("a"), q(2)).unwrap();
        cart.add(pid("a"), q(3)).unwrap();
        assert_eq!(cart.quantity_of(&pid("a")), Some(q(5)));
        assert_eq!(
            cart.add(pid("a"), q(995))
                .unwrap_err()
                .status_code()
                .as_u16(),
            422
        );
        for i in 1..MAX_LINES {
            cart.add(pid(&format!("p{i}")), q(1)).unwrap();
        }
        assert_eq!(cart.lines.len(), MAX_LINES);
        assert!(cart.add(pid("one-too-many"), q(1)).is_err());
    }

    #[test]
    fn set_and_remove() {
        let mut cart = Cart::new("c".into(), 0, None);
        cart.add(pid("a"), q(2)).unwrap();
        cart.set_quantity(&pid("a"), 7).unwrap();
        assert_eq!(cart.quantity_of(&pid("a")), Some(q(7)));
        assert_eq!(
            cart.set_quantity(&pid("zz"), 1)
                .unwrap_err()
                .status_code()
                .as_u16(),
            404
        );
        assert!(cart.set_quantity(&pid("a"), 1000).is_err());
        cart.set_quantity(&pid("a"), 0).unwrap();
        assert!(cart.lines.is_empty());
        cart.remove(&pid("a"));
    }

    #[test]
    fn merging_adds_quantities_with_a_cap() {
        let mut user = Cart::new("u".into(), 0, None);
        user.add(pid("a"), q(998)).unwrap();
        let mut guest = Cart::new("g".into(), 0, Some(10));
        guest.add(pid("a"), q(5)).unwrap();
        guest.add(pid("b"), q(1)).unwrap();
        user.merge_from(&guest);
        assert_eq!(user.quantity_of(&pid("a")), Some(q(999)));
        assert_eq!(user.quantity_of(&pid("b")), Some(q(1)));
    }

    #[test]
    fn guest_carts_expire() {
        let cart = Cart::new("g".into(), 0, Some(100));
        assert!(!cart.is_expired(99));
        assert!(cart.is_expired(100));
        assert!(!Cart::new("u".into(), 0, None).is_expired(i64::MAX));
    }

    #[test]
    fn pricing_sums_available_lines_in_one_currency() {
        let mut cart = Cart::new("c".into(), 0, None);
        cart.add(pid("a"), q(2)).unwrap();
        cart.add(pid("b"), q(1)).unwrap();
        cart.add(pid("c"), q(4)).unwrap();
        cart.add(pid("d"), q(1)).unwrap();
        let usd = Money {
            amount: 100,
            currency: Currency::try_from("USD".to_owned()).unwrap(),
        };
        let offers = [
            Offer::Available {
                name: "A".into(),
                price: eur(1250),
            },
            Offer::Unavailable,
            Offer::Available {
                name: "C".into(),
                price: eur(99),
            },
            Offer::Available {
                name: "D".into(),
                price: usd,
            },
        ];
        let priced = price(&cart, &offers).unwrap();
        assert_eq!(priced.total, Some(eur(2 * 1250 + 4 * 99)));
        assert_eq!(priced.item_count, 8);
        assert!(!priced.items[1].available);
        assert!(
            !priced.items[3].available,
            "a second currency is not summed"
        );
        assert_eq!(priced.items[0].line_total, Some(eur(2500)));
        let empty = price(&Cart::new("e".into(), 0, None), &[]).unwrap();
        assert_eq!(empty.total, None);
    }

    #[test]
    fn pricing_overflow_is_an_error_not_a_wrap() {
        let mut cart = Cart::new("c".into(), 0, None);
        cart.add(pid("a"), q(999)).unwrap();
        let offers = [Offer::Available {
            name: "A".into(),
            price: eur(i64::MAX / 2),
        }];
        assert!(price(&cart, &offers).is_err());
    }
}
