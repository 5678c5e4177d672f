//! A checkout paid by a wallet payer who approves at the wallet (PayPal's approval flow),
//! through `bazaar up` on the real `spin.toml` with the payment host beside it: the checkout
//! pauses while the payment waits for the payer, the payer approves at the wallet sandbox (which
//! delivers the signed `CHECKOUT.ORDER.APPROVED` webhook to the payment host), and the saga's
//! scheduled recovery job finishes the order: authorized, stock committed, captured, `paid`.

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
fn start() -> Shop {
    let wallet = build_wasm("payment-wallet");
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
    );
    let app = shop("")
        .file("payments.toml", &payments_toml)
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
        let mut request = client().request(method.parse().unwrap(), self.app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
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
}

#[tokio::test]
async fn a_checkout_paid_by_wallet_approval_pauses_until_the_payer_approves_then_is_paid() {
    let shop = start();
    let (status, product) = shop
        .call(
            "POST",
            "/api/v1/products",
            Some(&shop.admin),
            None,
            Some(
                json!({"sku": "WALLET-1", "name": "Teapot", "description": "Porcelain",
                        "price": {"amount": 3400, "currency": "EUR"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().unwrap().to_owned();
    let (status, stock) = shop
        .call(
            "PUT",
            &format!("/api/v1/inventory/{product}/warehouses/main"),
            Some(&shop.admin),
            None,
            Some(json!({"on_hand": 5})),
        )
        .await;
    assert_eq!(status, 200, "{stock}");

    let customer = token("usr_wallet_payer", Role::Customer);
    let (status, method) = shop
        .call(
            "POST",
            "/api/v1/payments/methods",
            Some(&customer),
            None,
            Some(json!({"provider": "wallet", "vaulted": false})),
        )
        .await;
    assert_eq!(status, 201, "{method}");
    assert_eq!(method["vaulted"], false);
    let checkout = json!({
        "items": [{"product_id": product, "quantity": 2}],
        "payment_method": method["payment_method"],
        "shipping_address": {"name": "Ada Lovelace", "line1": "1 Analytical St", "city": "London",
                             "postal_code": "N1 9GU", "country": "GB"},
    });

    // The payment waits for the payer, so the checkout cannot finish now: the saga pauses.
    let (status, paused) = shop
        .call(
            "POST",
            "/api/v1/orders",
            Some(&customer),
            Some("wallet-checkout-1"),
            Some(checkout.clone()),
        )
        .await;
    assert_eq!(status, 503, "{paused}\n{}", shop.app.stderr_text());
    let order_id = paused["order_id"].as_str().unwrap().to_owned();
    let order = shop.order(&customer, &order_id).await;
    assert_eq!(order["status"], "pending", "{order}");
    assert_eq!(order["total"], json!({"amount": 6800, "currency": "EUR"}));

    // The order does not show the approval link yet, so the payer finds it by replaying the
    // authorize request the saga sent on their behalf (same key, same body): the payment
    // service answers the stored payment, `requires_authorization` with its payer-action link.
    let (status, payment) = shop
        .call(
            "POST",
            "/api/v1/payments",
            Some(&customer),
            Some(&format!("checkout-{order_id}")),
            Some(json!({"order_id": order_id, "amount": order["total"],
                        "payment_method": method["payment_method"], "shipping_country": "GB"})),
        )
        .await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_authorization", "{payment}");
    let payment_id = payment["id"].as_str().unwrap().to_owned();
    let wallet_order = payment["next_action"]
        .as_str()
        .and_then(|link| link.strip_prefix("/sandbox/wallet/checkoutnow?token="))
        .unwrap_or_else(|| panic!("no wallet approval link: {payment}"))
        .to_owned();

    // The payer approves at the wallet; the sandbox delivers the signed approval webhook and
    // the payment core authorizes the payment.
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

    // The recovery job (scheduled every 5 s) resumes the saga: authorized, stock committed,
    // captured, paid. Bounded wait for the schedule, not a performance threshold.
    let deadline = Instant::now() + Duration::from_secs(90);
    let paid = loop {
        let order = shop.order(&customer, &order_id).await;
        if order["status"] != "pending" && order["status"] != "confirmed" {
            break order;
        }
        assert!(
            Instant::now() < deadline,
            "the recovery job did not finish the order: {order}\n{}",
            shop.app.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payment_id"], payment_id.as_str(), "{paid}");
    let (status, payment) = shop
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
    assert_eq!(
        payment["captured"],
        json!({"amount": 6800, "currency": "EUR"})
    );
    let (_, stock) = shop
        .call(
            "GET",
            &format!("/api/v1/inventory/{product}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0)),
        "{stock}"
    );

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
