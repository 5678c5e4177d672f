//! The isolated payment host (`bazaar payments serve`) end to end: the real card plugin against
//! the local card-network simulator, tokenization, the state machine, idempotency, webhooks, and
//! the isolation of misbehaving plugins (fuel, memory, egress). Every log line the payment hosts
//! print is kept and searched for card data at the end of each test.

mod payments_support;
use payments_support as common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const PANS: [&str; 4] = [
    "4242424242424242",
    "4000000000000002",
    "4000000000009995",
    "4100000000000019",
];
/// An unusual CVC so a grep for it cannot match by accident.
const CVC: &str = "739";
const WEBHOOK_SECRET: &str = "whsec_current_0123456789";
const OLD_WEBHOOK_SECRET: &str = "whsec_previous_9876543210";
const VAULT_KEYS: &str =
    "k2=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA,k1=ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct PaymentHost {
    child: Child,
    /// `bazaar payments simulate` run on its own, when the test restarts the payment host (the
    /// simulator's provider payments live in its memory).
    simulator: Option<Child>,
    base: String,
    sim: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    variables: Vec<String>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for PaymentHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(sim) = &mut self.simulator {
            let _ = sim.kill();
            let _ = sim.wait();
        }
    }
}

struct Options {
    /// `allowed_outbound_hosts` of the card plugin; `None` = the simulator's origin.
    card_allowed: Option<String>,
    /// Configure the hostile test plugin as the `wallet` provider.
    hostile_wallet: bool,
    /// Configure the crypto provider (simulator delivers its webhooks to the host).
    crypto: bool,
    /// Configure the real wallet provider (PayPal-shaped) as `wallet`.
    wallet: bool,
    /// Publish the outbox to this Redis.
    redis: Option<String>,
    /// `--variable`s of the payment core's app.
    variables: Vec<String>,
    /// Run the simulator as a process of its own, so the payment host can be restarted.
    separate_simulator: bool,
    fuel: u64,
    memory_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            card_allowed: None,
            hostile_wallet: false,
            crypto: false,
            wallet: false,
            redis: None,
            variables: Vec::new(),
            separate_simulator: false,
            fuel: 2_000_000_000,
            memory_bytes: 32 << 20,
        }
    }
}

fn start(options: Options) -> PaymentHost {
    let card = common::build_wasm("payment-card");
    let dir = tempfile::tempdir().unwrap();
    // The core's manifest in `core/`, so its state (SQLite, logs) is `core/.spin/`.
    common::core_manifest(&dir.path().join("core"));
    let sim_port = free_port();
    let host_port = free_port();
    let sim = format!("http://127.0.0.1:{sim_port}");
    let card_allowed = options.card_allowed.unwrap_or_else(|| sim.clone());
    let simulator_table = if options.separate_simulator {
        String::new()
    } else {
        format!(
            r#"
[simulator]
listen = "127.0.0.1:{sim_port}"
crypto_webhook_url = "http://127.0.0.1:{host_port}/webhooks/payments/crypto"
crypto_webhook_secret = "{WEBHOOK_SECRET}"
wallet_webhook_url = "http://127.0.0.1:{host_port}/webhooks/payments/wallet"
wallet_webhook_secret = "{WEBHOOK_SECRET}"
"#
        )
    };
    let mut config = format!(
        r#"
listen = "127.0.0.1:{host_port}"
vault_keys = "env:TEST_VAULT_KEYS"

[core]
manifest = "core/spin.toml"

[limits]
fuel = {fuel}
memory_bytes = {memory}
timeout_ms = 20000
{simulator_table}
[providers.card]
component = "{card}"
allowed_outbound_hosts = ["{card_allowed}"]
[providers.card.settings]
api_base = "{sim}"
api_key = "sk_test_bazaar"
webhook_secrets = "{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}"
"#,
        fuel = options.fuel,
        memory = options.memory_bytes,
        card = card.display(),
    );
    if options.hostile_wallet {
        let hostile = common::build_wasm("payment-test-hostile");
        config.push_str(&format!(
            r#"
[providers.wallet]
component = "{}"
allowed_outbound_hosts = ["{sim}"]
[providers.wallet.settings]
forbidden_url = "http://127.0.0.1:9/steal"
"#,
            hostile.display()
        ));
    }
    if options.wallet {
        let wallet = common::build_wasm("payment-wallet");
        config.push_str(&format!(
            r#"
[providers.wallet]
component = "{}"
allowed_outbound_hosts = ["{sim}"]
[providers.wallet.settings]
api_base = "{sim}"
client_id = "sandbox-client"
client_secret = "sk_test_bazaar"
webhook_secrets = "{WEBHOOK_SECRET}"
"#,
            wallet.display()
        ));
    }
    if options.crypto {
        let crypto = common::build_wasm("payment-crypto");
        config.push_str(&format!(
            r#"
[providers.crypto]
component = "{}"
allowed_outbound_hosts = ["{sim}"]
[providers.crypto.settings]
api_base = "{sim}"
api_key = "sk_test_bazaar"
store_id = "sandbox"
webhook_secrets = "{WEBHOOK_SECRET}"
"#,
            crypto.display()
        ));
    }
    let path = dir.path().join("payments.toml");
    std::fs::write(&path, config).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let simulator = options
        .separate_simulator
        .then(|| spawn_simulator(sim_port, &lines));
    let mut variables = options.variables;
    // Without it the core publishes to its default, the local Redis (every test's events carry
    // their own payment ids, so subscribers of other tests ignore them).
    if let Some(redis) = options.redis {
        variables.push(format!("redis_address={redis}"));
    }
    let (child, base) = spawn_host(&path, &variables, &lines);
    PaymentHost {
        child,
        simulator,
        base,
        sim,
        dir,
        config: path,
        variables,
        lines,
    }
}

/// Keeps every line `child` prints in `lines`; sends the first line starting with `ready` (the
/// rest of it) through the returned channel.
fn collect_output(
    child: &mut Child,
    lines: &Arc<Mutex<Vec<String>>>,
    ready: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(ready) {
                let _ = tx.send(rest.trim().to_string());
            }
            out.lock().unwrap().push(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let err = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            err.lock().unwrap().push(line);
        }
    });
    rx
}

fn spawn_host(
    config: &std::path::Path,
    variables: &[String],
    lines: &Arc<Mutex<Vec<String>>>,
) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bazaar"));
    command.args(["payments", "serve", "-c"]).arg(config);
    for variable in variables {
        command.arg("--variable").arg(variable);
    }
    let mut child = command
        .env("TEST_VAULT_KEYS", VAULT_KEYS)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = collect_output(&mut child, lines, "Payment host serving ");
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "payment host did not start:\n{}",
                lines.lock().unwrap().join("\n")
            );
        }
    }
}

fn spawn_simulator(port: u16, lines: &Arc<Mutex<Vec<String>>>) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(["payments", "simulate", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = collect_output(&mut child, lines, "Provider sandbox simulators");
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!(
            "simulator did not start:\n{}",
            lines.lock().unwrap().join("\n")
        );
    }
    child
}

impl PaymentHost {
    /// Every line the payment host (and its simulator) printed, and the payment core's log files.
    fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.lines.lock().unwrap().join("\n"),
            common::log_files(&self.dir.path().join("core/.spin"))
        )
    }

    /// Stops the payment host (SIGKILL: nothing gets to flush) and starts it again on the same
    /// configuration, state and port.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base) = spawn_host(&self.config, &self.variables, &self.lines);
        self.child = child;
        self.base = base;
    }

    /// Waits (bounded) for a log line containing `needle`: lines reach us through a reader
    /// thread, a moment after the response that caused them.
    fn log_shows(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The core's SQLite `default` database: `sqlite_db.db` in its state dir.
    fn db_path(&self) -> PathBuf {
        self.dir.path().join("core/.spin/sqlite_db.db")
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        user: &str,
        role: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = common::client();
        let mut req = client
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .header("x-bazaar-user-id", user)
            .header("x-bazaar-role", role)
            .header("x-bazaar-client-addr", "203.0.113.7");
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

    async fn save_card(&self, user: &str, number: &str) -> String {
        let (status, body) = self
            .call("POST", "/api/v1/payments/methods", user, "customer", None, Some(json!({
                "number": number, "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "Ada Lovelace"
            })))
            .await;
        assert_eq!(status, 201, "{body}");
        body["payment_method"].as_str().unwrap().to_string()
    }

    async fn pay(&self, user: &str, token: &str, amount: u64, key: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/v1/payments",
            user,
            "customer",
            Some(key),
            Some(json!({
                "order_id": format!("ord_{key}"),
                "amount": {"amount": amount, "currency": "EUR"},
                "payment_method": token,
            })),
        )
        .await
    }

    /// No card number or CVC in any log line, nor in the database file in clear text.
    fn assert_no_card_data(&self) {
        let logs = self.logs();
        for pan in PANS {
            assert!(!logs.contains(pan), "a card number appears in the logs");
        }
        for needle in [
            format!("\"{CVC}\""),
            format!("={CVC}"),
            format!(": {CVC}"),
            "\"cvc\":".to_string(),
        ] {
            assert!(
                !logs.contains(&needle),
                "the CVC appears in the logs: {needle}"
            );
        }
        assert!(
            !logs.contains(WEBHOOK_SECRET) && !logs.contains("sk_test_bazaar"),
            "a secret appears in the logs"
        );
        assert!(
            !logs.contains("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"),
            "the vault key appears in the logs"
        );
        for suffix in ["", "-wal"] {
            let path = PathBuf::from(format!("{}{suffix}", self.db_path().display()));
            if let Ok(bytes) = std::fs::read(&path) {
                let text = String::from_utf8_lossy(&bytes);
                for pan in PANS {
                    assert!(
                        !text.contains(pan),
                        "a card number is stored in clear text in {}",
                        path.display()
                    );
                }
                assert!(!text.contains(&format!("\"{CVC}\"")));
            }
        }
    }
}

#[tokio::test]
async fn card_payment_authorize_capture_refund_and_illegal_transitions() {
    let host = start(Options::default());
    let (status, method) = host
        .call("POST", "/api/v1/payments/methods", "u1", "customer", None, Some(json!({
            "number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "Ada Lovelace"
        })))
        .await;
    assert_eq!(status, 201, "{method}");
    assert_eq!(method["brand"], "visa");
    assert_eq!(method["last4"], "4242");
    assert_eq!(method["provider"], "card");
    assert!(!method.to_string().contains("4242424242424242"));
    let token = method["payment_method"].as_str().unwrap().to_string();

    let (status, payment) = host.pay("u1", &token, 1000, "k-flow-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "authorized");
    assert_eq!(
        payment["amount"],
        json!({"amount": 1000, "currency": "EUR"})
    );
    assert_eq!(payment["card"], json!({"brand": "visa", "last4": "4242"}));
    let id = payment["id"].as_str().unwrap().to_string();

    // Refund before capture and over-capture are refused.
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            None,
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u1",
            "customer",
            None,
            Some(json!({"amount": 1001})),
        )
        .await;
    assert_eq!(status, 409);

    // Another user using the owner's key first learns nothing and cannot poison the key.
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "intruder",
            "customer",
            Some("capture-key"),
            Some(json!({"amount": 600})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, captured) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u1",
            "customer",
            Some("capture-key"),
            Some(json!({"amount": 600})),
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["captured"]["amount"], 600);

    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/void"),
            "u1",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 409, "a captured payment cannot be voided");
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "u1",
            "customer",
            None,
            Some(json!({"amount": 100})),
        )
        .await;
    assert_eq!(status, 403, "customers cannot refund");

    let (status, partly) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            Some("r1"),
            Some(json!({"amount": 200})),
        )
        .await;
    assert_eq!(status, 200, "{partly}");
    assert_eq!(partly["status"], "partially_refunded");
    assert_eq!(partly["refunded"]["amount"], 200);
    // A retried refund with the same key is replayed, not refunded twice.
    let (status, again) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            Some("r1"),
            Some(json!({"amount": 200})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["refunded"]["amount"], 200);
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            None,
            Some(json!({"amount": 401})),
        )
        .await;
    assert_eq!(status, 409, "cannot refund more than captured");
    let (status, full) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["status"], "refunded");
    assert_eq!(full["refunded"]["amount"], 600);
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin1",
            "admin",
            None,
            None,
        )
        .await;
    assert_eq!(status, 409);

    // Owner and admin can read it, nobody else; the admin also sees the fraud decision.
    let (status, _) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u2",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, seen) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "admin1",
            "admin",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(seen["fraud"]["decision"], "allow");
    let (status, events) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}/events"),
            "u1",
            "customer",
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
            "payment.authorized",
            "payment.captured",
            "payment.refunded",
            "payment.refunded"
        ]
    );

    // Void path on a second payment; capture after void is refused.
    let (_, second) = host.pay("u1", &token, 500, "k-flow-2").await;
    let second_id = second["id"].as_str().unwrap();
    let (status, voided) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{second_id}/void"),
            "u1",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{voided}");
    assert_eq!(voided["status"], "voided");
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{second_id}/capture"),
            "u1",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 409);

    // Another user cannot pay with u1's card.
    let (status, body) = host.pay("u2", &token, 500, "k-flow-3").await;
    assert_eq!(status, 422, "{body}");
    host.assert_no_card_data();
}

#[tokio::test]
async fn test_cards_decline_with_their_codes() {
    let host = start(Options::default());
    for (number, code) in [
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
        ("4100000000000019", "fraudulent"),
    ] {
        let token = host.save_card("u-decline", number).await;
        let (status, body) = host
            .pay("u-decline", &token, 1500, &format!("decl-{code}"))
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["decline_code"], code);
        let id = body["payment_id"].as_str().unwrap();
        let (_, payment) = host
            .call(
                "GET",
                &format!("/api/v1/payments/{id}"),
                "u-decline",
                "customer",
                None,
                None,
            )
            .await;
        assert_eq!(payment["status"], "failed");
        assert_eq!(payment["failure_code"], code);
    }
    host.assert_no_card_data();
}

#[tokio::test]
async fn idempotent_retries_replay_and_mismatches_are_rejected() {
    let host = start(Options::default());
    let token = host.save_card("u-idem", "4242424242424242").await;
    let (s1, first) = host.pay("u-idem", &token, 700, "same-key").await;
    let (s2, second) = host.pay("u-idem", &token, 700, "same-key").await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(
        first["id"], second["id"],
        "the retry must replay, not pay twice"
    );
    let (status, body) = host.pay("u-idem", &token, 701, "same-key").await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = host
        .call("POST", "/api/v1/payments", "u-idem", "customer", None, Some(json!({"order_id": "o", "amount": {"amount": 1, "currency": "EUR"}, "payment_method": token})))
        .await;
    assert_eq!(status, 400, "Idempotency-Key is required");
    host.assert_no_card_data();
}

#[tokio::test]
async fn tokenization_and_requests_are_validated() {
    let host = start(Options::default());
    let (status, body) = host
        .call("POST", "/api/v1/payments/methods", "u", "customer", None, Some(json!({"number": "4242424242424241", "exp_month": 13, "exp_year": 2040, "cvc": "12", "name": ""})))
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["number", "exp_month", "cvc", "name"]);
    let (status, body) = host
        .call("POST", "/api/v1/payments/methods", "u", "customer", None, Some(json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2020, "cvc": CVC, "name": "A"})))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "exp_year");

    // A description carrying the method's token is refused: the host swaps the card number in
    // for the token in what the plugin sends, which would put it into the provider's free text.
    let token = host.save_card("u-desc", "4242424242424242").await;
    let (status, body) = host
        .call(
            "POST",
            "/api/v1/payments",
            "u-desc",
            "customer",
            Some("desc-1"),
            Some(json!({
                "order_id": "o-desc", "amount": {"amount": 500, "currency": "EUR"},
                "payment_method": token, "description": format!("order for {token}")
            })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "description", "{body}");

    // Idempotent saves: a retry answers the first token; another card under the key is 422.
    let card = json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "A"});
    let (s1, first) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u",
            "customer",
            Some("save-1"),
            Some(card.clone()),
        )
        .await;
    let (s2, again) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u",
            "customer",
            Some("save-1"),
            Some(card),
        )
        .await;
    assert_eq!((s1, s2), (201, 201), "{first} {again}");
    assert_eq!(first["payment_method"], again["payment_method"]);
    let (s3, _) = host
        .call("POST", "/api/v1/payments/methods", "u", "customer", Some("save-1"),
              Some(json!({"number": "5555555555554444", "exp_month": 12, "exp_year": 2040, "cvc": CVC, "name": "A"})))
        .await;
    assert_eq!(s3, 422);

    let client = common::client();
    let url = format!("{}/api/v1/payments/methods", host.base);
    let resp = client
        .post(&url)
        .header("x-bazaar-user-id", "u")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = client
        .post(&url)
        .header("x-bazaar-user-id", "u")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = client
        .post(&url)
        .header("x-bazaar-user-id", "u")
        .header("content-type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, body) = host
        .call("POST", "/api/v1/payments", "u", "customer", Some("v1"), Some(json!({"order_id": "", "amount": {"amount": -5, "currency": "euro"}, "payment_method": 7})))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"].as_array().unwrap().len(), 4, "{body}");
    host.assert_no_card_data();
}

#[tokio::test]
async fn a_plugin_that_loops_forever_is_stopped_and_other_payments_succeed() {
    let host = start(Options {
        hostile_wallet: true,
        fuel: 200_000_000,
        ..Options::default()
    });
    let (status, wallet) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u-iso",
            "customer",
            None,
            Some(json!({"provider": "wallet"})),
        )
        .await;
    assert_eq!(status, 201, "{wallet}");
    let wallet = wallet["payment_method"].as_str().unwrap().to_string();
    let card = host.save_card("u-iso", "4242424242424242").await;

    let hung = async {
        host.call("POST", "/api/v1/payments", "u-iso", "customer", Some("hung"), Some(json!({
            "order_id": "o-hung", "amount": {"amount": 100, "currency": "EUR"}, "payment_method": wallet, "description": "loop"
        })))
        .await
    };
    let healthy = async { host.pay("u-iso", &card, 100, "healthy").await };
    let ((hung_status, hung_body), (ok_status, ok_body)) = tokio::join!(hung, healthy);
    assert_eq!(ok_status, 201, "{ok_body}");
    assert_eq!(ok_body["status"], "authorized");
    assert_eq!(hung_status, 502, "{hung_body}");
    let id = hung_body["payment_id"].as_str().unwrap();
    let (_, payment) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-iso",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(payment["status"], "failed");
    assert!(
        host.log_shows("fuel"),
        "the log names the exhausted CPU budget"
    );

    // A memory bomb hits the cap and fails the same way; the host keeps serving.
    let (status, body) = host.call("POST", "/api/v1/payments", "u-iso", "customer", Some("bomb"), Some(json!({
        "order_id": "o-bomb", "amount": {"amount": 100, "currency": "EUR"}, "payment_method": wallet, "description": "alloc"
    }))).await;
    assert_eq!(status, 502, "{body}");
    let (status, _) = host.pay("u-iso", &card, 100, "after-bomb").await;
    assert_eq!(status, 201);
    host.assert_no_card_data();
}

#[tokio::test]
async fn a_plugin_reaching_an_undeclared_host_is_denied() {
    // The card plugin is pointed at the simulator but only allowed to reach another origin.
    let host = start(Options {
        card_allowed: Some("http://127.0.0.1:1".into()),
        hostile_wallet: true,
        ..Options::default()
    });
    let card = host.save_card("u-egress", "4242424242424242").await;
    let (status, body) = host.pay("u-egress", &card, 100, "egress-card").await;
    // The plugin reports its denied request as the provider being unavailable, but the host
    // knows no request left, so nothing can have happened at the provider: a definite failure
    // (502, nothing charged), not an unknown outcome to retry.
    assert_eq!(status, 502, "{body}");
    let id = body["payment_id"].as_str().expect("payment_id").to_owned();
    let (_, seen) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-egress",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(seen["status"], "failed", "{seen}");
    assert!(host.log_shows("plugin outbound request denied"));
    assert!(host.log_shows("sent it nothing"));

    let (_, wallet) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u-egress",
            "customer",
            None,
            Some(json!({"provider": "wallet"})),
        )
        .await;
    let (status, body) = host.call("POST", "/api/v1/payments", "u-egress", "customer", Some("egress-wallet"), Some(json!({
        "order_id": "o", "amount": {"amount": 100, "currency": "EUR"}, "payment_method": wallet["payment_method"], "description": "egress"
    }))).await;
    assert_eq!(
        status, 502,
        "a plugin whose only request was denied: {body}"
    );
    assert!(
        host.log_shows("egress_denied"),
        "the plugin saw its request denied"
    );
    host.assert_no_card_data();
}

fn signed(secret: &str, timestamp: u64, body: &str) -> String {
    payment_plugin_kit::signature::header_value(secret, timestamp, body.as_bytes())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn webhooks_are_verified_deduplicated_and_applied_once() {
    let host = start(Options::default());
    let token = host.save_card("u-hook", "4242424242424242").await;
    let (_, payment) = host.pay("u-hook", &token, 900, "hook-pay").await;
    let id = payment["id"].as_str().unwrap().to_string();
    let (_, admin_view) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "admin",
            "admin",
            None,
            None,
        )
        .await;
    let reference = admin_view["provider_reference"]
        .as_str()
        .unwrap()
        .to_string();
    let event = json!({"id": "evt_1", "type": "payment_intent.canceled", "created": now_secs(), "data": {"object": {"id": reference}}}).to_string();
    let client = common::client();
    let url = format!("{}/webhooks/payments/card", host.base);
    let post = |sig: String, body: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(url)
                .header("bazaar-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Tampered body, wrong secret, stale and future timestamps, missing signature: all 400.
    let tampered = event.replace("evt_1", "evt_2");
    assert_eq!(
        post(signed(WEBHOOK_SECRET, now_secs(), &event), tampered)
            .await
            .0,
        400
    );
    assert_eq!(
        post(signed("whsec_wrong", now_secs(), &event), event.clone())
            .await
            .0,
        400
    );
    assert_eq!(
        post(
            signed(WEBHOOK_SECRET, now_secs() - 301, &event),
            event.clone()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            signed(WEBHOOK_SECRET, now_secs() + 301, &event),
            event.clone()
        )
        .await
        .0,
        400
    );
    assert_eq!(post(String::new(), event.clone()).await.0, 400);
    let (_, still) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-hook",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(
        still["status"], "authorized",
        "rejected webhooks change nothing"
    );

    // Signed with the previous (rotating) secret: accepted and applied once.
    let (status, body) = post(
        signed(OLD_WEBHOOK_SECRET, now_secs(), &event),
        event.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    let (status, body) = post(signed(WEBHOOK_SECRET, now_secs(), &event), event.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["duplicate"], true,
        "a replayed event id is not applied again"
    );
    let (_, after) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-hook",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(after["status"], "voided");
    let (_, events) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}/events"),
            "u-hook",
            "customer",
            None,
            None,
        )
        .await;
    let voids = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "payment.voided")
        .count();
    assert_eq!(voids, 1);
    // Unknown provider.
    assert_eq!(
        client
            .post(format!("{}/webhooks/payments/nope", host.base))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    host.assert_no_card_data();
}

#[tokio::test]
async fn fraud_scoring_blocks_and_records_reasons() {
    let host = start(Options::default());
    let token = host.save_card("u-fraud", "4242424242424242").await;
    // Velocity: several attempts within the hour from the same user, card and address, plus a
    // new account and a card issued in the US shipping to Germany.
    for i in 0..4 {
        let (status, _) = host.pay("u-fraud", &token, 100, &format!("v{i}")).await;
        assert_eq!(status, 201);
    }
    let (status, body) = host
        .call("POST", "/api/v1/payments", "u-fraud", "customer", Some("risky"), Some(json!({
            "order_id": "o-risky", "amount": {"amount": 90_000, "currency": "EUR"}, "payment_method": token,
            "shipping_country": "DE", "account_age_days": 0
        })))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["decline_code"], "fraud_blocked");
    let id = body["payment_id"].as_str().unwrap();
    let (_, seen) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "admin",
            "admin",
            None,
            None,
        )
        .await;
    assert_eq!(seen["status"], "failed");
    assert_eq!(seen["fraud"]["decision"], "block");
    let rules: Vec<&str> = seen["fraud"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    for rule in [
        "velocity_user",
        "velocity_card",
        "amount_vs_history",
        "bin_country_mismatch",
        "new_account",
    ] {
        assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
    }
    host.assert_no_card_data();
}

#[tokio::test]
async fn crypto_invoice_is_settled_by_a_signed_webhook_and_refundable() {
    let host = start(Options {
        crypto: true,
        ..Options::default()
    });
    let (status, method) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u-btc",
            "customer",
            None,
            Some(json!({"provider": "crypto"})),
        )
        .await;
    assert_eq!(status, 201, "{method}");
    assert!(method.get("last4").is_none());
    let token = method["payment_method"].as_str().unwrap().to_string();
    let (status, payment) = host.pay("u-btc", &token, 2500, "btc-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_authorization");
    let link = payment["next_action"].as_str().unwrap().to_string();
    assert!(link.starts_with("/sandbox/crypto/invoices/inv_"), "{link}");
    let id = payment["id"].as_str().unwrap().to_string();
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-btc",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 409, "an unpaid invoice cannot be captured");

    // The payer pays; the simulator delivers the signed InvoiceSettled webhook to the host.
    let paid = common::client()
        .post(format!("{}{link}/pay", host.sim))
        .send()
        .await
        .unwrap();
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["delivered"], true, "{paid}");
    let (_, settled) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-btc",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(settled["status"], "captured", "{settled}");
    assert_eq!(settled["captured"]["amount"], 2500);
    let (status, refunded) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin",
            "admin",
            None,
            Some(json!({"amount": 1000})),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded");
    assert_eq!(refunded["refunded"]["amount"], 1000);

    // An invoice that lapses is voided by its webhook.
    let (_, second) = host.pay("u-btc", &token, 900, "btc-2").await;
    let link = second["next_action"].as_str().unwrap();
    let expired: Value = common::client()
        .post(format!("{}{link}/expire", host.sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["delivered"], true);
    let (_, lapsed) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{}", second["id"].as_str().unwrap()),
            "u-btc",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(lapsed["status"], "voided");
    host.assert_no_card_data();
}

#[tokio::test]
async fn wallet_payment_authorize_capture_refund_and_decline() {
    let host = start(Options {
        wallet: true,
        ..Options::default()
    });
    let (status, method) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u-pp",
            "customer",
            None,
            Some(json!({"provider": "wallet"})),
        )
        .await;
    assert_eq!(status, 201, "{method}");
    let token = method["payment_method"].as_str().unwrap().to_string();
    let (status, payment) = host.pay("u-pp", &token, 1999, "pp-1").await;
    assert_eq!(status, 201, "{payment}\n{}", host.logs());
    assert_eq!(payment["status"], "authorized");
    assert!(payment["authorization_expires_at"].is_string());
    let id = payment["id"].as_str().unwrap().to_string();
    let (status, captured) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-pp",
            "customer",
            None,
            Some(json!({"amount": 1500})),
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["captured"]["amount"], 1500);
    for (amount, expected) in [(500, "partially_refunded"), (1000, "refunded")] {
        let (status, refunded) = host
            .call(
                "POST",
                &format!("/api/v1/payments/{id}/refund"),
                "admin",
                "admin",
                None,
                Some(json!({"amount": amount})),
            )
            .await;
        assert_eq!(status, 200, "{refunded}");
        assert_eq!(refunded["status"], expected);
    }
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin",
            "admin",
            None,
            Some(json!({"amount": 1})),
        )
        .await;
    assert_eq!(status, 409);

    // The sandbox refuses payers whose wallet id says so.
    let (_, declined_method) = host
        .call(
            "POST",
            "/api/v1/payments/methods",
            "u-declined",
            "customer",
            None,
            Some(json!({"provider": "wallet"})),
        )
        .await;
    let (status, body) = host
        .pay(
            "u-declined",
            declined_method["payment_method"].as_str().unwrap(),
            100,
            "pp-2",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["decline_code"], "instrument_declined");
    host.assert_no_card_data();
}

/// The PayPal order id in a wallet payment's payer-action link
/// (`/sandbox/wallet/checkoutnow?token=<order id>`, PayPal's checkout page shape).
fn wallet_order_of(payment: &Value) -> String {
    let link = payment["next_action"].as_str().unwrap_or_default();
    link.strip_prefix("/sandbox/wallet/checkoutnow?token=")
        .unwrap_or_else(|| panic!("not a wallet approval link: {payment}"))
        .to_string()
}

/// The payer approves the order at the wallet sandbox, which delivers the signed
/// `CHECKOUT.ORDER.APPROVED` webhook to the payment host; its status and answer.
async fn approve_at_wallet(host: &PaymentHost, order: &str, body: Value) -> (u16, Value) {
    let response = common::client()
        .post(format!(
            "{}/sandbox/wallet/orders/{order}/approve",
            host.sim
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn post_wallet_webhook(
    host: &PaymentHost,
    body: &str,
    signature: Option<String>,
) -> (u16, Value) {
    let mut request = common::client()
        .post(format!("{}/webhooks/payments/wallet", host.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("bazaar-signature", signature);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn wallet_payer_approves_at_the_wallet_then_the_payment_is_authorized_captured_refunded() {
    let host = start(Options {
        wallet: true,
        ..Options::default()
    });
    let save = |body: Value| {
        host.call(
            "POST",
            "/api/v1/payments/methods",
            "u-approve",
            "customer",
            None,
            Some(body),
        )
    };
    let (status, refused) = save(json!({"provider": "wallet", "vaulted": "no"})).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "vaulted");
    let (status, vaulted) = save(json!({"provider": "wallet"})).await;
    assert_eq!(status, 201, "{vaulted}");
    assert_eq!(
        vaulted["vaulted"], true,
        "a wallet method is vaulted unless asked otherwise"
    );
    let (status, method) = save(json!({"provider": "wallet", "vaulted": false})).await;
    assert_eq!(status, 201, "{method}");
    assert_eq!(method["vaulted"], false);
    let token = method["payment_method"].as_str().unwrap().to_string();

    // Without a vaulted wallet the payment waits for the payer, with the approval link.
    let (status, payment) = host.pay("u-approve", &token, 2999, "approve-1").await;
    assert_eq!(status, 201, "{payment}\n{}", host.logs());
    assert_eq!(payment["status"], "requires_authorization", "{payment}");
    let order = wallet_order_of(&payment);
    let id = payment["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/payments/{id}");
    let get = || host.call("GET", &path, "u-approve", "customer", None, None);
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(
        status, 409,
        "nothing is authorized before the payer approves"
    );

    // An approval nobody signed, or signed with another secret, changes nothing.
    let forged = json!({
        "id": "WH-FORGED-1", "event_type": "CHECKOUT.ORDER.APPROVED",
        "create_time_unix": now_secs(), "resource": {"id": order, "status": "APPROVED"},
    })
    .to_string();
    let (status, rejected) = post_wallet_webhook(&host, &forged, None).await;
    assert_eq!(status, 400, "{rejected}");
    let (status, rejected) = post_wallet_webhook(
        &host,
        &forged,
        Some(signed("whsec_forger", now_secs(), &forged)),
    )
    .await;
    assert_eq!(status, 400, "{rejected}");
    assert_eq!(get().await.1["status"], "requires_authorization");

    // The payer approves; the sandbox's signed webhook makes the core authorize the order.
    let (status, approved) = approve_at_wallet(&host, &order, json!({})).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["delivered"], true, "{approved}\n{}", host.logs());
    let (_, authorized) = get().await;
    assert_eq!(
        authorized["status"],
        "authorized",
        "{authorized}\n{}",
        host.logs()
    );
    assert!(
        authorized["authorization_expires_at"].is_string(),
        "{authorized}"
    );
    assert!(
        authorized.get("next_action").is_none_or(Value::is_null),
        "{authorized}"
    );

    // Approving twice applies once: the wallet refuses a second approval, the same event
    // delivered again is a duplicate, and another approval event finds nothing left to do.
    let (status, again) = approve_at_wallet(&host, &order, json!({})).await;
    assert_eq!(status, 422, "{again}");
    let redelivered = approved["event"].to_string();
    let (status, duplicate) = post_wallet_webhook(
        &host,
        &redelivered,
        Some(signed(WEBHOOK_SECRET, now_secs(), &redelivered)),
    )
    .await;
    assert_eq!(
        (status, &duplicate["duplicate"]),
        (200, &json!(true)),
        "{duplicate}"
    );
    let mut other = approved["event"].clone();
    other["id"] = json!("WH-ANOTHER-APPROVAL");
    let other = other.to_string();
    let (status, ignored) = post_wallet_webhook(
        &host,
        &other,
        Some(signed(WEBHOOK_SECRET, now_secs(), &other)),
    )
    .await;
    assert_eq!(
        (status, &ignored["applied"]),
        (200, &json!(false)),
        "{ignored}"
    );
    // The checkout saga's retry under its key finds the payment as it is now.
    let (status, retried) = host.pay("u-approve", &token, 2999, "approve-1").await;
    assert_eq!((status, &retried["id"]), (201, &json!(id)), "{retried}");

    let (status, captured) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["captured"]["amount"], 2999);
    let (status, refunded) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin",
            "admin",
            None,
            Some(json!({"amount": 999})),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded");
    assert_eq!(refunded["refunded"]["amount"], 999);
    let (_, events) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}/events"),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "payment.requires_action",
            "payment.authorized",
            "payment.captured",
            "payment.refunded"
        ]
    );

    // A payer who approves with an instrument the wallet then refuses: the payment fails.
    let (_, second) = host.pay("u-approve", &token, 500, "approve-2").await;
    assert_eq!(second["status"], "requires_authorization", "{second}");
    let (status, approved) = approve_at_wallet(
        &host,
        &wallet_order_of(&second),
        json!({"instrument": "declined"}),
    )
    .await;
    assert_eq!(
        (status, &approved["delivered"]),
        (200, &json!(true)),
        "{approved}"
    );
    let (_, failed) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{}", second["id"].as_str().unwrap()),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_code"], "instrument_declined", "{failed}");

    // A payment voided while it waits for the payer (a checkout given up) holds no money, and
    // a later approval does not authorize it.
    let (_, third) = host.pay("u-approve", &token, 700, "approve-3").await;
    let third_id = third["id"].as_str().unwrap();
    let (status, voided) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{third_id}/void"),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{voided}");
    assert_eq!(voided["status"], "voided", "{voided}");
    let (status, approved) = approve_at_wallet(&host, &wallet_order_of(&third), json!({})).await;
    assert_eq!(
        (status, &approved["delivered"]),
        (200, &json!(true)),
        "{approved}"
    );
    let (_, after) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{third_id}"),
            "u-approve",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(after["status"], "voided", "{after}");
    host.assert_no_card_data();
}

#[tokio::test]
async fn payment_events_reach_the_redis_payments_channel_through_the_outbox() {
    // Subscribe first (pub/sub keeps nothing for late subscribers).
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = redis
        .get_async_pubsub()
        .await
        .expect("Redis must be reachable at 127.0.0.1:6379");
    pubsub.subscribe("payments").await.unwrap();
    let host = start(Options {
        redis: Some("redis://127.0.0.1:6379".into()),
        ..Options::default()
    });
    let token = host.save_card("u-events", "4242424242424242").await;
    let (status, payment) = host.pay("u-events", &token, 1234, "events-1").await;
    assert_eq!(status, 201, "{payment}");
    let id = payment["id"].as_str().unwrap().to_string();
    let (status, _) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-events",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    use futures::StreamExt;
    let mut messages = pubsub.on_message();
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = messages.next().await {
            let event: Value =
                serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
            // The platform's event envelope: the payment is the aggregate, its fields `data`.
            if event["aggregate_id"] == json!(id) {
                assert_eq!(event["data"]["payment_id"], json!(id));
                seen.push(event["type"].as_str().unwrap().to_string());
                if seen.len() == 2 {
                    return event;
                }
            }
        }
        panic!("subscription ended");
    })
    .await
    .expect("the payment's events were not published to Redis");
    assert_eq!(seen, ["payment.authorized", "payment.captured"]);
    assert_eq!(
        outcome["data"]["captured"],
        json!({"amount": 1234, "currency": "EUR"})
    );
    assert_eq!(outcome["source"], "payment-core");
    assert!(outcome["id"].as_str().unwrap().starts_with("evt_"));
    assert!(!outcome.to_string().contains("4242424242424242"));
}

/// A fresh PostgreSQL database for one test, dropped at the end.
struct PgDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("BAZAAR_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin_url}: {e}"));
        tokio::spawn(connection);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("bazaar_payments_{}_{nanos}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        let url = format!("{base}/{name}");
        Self { admin, name, url }
    }

    async fn query_one(&self, sql: &str, id: &str) -> tokio_postgres::Row {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[&id]).await.unwrap()
    }

    async fn drop_database(self) {
        let _ = self
            .admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

#[tokio::test]
async fn the_payment_core_runs_on_postgresql_and_its_state_survives_a_restart() {
    let db = PgDatabase::create().await;
    let mut host = start(Options {
        variables: vec![format!("payments_database={}", db.url)],
        separate_simulator: true,
        ..Options::default()
    });
    let token = host.save_card("u-pg", "4242424242424242").await;
    let (status, payment) = host.pay("u-pg", &token, 2500, "pg-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "authorized");
    let id = payment["id"].as_str().unwrap().to_string();

    host.restart();

    // The payment, its idempotency record and the sealed card are in PostgreSQL, not in the
    // process: the retry replays, the payment reads back, and the saved card pays again.
    let (status, replay) = host.pay("u-pg", &token, 2500, "pg-1").await;
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["id"], json!(id));
    let (status, read) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}"),
            "u-pg",
            "customer",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["status"], "authorized");
    let (status, captured) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/capture"),
            "u-pg",
            "customer",
            Some("pg-capture"),
            Some(json!({"amount": 2000})),
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["captured"]["amount"], 2000);
    let (status, refunded) = host
        .call(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            "admin",
            "admin",
            Some("pg-refund"),
            Some(json!({"amount": 500})),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded");
    let (status, second) = host.pay("u-pg", &token, 700, "pg-2").await;
    assert_eq!(
        status, 201,
        "the sealed card opens after a restart: {second}"
    );

    host.restart();
    let (_, events) = host
        .call(
            "GET",
            &format!("/api/v1/payments/{id}/events"),
            "u-pg",
            "customer",
            None,
            None,
        )
        .await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["payment.authorized", "payment.captured", "payment.refunded"]
    );
    let row = db
        .query_one(
            "SELECT status, captured, refunded FROM payments WHERE id = $1",
            &id,
        )
        .await;
    assert_eq!(row.get::<_, String>(0), "partially_refunded");
    assert_eq!(
        (row.get::<_, i64>(1), row.get::<_, i64>(2)),
        (2000, 500),
        "the row is in the PostgreSQL database"
    );
    let sqlite = rusqlite::Connection::open(host.db_path()).unwrap();
    let tables: i64 = sqlite
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'payments'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "nothing went to the SQLite default database");
    let clear = db
        .query_one(
            "SELECT count(*) FROM payment_methods WHERE row_to_json(payment_methods)::text LIKE '%' || $1 || '%'",
            "4242424242424242",
        )
        .await;
    assert_eq!(
        clear.get::<_, i64>(0),
        0,
        "no card number in clear text in PostgreSQL"
    );
    host.assert_no_card_data();
    drop(host);
    db.drop_database().await;
}

#[tokio::test]
async fn internal_routes_are_not_reachable_on_the_payment_hosts_port() {
    let host = start(Options::default());
    let client = common::client();
    for (method, path) in [
        ("POST", "/internal/admin/migrate"),
        ("POST", "/internal/jobs/outbox"),
        ("GET", "/internal/events?after=0"),
    ] {
        let resp = client
            .request(method.parse().unwrap(), format!("{}{path}", host.base))
            .header("x-bazaar-job", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
    }
    // The public routes are served by the core, and it did run its migrations and jobs
    // in-process (readiness answers 200 only with the schema current).
    let (status, body) = host.call("GET", "/health/ready", "", "", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(host.log_shows("Migrated payment-core"));
}

/// "The core cannot reach the network": the manifest the payment host runs it from allows
/// PostgreSQL and Redis only, and no http(s) origin, with any values of its variables.
#[test]
fn the_payment_core_is_allowed_no_http_egress() {
    use bazaar_manifest::Manifest;
    use bazaar_manifest::variables::VariableResolver;
    use bazaar_routing::allowed_hosts::AllowedHosts;

    let manifest = Manifest::load(&common::workspace_root().join("payments/spin.toml")).unwrap();
    assert_eq!(
        manifest.components.keys().collect::<Vec<_>>(),
        ["payment-core"],
        "one component"
    );
    let core = &manifest.components["payment-core"];
    let variables = VariableResolver::new()
        .resolve(&manifest.variables)
        .unwrap();
    let allowed: Vec<String> = core
        .allowed_outbound_hosts
        .iter()
        .map(|t| variables.render(t).unwrap())
        .collect();
    assert_eq!(
        allowed,
        ["postgres://127.0.0.1:5432", "redis://127.0.0.1:6379"]
    );
    let hosts = AllowedHosts::parse(&allowed, &[]).unwrap();
    for url in [
        "http://127.0.0.1:3101/v1/payment_intents",
        "https://api.stripe.com/v1/payment_intents",
        "http://127.0.0.1:5432/",
        "http://127.0.0.1:6379/",
        "http://payment-core.spin.internal/",
    ] {
        assert!(
            !hosts.allows(&url::Url::parse(url).unwrap()),
            "{url} must be denied"
        );
    }
    // Templates are the only way a value gets in: neither names a scheme of its own but
    // `postgres://`, and Redis is a `redis://` default.
    for template in &core.allowed_outbound_hosts {
        let raw = template.raw.as_str();
        assert!(
            raw == "postgres://{{ postgres_host }}" || raw == "{{ redis_address }}",
            "unexpected allowed_outbound_hosts entry {raw}"
        );
    }
}

/// The core is a component of our `bazaar:payments/payment-core` world: its .wasm imports the
/// host's providers and vault (and exports Spin's HTTP handler).
#[test]
fn the_payment_core_component_imports_the_hosts_providers_and_vault() {
    let wasm = common::build_wasm("payment-core");
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &wasm).unwrap();
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for interface in ["bazaar:payments/providers@", "bazaar:payments/vault@"] {
        assert!(
            imports.iter().any(|name| name.starts_with(interface)),
            "{interface} missing from {imports:?}"
        );
    }
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        exports
            .iter()
            .any(|name| name.starts_with("wasi:http/incoming-handler@0.2")),
        "{exports:?}"
    );
}
