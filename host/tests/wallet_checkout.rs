//! A checkout paid by a wallet payer who approves at the wallet (PayPal's approval flow),
//! through `bazaar up` on the real `spin.toml` with the payment host beside it: the checkout
//! answers 202 with the order `pending` and the payment's approval link, the payer approves at
//! THAT link on the wallet sandbox (which delivers the signed `CHECKOUT.ORDER.APPROVED` webhook
//! to the payment host), and the saga's scheduled recovery job finishes the order: authorized,
//! stock committed, captured, `paid`. A payer who never approves: at the deadline
//! (`customer_action_timeout_secs`) the job voids the payment, releases the stock and fails the
//! order `payment_expired`. A checkout paid by crypto invoice: 202 with the invoice, the payer
//! pays it at the crypto sandbox (signed `InvoiceSettled` webhook), and the order is `paid`.

mod openapi_support;
mod payments_support;
use payments_support::common;

use std::time::{Duration, Instant};

use bazaar_platform::auth::Role;
use common::{Runner, build_wasm, client, free_port, shop, signing_keys_variable, token};
use serde_json::{Value, json};

/// LOCAL SANDBOX webhook secret shared by the simulator and the wallet plugin in this test.
const WEBHOOK_SECRET: &str = "whsec_wallet_checkout_test";

struct Shop {
    app: Runner,
    sim: String,
    admin: String,
    /// The payment core's app directory (its state lives in `.spin` there).
    _core_dir: tempfile::TempDir,
}

/// The whole shop with a payment host that has only the wallet provider, against the wallet
/// sandbox, whose approvals are delivered to the payment host's webhook route. Fraud
/// thresholds stay at their defaults: one modest payment from a fresh customer is allowed.
/// `variables` are extra `--variable name=value` settings for the shop.
fn start(variables: &[&str]) -> Shop {
    let wallet = build_wasm("payment-wallet");
    let crypto = build_wasm("payment-crypto");
    let core_dir = tempfile::tempdir().unwrap();
    let core_manifest = payments_support::core_manifest(core_dir.path());
    let host_port = free_port();
    let sim_port = free_port();
    let payments_toml = format!(
        r#"
listen = "127.0.0.1:{host_port}"
[core]
manifest = "{core}"
[simulator]
listen = "127.0.0.1:{sim_port}"
wallet_webhook_url = "http://127.0.0.1:{host_port}/webhooks/payments/wallet"
wallet_webhook_secret = "{WEBHOOK_SECRET}"
crypto_webhook_url = "http://127.0.0.1:{host_port}/webhooks/payments/crypto"
crypto_webhook_secret = "{WEBHOOK_SECRET}"
[providers.crypto]
component = "{crypto}"
allowed_outbound_hosts = ["http://127.0.0.1:{sim_port}"]
[providers.crypto.settings]
api_base = "http://127.0.0.1:{sim_port}"
api_key = "sk_test_bazaar"
store_id = "sandbox"
webhook_secrets = "{WEBHOOK_SECRET}"
[providers.wallet]
component = "{wallet}"
allowed_outbound_hosts = ["http://127.0.0.1:{sim_port}"]
[providers.wallet.settings]
api_base = "http://127.0.0.1:{sim_port}"
client_id = "sandbox-client"
client_secret = "sk_test_bazaar"
webhook_secrets = "{WEBHOOK_SECRET}"
"#,
        core = core_manifest.display(),
        wallet = wallet.display(),
        crypto = crypto.display(),
    );
    let mut app = shop("").file("payments.toml", &payments_toml);
    for variable in variables {
        app = app.arg("--variable").arg(variable);
    }
    let app = app
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg(&format!("payment_host_url=http://127.0.0.1:{host_port}"))
        .arg("--variable")
        .arg("rate_limit_per_minute=100000")
        .start();
    assert!(
        app.wait_for_stdout("Payment host serving"),
        "bazaar up starts the payment host"
    );
    Shop {
        app,
        sim: format!("http://127.0.0.1:{sim_port}"),
        admin: token("usr_wallet_admin", Role::Admin),
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
    ) -> (u16, Value) {
        let (status, _, body) = self.call_with_headers(method, path, token, key, body).await;
        (status, body)
    }

    async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        common::api_request(method, &self.app.url(path), token, key, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn order(&self, customer: &str, id: &str) -> Value {
        let (status, order) = self
            .call(
                "GET",
                &format!("/api/v1/orders/{id}"),
                Some(customer),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{order}");
        order
    }

    /// A product with 5 units on hand; its id.
    async fn product(&self, sku: &str) -> String {
        let (status, product) = self
            .call(
                "POST",
                "/api/v1/products",
                Some(&self.admin),
                None,
                Some(
                    json!({"sku": sku, "name": "Teapot", "description": "Porcelain",
                            "price": {"amount": 3400, "currency": "EUR"}}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        let product = product["id"].as_str().unwrap().to_owned();
        let (status, stock) = self
            .call(
                "PUT",
                &format!("/api/v1/inventory/{product}/warehouses/main"),
                Some(&self.admin),
                None,
                Some(json!({"on_hand": 5})),
            )
            .await;
        assert_eq!(status, 200, "{stock}");
        product
    }

    /// The checkout body for 2 units of `product`, paid by a new approval wallet (not vaulted:
    /// the payer approves each payment at the wallet) saved by `customer`.
    async fn wallet_checkout(&self, customer: &str, product: &str) -> Value {
        let (status, method) = self
            .call(
                "POST",
                "/api/v1/payments/methods",
                Some(customer),
                None,
                Some(json!({"provider": "wallet", "vaulted": false})),
            )
            .await;
        assert_eq!(status, 201, "{method}");
        assert_eq!(method["vaulted"], false);
        json!({
            "items": [{"product_id": product, "quantity": 2}],
            "payment_method": method["payment_method"],
            "shipping_address": {"name": "Ada Lovelace", "line1": "1 Analytical St",
                                 "city": "London", "postal_code": "N1 9GU", "country": "GB"},
        })
    }

    /// Checks out and expects the answer that the payment waits for the payer: 202, the order
    /// `pending` with its `payment` (id, `requires_authorization`, the approval link),
    /// `Retry-After`. Returns the order.
    async fn checkout_waiting_for_payer(&self, customer: &str, key: &str, body: &Value) -> Value {
        let (status, headers, order) = self
            .call_with_headers(
                "POST",
                "/api/v1/orders",
                Some(customer),
                Some(key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 202, "{order}\n{}", self.app.stderr_text());
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        assert_eq!(order["status"], "pending", "{order}");
        assert_eq!(order["total"], json!({"amount": 6800, "currency": "EUR"}));
        assert_eq!(
            order["payment"]["status"], "requires_authorization",
            "{order}"
        );
        assert!(order["payment"]["id"].is_string(), "{order}");
        assert!(order["payment"]["next_action"].is_string(), "{order}");
        // The answer as docs/openapi.yaml documents checkout's 202.
        let doc = openapi_support::document();
        let documented = &doc["paths"]["/api/v1/orders"]["post"]["responses"]["202"];
        let mut errors = Vec::new();
        openapi_support::validate(
            &doc,
            &documented["content"]["application/json"]["schema"],
            &order,
            "$",
            &mut errors,
        );
        assert!(
            errors.is_empty(),
            "202 vs the document: {errors:?}\n{order}"
        );
        assert!(headers.contains_key("location"), "{headers:?}");
        order
    }

    /// Waits until the order leaves `pending`/`confirmed` (the recovery job runs every 5 s).
    /// A bounded wait for the schedule, not a performance threshold.
    async fn settled(&self, customer: &str, order_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let order = self.order(customer, order_id).await;
            if order["status"] != "pending" && order["status"] != "confirmed" {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "the recovery job did not settle the order: {order}\n{}",
                self.app.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn payment(&self, customer: &str, payment_id: &str) -> Value {
        let (status, payment) = self
            .call(
                "GET",
                &format!("/api/v1/payments/{payment_id}"),
                Some(customer),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{payment}");
        payment
    }

    async fn stock(&self, product: &str) -> (Option<i64>, Option<i64>) {
        let (_, stock) = self
            .call(
                "GET",
                &format!("/api/v1/inventory/{product}"),
                None,
                None,
                None,
            )
            .await;
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64())
    }
}

#[tokio::test]
async fn a_checkout_paid_by_wallet_approval_answers_the_approval_link_then_is_paid() {
    let shop = start(&[]);
    let product = shop.product("WALLET-1").await;
    let customer = token("usr_wallet_payer", Role::Customer);
    let checkout = shop.wallet_checkout(&customer, &product).await;

    let order = shop
        .checkout_waiting_for_payer(&customer, "wallet-checkout-1", &checkout)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let payment_id = order["payment"]["id"].as_str().unwrap().to_owned();
    let link = order["payment"]["next_action"].as_str().unwrap().to_owned();

    // The order read shows the same waiting payment while it waits.
    let read = shop.order(&customer, &order_id).await;
    assert_eq!(read["status"], "pending", "{read}");
    assert_eq!(read["payment"], order["payment"], "{read}");
    // Retried under its key while still waiting: the same 202 (the key was given back). The
    // recovery job polls this saga meanwhile; while it holds the saga the retry is told 409
    // "still in progress", and asks again as a client would.
    let again = loop {
        let (status, headers, again) = shop
            .call_with_headers(
                "POST",
                "/api/v1/orders",
                Some(&customer),
                Some("wallet-checkout-1"),
                Some(checkout.clone()),
            )
            .await;
        if status != 409 {
            assert_eq!(status, 202, "{again}");
            assert!(headers.contains_key("retry-after"), "{headers:?}");
            break again;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&again["id"], &again["status"], &again["payment"]),
        (&order["id"], &json!("pending"), &order["payment"])
    );

    // The payer follows the link the checkout answered and approves at the wallet; the sandbox
    // delivers the signed approval webhook and the payment core authorizes the payment.
    let wallet_order = link
        .strip_prefix("/sandbox/wallet/checkoutnow?token=")
        .unwrap_or_else(|| panic!("not a wallet approval link: {link}"));
    let approved: Value = client()
        .post(format!(
            "{}/sandbox/wallet/orders/{wallet_order}/approve",
            shop.sim
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(approved["delivered"], true, "{approved}");

    // The recovery job resumes the saga: authorized, stock committed, captured, paid.
    let paid = shop.settled(&customer, &order_id).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payment_id"], payment_id.as_str(), "{paid}");
    assert!(paid.get("payment").is_none(), "{paid}");
    let payment = shop.payment(&customer, &payment_id).await;
    assert_eq!(payment["status"], "captured", "{payment}");
    assert_eq!(
        payment["captured"],
        json!({"amount": 6800, "currency": "EUR"})
    );
    assert_eq!(shop.stock(&product).await, (Some(3), Some(0)));

    // The client's retry of the checkout under its key finds the order paid.
    let (status, retried) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("wallet-checkout-1"),
            Some(checkout),
        )
        .await;
    assert_eq!(
        (status, &retried["status"]),
        (201, &json!("paid")),
        "{retried}"
    );
}

#[tokio::test]
async fn a_wallet_payer_who_never_approves_fails_the_order_payment_expired_at_the_deadline() {
    // The wallet's approval has no expiry of its own, so the shop's timeout is the deadline.
    let shop = start(&["customer_action_timeout_secs=5"]);
    let product = shop.product("WALLET-2").await;
    let customer = token("usr_wallet_absent_payer", Role::Customer);
    let checkout = shop.wallet_checkout(&customer, &product).await;

    let order = shop
        .checkout_waiting_for_payer(&customer, "wallet-checkout-2", &checkout)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let payment_id = order["payment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.stock(&product).await, (Some(5), Some(2)));

    // Nobody approves. The job polls past the deadline, then voids and releases.
    let failed = shop.settled(&customer, &order_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure"]["code"], "payment_expired", "{failed}");
    assert!(failed.get("payment").is_none(), "{failed}");
    let payment = shop.payment(&customer, &payment_id).await;
    assert_eq!(payment["status"], "voided", "{payment}");
    assert_eq!(shop.stock(&product).await, (Some(5), Some(0)));

    // A retry under the key answers why, and the order.
    let (status, retried) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("wallet-checkout-2"),
            Some(checkout),
        )
        .await;
    assert_eq!(status, 422, "{retried}");
    assert_eq!(
        (&retried["code"], &retried["order_id"]),
        (&json!("payment_expired"), &json!(order_id)),
        "{retried}"
    );
}

#[tokio::test]
async fn a_checkout_paid_by_crypto_invoice_answers_the_invoice_then_is_paid_once_settled() {
    let shop = start(&[]);
    let product = shop.product("CRYPTO-1").await;
    let customer = token("usr_crypto_payer", Role::Customer);
    let (status, method) = shop
        .call(
            "POST",
            "/api/v1/payments/methods",
            Some(&customer),
            None,
            Some(json!({"provider": "crypto"})),
        )
        .await;
    assert_eq!(status, 201, "{method}");
    let checkout = json!({
        "items": [{"product_id": product, "quantity": 2}],
        "payment_method": method["payment_method"],
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Analytical St",
                             "city": "London", "postal_code": "N1 9GU", "country": "GB"},
    });
    let order = shop
        .checkout_waiting_for_payer(&customer, "crypto-checkout-1", &checkout)
        .await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let payment_id = order["payment"]["id"].as_str().unwrap().to_owned();
    let invoice = order["payment"]["next_action"].as_str().unwrap().to_owned();
    assert!(
        invoice.starts_with("/sandbox/crypto/invoices/inv_"),
        "{invoice}"
    );
    // An invoice expires: its expiry is the saga's deadline (sooner than the shop's limit).
    assert!(
        order["payment"]["authorization_expires_at"].is_string(),
        "{order}"
    );

    // The payer pays the invoice; the sandbox delivers the signed InvoiceSettled webhook and
    // the payment is captured at once (crypto settles, it is not captured later).
    let paid: Value = client()
        .post(format!("{}{invoice}/pay", shop.sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["delivered"], true, "{paid}");

    let order = shop.settled(&customer, &order_id).await;
    assert_eq!(order["status"], "paid", "{order}");
    assert_eq!(order["payment_id"], payment_id.as_str(), "{order}");
    let payment = shop.payment(&customer, &payment_id).await;
    assert_eq!(payment["status"], "captured", "{payment}");
    assert_eq!(
        payment["captured"],
        json!({"amount": 6800, "currency": "EUR"})
    );
    assert_eq!(shop.stock(&product).await, (Some(3), Some(0)));

    // An admin refunds part of it through the shop.
    let (status, refunded) = shop
        .call(
            "POST",
            &format!("/api/v1/payments/{payment_id}/refund"),
            Some(&shop.admin),
            Some("crypto-refund-1"),
            Some(json!({"amount": 1000})),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded", "{refunded}");
}
