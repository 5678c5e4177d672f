//! `docs/openapi.yaml` against the running shop (`shop("")`):
//! * every documented path + method is served (the gateway routes it and the service knows it:
//!   no 405, and no "No route"/"No service is deployed"/"No such … route" 404);
//! * the responses of scripted flows validate against the documented schemas, and carry the
//!   headers the document marks required: identity and catalog (register, login, me, create
//!   category and product, list, get), then carts, inventory and orders (a guest cart merged on
//!   login, stock set by an admin, checkouts out of stock and paused, the order read, its events,
//!   refused transitions, a cancel) and the payment routes — all with their documented errors.
//!
//! No payment host runs: `payment_host_url` points at a port nobody listens on, so the payment
//! routes answer what the gateway and the Spin `payments` component answer on their own (401
//! without a token, 503 problem when the payment host is unreachable), and a checkout pauses at
//! the payment step (503 + `Retry-After`), which leaves a `pending` order with stock reserved to
//! read and cancel. `payments_shop.rs` checks the payment routes' answers with a payment host.
//!
//! The checker itself (`check`, `conforms`, `validate`) is `openapi_support`.

mod common;
mod openapi_support;

use std::time::Duration;

use bazaar_platform::Role;
use common::{Runner, client, free_port, shop, signing_keys_variable, token};
use openapi_support::{check, conforms, document, resolve, validate};
use serde_json::{Value, json};

/// The whole shop, trusting the harness's token signer, with the payment host URL on a port
/// nobody listens on (no payment host runs in these tests; see the module docs).
fn start() -> Runner {
    shop("")
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg(&format!(
            "payment_host_url=http://127.0.0.1:{}",
            free_port()
        ))
        .start()
}

#[test]
fn the_document_is_well_formed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/health/live",
        "/health/ready",
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/oidc/{provider}/start",
        "/auth/oidc/{provider}/callback",
        "/api/v1/users/me",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/role",
        "/api/v1/products",
        "/api/v1/products/{id}",
        "/api/v1/products/{id}/images",
        "/api/v1/products/{id}/discount",
        "/api/v1/categories",
        "/images/{key}",
        "/api/v1/cart",
        "/api/v1/cart/items",
        "/api/v1/cart/items/{product_id}",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/events",
        "/api/v1/orders/{id}/cancel",
        "/api/v1/orders/{id}/ship",
        "/api/v1/orders/{id}/deliver",
        "/api/v1/inventory/{product_id}",
        "/api/v1/inventory/{product_id}/warehouses/{warehouse_id}",
        "/api/v1/inventory/{product_id}/threshold",
        "/api/v1/payments/methods",
        "/api/v1/payments",
        "/api/v1/payments/{id}",
        "/api/v1/payments/{id}/events",
        "/api/v1/payments/{id}/capture",
        "/api/v1/payments/{id}/void",
        "/api/v1/payments/{id}/refund",
        "/webhooks/payments/{provider}",
    ] {
        assert!(paths.contains_key(required), "{required} is not documented");
    }
    // Every $ref resolves and every operation documents at least one response.
    fn walk(doc: &Value, node: &Value) {
        match node {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(doc, node);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            // Who may call it is stated per operation, not left to the document-wide default.
            assert!(
                operation["security"].is_array(),
                "{method} {path} states no security"
            );
            // Every error answer is a problem: the RFC 9457 media type, and a schema that
            // refuses what is not a problem (so it builds on Problem, not on `{}`).
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(content) = resolve(&doc, response).get("content") else {
                    continue;
                };
                if status.parse::<u16>().unwrap() < 400 {
                    continue;
                }
                let content = content.as_object().unwrap();
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                let mut errors = Vec::new();
                validate(
                    &doc,
                    &content["application/problem+json"]["schema"],
                    &json!({"type": 1}),
                    "$",
                    &mut errors,
                );
                assert!(
                    !errors.is_empty(),
                    "{method} {path} {status}: the schema accepts a body that is no problem"
                );
            }
        }
    }
}

#[test]
fn the_checker_catches_mismatches() {
    let doc = document();
    let product = json!({"$ref": "#/components/schemas/Product"});
    let mut errors = Vec::new();
    validate(
        &doc,
        &product,
        &json!({"id": 1, "price": {"amount": 1.5, "currency": "EUR"}}),
        "$",
        &mut errors,
    );
    let text = errors.join("\n");
    for expected in [
        "$.id: expected string",
        "$.price.amount: expected integer",
        "required member sku is missing",
    ] {
        assert!(
            text.contains(expected),
            "{expected} not reported in:\n{text}"
        );
    }
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/ValidationProblem"}),
        &json!({"type": "about:blank", "title": "x", "status": 422}),
        "$",
        &mut errors,
    );
    assert_eq!(errors, ["$: required member errors is missing"]);
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/User"}),
        &json!({"id": "u", "email": "e", "name": "n", "role": "root", "created_at": "t", "updated_at": "t"}),
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Bounds, and a nullable member (`oneOf` Money or null) that is neither.
    let mut errors = Vec::new();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/CartLine"}),
        &json!({"product_id": "p", "name": null, "quantity": 0, "unit_price": null,
                "line_total": {"amount": 1}, "available": false}),
        "$",
        &mut errors,
    );
    errors.sort();
    assert_eq!(
        errors,
        [
            "$.line_total: matches 0 of the oneOf options",
            "$.quantity: 0 is below the minimum 1",
        ]
    );
    // A declined payment is a PaymentFailure, a validation failure a ValidationProblem; one
    // with neither `errors` nor `payment_id` is no documented 422 of a payment route.
    let refused = &doc["components"]["responses"]["PaymentRefused"]["content"]["application/problem+json"]
        ["schema"];
    for (body, valid) in [
        (
            json!({"type": "about:blank", "title": "Payment Declined", "status": 422,
                "detail": "d", "payment_id": "pay_1", "decline_code": "generic_decline"}),
            true,
        ),
        (
            json!({"type": "about:blank", "title": "t", "status": 422, "detail": "d",
                "errors": [{"field": "amount", "message": "m"}]}),
            true,
        ),
        (
            json!({"type": "about:blank", "title": "t", "status": 422, "detail": "d"}),
            false,
        ),
    ] {
        let mut errors = Vec::new();
        validate(&doc, refused, &body, "$", &mut errors);
        assert_eq!(errors.is_empty(), valid, "{body}: {errors:?}");
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let doc = document();
    let app = start();
    let admin = token("usr_openapi_admin", Role::Admin);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{provider}", "nosuchprovider")
            .replace("{id}", "does-not-exist")
            .replace("{key}", "does-not-exist")
            .replace("{product_id}", "does-not-exist")
            .replace("{warehouse_id}", "main");
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let method_upper = method.to_ascii_uppercase();
            let request = client()
                .request(
                    reqwest::Method::from_bytes(method_upper.as_bytes()).unwrap(),
                    app.url(&concrete),
                )
                .header("authorization", format!("Bearer {admin}"));
            let request = if ["POST", "PUT", "PATCH"].contains(&method_upper.as_str()) {
                request
                    .header("content-type", "application/json")
                    .body("{}")
            } else {
                request
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_ne!(status, 405, "{method_upper} {path}: {text}");
            if status == 404 {
                // A miss of the gateway's table, of a service that is not deployed, or of the
                // service's own router ("No such cart route", the payment host's "no such
                // route"); a 404 about the resource ("No such order") means it was served.
                let problem: Value = serde_json::from_str(&text).unwrap_or_default();
                let detail = problem["detail"]
                    .as_str()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let router_miss = detail.starts_with("no route for")
                    || detail.starts_with("no service is deployed")
                    || (detail.starts_with("no such") && detail.ends_with("route"));
                assert!(!router_miss, "{method_upper} {path} is not served: {text}");
            }
        }
    }
}

#[tokio::test]
async fn happy_path_responses_match_the_document() {
    let doc = document();
    let app = start();
    let c = client();

    conforms(
        &doc,
        "GET",
        "/health/live",
        c.get(app.url("/health/live")).send().await.unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/health/ready",
        c.get(app.url("/health/ready")).send().await.unwrap(),
    )
    .await;
    let jwks = conforms(
        &doc,
        "GET",
        "/.well-known/jwks.json",
        c.get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"][0]["kid"], "test");

    // Identity.
    let registration = json!({"email": "openapi@example.com", "password": "a long enough passphrase 7", "name": "Open Api"});
    let user = conforms(
        &doc,
        "POST",
        "/auth/register",
        c.post(app.url("/auth/register"))
            .json(&registration)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    conforms(
        &doc,
        "POST",
        "/auth/register",
        c.post(app.url("/auth/register"))
            .json(&json!({"email": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let tokens = conforms(
        &doc,
        "POST",
        "/auth/login",
        c.post(app.url("/auth/login"))
            .json(
                &json!({"email": "openapi@example.com", "password": "a long enough passphrase 7"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    conforms(
        &doc,
        "POST",
        "/auth/login",
        c.post(app.url("/auth/login"))
            .json(&json!({"email": "openapi@example.com", "password": "wrong password, sorry"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let me = conforms(
        &doc,
        "GET",
        "/api/v1/users/me",
        c.get(app.url("/api/v1/users/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["id"], user_id.as_str());
    conforms(
        &doc,
        "GET",
        "/api/v1/users/me",
        c.get(app.url("/api/v1/users/me")).send().await.unwrap(),
    )
    .await;
    let refreshed = conforms(
        &doc,
        "POST",
        "/auth/refresh",
        c.post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": tokens["refresh_token"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "POST",
        "/auth/logout",
        c.post(app.url("/auth/logout"))
            .json(&json!({"refresh_token": refreshed["refresh_token"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Catalog: an admin makes a category, the (now) vendor a product in it.
    let admin = token("usr_openapi_admin", Role::Admin);
    let vendor = token(&user_id, Role::Vendor);
    let category = conforms(
        &doc,
        "POST",
        "/api/v1/categories",
        c.post(app.url("/api/v1/categories"))
            .bearer_auth(&admin)
            .json(&json!({"name": "Lamps"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/api/v1/categories",
        c.get(app.url("/api/v1/categories")).send().await.unwrap(),
    )
    .await;
    let product = conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .bearer_auth(&vendor)
            .json(&json!({
                "sku": "LAMP-1",
                "name": "Desk lamp",
                "description": "Warm light",
                "category_id": category["id"],
                "price": {"amount": 2999, "currency": "EUR"},
                "attributes": {"color": "black"}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(product["vendor_id"], user_id.as_str());
    conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .bearer_auth(&vendor)
            .json(&json!({"sku": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "POST",
        "/api/v1/products",
        c.post(app.url("/api/v1/products"))
            .json(&json!({"sku": "X"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let page = conforms(
        &doc,
        "GET",
        "/api/v1/products",
        c.get(app.url("/api/v1/products?limit=5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == product_id.as_str()),
        "{page}"
    );
    let fetched = conforms(
        &doc,
        "GET",
        "/api/v1/products/{id}",
        c.get(app.url(&format!("/api/v1/products/{product_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(fetched["sku"], "LAMP-1");
    conforms(
        &doc,
        "PUT",
        "/api/v1/products/{id}/discount",
        c.put(app.url(&format!("/api/v1/products/{product_id}/discount")))
            .bearer_auth(&vendor)
            .json(&json!({"percent_off": 10}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    conforms(
        &doc,
        "GET",
        "/api/v1/products/{id}",
        c.get(app.url("/api/v1/products/does-not-exist"))
            .send()
            .await
            .unwrap(),
    )
    .await;
}

fn event_types(events: &Value) -> Vec<&str> {
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn cart_inventory_order_and_payment_responses_match_the_document() {
    let doc = document();
    let app = start();
    let c = client();
    let admin = token("usr_oa_admin", Role::Admin);
    let customer = token("usr_oa_customer", Role::Customer);
    let stranger = token("usr_oa_stranger", Role::Customer);
    let address = json!({"name": "Ada", "line1": "1 Main St", "city": "London",
                         "postal_code": "N1", "country": "GB"});

    let product = c
        .post(app.url("/api/v1/products"))
        .bearer_auth(&admin)
        .json(
            &json!({"sku": "OA-MUG", "name": "Mug", "description": "Stoneware",
                      "price": {"amount": 1250, "currency": "EUR"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), 201);
    let product_id = product.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Inventory: nothing stocked yet; an admin sets 3 units; what others may not do.
    const STOCK: &str = "/api/v1/inventory/{product_id}";
    const WAREHOUSE: &str = "/api/v1/inventory/{product_id}/warehouses/{warehouse_id}";
    const THRESHOLD: &str = "/api/v1/inventory/{product_id}/threshold";
    let stock_url = app.url(&format!("/api/v1/inventory/{product_id}"));
    let warehouse_url = app.url(&format!("/api/v1/inventory/{product_id}/warehouses/main"));
    let a = check(&doc, "GET", STOCK, c.get(&stock_url)).await;
    assert_eq!((a.status, &a.body["available"]), (200, &json!(0)));
    assert_eq!(a.body["warehouses"], json!([]));
    let a = check(
        &doc,
        "PUT",
        WAREHOUSE,
        c.put(&warehouse_url)
            .bearer_auth(&admin)
            .json(&json!({"on_hand": 3})),
    )
    .await;
    assert_eq!((a.status, &a.body["available"]), (200, &json!(3)));
    assert_eq!(a.body["warehouses"][0]["warehouse_id"], "main");
    for (request, status) in [
        (
            c.put(&warehouse_url)
                .bearer_auth(&customer)
                .json(&json!({"on_hand": 3})),
            403,
        ),
        (c.put(&warehouse_url).json(&json!({"on_hand": 3})), 401),
        (
            c.put(&warehouse_url)
                .bearer_auth(&admin)
                .json(&json!({"on_hand": -1})),
            422,
        ),
        (
            c.put(&warehouse_url)
                .bearer_auth(&admin)
                .json(&json!({"on_hand": 3, "colour": "red"})),
            422,
        ),
        (
            c.put(&warehouse_url)
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{"),
            400,
        ),
    ] {
        assert_eq!(check(&doc, "PUT", WAREHOUSE, request).await.status, status);
    }
    let a = check(
        &doc,
        "PUT",
        THRESHOLD,
        c.put(app.url(&format!("/api/v1/inventory/{product_id}/threshold")))
            .bearer_auth(&admin)
            .json(&json!({"threshold": 1})),
    )
    .await;
    assert_eq!((a.status, &a.body["low_stock_threshold"]), (200, &json!(1)));

    // A guest cart: no id until something is stored; from the first add on, every answer names
    // the cart in x-cart-id and the guest sends it back.
    const CART: &str = "/api/v1/cart";
    const ITEMS: &str = "/api/v1/cart/items";
    const ITEM: &str = "/api/v1/cart/items/{product_id}";
    let item_url = app.url(&format!("/api/v1/cart/items/{product_id}"));
    let a = check(&doc, "GET", CART, c.get(app.url(CART))).await;
    assert_eq!((a.status, &a.body["total"]), (200, &Value::Null));
    assert_eq!(a.body["id"], Value::Null, "an id before anything is stored");
    assert!(!a.headers.contains_key("x-cart-id"), "{:?}", a.headers);
    let a = check(
        &doc,
        "POST",
        ITEMS,
        c.post(app.url(ITEMS))
            .json(&json!({"product_id": product_id, "quantity": 2})),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["total"], json!({"amount": 2500, "currency": "EUR"}));
    let guest = a.headers["x-cart-id"].to_str().unwrap().to_owned();
    assert!(guest.starts_with("gc_"), "{guest}");
    assert_eq!(a.body["id"], guest.as_str());
    let a = check(
        &doc,
        "GET",
        CART,
        c.get(app.url(CART)).header("x-cart-id", &guest),
    )
    .await;
    assert_eq!((a.status, &a.body["id"]), (200, &json!(guest)));
    assert_eq!(
        a.body["item_count"], 2,
        "the returned x-cart-id identifies the cart"
    );
    let a = check(
        &doc,
        "PATCH",
        ITEM,
        c.patch(&item_url)
            .header("x-cart-id", &guest)
            .json(&json!({"quantity": 3})),
    )
    .await;
    assert_eq!((a.status, &a.body["item_count"]), (200, &json!(3)));
    assert_eq!(a.headers["x-cart-id"], guest.as_str());
    for (method, path, request, status) in [
        (
            "POST",
            ITEMS,
            c.post(app.url(ITEMS))
                .header("x-cart-id", &guest)
                .json(&json!({"product_id": "no-such-product", "quantity": 1})),
            422,
        ),
        (
            "POST",
            ITEMS,
            c.post(app.url(ITEMS))
                .header("x-cart-id", &guest)
                .json(&json!({"product_id": product_id, "quantity": 0})),
            422,
        ),
        (
            "PATCH",
            ITEM,
            c.patch(app.url("/api/v1/cart/items/not-in-the-cart"))
                .header("x-cart-id", &guest)
                .json(&json!({"quantity": 1})),
            404,
        ),
        (
            "DELETE",
            ITEM,
            c.delete(app.url("/api/v1/cart/items/not-in-the-cart"))
                .header("x-cart-id", &guest),
            200,
        ),
        (
            "GET",
            CART,
            c.get(app.url(CART)).bearer_auth("not-a-token"),
            401,
        ),
    ] {
        assert_eq!(check(&doc, method, path, request).await.status, status);
    }
    // Signed in with the guest id still sent: merged into the customer's cart.
    let a = check(
        &doc,
        "GET",
        CART,
        c.get(app.url(CART))
            .bearer_auth(&customer)
            .header("x-cart-id", &guest),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["id"], "uc_usr_oa_customer");
    assert_eq!(a.body["items"][0]["quantity"], 3);

    // Checkout refusals before and at the saga's first step.
    const ORDERS: &str = "/api/v1/orders";
    let checkout = |key: Option<&str>, body: Value| {
        let request = c.post(app.url(ORDERS)).bearer_auth(&customer).json(&body);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
    };
    let too_many = json!({"items": [{"product_id": product_id, "quantity": 50}],
                          "shipping_address": address, "payment_method": "pm_openapi"});
    let a = check(
        &doc,
        "POST",
        ORDERS,
        c.post(app.url(ORDERS))
            .header("idempotency-key", "oa-anonymous")
            .json(&too_many),
    )
    .await;
    assert_eq!(a.status, 401);
    let a = check(&doc, "POST", ORDERS, checkout(None, too_many.clone())).await;
    assert_eq!(a.status, 400);
    let a = check(
        &doc,
        "POST",
        ORDERS,
        checkout(
            Some("oa-invalid"),
            json!({"shipping_address": {"name": ""}, "payment_method": ""}),
        ),
    )
    .await;
    assert_eq!(a.status, 422);
    let a = check(
        &doc,
        "POST",
        ORDERS,
        checkout(Some("oa-oos"), too_many.clone()),
    )
    .await;
    assert_eq!((a.status, &a.body["code"]), (409, &json!("out_of_stock")));
    let failed_order = a.body["order_id"].as_str().unwrap().to_owned();
    let a = check(
        &doc,
        "POST",
        ORDERS,
        checkout(Some("oa-oos"), too_many.clone()),
    )
    .await;
    assert_eq!((a.status, &a.body["order_id"]), (409, &json!(failed_order)));
    assert_eq!(a.headers["idempotent-replayed"], "true");
    let mut other_body = too_many.clone();
    other_body["items"][0]["quantity"] = json!(51);
    let a = check(&doc, "POST", ORDERS, checkout(Some("oa-oos"), other_body)).await;
    assert_eq!(a.status, 422);

    // The cart checked out: stock is reserved, then the payment step cannot get an answer (no
    // payment host), so the checkout pauses with a `pending` order.
    let a = check(
        &doc,
        "POST",
        ORDERS,
        checkout(
            Some("oa-cart"),
            json!({"shipping_address": address, "payment_method": "pm_openapi"}),
        ),
    )
    .await;
    assert_eq!(a.status, 503, "{}", a.body);
    let order_id = a.body["order_id"].as_str().unwrap().to_owned();
    const ORDER: &str = "/api/v1/orders/{id}";
    const EVENTS: &str = "/api/v1/orders/{id}/events";
    let order_url = app.url(&format!("/api/v1/orders/{order_id}"));
    let events_url = app.url(&format!("/api/v1/orders/{order_id}/events"));
    let a = check(&doc, "GET", ORDER, c.get(&order_url).bearer_auth(&customer)).await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("pending")));
    assert_eq!(a.body["total"], json!({"amount": 3750, "currency": "EUR"}));
    let a = check(&doc, "GET", ORDER, c.get(&order_url).bearer_auth(&stranger)).await;
    assert_eq!(a.status, 404);
    let a = check(
        &doc,
        "GET",
        ORDERS,
        c.get(app.url(ORDERS)).bearer_auth(&customer),
    )
    .await;
    assert_eq!(a.status, 200);
    let listed: Vec<&str> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&order_id.as_str()) && listed.contains(&failed_order.as_str()),
        "{listed:?}"
    );
    for query in ["?limit=0", "?cursor=not-a-cursor"] {
        let a = check(
            &doc,
            "GET",
            ORDERS,
            c.get(app.url(&format!("{ORDERS}{query}")))
                .bearer_auth(&customer),
        )
        .await;
        assert_eq!(a.status, 422, "{query}");
    }
    let a = check(
        &doc,
        "GET",
        EVENTS,
        c.get(&events_url).bearer_auth(&customer),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        event_types(&a.body)[..2],
        ["order.created", "order.stock_reserved"]
    );
    let a = check(&doc, "GET", STOCK, c.get(&stock_url)).await;
    assert_eq!(
        (&a.body["reserved"], &a.body["available"]),
        (&json!(3), &json!(0))
    );
    let a = check(
        &doc,
        "PUT",
        WAREHOUSE,
        c.put(&warehouse_url)
            .bearer_auth(&admin)
            .json(&json!({"on_hand": 1})),
    )
    .await;
    assert_eq!(a.status, 409, "on_hand below what is reserved");

    // Status changes the state machine refuses, and who may not ask.
    for (action, bearer, status) in [
        ("ship", &customer, 403),
        ("ship", &admin, 409),
        ("deliver", &admin, 409),
    ] {
        let a = check(
            &doc,
            "POST",
            &format!("/api/v1/orders/{{id}}/{action}"),
            c.post(app.url(&format!("/api/v1/orders/{order_id}/{action}")))
                .bearer_auth(bearer),
        )
        .await;
        assert_eq!(a.status, status, "{action}: {}", a.body);
    }

    // Cancel. The checkout may have authorized a payment the order never recorded (the payment
    // service did not answer), so compensation must first learn and void it; with the payment
    // service unreachable it cannot, and the cancel answers 502 — the recovery job finishes it
    // later. The job also retries the paused checkout every few seconds and holds the order's
    // saga meanwhile; a cancel arriving then is refused with 409 ("still running", also a
    // documented answer) and asked again.
    const CANCEL: &str = "/api/v1/orders/{id}/cancel";
    let cancel_url = app.url(&format!("/api/v1/orders/{order_id}/cancel"));
    let a = check(
        &doc,
        "POST",
        CANCEL,
        c.post(&cancel_url).bearer_auth(&stranger),
    )
    .await;
    assert_eq!(a.status, 404);
    let mut answered = None;
    for _ in 0..50 {
        let a = check(
            &doc,
            "POST",
            CANCEL,
            c.post(&cancel_url)
                .bearer_auth(&customer)
                .header("idempotency-key", "oa-cancel"),
        )
        .await;
        if a.status == 409
            && a.body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("still running")
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        answered = Some(a);
        break;
    }
    let a = answered.expect("the cancel was refused as 'still running' 50 times");
    assert_eq!(a.status, 502, "{}", a.body);
    let a = check(&doc, "GET", ORDER, c.get(&order_url).bearer_auth(&admin)).await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("pending")));
    let a = check(&doc, "GET", EVENTS, c.get(&events_url).bearer_auth(&admin)).await;
    assert_eq!(a.status, 200);

    // Payments, with no payment host: the gateway and the `payments` component answer 401
    // without a valid token and a 503 problem (outcome unknown) for everything they forward.
    let card = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2031,
                      "cvc": "123", "name": "Ada"});
    let payment = json!({"order_id": order_id, "amount": {"amount": 3750, "currency": "EUR"},
                         "payment_method": "pm_openapi"});
    const METHODS: &str = "/api/v1/payments/methods";
    const PAYMENTS: &str = "/api/v1/payments";
    for (request, status) in [
        (c.post(app.url(METHODS)).json(&card), 401),
        (
            c.post(app.url(METHODS))
                .bearer_auth("not-a-token")
                .json(&card),
            401,
        ),
        (
            c.post(app.url(METHODS)).bearer_auth(&customer).json(&card),
            503,
        ),
    ] {
        assert_eq!(check(&doc, "POST", METHODS, request).await.status, status);
    }
    for (request, status) in [
        (
            c.post(app.url(PAYMENTS))
                .header("idempotency-key", "oa-pay")
                .json(&payment),
            401,
        ),
        (
            c.post(app.url(PAYMENTS))
                .bearer_auth(&customer)
                .header("idempotency-key", "oa-pay")
                .json(&payment),
            503,
        ),
    ] {
        assert_eq!(check(&doc, "POST", PAYMENTS, request).await.status, status);
    }
    for (method, path) in [
        ("GET", "/api/v1/payments/{id}"),
        ("GET", "/api/v1/payments/{id}/events"),
        ("POST", "/api/v1/payments/{id}/capture"),
        ("POST", "/api/v1/payments/{id}/void"),
        ("POST", "/api/v1/payments/{id}/refund"),
    ] {
        let url = app.url(&path.replace("{id}", "pay_openapi"));
        let request = |bearer: Option<&str>| {
            let request = c.request(method.parse().unwrap(), &url);
            let request = match bearer {
                Some(bearer) => request.bearer_auth(bearer),
                None => request,
            };
            if method == "POST" {
                request.json(&json!({}))
            } else {
                request
            }
        };
        let a = check(&doc, method, path, request(None)).await;
        assert_eq!(a.status, 401, "{method} {path}");
        let a = check(&doc, method, path, request(Some(&admin))).await;
        assert_eq!(a.status, 503, "{method} {path}");
    }
    let a = check(
        &doc,
        "POST",
        "/webhooks/payments/{provider}",
        c.post(app.url("/webhooks/payments/card"))
            .header("bazaar-signature", "t=1,v1=00")
            .json(&json!({"id": "evt_openapi"})),
    )
    .await;
    assert_eq!(a.status, 503);

    // Retrying the checkout of the order being cancelled never pushes it forward, and says why:
    // 409 with `code: cancelled` and the order. The first request paused (503) and its
    // Idempotency-Key stays claimed for the orders service's claim lock (60 s; a paused checkout
    // does not release it), and the recovery job may hold the saga for a moment: meanwhile a
    // retry is refused as in progress (409 without a `code`), so it is asked again. Last in the
    // test, so the wait overlaps nothing else.
    let mut refused = None;
    for _ in 0..120 {
        let a = check(
            &doc,
            "POST",
            ORDERS,
            checkout(
                Some("oa-cart"),
                json!({"shipping_address": address, "payment_method": "pm_openapi"}),
            ),
        )
        .await;
        assert_eq!(a.status, 409, "{}", a.body);
        if a.body["code"].is_null() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        refused = Some(a);
        break;
    }
    let a = refused.expect("the retried checkout was refused as in progress for 120 s");
    assert_eq!(
        (&a.body["code"], &a.body["order_id"], &a.body["type"]),
        (
            &json!("cancelled"),
            &json!(order_id),
            &json!("https://bazaar.dev/problems/cancelled")
        ),
        "{}",
        a.body
    );
    let a = check(&doc, "GET", ORDER, c.get(&order_url).bearer_auth(&admin)).await;
    assert_ne!(a.body["status"], "paid", "{}", a.body);
}
