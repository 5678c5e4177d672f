//! Checkout end to end: the real `spin.toml` (gateway, catalog, carts, inventory, orders,
//! payments) and the isolated payment host with the card plugin and its local sandbox simulator,
//! all started by one `bazaar up`, driven over HTTP with real access tokens.

mod common;

use bazaar_platform::auth::Role;
use common::{Runner, build_wasm, free_port, shop, signing_keys_variable, token, workspace_root};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The repository's payments.toml on ports of this test's own, with the test-built plugins, and
/// its payment core app (payments/spin.toml) written into `core_dir` with the test-built core and
/// fraud thresholds out of reach (these tests are about checkout, not fraud screening; many
/// checkouts from one address and card would otherwise be blocked, as they should be).
fn payments_config(host_port: u16, core_dir: &std::path::Path) -> String {
    let sim_port = free_port();
    let mut config = std::fs::read_to_string(workspace_root().join("payments.toml")).unwrap();
    config = config
        .replace("127.0.0.1:3100", &format!("127.0.0.1:{host_port}"))
        .replace("127.0.0.1:3101", &format!("127.0.0.1:{sim_port}"));
    for plugin in ["payment-card", "payment-crypto", "payment-wallet"] {
        let release = format!(
            "target/wasm32-wasip2/release/{}.wasm",
            plugin.replace('-', "_")
        );
        if config.contains(&release) {
            config = config.replace(&release, &build_wasm(plugin).display().to_string());
        }
    }
    let mut core = std::fs::read_to_string(workspace_root().join("payments/spin.toml")).unwrap();
    const CORE_SOURCE: &str = "../target/wasm32-wasip2/release/payment_core.wasm";
    assert!(
        core.contains(CORE_SOURCE),
        "payments/spin.toml names {CORE_SOURCE}"
    );
    core = core.replace(
        CORE_SOURCE,
        &build_wasm("payment-core").display().to_string(),
    );
    let mut core: toml::Table = toml::from_str(&core).unwrap();
    for (variable, points) in [("fraud_review_at", "9999"), ("fraud_block_at", "10000")] {
        core["variables"][variable]["default"] = toml::Value::String(points.into());
    }
    let core_manifest = core_dir.join("spin.toml");
    std::fs::write(&core_manifest, toml::to_string(&core).unwrap()).unwrap();
    let mut table: toml::Table = toml::from_str(&config).unwrap();
    table["core"]["manifest"] = toml::Value::String(core_manifest.display().to_string());
    toml::to_string(&table).unwrap()
}

struct Shop {
    app: Runner,
    admin: String,
    /// The payment core's app directory (its state lives in `.spin` there).
    _core_dir: tempfile::TempDir,
}

fn start() -> Shop {
    let port = free_port();
    start_with_payments_at(port, port)
}

/// The shop with its payment host listening on `host_port` while the `payments` component
/// calls `payment_host_url` on `url_port` (a [`Relay`] in between, or the host itself).
fn start_with_payments_at(host_port: u16, url_port: u16) -> Shop {
    let core_dir = tempfile::tempdir().unwrap();
    let app = shop("")
        .file(
            "payments.toml",
            &payments_config(host_port, core_dir.path()),
        )
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg(&format!("payment_host_url=http://127.0.0.1:{url_port}"))
        .arg("--variable")
        .arg("rate_limit_per_minute=100000")
        .start();
    Shop {
        app,
        admin: token("usr_admin", Role::Admin),
        _core_dir: core_dir,
    }
}

impl Shop {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let (status, headers, body) =
            common::api_request(method, &self.app.url(path), token, key, body)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (status, body, headers)
    }

    async fn product(&self, sku: &str, amount: i64, stock: i64) -> String {
        let (status, product, _) = self
            .call(
                "POST",
                "/api/v1/products",
                Some(&self.admin),
                None,
                Some(
                    json!({"sku": sku, "name": format!("Product {sku}"), "description": "d",
                            "price": {"amount": amount, "currency": "EUR"}}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        let id = product["id"].as_str().unwrap().to_owned();
        let (status, body, _) = self
            .call(
                "PUT",
                &format!("/api/v1/inventory/{id}/warehouses/main"),
                Some(&self.admin),
                None,
                Some(json!({"on_hand": stock})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        id
    }

    async fn card(&self, token: &str, number: &str) -> String {
        let (status, body, _) = self
            .call(
                "POST",
                "/api/v1/payments/methods",
                Some(token),
                None,
                Some(json!({"number": number, "exp_month": 12, "exp_year": 2031,
                            "cvc": "123", "name": "Ada Lovelace"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body.get("number").is_none() && !body.to_string().contains(number));
        body["payment_method"].as_str().unwrap().to_owned()
    }

    async fn stock(&self, product: &str) -> Value {
        let (status, body, _) = self
            .call(
                "GET",
                &format!("/api/v1/inventory/{product}"),
                None,
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "1 Analytical St", "city": "London",
           "postal_code": "N1 9GU", "country": "GB"})
}

#[tokio::test]
async fn the_whole_journey_and_its_failure_paths() {
    let shop = start();
    let product = shop.product("JOURNEY-1", 1250, 50).await;

    // Register and log in like any customer (the users service issues the token).
    let (status, user, _) = shop
        .call("POST", "/auth/register", None, None,
              Some(json!({"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"})))
        .await;
    assert_eq!(status, 201, "{user}");
    let (status, login, _) = shop
        .call(
            "POST",
            "/auth/login",
            None,
            None,
            Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let customer = login["access_token"].as_str().unwrap().to_owned();

    // Browse: search finds the product with its price.
    let (status, found, _) = shop
        .call("GET", "/api/v1/products?q=journey-1", None, None, None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"][0]["id"], product.as_str(), "{found}");
    assert_eq!(
        found["items"][0]["price"],
        json!({"amount": 1250, "currency": "EUR"})
    );

    // Cart → checkout of the cart.
    let (status, cart, headers) = shop
        .call(
            "POST",
            "/api/v1/cart/items",
            Some(&customer),
            None,
            Some(json!({"product_id": product, "quantity": 2})),
        )
        .await;
    assert_eq!(status, 200, "{cart}");
    assert!(headers.contains_key("x-cart-id"));
    assert_eq!(cart["total"], json!({"amount": 2500, "currency": "EUR"}));
    // A second line whose product stops being sold stays in the cart but is not ordered.
    let retired = shop.product("JOURNEY-RETIRED", 999, 5).await;
    let (status, _, _) = shop
        .call(
            "POST",
            "/api/v1/cart/items",
            Some(&customer),
            None,
            Some(json!({"product_id": retired, "quantity": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = shop
        .call(
            "DELETE",
            &format!("/api/v1/products/{retired}"),
            Some(&shop.admin),
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let card = shop.card(&customer, "4242424242424242").await;
    let checkout = json!({"shipping_address": address(), "payment_method": card});
    let (status, order, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-1"),
            Some(checkout.clone()),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "paid");
    assert_eq!(order["total"], json!({"amount": 2500, "currency": "EUR"}));
    let order_id = order["id"].as_str().unwrap().to_owned();

    // Idempotency: the same request replays, a different one under the key is refused.
    let (status, replay, headers) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-1"),
            Some(checkout.clone()),
        )
        .await;
    assert_eq!((status, &replay["id"]), (201, &order["id"]));
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let (status, _, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-1"),
            Some(json!({"shipping_address": address(), "payment_method": "pm_other"})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            None,
            Some(checkout.clone()),
        )
        .await;
    assert_eq!(status, 400, "Idempotency-Key is required");

    // Effects: cart emptied, stock committed, payment captured, the stream recorded.
    let (_, cart, _) = shop
        .call("GET", "/api/v1/cart", Some(&customer), None, None)
        .await;
    // Only the retired line is left, still flagged unavailable.
    let left: Vec<(&str, &Value)> = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["product_id"].as_str().unwrap(), &i["available"]))
        .collect();
    assert_eq!(left, vec![(retired.as_str(), &json!(false))], "{cart}");
    let stock = shop.stock(&product).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(48), Some(0)),
        "{stock}"
    );
    let payment_id = order["payment_id"].as_str().unwrap();
    let (status, payment, _) = shop
        .call(
            "GET",
            &format!("/api/v1/payments/{payment_id}"),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "captured", "{payment}");
    let (status, events, _) = shop
        .call(
            "GET",
            &format!("/api/v1/orders/{order_id}/events"),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.stock_reserved",
            "order.payment_authorized",
            "order.confirmed",
            "order.paid"
        ]
    );

    // Other customers cannot see it; the owner and admins can.
    let stranger = token("usr_eve", Role::Customer);
    let (status, _, _) = shop
        .call(
            "GET",
            &format!("/api/v1/orders/{order_id}"),
            Some(&stranger),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = shop
        .call(
            "GET",
            &format!("/api/v1/orders/{order_id}"),
            Some(&shop.admin),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Ship, deliver; a delivered order cannot be cancelled; customers cannot ship.
    let (status, _, _) = shop
        .call(
            "POST",
            &format!("/api/v1/orders/{order_id}/ship"),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(status, 403);
    for (action, expected) in [("ship", "shipped"), ("deliver", "delivered")] {
        let (status, body, _) = shop
            .call(
                "POST",
                &format!("/api/v1/orders/{order_id}/{action}"),
                Some(&shop.admin),
                None,
                None,
            )
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some(expected)),
            "{body}"
        );
    }
    let (status, body, _) = shop
        .call(
            "POST",
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // A declined card: 422 with the reason, nothing reserved or charged.
    let declined = shop.card(&customer, "4000000000000002").await;
    let (status, problem, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-declined"),
            Some(json!({"items": [{"product_id": product, "quantity": 1}],
                          "shipping_address": address(), "payment_method": declined})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "payment_declined", "{problem}");
    let stock = shop.stock(&product).await;
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(48), Some(0)),
        "{stock}"
    );

    // Out of stock: 409, nothing charged.
    let (status, problem, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-too-many"),
            Some(json!({"items": [{"product_id": product, "quantity": 49}],
                          "shipping_address": address(), "payment_method": card})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "out_of_stock", "{problem}");

    // Cancel after payment: refunded, stock back on the shelf.
    let (status, paid, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("journey-cancel"),
            Some(json!({"items": [{"product_id": product, "quantity": 3}],
                          "shipping_address": address(), "payment_method": card})),
        )
        .await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(shop.stock(&product).await["on_hand"], 45);
    let (status, cancelled, _) = shop
        .call(
            "POST",
            &format!("/api/v1/orders/{}/cancel", paid["id"].as_str().unwrap()),
            Some(&customer),
            Some("cancel-1"),
            None,
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert_eq!(shop.stock(&product).await["on_hand"], 48);
    let (_, payment, _) = shop
        .call(
            "GET",
            &format!("/api/v1/payments/{}", paid["payment_id"].as_str().unwrap()),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(payment["status"], "refunded", "{payment}");

    // Bad input is a clear error.
    let (status, _, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("bad-1"),
            Some(json!({"shipping_address": {"country": "Spain"}, "payment_method": card})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, problem, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("bad-2"),
            Some(json!({"items": [{"product_id": product, "quantity": 600},
                                    {"product_id": product, "quantity": 600}],
                          "shipping_address": address(), "payment_method": card})),
        )
        .await;
    assert_eq!(
        status, 422,
        "two lines of one product count together: {problem}"
    );
    let (status, _, _) = shop
        .call("POST", "/api/v1/orders", None, Some("anon"), Some(checkout))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn concurrent_checkouts_never_oversell_and_one_key_charges_once() {
    let shop = start();
    let product = shop.product("HOT-1", 500, 50).await;

    // 200 customers race for 50 units.
    let mut customers = Vec::new();
    for i in 0..200 {
        let customer = token(&format!("usr_rush_{i}"), Role::Customer);
        let card = shop.card(&customer, "4242424242424242").await;
        customers.push((customer, card));
    }
    let attempts = customers.iter().enumerate().map(|(i, (customer, card))| {
        let shop = &shop;
        let product = product.clone();
        async move {
            shop.call(
                "POST",
                "/api/v1/orders",
                Some(customer),
                Some(&format!("rush-{i}")),
                Some(json!({"items": [{"product_id": product, "quantity": 1}],
                                  "shipping_address": address(), "payment_method": card})),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let confirmed = results
        .iter()
        .filter(|(s, b, _)| *s == 201 && b["status"] == "paid")
        .count();
    let out_of_stock = results
        .iter()
        .filter(|(s, b, _)| *s == 409 && b["code"] == "out_of_stock")
        .count();
    let others: Vec<_> = results
        .iter()
        .filter(|(s, _, _)| *s != 201 && *s != 409)
        .map(|(s, b, _)| (s, b))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!(confirmed, 50);
    assert_eq!(out_of_stock, 150);
    let stock = shop.stock(&product).await;
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(0), Some(0), Some(0)),
        "{stock}"
    );

    // 50 concurrent requests with one key: one order, one authorization.
    let product = shop.product("ONCE-1", 700, 10).await;
    let customer = token("usr_once", Role::Customer);
    let card = shop.card(&customer, "4242424242424242").await;
    let body = json!({"items": [{"product_id": product, "quantity": 1}],
                      "shipping_address": address(), "payment_method": card});
    let attempts = (0..50).map(|_| {
        shop.call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("the-one-key"),
            Some(body.clone()),
        )
    });
    let results = futures::future::join_all(attempts).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .filter(|(s, _, _)| *s == 201)
        .map(|(_, b, _)| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() <= 1, "{ids:?}");
    assert!(
        results.iter().all(|(s, _, _)| *s == 201 || *s == 409),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // Whatever the in-flight duplicates saw, the key now replays the one order.
    let (status, order, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("the-one-key"),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let (_, list, _) = shop
        .call(
            "GET",
            "/api/v1/orders?limit=100",
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(shop.stock(&product).await["on_hand"], 9);
}

/// A TCP relay in front of the payment host that the test can cut, standing for a payment host
/// that crashed or cannot be reached: while down, new connections are closed at once and open
/// ones are cut, so the `payments` component answers 503 (outcome unknown).
struct Relay {
    port: u16,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watching.borrow() {
                    continue;
                }
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { port, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn an_authorization_the_order_never_recorded_is_voided_when_it_is_cancelled() {
    let host_port = free_port();
    let relay = Relay::start(host_port).await;
    let shop = start_with_payments_at(host_port, relay.port);
    let product = shop.product("WINDOW-1", 800, 5).await;
    let user = "usr_crash_window";
    let customer = token(user, Role::Customer);
    let card = shop.card(&customer, "4242424242424242").await;

    // The order id is derived from the customer and the Idempotency-Key (orders' order_id_for),
    // and the saga authorizes under `checkout-<order>` with a body derived from the order.
    let key = "window-1";
    let digest = bazaar_platform::idempotency::fingerprint("order", user, key.as_bytes());
    let order_id = format!("ord_{}", &digest[..32]);
    // What a checkout that died right after the payment service answered leaves behind: an
    // authorization under the saga's key that the order's stream never recorded.
    let (status, payment, _) = shop
        .call(
            "POST",
            "/api/v1/payments",
            Some(&customer),
            Some(&format!("checkout-{order_id}")),
            Some(
                json!({"order_id": order_id, "amount": {"amount": 800, "currency": "EUR"},
                        "payment_method": card, "shipping_country": "GB"}),
            ),
        )
        .await;
    assert_eq!(
        (status, payment["status"].as_str()),
        (201, Some("authorized")),
        "{payment}"
    );
    let payment_id = payment["id"].as_str().unwrap().to_owned();

    // The payment host is unreachable during the checkout: stock is reserved, the authorize
    // outcome is unknown, the saga pauses.
    relay.set_up(false);
    let (status, problem, _) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some(key),
            Some(json!({"items": [{"product_id": product, "quantity": 1}],
                        "shipping_address": address(), "payment_method": card})),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["order_id"], order_id.as_str(), "{problem}");
    let cancel = async || {
        shop.call(
            "POST",
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&customer),
            None,
            None,
        )
        .await
    };
    // Cancelling must not forget the authorization: while nobody can tell whether the checkout
    // authorized a payment, the cancellation cannot complete (the recovery job may hold the
    // saga for a moment: 409, ask again).
    let mut answer = cancel().await;
    for _ in 0..60 {
        if answer.0 != 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        answer = cancel().await;
    }
    assert_eq!(answer.0, 502, "{}", answer.1);

    // Once the payment host answers, the cancellation completes (by the recovery job or a
    // retry) and the authorization the stream never knew is voided.
    relay.set_up(true);
    let mut order = Value::Null;
    for _ in 0..120 {
        let (status, body, _) = shop
            .call(
                "GET",
                &format!("/api/v1/orders/{order_id}"),
                Some(&customer),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        order = body;
        if order["status"] == "cancelled" {
            break;
        }
        let _ = cancel().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(order["status"], "cancelled", "{order}");
    let (status, payment, _) = shop
        .call(
            "GET",
            &format!("/api/v1/payments/{payment_id}"),
            Some(&customer),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "voided", "{payment}");
    let stock = shop.stock(&product).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(5), Some(0)),
        "{stock}"
    );
}
