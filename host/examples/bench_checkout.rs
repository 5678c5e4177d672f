//! Load client for `scripts/bench-checkout.sh`: N concurrent customers through cart → checkout
//! against a running `bazaar up` (the shop + payment host), next to baselines measured in the
//! same run, printed as a markdown table.
//!
//! Setup (not measured): one product with enough stock, one saved test card per customer
//! (4242…, the simulator approves it), warm-up checkouts. Then, each phase with the same N
//! concurrent customers, each on its own keep-alive connection:
//!
//! * `GET /health/live` — the gateway alone (one wasm instance per request);
//! * `GET /api/v1/cart` — gateway → carts → catalog (a cart holding one line);
//! * checkout — per round `POST /api/v1/cart/items` (one unit) then `POST /api/v1/orders`
//!   (checkout of the cart, fresh `Idempotency-Key`); latencies are of `POST /api/v1/orders`,
//!   throughput is orders per second over the phase.
//!
//! Every answer is checked (200 / 201 with status `paid`); the run fails on any other answer,
//! and at the end the product's stock must have dropped by exactly the orders made.
//!
//! Usage: `bench_checkout --base http://127.0.0.1:PORT --seed-b64 <jwt seed> [--customers 16]
//! [--rounds 10] [--baseline-requests 50]`; the seed is the base64url 32-byte seed given to
//! `bazaar up` as `jwt_signing_keys=bench=<seed>`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bazaar_platform::auth::Role;
use bazaar_platform::jwt::{Claims, KeyPair, sign};
use serde_json::{Value, json};

struct Args {
    base: String,
    seed: [u8; 32],
    customers: usize,
    rounds: usize,
    baseline_requests: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut base = None;
    let mut seed = None;
    let (mut customers, mut rounds, mut baseline_requests) = (16, 10, 50);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--base" => base = Some(value.trim_end_matches('/').to_owned()),
            "--seed-b64" => {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value)?;
                seed = Some(
                    <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| anyhow::anyhow!("the seed must be 32 bytes"))?,
                );
            }
            "--customers" => customers = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            "--baseline-requests" => baseline_requests = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(customers > 0 && rounds > 0 && baseline_requests > 0);
    Ok(Args {
        base: base.ok_or_else(|| anyhow::anyhow!("--base is required"))?,
        seed: seed.ok_or_else(|| anyhow::anyhow!("--seed-b64 is required"))?,
        customers,
        rounds,
        baseline_requests,
    })
}

fn token(key: &KeyPair, sub: &str, role: Role) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sign(
        key,
        &Claims {
            sub: sub.to_owned(),
            role,
            iss: "bazaar".into(),
            aud: "bazaar-api".into(),
            iat: now,
            nbf: now - 5,
            exp: now + 3600,
            jti: format!("bench-{sub}-{now}"),
        },
    )
}

/// One customer's connection (reqwest keeps it alive between requests).
struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Session {
    fn new(base: &str, token: String) -> Session {
        Session {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1)
                .build()
                .unwrap(),
            base: base.to_owned(),
            token,
        }
    }

    /// Sends and checks the status; returns the body and the time to the full answer.
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        expect: u16,
    ) -> anyhow::Result<(Value, Duration)> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            status == expect,
            "{method} {path}: expected {expect}, got {status}: {text}"
        );
        Ok((serde_json::from_str(&text).unwrap_or(Value::Null), elapsed))
    }
}

/// Latency percentiles (nearest rank) and throughput of one phase.
struct Phase {
    name: &'static str,
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
    }
    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.name,
            self.latencies.len(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            self.percentile(50.0),
            self.percentile(95.0),
            self.percentile(99.0),
        )
    }
}

/// Runs `work(customer, round)` for every customer concurrently, `rounds` times each; every
/// call returns the latency to record.
async fn phase<F, Fut>(
    name: &'static str,
    sessions: &[Session],
    rounds: usize,
    work: F,
) -> anyhow::Result<Phase>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let started = Instant::now();
    let per_customer = (0..sessions.len()).map(|c| {
        let work = &work;
        async move {
            let mut latencies = Vec::with_capacity(rounds);
            for round in 0..rounds {
                latencies.push(work(c, round).await?);
            }
            anyhow::Ok(latencies)
        }
    });
    let results = futures::future::try_join_all(per_customer).await?;
    Ok(Phase {
        name,
        latencies: results.into_iter().flatten().collect(),
        wall: started.elapsed(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let key = KeyPair::from_seed("bench", args.seed);
    let admin = Session::new(&args.base, token(&key, "usr_bench_admin", Role::Admin));
    let run = bazaar_platform::ids::new_id();
    let warmup_rounds = 2;
    let stock = (args.customers * (args.rounds + warmup_rounds) + 1) as i64;

    // Setup: a product with enough stock, one card per customer.
    let (product, _) = admin
        .call(
            "POST",
            "/api/v1/products",
            None,
            Some(&json!({"sku": format!("BENCH-{}", &run[..12]), "name": "Benchmark mug",
                         "description": "checkout benchmark", "price": {"amount": 1000, "currency": "EUR"}})),
            201,
        )
        .await?;
    let product = product["id"].as_str().unwrap().to_owned();
    admin
        .call(
            "PUT",
            &format!("/api/v1/inventory/{product}/warehouses/main"),
            None,
            Some(&json!({"on_hand": stock})),
            200,
        )
        .await?;
    let sessions: Vec<Session> = (0..args.customers)
        .map(|i| {
            Session::new(
                &args.base,
                token(
                    &key,
                    &format!("usr_bench_{}_{i}", &run[..8]),
                    Role::Customer,
                ),
            )
        })
        .collect();
    let sessions = &sessions;
    let cards = futures::future::try_join_all(sessions.iter().map(|s| async {
        let (card, _) = s
            .call(
                "POST",
                "/api/v1/payments/methods",
                None,
                Some(
                    &json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2031,
                             "cvc": "123", "name": "Bench Customer"}),
                ),
                201,
            )
            .await?;
        anyhow::Ok(card["payment_method"].as_str().unwrap().to_owned())
    }))
    .await?;
    let address = json!({"name": "Bench Customer", "line1": "1 Load St", "city": "Madrid",
                         "postal_code": "28001", "country": "ES"});
    let add = json!({"product_id": product, "quantity": 1});

    let checkout = |c: usize, round: String| {
        let session = &sessions[c];
        let order = json!({"shipping_address": address, "payment_method": cards[c]});
        let add = &add;
        async move {
            session
                .call("POST", "/api/v1/cart/items", None, Some(add), 200)
                .await?;
            let (order, elapsed) = session
                .call(
                    "POST",
                    "/api/v1/orders",
                    Some(&format!("bench-{c}-{round}")),
                    Some(&order),
                    201,
                )
                .await?;
            anyhow::ensure!(order["status"] == "paid", "order not paid: {order}");
            anyhow::ensure!(
                order["items"][0]["quantity"] == 1,
                "the cart held more than the round's unit: {order}"
            );
            anyhow::Ok(elapsed)
        }
    };

    // Warm-up (instances, caches, connections), not recorded.
    phase("warm-up", sessions, warmup_rounds, |c, r| {
        checkout(c, format!("warm-{run}-{r}"))
    })
    .await?;

    // The cart read baseline reads a cart of one line (one catalog lookup), as checkout does.
    for s in sessions {
        s.call("POST", "/api/v1/cart/items", None, Some(&add), 200)
            .await?;
    }
    let live = phase(
        "`GET /health/live` (gateway only)",
        sessions,
        args.baseline_requests,
        |c, _| async move {
            Ok(sessions[c]
                .call("GET", "/health/live", None, None, 200)
                .await?
                .1)
        },
    )
    .await?;
    let cart = phase(
        "`GET /api/v1/cart` (gateway → carts → catalog)",
        sessions,
        args.baseline_requests,
        |c, _| async move {
            Ok(sessions[c]
                .call("GET", "/api/v1/cart", None, None, 200)
                .await?
                .1)
        },
    )
    .await?;
    for s in sessions {
        s.call(
            "DELETE",
            &format!("/api/v1/cart/items/{product}"),
            None,
            None,
            200,
        )
        .await?;
    }
    let orders = phase(
        "`POST /api/v1/orders` (checkout, after a cart add)",
        sessions,
        args.rounds,
        |c, r| checkout(c, format!("{run}-{r}")),
    )
    .await?;

    // Every order took exactly one unit.
    let (inventory, _) = admin
        .call(
            "GET",
            &format!("/api/v1/inventory/{product}"),
            None,
            None,
            200,
        )
        .await?;
    let made = (args.customers * (args.rounds + warmup_rounds)) as i64;
    anyhow::ensure!(
        inventory["on_hand"] == stock - made && inventory["reserved"] == 0,
        "stock does not match {made} orders: {inventory}"
    );

    println!(
        "{} concurrent customers; {} baseline requests and {} checkouts per customer",
        args.customers, args.baseline_requests, args.rounds
    );
    println!();
    println!("| phase | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|---|");
    for p in [&live, &cart, &orders] {
        println!("{}", p.row());
    }
    println!();
    println!(
        "checkout throughput counts orders per second over the phase (each round is a cart add \
         plus the order); stock check: {made} units sold, none left reserved"
    );
    Ok(())
}
