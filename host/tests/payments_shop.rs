//! Payments through the shop as a client uses it: `bazaar up` on the real `spin.toml` (gateway +
//! payments component) starts the payment host from the `payments.toml` beside the manifest; a
//! client with a real access token saves a card, pays, and an admin refunds — all through the
//! gateway. Every log line (runner, components' log files, payment host) is then searched for
//! the card number and CVC.

mod payments_support;
use payments_support::common;

use bazaar_platform::auth::Role;
use common::{client, free_port, shop_only, signing_keys_variable, token};
use serde_json::{Value, json};

const PAN: &str = "4242424242424242";
const CVC: &str = "739";

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn all_logs(dir: &std::path::Path, runner_output: &str) -> String {
    format!("{runner_output}\n{}", payments_support::log_files(dir))
}

#[tokio::test]
async fn a_client_saves_a_card_pays_and_an_admin_refunds_through_the_gateway() {
    let card = common::build_wasm("payment-card");
    // The payment core's app; its state dir (SQLite, component logs) is `<core_dir>/.spin`.
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
[providers.card]
component = "{}"
allowed_outbound_hosts = ["http://127.0.0.1:{sim_port}"]
[providers.card.settings]
api_base = "http://127.0.0.1:{sim_port}"
api_key = "sk_test_bazaar"
"#,
        card.display(),
        core = core_manifest.display(),
    );
    let app = shop_only(&["gateway", "users", "payments"], "")
        .file("payments.toml", &payments_toml)
        .arg("--variable")
        .arg(&signing_keys_variable())
        .arg("--variable")
        .arg("gateway_upstreams=users,payments")
        .arg("--variable")
        .arg(&format!("payment_host_url=http://127.0.0.1:{host_port}"))
        .start();
    assert!(
        app.wait_for_stdout("Payment host serving"),
        "bazaar up starts the payment host"
    );
    let base = app.url("");
    // The gateway's readiness probes the payments component's /health/live.
    let (status, ready) = call(&base, "GET", "/health/ready", None, None, None).await;
    assert_eq!(status, 200, "{ready}");
    let customer = token("usr_pay_customer", Role::Customer);
    let admin = token("usr_pay_admin", Role::Admin);

    let (status, _) = call(
        &base,
        "POST",
        "/api/v1/payments/methods",
        None,
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, method) = call(
        &base,
        "POST",
        "/api/v1/payments/methods",
        Some(&customer),
        None,
        Some(json!({
            "number": PAN, "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "Ada Lovelace"
        })),
    )
    .await;
    assert_eq!(status, 201, "{method}");
    assert_eq!(
        (method["brand"].as_str(), method["last4"].as_str()),
        (Some("visa"), Some("4242"))
    );
    let pm = method["payment_method"].as_str().unwrap();

    let (status, payment) = call(&base, "POST", "/api/v1/payments", Some(&customer), Some("shop-pay-1"), Some(json!({
        "order_id": "ord_shop_1", "amount": {"amount": 4200, "currency": "EUR"}, "payment_method": pm
    }))).await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "authorized");
    assert_eq!(payment["user_id"], "usr_pay_customer");
    let id = payment["id"].as_str().unwrap();

    let (status, captured) = call(
        &base,
        "POST",
        &format!("/api/v1/payments/{id}/capture"),
        Some(&customer),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "captured");
    let (status, _) = call(
        &base,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        Some(&customer),
        None,
        Some(json!({"amount": 100})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, refunded) = call(
        &base,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        Some(&admin),
        None,
        Some(json!({"amount": 1200})),
    )
    .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded");
    let (status, seen) = call(
        &base,
        "GET",
        &format!("/api/v1/payments/{id}"),
        Some(&customer),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen["refunded"], json!({"amount": 1200, "currency": "EUR"}));
    let other = token("usr_someone_else", Role::Customer);
    let (status, _) = call(
        &base,
        "GET",
        &format!("/api/v1/payments/{id}"),
        Some(&other),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let output = format!(
        "{}\n{}",
        app.stdout.lock().unwrap().join("\n"),
        app.stderr_text()
    );
    // Without `vault_keys`, the key is generated once into the core app's state dir, owner-only.
    let key_file = core_dir.path().join(".spin/payments-vault-keys");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let logs = format!(
        "{}\n{}",
        all_logs(app.dir.path(), &output),
        payments_support::log_files(core_dir.path())
    );
    assert!(
        logs.contains("forwarded to the payment host"),
        "the component logged its calls"
    );
    assert!(
        payments_support::log_files(core_dir.path()).contains('{'),
        "the payment core wrote its log lines to its own state dir"
    );
    assert!(!logs.contains(PAN), "the card number appears in a log");
    assert!(
        !logs.contains(&format!("\"{CVC}\"")) && !logs.contains("\"cvc\""),
        "the CVC appears in a log"
    );
}
