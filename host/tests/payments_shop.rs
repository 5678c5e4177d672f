//! Payments through the shop as a client uses it: `bazaar up` on the real `spin.toml` (gateway +
//! payments component) starts the payment host from the `payments.toml` beside the manifest; a
//! client with a real access token saves a card, pays, and an admin refunds — all through the
//! gateway. Every answer is checked against `docs/openapi.yaml` (status documented for the
//! operation, body conforms to the documented schema, required headers present; see
//! `openapi_support`): save card 201, create 201, get 200, events 200, capture 200, refund 200
//! and 403 for a customer, void and capture refused in the wrong state 409, a declined card 422
//! with `decline_code`, invalid input 422. Every log line (runner, components' log files, payment
//! host) is then searched for the card number and CVC.

mod openapi_support;
mod payments_support;
use payments_support::common;

use bazaar_platform::auth::Role;
use common::{client, free_port, shop_only, signing_keys_variable, token};
use openapi_support::{Answer, check, document};
use serde_json::{Value, json};

const PAN: &str = "4242424242424242";
/// Declined by the card network sandbox (API.md test cards).
const DECLINED_PAN: &str = "4000000000000002";
const CVC: &str = "739";

const METHODS: &str = "/api/v1/payments/methods";
const PAYMENTS: &str = "/api/v1/payments";
const PAYMENT: &str = "/api/v1/payments/{id}";
const EVENTS: &str = "/api/v1/payments/{id}/events";
const CAPTURE: &str = "/api/v1/payments/{id}/capture";
const VOID: &str = "/api/v1/payments/{id}/void";
const REFUND: &str = "/api/v1/payments/{id}/refund";

/// A request to the documented operation `method path` (`{id}` filled with `id`), checked
/// against the document.
struct Call<'a> {
    doc: &'a Value,
    base: &'a str,
}

impl Call<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        id: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{}", self.base, path.replace("{id}", id));
        let mut req = client().request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        check(self.doc, method, path, req).await
    }
}

fn all_logs(dir: &std::path::Path, runner_output: &str) -> String {
    format!("{runner_output}\n{}", payments_support::log_files(dir))
}

fn card(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "Ada Lovelace"})
}

#[tokio::test]
async fn a_client_saves_a_card_pays_and_an_admin_refunds_through_the_gateway() {
    let card_plugin = common::build_wasm("payment-card");
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
        card_plugin.display(),
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
    let doc = document();
    let api = Call {
        doc: &doc,
        base: &base,
    };
    // The gateway's readiness probes the payments component's /health/live.
    let ready = check(
        &doc,
        "GET",
        "/health/ready",
        client().get(app.url("/health/ready")),
    )
    .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let customer = token("usr_pay_customer", Role::Customer);
    let admin = token("usr_pay_admin", Role::Admin);

    // Saving a card: anonymous 401, invalid 422 (every field named), then 201 with the token
    // and no more of the card than brand and last4.
    let a = api
        .send("POST", METHODS, "", None, None, Some(json!({})))
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = api
        .send(
            "POST",
            METHODS,
            "",
            Some(&customer),
            None,
            Some(
                json!({"number": "1234", "exp_month": 13, "exp_year": 2040, "cvc": "x",
                        "name": "Ada"}),
            ),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(!a.body.to_string().contains("1234"), "{}", a.body);
    let method = api
        .send("POST", METHODS, "", Some(&customer), None, Some(card(PAN)))
        .await;
    assert_eq!(method.status, 201, "{}", method.body);
    assert_eq!(
        (method.body["brand"].as_str(), method.body["last4"].as_str()),
        (Some("visa"), Some("4242"))
    );
    let pm = method.body["payment_method"].as_str().unwrap().to_owned();

    // Creating a payment: invalid input 422 with `errors`; a declined card 422 with
    // `decline_code` and the failed payment's id.
    let a = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-invalid"),
            Some(
                json!({"order_id": "ord_shop_x", "amount": {"amount": -5, "currency": "EUR"},
                        "payment_method": pm}),
            ),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body["errors"].is_array(), "{}", a.body);
    let declined = api
        .send(
            "POST",
            METHODS,
            "",
            Some(&customer),
            None,
            Some(card(DECLINED_PAN)),
        )
        .await;
    assert_eq!(declined.status, 201, "{}", declined.body);
    let a = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-declined"),
            Some(json!({"order_id": "ord_shop_declined",
                        "amount": {"amount": 900, "currency": "EUR"},
                        "payment_method": declined.body["payment_method"]})),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body["decline_code"].is_string(), "{}", a.body);
    assert!(a.body["payment_id"].is_string(), "{}", a.body);

    // A payment authorized, read, its events, captured.
    let payment = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-1"),
            Some(
                json!({"order_id": "ord_shop_1", "amount": {"amount": 4200, "currency": "EUR"},
                        "payment_method": pm}),
            ),
        )
        .await;
    assert_eq!(payment.status, 201, "{}", payment.body);
    assert_eq!(payment.body["status"], "authorized");
    assert_eq!(payment.body["user_id"], "usr_pay_customer");
    let id = payment.body["id"].as_str().unwrap().to_owned();
    // The Idempotency-Key: the same request again is the first answer (status and body, marked
    // `Idempotent-Replayed`); another body under the key is 422; no key is 400.
    let first = json!({"order_id": "ord_shop_1", "amount": {"amount": 4200, "currency": "EUR"},
                       "payment_method": pm});
    let a = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-1"),
            Some(first.clone()),
        )
        .await;
    assert_eq!((a.status, &a.body), (201, &payment.body));
    assert_eq!(
        a.headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert!(payment.headers.get("idempotent-replayed").is_none());
    let mut other = first.clone();
    other["amount"]["amount"] = json!(4300);
    let a = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-1"),
            Some(other),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    let a = api
        .send("POST", PAYMENTS, "", Some(&customer), None, Some(first))
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = api
        .send("GET", PAYMENT, &id, Some(&customer), None, None)
        .await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("authorized")));
    let a = api
        .send("GET", EVENTS, &id, Some(&customer), None, None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["items"][0]["type"], "payment.authorized",
        "{}",
        a.body
    );
    assert_eq!(a.body["items"][0]["data"]["payment_id"], id.as_str());
    let captured = api
        .send("POST", CAPTURE, &id, Some(&customer), None, None)
        .await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["status"], "captured");
    // A captured payment cannot be voided.
    let a = api
        .send("POST", VOID, &id, Some(&customer), None, Some(json!({})))
        .await;
    assert_eq!(a.status, 409, "{}", a.body);

    // Refunds are for admins: 403 for the customer, 200 for an admin.
    let a = api
        .send(
            "POST",
            REFUND,
            &id,
            Some(&customer),
            None,
            Some(json!({"amount": 100})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let refunded = api
        .send(
            "POST",
            REFUND,
            &id,
            Some(&admin),
            None,
            Some(json!({"amount": 1200})),
        )
        .await;
    assert_eq!(refunded.status, 200, "{}", refunded.body);
    assert_eq!(refunded.body["status"], "partially_refunded");
    let seen = api
        .send("GET", PAYMENT, &id, Some(&customer), None, None)
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.body["refunded"],
        json!({"amount": 1200, "currency": "EUR"})
    );
    let a = api.send("GET", EVENTS, &id, Some(&admin), None, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let other = token("usr_someone_else", Role::Customer);
    let a = api
        .send("GET", PAYMENT, &id, Some(&other), None, None)
        .await;
    assert_eq!(a.status, 404, "{}", a.body);

    // Another payment voided; capturing it then is refused.
    let second = api
        .send(
            "POST",
            PAYMENTS,
            "",
            Some(&customer),
            Some("shop-pay-2"),
            Some(
                json!({"order_id": "ord_shop_2", "amount": {"amount": 700, "currency": "EUR"},
                        "payment_method": pm}),
            ),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second = second.body["id"].as_str().unwrap().to_owned();
    let a = api
        .send(
            "POST",
            VOID,
            &second,
            Some(&customer),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["status"]),
        (200, &json!("voided")),
        "{}",
        a.body
    );
    let a = api
        .send("POST", CAPTURE, &second, Some(&customer), None, None)
        .await;
    assert_eq!(a.status, 409, "{}", a.body);

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
