//! The event schema (`wit/events.wit`, `docs/events.md`) against what producers really send.
//!
//! `bindgen!` parses the whole `wit/` directory at compile time (so `events.wit` and
//! `payments.wit` must both stay parseable together) and turns `bazaar:events/consumer` into
//! Rust types. The `decode_*` functions below read JSON into those types strictly: every key a
//! record has must be present, no other key may be (except where the WIT says extra keys are
//! allowed), and every value must have the documented JSON type. So a producer that adds,
//! drops or renames a field, or a WIT change that the JSON does not follow, fails here.

mod common;

use std::collections::BTreeSet;

use bazaar_platform::auth::Role;
use common::{client, shop, signing_keys_variable, token, workspace_root};
use serde_json::{Map, Value, json};

mod wit {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "bazaar:events/consumer",
    });
    pub use self::bazaar::events::{envelope, inventory, orders, payments, products};
}

use wit::envelope::{EventEnvelope, Money};

/// A JSON object read key by key; [`Obj::done`] refuses keys nobody asked for.
struct Obj<'a> {
    at: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

fn obj<'a>(value: &'a Value, at: &str) -> Obj<'a> {
    Obj {
        at: at.to_owned(),
        map: value
            .as_object()
            .unwrap_or_else(|| panic!("{at}: expected an object, got {value}")),
        seen: BTreeSet::new(),
    }
}

impl<'a> Obj<'a> {
    fn get(&mut self, key: &str) -> &'a Value {
        let (k, v) = self
            .map
            .get_key_value(key)
            .unwrap_or_else(|| panic!("{}: missing key `{key}` in {:?}", self.at, self.map));
        self.seen.insert(k.as_str());
        v
    }
    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }
    fn string(&mut self, key: &str) -> String {
        let at = self.path(key);
        string(self.get(key), &at)
    }
    fn s64(&mut self, key: &str) -> i64 {
        let v = self.get(key);
        v.as_i64()
            .unwrap_or_else(|| panic!("{}: expected an integer, got {v}", self.path(key)))
    }
    fn boolean(&mut self, key: &str) -> bool {
        let v = self.get(key);
        v.as_bool()
            .unwrap_or_else(|| panic!("{}: expected a boolean, got {v}", self.path(key)))
    }
    /// `option<string>`: the key is always written, `null` when absent.
    fn opt_string(&mut self, key: &str) -> Option<String> {
        let at = self.path(key);
        match self.get(key) {
            Value::Null => None,
            v => Some(string(v, &at)),
        }
    }
    fn money(&mut self, key: &str) -> Money {
        let at = self.path(key);
        decode_money(self.get(key), &at)
    }
    fn list<T>(&mut self, key: &str, item: impl Fn(&Value, &str) -> T) -> Vec<T> {
        let at = self.path(key);
        let v = self.get(key);
        v.as_array()
            .unwrap_or_else(|| panic!("{at}: expected an array, got {v}"))
            .iter()
            .enumerate()
            .map(|(i, v)| item(v, &format!("{at}[{i}]")))
            .collect()
    }
    fn done(self) {
        let extra: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.seen.contains(k.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: keys the schema does not have: {extra:?}",
            self.at
        );
    }
}

fn string(v: &Value, at: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{at}: expected a string, got {v}"))
        .to_owned()
}

fn decode_money(v: &Value, at: &str) -> Money {
    let mut o = obj(v, at);
    let money = Money {
        amount: o.s64("amount"),
        currency: o.string("currency"),
    };
    o.done();
    assert!(
        money.currency.len() == 3 && money.currency.bytes().all(|b| b.is_ascii_uppercase()),
        "{at}: {} is not an ISO 4217 code",
        money.currency
    );
    money
}

fn rfc3339(s: &str, at: &str) {
    assert!(
        bazaar_platform::time::parse_rfc3339(s).is_some(),
        "{at}: {s} is not RFC 3339"
    );
}

/// The envelope of `orders`, `inventory` and `products`; `data` is checked against the type
/// its channel maps the envelope `type` to.
fn decode_envelope(v: &Value, channel: &str) -> EventEnvelope {
    let mut o = obj(v, "envelope");
    let data = o.get("data");
    let envelope = EventEnvelope {
        id: o.string("id"),
        type_: o.string("type"),
        source: o.string("source"),
        aggregate_id: o.string("aggregate_id"),
        version: o.s64("version"),
        occurred_at: o.string("occurred_at"),
        position: o.s64("position"),
        request_id: o.opt_string("request_id"),
        data: data.to_string(),
    };
    o.done();
    assert!(envelope.id.starts_with("evt_"), "{}", envelope.id);
    assert!(envelope.position > 0, "position {}", envelope.position);
    rfc3339(&envelope.occurred_at, "envelope.occurred_at");
    let (prefix, source) = match channel {
        "orders" => ("order.", "orders"),
        "inventory" => ("inventory.", "inventory"),
        "products" => ("product.", "catalog"),
        "payments" => ("payment.", "payment-core"),
        other => panic!("{other} is not a channel"),
    };
    assert_eq!(envelope.source, source, "{v}");
    let kind = envelope
        .type_
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{} on channel {channel}", envelope.type_));
    match channel {
        "orders" => {
            let data = decode_order_data(data);
            assert_eq!(data.order_id, envelope.aggregate_id);
            assert_eq!(order_event_name(&data.event), kind, "{v}");
        }
        "inventory" => decode_inventory(kind, data, &envelope.aggregate_id),
        "payments" => {
            let data = decode_payment_data(data);
            assert_eq!(data.payment_id, envelope.aggregate_id, "{v}");
            assert_eq!(data.type_, envelope.type_, "{v}");
        }
        _ => decode_products(kind, data, &envelope.aggregate_id),
    }
    envelope
}

fn decode_order_data(v: &Value) -> wit::orders::OrderEventData {
    use wit::orders::*;
    let mut o = obj(v, "data");
    let order_id = o.string("order_id");
    let user_id = o.string("user_id");
    let mut e = obj(o.get("event"), "data.event");
    let tag = e.string("type");
    let event = match tag.as_str() {
        "created" => OrderEvent::Created(OrderCreated {
            user_id: e.string("user_id"),
            items: e.list("items", |v, at| {
                let mut i = obj(v, at);
                let item = OrderItem {
                    product_id: i.string("product_id"),
                    quantity: i.s64("quantity"),
                    unit_price: i.money("unit_price"),
                    line_total: i.money("line_total"),
                };
                i.done();
                item
            }),
            total: e.money("total"),
            shipping_address: {
                // Extra keys are allowed here (the WIT says so): no `done()`.
                let mut a = obj(e.get("shipping_address"), "data.event.shipping_address");
                ShippingAddress {
                    name: a.string("name"),
                    line1: a.string("line1"),
                    city: a.string("city"),
                    postal_code: a.string("postal_code"),
                    country: a.string("country"),
                }
            },
            payment_method: e.string("payment_method"),
        }),
        "stock_reserved" => OrderEvent::StockReserved(StockReserved {
            reservation_id: e.string("reservation_id"),
        }),
        "payment_authorized" => OrderEvent::PaymentAuthorized(PaymentAuthorized {
            payment_id: e.string("payment_id"),
        }),
        "confirmed" => OrderEvent::Confirmed,
        "paid" | "refunded" => {
            let settled = PaymentSettled {
                payment_id: e.string("payment_id"),
                amount: e.money("amount"),
            };
            if tag == "paid" {
                OrderEvent::Paid(settled)
            } else {
                OrderEvent::Refunded(settled)
            }
        }
        "shipped" => OrderEvent::Shipped,
        "delivered" => OrderEvent::Delivered,
        "cancelled" => OrderEvent::Cancelled(Cancellation {
            reason: e.string("reason"),
        }),
        "failed" => OrderEvent::Failed(Failure {
            reason: e.string("reason"),
            code: e.string("code"),
        }),
        other => panic!("order event type {other} is not in the schema"),
    };
    e.done();
    o.done();
    OrderEventData {
        order_id,
        user_id,
        event,
    }
}

/// The snake_case case name, which the envelope type repeats after `order.`.
fn order_event_name(event: &wit::orders::OrderEvent) -> &'static str {
    use wit::orders::OrderEvent::*;
    match event {
        Created(_) => "created",
        StockReserved(_) => "stock_reserved",
        PaymentAuthorized(_) => "payment_authorized",
        Confirmed => "confirmed",
        Paid(_) => "paid",
        Shipped => "shipped",
        Delivered => "delivered",
        Cancelled(_) => "cancelled",
        Failed(_) => "failed",
        Refunded(_) => "refunded",
    }
}

fn reservation_lines(o: &mut Obj<'_>) -> Vec<wit::inventory::ReservationLine> {
    o.list("lines", |v, at| {
        let mut l = obj(v, at);
        let line = wit::inventory::ReservationLine {
            product_id: l.string("product_id"),
            warehouse_id: l.string("warehouse_id"),
            quantity: l.s64("quantity"),
        };
        l.done();
        assert!(line.quantity > 0, "{at}");
        line
    })
}

fn decode_inventory(kind: &str, v: &Value, aggregate: &str) {
    use wit::inventory::*;
    let mut o = obj(v, "data");
    match kind {
        "stock_set" => {
            let set = StockSet {
                product_id: o.string("product_id"),
                warehouse_id: o.string("warehouse_id"),
                on_hand: o.s64("on_hand"),
                available: o.s64("available"),
            };
            assert_eq!(set.product_id, aggregate);
        }
        "reserved" => {
            let reserved = Reserved {
                reservation_id: o.string("reservation_id"),
                lines: reservation_lines(&mut o),
                expires_at: o.string("expires_at"),
            };
            assert_eq!(reserved.reservation_id, aggregate);
            rfc3339(&reserved.expires_at, "data.expires_at");
        }
        "committed" | "released" | "expired" | "returned" => {
            let ended = ReservationEnded {
                reservation_id: o.string("reservation_id"),
                lines: reservation_lines(&mut o),
            };
            assert_eq!(ended.reservation_id, aggregate);
        }
        "stock_low" | "restocked" => {
            let alert = StockAlert {
                product_id: o.string("product_id"),
                available: o.s64("available"),
                threshold: o.s64("threshold"),
                alert: match o.string("alert").as_str() {
                    "low" => StockAlertKind::Low,
                    "restocked" => StockAlertKind::Restocked,
                    other => panic!("alert {other} is not in the schema"),
                },
            };
            let expected = if kind == "stock_low" {
                StockAlertKind::Low
            } else {
                StockAlertKind::Restocked
            };
            assert_eq!(alert.alert, expected);
            assert_eq!(alert.product_id, aggregate);
        }
        other => panic!("inventory event type {other} is not in the schema"),
    }
    o.done();
}

fn decode_discount(v: &Value, at: &str) -> Option<wit::products::Discount> {
    use wit::products::*;
    if v.is_null() {
        return None;
    }
    let mut o = obj(v, at);
    let reduction = match (
        o.map.contains_key("percent_off"),
        o.map.contains_key("amount_off"),
    ) {
        (true, false) => {
            let p = o.s64("percent_off");
            Reduction::PercentOff(u8::try_from(p).unwrap_or_else(|_| panic!("{at}: {p}")))
        }
        (false, true) => Reduction::AmountOff(o.money("amount_off")),
        _ => panic!("{at}: exactly one of percent_off and amount_off: {v}"),
    };
    let discount = Discount {
        reduction,
        starts_at: o.opt_string("starts_at"),
        ends_at: o.opt_string("ends_at"),
        active: o.boolean("active"),
    };
    o.done();
    Some(discount)
}

fn decode_product(v: &Value) -> wit::products::Product {
    use wit::products::*;
    let mut o = obj(v, "data");
    let product = Product {
        id: o.string("id"),
        sku: o.string("sku"),
        name: o.string("name"),
        description: o.string("description"),
        category_id: o.opt_string("category_id"),
        price: o.money("price"),
        list_price: o.money("list_price"),
        discount: decode_discount(o.get("discount"), "data.discount"),
        images: o.list("images", string),
        attributes: obj(o.get("attributes"), "data.attributes")
            .map
            .iter()
            .map(|(name, value)| Attribute {
                name: name.clone(),
                value: match value {
                    Value::String(s) => AttributeValue::Text(s.clone()),
                    Value::Bool(b) => AttributeValue::Boolean(*b),
                    Value::Number(n) => AttributeValue::Number(n.as_f64().unwrap()),
                    other => panic!("data.attributes.{name}: {other} is not in the schema"),
                },
            })
            .collect(),
        active: o.boolean("active"),
        vendor_id: o.string("vendor_id"),
        created_at: o.string("created_at"),
        updated_at: o.string("updated_at"),
    };
    o.done();
    rfc3339(&product.created_at, "data.created_at");
    rfc3339(&product.updated_at, "data.updated_at");
    product
}

fn decode_products(kind: &str, v: &Value, aggregate: &str) {
    match kind {
        "created" | "updated" => assert_eq!(decode_product(v).id, aggregate),
        "price_changed" => {
            let mut o = obj(v, "data");
            let changed = wit::products::PriceChanged {
                product_id: o.string("product_id"),
                list_price: o.money("list_price"),
                previous_list_price: o.money("previous_list_price"),
                price: o.money("price"),
                previous_price: o.money("previous_price"),
                discount: decode_discount(o.get("discount"), "data.discount"),
            };
            o.done();
            assert_eq!(changed.product_id, aggregate);
        }
        other => panic!("product event type {other} is not in the schema"),
    }
}

/// The `data` of a `payments` channel envelope.
fn decode_payment_data(v: &Value) -> wit::payments::PaymentEventData {
    use wit::payments::*;
    let mut o = obj(v, "payment event data");
    let event = PaymentEventData {
        type_: o.string("type"),
        payment_id: o.string("payment_id"),
        order_id: o.string("order_id"),
        user_id: o.string("user_id"),
        provider: o.string("provider"),
        status: match o.string("status").as_str() {
            "requires_authorization" => PaymentStatus::RequiresAuthorization,
            "authorized" => PaymentStatus::Authorized,
            "captured" => PaymentStatus::Captured,
            "partially_refunded" => PaymentStatus::PartiallyRefunded,
            "refunded" => PaymentStatus::Refunded,
            "voided" => PaymentStatus::Voided,
            "failed" => PaymentStatus::Failed,
            other => panic!("payment status {other} is not in the schema"),
        },
        amount: o.money("amount"),
        captured: o.money("captured"),
        refunded: o.money("refunded"),
        failure_code: o.opt_string("failure_code"),
        occurred_at: o.string("occurred_at"),
    };
    o.done();
    assert!(event.type_.starts_with("payment."), "{}", event.type_);
    rfc3339(&event.occurred_at, "occurred_at");
    event
}

/// Every ```json block of docs/events.md that follows a line naming its channel
/// (`channel: <name>`), so the documented examples cannot drift from the schema.
fn documented_examples() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(workspace_root().join("docs/events.md")).unwrap();
    let mut examples = Vec::new();
    let mut channel: Option<String> = None;
    let mut block: Option<String> = None;
    for line in text.lines() {
        if let Some(body) = &mut block {
            if line.trim() == "```" {
                let value: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("docs/events.md example is not JSON: {e}\n{body}"));
                let channel = channel.take().expect("an example without `channel:`");
                examples.push((channel, value));
                block = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if line.trim() == "```json" {
            block = Some(String::new());
        } else if let Some(rest) = line.split("channel: `").nth(1) {
            channel = rest.split('`').next().map(str::to_owned);
        }
    }
    examples
}

#[test]
fn the_platform_envelope_and_the_documented_examples_follow_the_wit() {
    // The platform's own type, serialized as the outbox and the catch-up endpoint do.
    let envelope = bazaar_platform::outbox::EventEnvelope {
        id: "evt_0123456789abcdef0123456789abcdef".into(),
        event_type: "order.paid".into(),
        source: "orders".into(),
        aggregate_id: "ord_1".into(),
        version: 5,
        occurred_at: bazaar_platform::time::millis_to_rfc3339(1_796_000_000_123),
        position: 42,
        request_id: None,
        data: json!({"order_id": "ord_1", "user_id": "usr_1",
                     "event": {"type": "paid", "payment_id": "pay_1",
                               "amount": {"amount": 2500, "currency": "EUR"}}}),
    };
    let wire = serde_json::to_value(&envelope).unwrap();
    let decoded = decode_envelope(&wire, "orders");
    assert_eq!(
        (decoded.position, decoded.request_id, decoded.version),
        (42, None, 5)
    );
    // `data` travels as a JSON value, and the WIT `data` string is that value's JSON text.
    assert!(wire["data"].is_object());
    let data: Value = serde_json::from_str(&decoded.data).unwrap();
    assert_eq!(data, envelope.data);
    // A key the schema does not have is refused, so this check can fail.
    let mut extra = wire.clone();
    extra["tenant"] = json!("x");
    assert!(std::panic::catch_unwind(|| decode_envelope(&extra, "orders")).is_err());
    let mut renamed = wire;
    renamed["data"]["event"]["amount"] = json!(2500);
    assert!(std::panic::catch_unwind(|| decode_envelope(&renamed, "orders")).is_err());

    let examples = documented_examples();
    let channels: BTreeSet<&str> = examples.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        BTreeSet::from(["inventory", "orders", "payments", "products"]),
        "docs/events.md shows an example for every channel"
    );
    for (channel, example) in &examples {
        decode_envelope(example, channel);
    }
}

#[tokio::test]
async fn events_the_shop_publishes_follow_the_wit() {
    // Subscribe first (pub/sub keeps nothing for late subscribers). Other tests share this
    // Redis, so only events caused by this test's requests (request ids with our prefix) count.
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = redis
        .get_async_pubsub()
        .await
        .expect("Redis must be reachable at 127.0.0.1:6379");
    for channel in ["orders", "inventory", "products"] {
        pubsub.subscribe(channel).await.unwrap();
    }
    // No payment host answers: the checkout cannot be paid, so the saga reserves stock and
    // compensates (or pauses), which is what exercises orders' and inventory's events here.
    // The catch-up route is private (service chaining only); this test exposes orders' on a
    // public route of its own to read it from outside, exactly as a chained consumer would.
    let app = shop("[[trigger.http]]\nroute = \"/internal/events\"\ncomponent = \"orders\"\n")
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg("payment_host_url=http://127.0.0.1:9")
        .start();
    let prefix = format!("evtest-{}", bazaar_platform::ids::new_id());
    let admin = token("usr_evt_admin", Role::Admin);
    let customer = token("usr_evt_customer", Role::Customer);
    let mut n = 0;
    let mut send = async |method: &str, path: &str, who: &str, body: Value| {
        n += 1;
        let response = client()
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(who)
            .header("x-request-id", format!("{prefix}-{n}"))
            .header("idempotency-key", format!("{prefix}-{n}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, product) = send(
        "POST",
        "/api/v1/products",
        &admin,
        json!({"sku": "EVT-WIT-1", "name": "Schema mug", "description": "d",
               "price": {"amount": 1200, "currency": "EUR"},
               "attributes": {"colour": "blue", "capacity_ml": 350, "dishwasher_safe": true}}),
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let id = product["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            "PATCH",
            format!("/api/v1/products/{id}"),
            json!({"price": {"amount": 1000, "currency": "EUR"}}),
        ),
        (
            "PUT",
            format!("/api/v1/products/{id}/discount"),
            json!({"percent_off": 10}),
        ),
        (
            "PUT",
            format!("/api/v1/inventory/{id}/warehouses/main"),
            json!({"on_hand": 5}),
        ),
        (
            "PUT",
            format!("/api/v1/inventory/{id}/threshold"),
            json!({"threshold": 5}),
        ),
    ] {
        let (status, body) = send(method, &path, &admin, body).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    let (status, order) = send(
        "POST",
        "/api/v1/orders",
        &customer,
        json!({"items": [{"product_id": id, "quantity": 1}],
               "shipping_address": {"name": "Ada Lovelace", "line1": "1 Analytical St",
                                    "city": "London", "postal_code": "N1 9GU", "country": "GB"},
               "payment_method": "pm_nobody_answers"}),
    )
    .await;
    assert!(
        [502, 503].contains(&status),
        "the checkout cannot be paid: {status} {order}"
    );

    let wanted = [
        "product.created",
        "product.updated",
        "product.price_changed",
        "inventory.stock_set",
        "inventory.reserved",
        "inventory.stock_low",
        "order.created",
        "order.stock_reserved",
    ];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut checked = 0;
    {
        use futures::StreamExt;
        let mut messages = pubsub.on_message();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(message) = messages.next().await {
                let event: Value =
                    serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
                let ours = event["request_id"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&prefix));
                if !ours {
                    continue;
                }
                let envelope = decode_envelope(&event, message.get_channel_name());
                checked += 1;
                seen.insert(envelope.type_);
                if wanted.iter().all(|w| seen.contains(*w)) {
                    return;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "not every expected event arrived; seen {seen:?}"
        );
    }
    assert!(checked >= wanted.len());

    // Catch-up: the same envelopes, oldest first, resumable by position. Pages of 2 must tile
    // the whole outbox with no gap and no overlap.
    let page = async |after: i64, limit: &str| {
        let response = client()
            .get(app.url(&format!("/internal/events?after={after}&limit={limit}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, all) = page(0, "100").await;
    assert_eq!(status, 200, "{all}");
    let all: Vec<EventEnvelope> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| decode_envelope(e, "orders"))
        .collect();
    let types: Vec<&str> = all.iter().map(|e| e.type_.as_str()).collect();
    assert!(
        types.starts_with(&["order.created", "order.stock_reserved"]),
        "{types:?}"
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut resumed = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = page(after, "2").await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            resumed.push(decode_envelope(item, "orders").id);
        }
        match items.last() {
            Some(last) if items.len() == 2 => after = last["position"].as_i64().unwrap(),
            _ => break,
        }
    }
    assert_eq!(
        resumed,
        all.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    let last = all.last().unwrap().position;
    assert_eq!(page(last, "100").await.1["items"], json!([]));
    for (after, limit) in [(0, "0"), (0, "101"), (0, "x")] {
        let (status, body) = page(after, limit).await;
        assert_eq!(status, 422, "limit={limit}: {body}");
    }
}

/// A fresh PostgreSQL database for one test (dropped by [`PgDatabase::drop`]).
struct PgDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(label: &str) -> Self {
        let admin_url = std::env::var("BAZAAR_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must be reachable");
        tokio::spawn(connection);
        let name = format!(
            "bazaar_evt_{label}_{}_{}",
            std::process::id(),
            bazaar_platform::ids::new_id()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0.to_owned();
        Self {
            admin,
            url: format!("{base}/{name}"),
            name,
        }
    }

    async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    async fn drop(self) {
        let _ = self
            .admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// Writes an event into orders' outbox the way `outbox::append` does, on `db` (which may be
/// inside a transaction the test keeps open).
async fn insert_outbox_row(db: &tokio_postgres::Client, id: &str, channel: &str) {
    let payload = json!({
        "id": id, "type": "order.confirmed", "source": "orders", "aggregate_id": "ord_outbox_test",
        "version": 4, "occurred_at": "2026-12-01T00:00:00.000Z", "request_id": null,
        "data": {"order_id": "ord_outbox_test", "user_id": "usr_outbox_test",
                 "event": {"type": "confirmed"}},
    });
    db.execute(
        "INSERT INTO outbox (id, channel, event_type, aggregate_id, version, payload, created_at) \
         VALUES ($1, $2, 'order.confirmed', 'ord_outbox_test', 4, $3, 0)",
        &[&id, &channel, &payload.to_string()],
    )
    .await
    .unwrap();
}

/// The orders service alone on a fresh PostgreSQL database, with its catch-up route and its
/// outbox job exposed on public routes (they are private: the test plays the chained consumer
/// and the scheduler).
fn orders_on(database: &PgDatabase) -> common::Runner {
    common::shop_only(
        &["orders"],
        "[[trigger.http]]\nroute = \"/internal/events\"\ncomponent = \"orders\"\n\
         [[trigger.http]]\nroute = \"/internal/jobs/outbox\"\ncomponent = \"orders\"\n",
    )
    .arg("--variable")
    .arg(&format!("orders_database={}", database.url))
    .start()
}

async fn catch_up(app: &common::Runner, after: i64) -> Vec<(String, i64)> {
    let (status, body) =
        common::get_json(&app.url(&format!("/internal/events?after={after}&limit=100"))).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let envelope = decode_envelope(e, "orders");
            (envelope.id, envelope.position)
        })
        .collect()
}

#[tokio::test]
async fn catch_up_never_passes_an_event_that_commits_late_on_postgres() {
    let database = PgDatabase::create("late").await;
    let app = orders_on(&database);
    // A slow writer: its outbox row has taken a position but is not committed yet.
    let slow = database.connect().await;
    slow.batch_execute("BEGIN").await.unwrap();
    insert_outbox_row(&slow, "evt_committed_late", "orders-outbox-test").await;
    // A later writer commits first, with a higher insert position.
    let fast = database.connect().await;
    insert_outbox_row(&fast, "evt_committed_first", "orders-outbox-test").await;

    let first = catch_up(&app, 0).await;
    assert_eq!(
        first.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["evt_committed_first"]
    );
    let cursor = first.last().unwrap().1;
    slow.batch_execute("COMMIT").await.unwrap();
    // A consumer resuming from its cursor must still get the event that committed late.
    let next = catch_up(&app, cursor).await;
    assert_eq!(
        next.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["evt_committed_late"],
        "the late commit was skipped (cursor {cursor})"
    );
    assert!(next[0].1 > cursor);
    assert_eq!(catch_up(&app, next[0].1).await, vec![]);
    drop(app);
    database.drop().await;
}

#[tokio::test]
async fn a_row_another_publisher_holds_is_not_sent_twice_on_postgres() {
    use futures::StreamExt;
    let channel = format!("orders-outbox-test-{}", bazaar_platform::ids::new_id());
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = redis
        .get_async_pubsub()
        .await
        .expect("Redis must be reachable at 127.0.0.1:6379");
    pubsub.subscribe(&channel).await.unwrap();
    let database = PgDatabase::create("skip").await;
    let app = orders_on(&database);
    let writer = database.connect().await;
    for id in ["evt_pub_1", "evt_pub_2", "evt_pub_3"] {
        insert_outbox_row(&writer, id, &channel).await;
    }
    // Catch-up numbers the committed rows (a publisher would do the same first).
    assert_eq!(catch_up(&app, 0).await.len(), 3);
    // Another publisher is in the middle of sending evt_pub_2: it holds the row's lock.
    let other = database.connect().await;
    other.batch_execute("BEGIN").await.unwrap();
    other
        .execute(
            "SELECT position FROM outbox WHERE id = 'evt_pub_2' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    let sweep_url = app.url("/internal/jobs/outbox");
    let sweep = move || {
        let url = sweep_url.clone();
        tokio::spawn(async move {
            let response = client().post(url).send().await.unwrap();
            response.status().as_u16()
        })
    };
    let mut messages = pubsub.on_message();
    let mut next_id = async || {
        let message = messages.next().await.unwrap();
        let text: String = message.get_payload().unwrap();
        if text == "end-of-test" {
            return None;
        }
        let event: Value = serde_json::from_str(&text).unwrap();
        Some(event["id"].as_str().unwrap().to_owned())
    };
    // While the other publisher holds evt_pub_2, a sweep sends the rest and not that one (a
    // publisher that ignored the lock would send it, then wait for the lock to mark it sent).
    let first = sweep();
    let mut received = Vec::new();
    while !(received.contains(&"evt_pub_1".to_owned())
        && received.contains(&"evt_pub_3".to_owned()))
    {
        let id = next_id().await.unwrap();
        assert_ne!(id, "evt_pub_2", "a row another publisher holds was sent");
        received.push(id);
    }
    assert_eq!(first.await.unwrap(), 200);
    // The other publisher finishes: it sent the row and marks it sent.
    other
        .batch_execute("UPDATE outbox SET published_at = 1 WHERE id = 'evt_pub_2'; COMMIT")
        .await
        .unwrap();
    assert_eq!(sweep().await.unwrap(), 200);
    // Everything the sweeps published is on the channel before this marker (one Redis orders
    // the publishes it has accepted): nothing was sent twice.
    let mut marker = redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("end-of-test")
        .query_async(&mut marker)
        .await
        .unwrap();
    while let Some(id) = next_id().await {
        received.push(id);
    }
    assert_eq!(received, ["evt_pub_1", "evt_pub_3"]);
    drop(app);
    database.drop().await;
}
