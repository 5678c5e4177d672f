//! Carts end to end: the real `spin.toml` (gateway → carts → catalog over `*.spin.internal`)
//! under `bazaar up`, driven over HTTP with real Ed25519 access tokens. Guest carts, validation,
//! prices read from the catalog at read time, unavailable products, merge on login, expiry and
//! isolation between users.

mod common;

use bazaar_platform::auth::Role;
use common::{Runner, client, shop, signing_keys_variable, token};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

struct Shop {
    app: Runner,
    admin: String,
}

fn start(extra_variables: &[&str]) -> Shop {
    let mut builder = shop("")
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg("rate_limit_per_minute=100000");
    for variable in extra_variables {
        builder = builder.arg("--variable").arg(variable);
    }
    Shop {
        app: builder.start(),
        admin: token("usr_admin", Role::Admin),
    }
}

/// One answer: status, JSON body (or the raw text), headers.
struct Answer {
    status: u16,
    body: Value,
    headers: HeaderMap,
}

impl Answer {
    /// The cart id issued on this answer: `x-cart-id`, always the same as the body's `id`; `None`
    /// (no header, `id: null`) when the answer is about no stored cart.
    fn issued_id(&self) -> Option<String> {
        let header = self
            .headers
            .get("x-cart-id")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            self.body["id"].as_str(),
            header.as_deref(),
            "body id and x-cart-id differ: {:?}",
            self.headers
        );
        header
    }

    fn cart_id(&self) -> String {
        self.headers
            .get("x-cart-id")
            .unwrap_or_else(|| panic!("no x-cart-id on {} {}", self.status, self.body))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors in {}", self.body))
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }

    fn is_problem(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"))
            && self.body["status"] == self.status
    }

    /// `(product_id, quantity)` of every line, in cart order.
    fn lines(&self) -> Vec<(String, i64)> {
        self.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {}", self.body))
            .iter()
            .map(|i| {
                (
                    i["product_id"].as_str().unwrap().to_owned(),
                    i["quantity"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn line(&self, product: &str) -> Value {
        self.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["product_id"] == product)
            .unwrap_or_else(|| panic!("{product} not in {}", self.body))
            .clone()
    }
}

/// A request through the gateway.
struct Call<'a> {
    method: &'a str,
    path: String,
    token: Option<&'a str>,
    cart: Option<&'a str>,
    body: Option<Body>,
}

enum Body {
    Json(Value),
    Raw(&'static str, &'static str),
}

fn call<'a>(method: &'a str, path: impl Into<String>) -> Call<'a> {
    Call {
        method,
        path: path.into(),
        token: None,
        cart: None,
        body: None,
    }
}

impl<'a> Call<'a> {
    fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }
    fn cart(mut self, cart: &'a str) -> Self {
        self.cart = Some(cart);
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }
    fn raw(mut self, content_type: &'static str, body: &'static str) -> Self {
        self.body = Some(Body::Raw(content_type, body));
        self
    }

    async fn send(self, shop: &Shop) -> Answer {
        let mut request = client().request(self.method.parse().unwrap(), shop.app.url(&self.path));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(cart) = self.cart {
            request = request.header("x-cart-id", cart);
        }
        match self.body {
            Some(Body::Json(body)) => request = request.json(&body),
            Some(Body::Raw(content_type, body)) => {
                request = request.header("content-type", content_type).body(body)
            }
            None => {}
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        }
    }
}

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn add(product: &str, quantity: i64) -> Value {
    json!({"product_id": product, "quantity": quantity})
}

impl Shop {
    async fn product(&self, sku: &str, amount: i64) -> String {
        let created = call("POST", "/api/v1/products")
            .token(&self.admin)
            .json(
                json!({"sku": sku, "name": format!("Product {sku}"), "description": "d",
                         "price": eur(amount)}),
            )
            .send(self)
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        created.body["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn guest_and_user_carts_end_to_end() {
    let shop = start(&[]);
    let tee = shop.product("CART-TEE", 1250).await;
    let mug = shop.product("CART-MUG", 300).await;
    let hat = shop.product("CART-HAT", 999).await;

    // A guest's first read: an empty cart, nothing stored, so no id is issued yet (an id that
    // named nothing stored would not find this guest's cart later).
    let empty = call("GET", "/api/v1/cart").send(&shop).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.issued_id(), None, "{}", empty.body);
    assert_eq!(
        (
            &empty.body["items"],
            &empty.body["total"],
            &empty.body["item_count"]
        ),
        (&json!([]), &Value::Null, &json!(0))
    );

    // Neither does removing from, or setting a quantity in, a cart that does not exist.
    let nothing = call("DELETE", format!("/api/v1/cart/items/{tee}"))
        .send(&shop)
        .await;
    assert_eq!(
        (nothing.status, nothing.issued_id()),
        (200, None),
        "{}",
        nothing.body
    );
    let nothing = call("PATCH", format!("/api/v1/cart/items/{tee}"))
        .json(json!({"quantity": 1}))
        .send(&shop)
        .await;
    assert_eq!(nothing.status, 404, "{}", nothing.body);

    // An id the shop never issued is not adopted (no cart fixation): reads answer no cart, and
    // an add starts a cart under a new id.
    let made_up = format!("gc_{}", "ab".repeat(16));
    let read = call("GET", "/api/v1/cart").cart(&made_up).send(&shop).await;
    assert_eq!(
        (read.status, read.issued_id()),
        (200, None),
        "{}",
        read.body
    );
    let adopted = call("POST", "/api/v1/cart/items")
        .cart(&made_up)
        .json(add(&mug, 1))
        .send(&shop)
        .await;
    assert_eq!(adopted.status, 200, "{}", adopted.body);
    let issued = adopted.cart_id();
    assert!(issued.starts_with("gc_") && issued != made_up, "{issued}");
    let read = call("GET", "/api/v1/cart").cart(&made_up).send(&shop).await;
    assert_eq!(read.issued_id(), None, "{}", read.body);
    assert_eq!(read.body["items"], json!([]));

    // Add: a new guest cart; its id comes back on every later answer and identifies it.
    let first = call("POST", "/api/v1/cart/items")
        .json(add(&tee, 2))
        .send(&shop)
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let guest = first.cart_id();
    assert!(guest.starts_with("gc_"));
    assert_eq!(first.issued_id().as_deref(), Some(guest.as_str()));
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(read.issued_id().as_deref(), Some(guest.as_str()));
    assert_eq!(read.lines(), [(tee.clone(), 2)]);
    assert_eq!(first.body["total"], eur(2500));
    let line = first.line(&tee);
    assert_eq!(
        (
            &line["name"],
            &line["unit_price"],
            &line["line_total"],
            &line["available"]
        ),
        (
            &json!("Product CART-TEE"),
            &eur(1250),
            &eur(2500),
            &json!(true)
        )
    );
    // Quantities add up; another product is a new line.
    let more = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&tee, 1))
        .send(&shop)
        .await;
    assert_eq!((more.status, more.cart_id()), (200, guest.clone()));
    let two = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&mug, 1))
        .send(&shop)
        .await;
    assert_eq!(two.lines(), [(tee.clone(), 3), (mug.clone(), 1)]);
    assert_eq!(two.body["total"], eur(3 * 1250 + 300));
    assert_eq!(two.body["item_count"], 4);

    // Patch sets, 0 removes, a product not in the cart is 404; delete is idempotent.
    let patched = call("PATCH", format!("/api/v1/cart/items/{tee}"))
        .cart(&guest)
        .json(json!({"quantity": 5}))
        .send(&shop)
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["total"], eur(5 * 1250 + 300));
    let removed = call("PATCH", format!("/api/v1/cart/items/{mug}"))
        .cart(&guest)
        .json(json!({"quantity": 0}))
        .send(&shop)
        .await;
    assert_eq!(removed.lines(), [(tee.clone(), 5)]);
    let missing = call("PATCH", format!("/api/v1/cart/items/{hat}"))
        .cart(&guest)
        .json(json!({"quantity": 1}))
        .send(&shop)
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.is_problem(), "{}", missing.body);
    for _ in 0..2 {
        let deleted = call("DELETE", format!("/api/v1/cart/items/{tee}"))
            .cart(&guest)
            .send(&shop)
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        assert_eq!(deleted.body["items"], json!([]));
        assert_eq!(deleted.cart_id(), guest);
    }

    // Validation: every refusal is problem+json with the field at fault, and changes nothing.
    call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&hat, 1))
        .send(&shop)
        .await;
    for (body, status, fields) in [
        (add("prd_no_such_product", 1), 422, vec!["product_id"]),
        (add(&tee, 0), 422, vec!["quantity"]),
        (add(&tee, 1000), 422, vec!["quantity"]),
        (add(&tee, -3), 422, vec!["quantity"]),
        (
            json!({"product_id": tee, "quantity": 1.5}),
            422,
            vec!["quantity"],
        ),
        (
            json!({"product_id": "../etc", "quantity": 1}),
            422,
            vec!["product_id"],
        ),
        (json!({"product_id": tee}), 422, vec!["quantity"]),
        (
            json!({"product_id": tee, "quantity": 1, "price": 1}),
            422,
            vec!["price"],
        ),
        (add(&hat, 999), 422, vec!["quantity"]),
    ] {
        let refused = call("POST", "/api/v1/cart/items")
            .cart(&guest)
            .json(body.clone())
            .send(&shop)
            .await;
        assert_eq!(refused.status, status, "{body} → {}", refused.body);
        assert!(refused.is_problem(), "{}", refused.body);
        assert_eq!(refused.fields(), fields, "{body} → {}", refused.body);
    }
    let malformed = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .raw("application/json", "{\"product_id\": ")
        .send(&shop)
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(malformed.is_problem(), "{}", malformed.body);
    let not_json = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .raw("text/plain", "tee please")
        .send(&shop)
        .await;
    assert_eq!(not_json.status, 415, "{}", not_json.body);
    for quantity in [json!(1000), json!(-1), json!("2")] {
        let refused = call("PATCH", format!("/api/v1/cart/items/{hat}"))
            .cart(&guest)
            .json(json!({"quantity": quantity}))
            .send(&shop)
            .await;
        assert_eq!(
            (refused.status, refused.fields()),
            (422, vec!["quantity".to_owned()]),
            "{}",
            refused.body
        );
    }
    let unchanged = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(unchanged.lines(), [(hat.clone(), 1)]);
    let wrong_method = call("PUT", "/api/v1/cart").send(&shop).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);

    // Prices come from the catalog at read time: a price change and a discount show at once.
    call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&tee, 2))
        .send(&shop)
        .await;
    let repriced = call("PATCH", format!("/api/v1/products/{tee}"))
        .token(&shop.admin)
        .json(json!({"price": eur(2000)}))
        .send(&shop)
        .await;
    assert_eq!(repriced.status, 200, "{}", repriced.body);
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(read.line(&tee)["unit_price"], eur(2000));
    assert_eq!(read.body["total"], eur(999 + 2 * 2000));
    let discounted = call("PUT", format!("/api/v1/products/{tee}/discount"))
        .token(&shop.admin)
        .json(json!({"percent_off": 25}))
        .send(&shop)
        .await;
    assert_eq!(discounted.status, 200, "{}", discounted.body);
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(read.line(&tee)["line_total"], eur(2 * 1500));
    assert_eq!(read.body["total"], eur(999 + 2 * 1500));

    // An inactive product stays in the cart, flagged and out of the total; it comes back when
    // the product does.
    let deactivated = call("DELETE", format!("/api/v1/products/{hat}"))
        .token(&shop.admin)
        .send(&shop)
        .await;
    assert_eq!(deactivated.status, 204, "{}", deactivated.body);
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    let gone = read.line(&hat);
    assert_eq!(
        (&gone["available"], &gone["unit_price"], &gone["quantity"]),
        (&json!(false), &Value::Null, &json!(1)),
        "{}",
        read.body
    );
    assert_eq!(read.body["total"], eur(2 * 1500));
    // Adding it again is refused: the catalog does not sell it now.
    let refused = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&hat, 1))
        .send(&shop)
        .await;
    assert_eq!(
        (refused.status, refused.fields()),
        (422, vec!["product_id".to_owned()])
    );
    call("PATCH", format!("/api/v1/products/{hat}"))
        .token(&shop.admin)
        .json(json!({"active": true}))
        .send(&shop)
        .await;
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(read.line(&hat)["available"], true);
    assert_eq!(read.body["total"], eur(999 + 2 * 1500));

    // Merge on login: the signed-in user's cart absorbs the guest cart (quantities add up) and
    // the guest id stops working.
    let ada = token("usr_ada", Role::Customer);
    let own = call("POST", "/api/v1/cart/items")
        .token(&ada)
        .json(add(&tee, 1))
        .send(&shop)
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let ada_cart = own.cart_id();
    assert!(!ada_cart.starts_with("gc_"), "{ada_cart}");
    let merged = call("GET", "/api/v1/cart")
        .token(&ada)
        .cart(&guest)
        .send(&shop)
        .await;
    assert_eq!(merged.status, 200, "{}", merged.body);
    assert_eq!(merged.cart_id(), ada_cart);
    assert_eq!(merged.lines(), [(tee.clone(), 3), (hat.clone(), 1)]);
    assert_eq!(merged.body["total"], eur(3 * 1500 + 999));
    let after = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.issued_id(), None, "the guest id must stop working");
    assert_eq!(after.body["items"], json!([]));
    // Sending the spent guest id again merges nothing twice.
    let again = call("GET", "/api/v1/cart")
        .token(&ada)
        .cart(&guest)
        .send(&shop)
        .await;
    assert_eq!(again.lines(), [(tee.clone(), 3), (hat.clone(), 1)]);
    // The user's cart follows the token, not a header.
    let plain = call("GET", "/api/v1/cart").token(&ada).send(&shop).await;
    assert_eq!(plain.lines(), merged.lines());

    // One user cannot read another's cart: not by token, not by sending its id.
    let eve = token("usr_eve", Role::Customer);
    for attempt in [
        call("GET", "/api/v1/cart").token(&eve),
        call("GET", "/api/v1/cart").token(&eve).cart(&ada_cart),
        call("GET", "/api/v1/cart").cart(&ada_cart),
    ] {
        let seen = attempt.send(&shop).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.body["items"], json!([]), "{}", seen.body);
        assert_ne!(seen.issued_id(), Some(ada_cart.clone()));
    }
    let eve_adds = call("POST", "/api/v1/cart/items")
        .token(&eve)
        .cart(&ada_cart)
        .json(add(&mug, 1))
        .send(&shop)
        .await;
    assert_eq!(eve_adds.lines(), [(mug.clone(), 1)]);
    let ada_again = call("GET", "/api/v1/cart").token(&ada).send(&shop).await;
    assert_eq!(ada_again.lines(), [(tee.clone(), 3), (hat.clone(), 1)]);

    // A bad token is refused at the gateway, not treated as a guest.
    let forged = call("GET", "/api/v1/cart")
        .token("not-a-token")
        .send(&shop)
        .await;
    assert_eq!(forged.status, 401, "{}", forged.body);
}

#[tokio::test]
async fn expired_guest_carts_are_gone_at_read_time() {
    let shop = start(&["guest_cart_ttl_secs=1"]);
    let tee = shop.product("TTL-TEE", 500).await;
    let first = call("POST", "/api/v1/cart/items")
        .json(add(&tee, 2))
        .send(&shop)
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let guest = first.cart_id();
    // Past the one-second lifetime (this waits for expiry; it asserts no duration).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let read = call("GET", "/api/v1/cart").cart(&guest).send(&shop).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["items"], json!([]), "{}", read.body);
    assert_eq!(read.issued_id(), None, "an expired id is not issued again");
    // Nor adopted: the next add starts a cart under a new id.
    let again = call("POST", "/api/v1/cart/items")
        .cart(&guest)
        .json(add(&tee, 1))
        .send(&shop)
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.cart_id(), guest);
    // An expired guest cart is not merged into a user's cart either.
    let ada = token("usr_ada_ttl", Role::Customer);
    let merged = call("GET", "/api/v1/cart")
        .token(&ada)
        .cart(&guest)
        .send(&shop)
        .await;
    assert_eq!(merged.body["items"], json!([]), "{}", merged.body);
    // User carts do not expire.
    call("POST", "/api/v1/cart/items")
        .token(&ada)
        .json(add(&tee, 1))
        .send(&shop)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let kept = call("GET", "/api/v1/cart").token(&ada).send(&shop).await;
    assert_eq!(kept.lines(), [(tee.clone(), 1)]);
}
