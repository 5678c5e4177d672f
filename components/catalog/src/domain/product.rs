//! Products: the validated input types, the stored record and the public view.

use bazaar_platform::FieldError;
use bazaar_platform::time::millis_to_rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::discount::{Discount, current_price};
use super::image::ImageKey;
use super::money::Money;

pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_ATTRIBUTES: usize = 50;
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 64;
pub const MAX_ATTRIBUTE_TEXT_CHARS: usize = 1000;
pub const MAX_ID_CHARS: usize = 64;
/// A product keeps at most this many images (each upload adds one unless already present).
pub const MAX_IMAGES: usize = 20;

/// A stock-keeping unit: 1..=64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
/// Case is kept and matters for uniqueness (`ab-1` and `AB-1` are two SKUs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(text: &str) -> Result<Sku, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if text.is_empty() || text.len() > MAX_SKU_CHARS {
            return Err(format!("must be 1 to {MAX_SKU_CHARS} characters"));
        }
        if !text.chars().all(ok_char) || !text.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(
                "may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit"
                    .into(),
            );
        }
        Ok(Sku(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Sku {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Sku::parse(&s)
    }
}
impl From<Sku> for String {
    fn from(s: Sku) -> String {
        s.0
    }
}

fn has_control(text: &str, allow_newlines: bool) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t')))
}

/// A display name: trimmed, 1..=200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Name, String> {
        let trimmed = text.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if has_control(trimmed, false) {
            return Err("must not contain control characters".into());
        }
        Ok(Name(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Name::parse(&s)
    }
}
impl From<Name> for String {
    fn from(s: Name) -> String {
        s.0
    }
}

/// Free text up to 5000 characters (newlines and tabs allowed, other control characters not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, String> {
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(format!(
                "must be at most {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        if has_control(text, true) {
            return Err("must not contain control characters other than newlines and tabs".into());
        }
        Ok(Description(text.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Description {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Description::parse(&s)
    }
}
impl From<Description> for String {
    fn from(s: Description) -> String {
        s.0
    }
}

/// Parses an opaque id sent by a client (a category id, a path id): 1..=64 visible ASCII.
pub fn parse_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_ID_CHARS || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be an id of 1 to {MAX_ID_CHARS} visible ASCII characters"
        ));
    }
    Ok(text.to_owned())
}

/// Free product attributes: a flat JSON object of at most 50 entries whose values are strings
/// (≤ 1000 characters), numbers or booleans. Nested values and nulls are refused so every
/// consumer can render them without guessing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct Attributes(Map<String, Value>);

impl Attributes {
    pub fn from_json(value: &Value, field: &str) -> Result<Attributes, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new(field, "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        if object.len() > MAX_ATTRIBUTES {
            errors.push(FieldError::new(
                field,
                format!("must have at most {MAX_ATTRIBUTES} entries"),
            ));
        }
        for (key, v) in object {
            let at = format!("{field}.{key}");
            let key_chars = key.chars().count();
            if key.trim().is_empty()
                || key_chars > MAX_ATTRIBUTE_KEY_CHARS
                || has_control(key, false)
            {
                errors.push(FieldError::new(
                    at.clone(),
                    format!("keys must be 1 to {MAX_ATTRIBUTE_KEY_CHARS} visible characters"),
                ));
            }
            match v {
                Value::String(s)
                    if s.chars().count() > MAX_ATTRIBUTE_TEXT_CHARS || has_control(s, true) =>
                {
                    errors.push(FieldError::new(
                        at,
                        format!(
                            "text values must be at most {MAX_ATTRIBUTE_TEXT_CHARS} characters without control characters"
                        ),
                    ))
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
                _ => errors.push(FieldError::new(
                    at,
                    "must be a string, a number or a boolean",
                )),
            }
        }
        if errors.is_empty() {
            Ok(Attributes(object.clone()))
        } else {
            Err(errors)
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}
impl TryFrom<Map<String, Value>> for Attributes {
    type Error = String;
    fn try_from(map: Map<String, Value>) -> Result<Self, String> {
        Attributes::from_json(&Value::Object(map), "attributes").map_err(|e| {
            e.into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}
impl From<Attributes> for Map<String, Value> {
    fn from(a: Attributes) -> Self {
        a.0
    }
}

/// A product as stored (and cached): raw facts only. The price a customer pays is derived at
/// read time ([`ProductRecord::view`]), so a cached record never serves a stale price when a
/// discount starts or ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRecord {
    pub id: String,
    pub sku: Sku,
    pub name: Name,
    pub description: Description,
    pub category_id: Option<String>,
    pub list_price: Money,
    pub discount: Option<Discount>,
    pub attributes: Attributes,
    /// Content-addressed image keys (`<sha256>.<ext>`); URLs are built at read time from the
    /// `cdn_base_url` variable, so moving the images behind a CDN needs no data change.
    pub images: Vec<ImageKey>,
    pub active: bool,
    pub vendor_id: String,
    /// Incremented by every write; the version of the events it causes.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ProductRecord {
    /// The public JSON shape (API.md "product"), priced at `now`.
    pub fn view(&self, now: i64, image_url: impl Fn(&ImageKey) -> String) -> Value {
        let price = current_price(&self.list_price, self.discount.as_ref(), now);
        serde_json::json!({
            "id": self.id,
            "sku": self.sku.as_str(),
            "name": self.name.as_str(),
            "description": self.description.as_str(),
            "category_id": self.category_id,
            "price": price,
            "list_price": self.list_price,
            "discount": self.discount.map(|d| d.to_json(&self.list_price, now)),
            "images": self.images.iter().map(image_url).collect::<Vec<_>>(),
            "attributes": self.attributes.as_map(),
            "active": self.active,
            "vendor_id": self.vendor_id,
            "created_at": millis_to_rfc3339(self.created_at),
            "updated_at": millis_to_rfc3339(self.updated_at),
        })
    }

    /// Lower-cased name, the key of the `name` sort (case-insensitive, byte order).
    pub fn name_sort_key(&self) -> String {
        self.name.as_str().to_lowercase()
    }

    /// Lower-cased name, description and SKU: what `q` searches.
    pub fn search_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.name.as_str(),
            self.description.as_str(),
            self.sku.as_str()
        )
        .to_lowercase()
    }
}

/// A validated `POST /api/v1/products` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: Name,
    pub description: Description,
    pub category_id: Option<String>,
    pub price: Money,
    pub attributes: Attributes,
    pub active: bool,
}

/// A validated `PATCH /api/v1/products/{id}` body: `None` = leave unchanged;
/// `category_id: Some(None)` = clear it (`"category_id": null`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProductPatch {
    pub sku: Option<Sku>,
    pub name: Option<Name>,
    pub description: Option<Description>,
    pub category_id: Option<Option<String>>,
    pub price: Option<Money>,
    pub attributes: Option<Attributes>,
    pub active: Option<bool>,
}

const PRODUCT_FIELDS: [&str; 7] = [
    "sku",
    "name",
    "description",
    "category_id",
    "price",
    "attributes",
    "active",
];

/// Collects every field problem of a body instead of stopping at the first.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, known: &[&str]) -> Result<Self, Vec<FieldError>> {
        let object = value
            .as_object()
            .ok_or_else(|| vec![FieldError::new("body", "must be a JSON object")])?;
        let errors = object
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| FieldError::new(k.as_str(), "unknown field"))
            .collect();
        Ok(Fields { object, errors })
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// The field's value; `required` adds an error when it is absent. `null` counts as absent
    /// for every field except those that accept null (handled by the caller).
    fn get(&mut self, field: &str, required: bool) -> Option<&'a Value> {
        match self.object.get(field) {
            Some(Value::Null) | None => {
                if required {
                    self.error(field, "is required");
                }
                None
            }
            Some(v) => Some(v),
        }
    }

    fn text<T>(
        &mut self,
        field: &str,
        required: bool,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.get(field, required)?;
        match v.as_str() {
            None => {
                self.error(field, "must be a string");
                None
            }
            Some(s) => match parse(s) {
                Ok(t) => Some(t),
                Err(m) => {
                    self.error(field, m);
                    None
                }
            },
        }
    }

    fn with<T>(
        &mut self,
        field: &str,
        required: bool,
        parse: impl Fn(&Value, &str) -> Result<T, Vec<FieldError>>,
    ) -> Option<T> {
        let v = self.get(field, required)?;
        match parse(v, field) {
            Ok(t) => Some(t),
            Err(mut e) => {
                self.errors.append(&mut e);
                None
            }
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        let v = self.get(field, false)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        value().ok_or_else(|| vec![FieldError::new("body", "is invalid")])
    }
}

impl NewProduct {
    pub fn from_json(value: &Value) -> Result<NewProduct, Vec<FieldError>> {
        let mut f = Fields::new(value, &PRODUCT_FIELDS)?;
        let sku = f.text("sku", true, Sku::parse);
        let name = f.text("name", true, Name::parse);
        let description = f.text("description", true, Description::parse);
        let category_id = f.text("category_id", false, parse_id);
        let price = f.with("price", true, Money::from_json);
        let attributes = f.with("attributes", false, Attributes::from_json);
        let active = f.boolean("active");
        f.finish(|| {
            Some(NewProduct {
                sku: sku?,
                name: name?,
                description: description?,
                category_id,
                price: price?,
                attributes: attributes.unwrap_or_default(),
                active: active.unwrap_or(true),
            })
        })
    }
}

impl ProductPatch {
    pub fn from_json(value: &Value) -> Result<ProductPatch, Vec<FieldError>> {
        let mut f = Fields::new(value, &PRODUCT_FIELDS)?;
        for field in [
            "sku",
            "name",
            "description",
            "price",
            "attributes",
            "active",
        ] {
            if f.object.get(field) == Some(&Value::Null) {
                f.error(field, "cannot be null");
            }
        }
        let category_id = match f.object.get("category_id") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => f.text("category_id", false, parse_id).map(Some),
        };
        let patch = ProductPatch {
            sku: f.text("sku", false, Sku::parse),
            name: f.text("name", false, Name::parse),
            description: f.text("description", false, Description::parse),
            category_id,
            price: f.with("price", false, Money::from_json),
            attributes: f.with("attributes", false, Attributes::from_json),
            active: f.boolean("active"),
        };
        f.finish(|| Some(patch))
    }

    /// `record` with this patch applied (version and timestamps untouched). An amount discount
    /// is in the product's currency, so changing the currency while one is set is refused.
    pub fn apply(&self, record: &ProductRecord) -> Result<ProductRecord, Vec<FieldError>> {
        let mut next = record.clone();
        if let Some(v) = &self.sku {
            next.sku = v.clone();
        }
        if let Some(v) = &self.name {
            next.name = v.clone();
        }
        if let Some(v) = &self.description {
            next.description = v.clone();
        }
        if let Some(v) = &self.category_id {
            next.category_id = v.clone();
        }
        if let Some(v) = &self.attributes {
            next.attributes = v.clone();
        }
        if let Some(v) = self.active {
            next.active = v;
        }
        if let Some(price) = self.price {
            if price.currency() != record.list_price.currency()
                && record
                    .discount
                    .is_some_and(|d| matches!(d.reduction(), super::discount::Reduction::Amount(_)))
            {
                return Err(vec![FieldError::new(
                    "price.currency",
                    "cannot change while an amount discount in the old currency is set; delete the discount first",
                )]);
            }
            next.list_price = price;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(r: Result<impl std::fmt::Debug, Vec<FieldError>>) -> Vec<String> {
        let mut f: Vec<String> = r.unwrap_err().into_iter().map(|e| e.field).collect();
        f.sort();
        f
    }

    fn valid() -> Value {
        json!({"sku": "TEE-1", "name": "  T-shirt ", "description": "Cotton",
               "price": {"amount": 1999, "currency": "EUR"}})
    }

    #[test]
    fn new_product_defaults_and_trims() {
        let p = NewProduct::from_json(&valid()).unwrap();
        assert_eq!(p.name.as_str(), "T-shirt");
        assert!(p.active);
        assert!(p.attributes.as_map().is_empty());
        assert_eq!(p.category_id, None);
    }

    #[test]
    fn new_product_reports_every_invalid_field() {
        assert_eq!(
            fields(NewProduct::from_json(&json!({}))),
            ["description", "name", "price", "sku"]
        );
        let bad = json!({"sku": "has space", "name": "", "description": 5,
            "price": {"amount": -1, "currency": "EUR"}, "category_id": "",
            "attributes": {"nested": {"a": 1}}, "active": "yes", "colour": "red"});
        assert_eq!(
            fields(NewProduct::from_json(&bad)),
            [
                "active",
                "attributes.nested",
                "category_id",
                "colour",
                "description",
                "name",
                "price.amount",
                "sku"
            ]
        );
        assert_eq!(fields(NewProduct::from_json(&json!("x"))), ["body"]);
    }

    #[test]
    fn field_rules() {
        assert!(Sku::parse("A.b_c-9").is_ok());
        for bad in ["", "-a", "a b", "é", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse("a\u{0007}b").is_err());
        assert!(Name::parse(&"é".repeat(200)).is_ok());
        assert!(Name::parse(&"é".repeat(201)).is_err());
        assert!(Description::parse("").is_ok());
        assert!(Description::parse("line\nline\ttab").is_ok());
        assert!(Description::parse("nul\u{0}").is_err());
        assert!(Description::parse(&"d".repeat(5001)).is_err());
        assert!(parse_id("cat_1").is_ok());
        assert!(parse_id("a b").is_err());
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Attributes::from_json(&Value::Object(many), "attributes").is_err());
        assert!(
            Attributes::from_json(
                &json!({"size": "M", "weight": 1.5, "organic": true}),
                "attributes"
            )
            .is_ok()
        );
        for bad in [
            json!({"a": null}),
            json!({"a": [1]}),
            json!({"": 1}),
            json!([]),
        ] {
            assert!(Attributes::from_json(&bad, "attributes").is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let p = ProductPatch::from_json(&json!({"category_id": null, "name": "New"})).unwrap();
        assert_eq!(p.category_id, Some(None));
        assert_eq!(p.name.unwrap().as_str(), "New");
        assert_eq!(
            ProductPatch::from_json(&json!({})).unwrap(),
            ProductPatch::default()
        );
        assert_eq!(
            fields(ProductPatch::from_json(&json!({"name": null}))),
            ["name"]
        );
        assert_eq!(fields(ProductPatch::from_json(&json!({"id": "x"}))), ["id"]);
    }

    fn record() -> ProductRecord {
        let n = NewProduct::from_json(&valid()).unwrap();
        ProductRecord {
            id: "prd_1".into(),
            sku: n.sku,
            name: n.name,
            description: n.description,
            category_id: None,
            list_price: n.price,
            discount: None,
            attributes: n.attributes,
            images: vec![],
            active: true,
            vendor_id: "v1".into(),
            version: 1,
            created_at: 1_800_000_000_000,
            updated_at: 1_800_000_000_000,
        }
    }

    #[test]
    fn patch_applies_and_guards_currency_of_amount_discounts() {
        let mut r = record();
        let patch =
            ProductPatch::from_json(&json!({"price": {"amount": 5, "currency": "USD"}})).unwrap();
        assert_eq!(
            patch.apply(&r).unwrap().list_price.currency().as_str(),
            "USD"
        );
        r.discount =
            Some(Discount::new(super::super::discount::Reduction::Amount(1), None, None).unwrap());
        assert_eq!(fields(patch.apply(&r)), ["price.currency"]);
    }

    #[test]
    fn view_has_the_contract_shape_and_prices_at_read_time() {
        let mut r = record();
        r.discount = Some(
            Discount::new(
                super::super::discount::Reduction::Percent(10),
                Some(2_000_000_000_000),
                None,
            )
            .unwrap(),
        );
        let before = r.view(1_900_000_000_000, |k| format!("/images/{k}"));
        assert_eq!(before["price"], json!({"amount": 1999, "currency": "EUR"}));
        let after = r.view(2_000_000_000_000, |k| format!("/images/{k}"));
        assert_eq!(after["price"], json!({"amount": 1800, "currency": "EUR"}));
        assert_eq!(
            after["list_price"],
            json!({"amount": 1999, "currency": "EUR"})
        );
        for key in [
            "id",
            "sku",
            "name",
            "description",
            "category_id",
            "price",
            "list_price",
            "images",
            "attributes",
            "active",
            "vendor_id",
            "created_at",
            "updated_at",
        ] {
            assert!(after.get(key).is_some(), "{key}");
        }
        assert_eq!(after["created_at"], "2027-01-15T08:00:00.000Z");
        let cached: ProductRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(cached, r);
    }
}
