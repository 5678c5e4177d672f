//! The real `inventory` component under `bazaar up`: reservations under heavy concurrency on
//! SQLite and PostgreSQL, idempotent retries, expiry at read time and by the job, the warehouse
//! rule and restock alerts.
//!
//! Internal routes (`/internal/reservations…`) are reachable only by service chaining, so the
//! tests reach inventory through a probe component on a test-only public route, exactly as the
//! orders service will; the identity headers the gateway would set are passed the same way.

mod common;

use std::collections::BTreeMap;

use common::{Runner, get_json, shop_only};
use serde_json::{Value, json};

/// A public test route whose component may call inventory over chaining.
const PROBE: &str = r#"
[[trigger.http]]
route = "/test-probe/..."
component = "test-probe"
[component.test-probe]
source = "{probe}"
allowed_outbound_hosts = ["http://inventory.spin.internal"]
"#;

const ADMIN: (&str, &str) = ("usr_admin", "admin");

/// Calls inventory at `path` through the probe; returns (status, JSON body).
async fn call(
    app: &Runner,
    method: &str,
    path: &str,
    body: Option<Value>,
    identity: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut headers = BTreeMap::new();
    if let Some((user, role)) = identity {
        headers.insert("x-bazaar-user-id", user);
        headers.insert("x-bazaar-role", role);
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("probe", "outbound")
        .append_pair("url", &format!("http://inventory.spin.internal{path}"))
        .append_pair("method", method)
        .append_pair("headers", &serde_json::to_string(&headers).unwrap());
    if let Some(body) = body {
        query.append_pair("body", &body.to_string());
    }
    let (status, outer) = get_json(&app.url(&format!("/test-probe?{}", query.finish()))).await;
    assert_eq!(status, 200, "probe failed: {outer}");
    let inner_status = outer["status"].as_u64().expect("status") as u16;
    let text = outer["body"].as_str().unwrap_or_default();
    (
        inner_status,
        serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())),
    )
}

/// Applies the schema (what `bazaar admin migrate` does); a second run applies nothing.
async fn migrate(app: &Runner) {
    let (status, body) = call(app, "POST", "/internal/admin/migrate", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, again) = call(app, "POST", "/internal/admin/migrate", None, None).await;
    assert_eq!(
        (status, again["applied"].clone()),
        (200, json!([])),
        "{again}"
    );
    assert_eq!(again["version"], body["version"]);
}

async fn set_stock(app: &Runner, product: &str, warehouse: &str, on_hand: i64, priority: i64) {
    let (status, body) = call(
        app,
        "PUT",
        &format!("/api/v1/inventory/{product}/warehouses/{warehouse}"),
        Some(json!({ "on_hand": on_hand, "priority": priority })),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn stock(app: &Runner, product: &str) -> Value {
    let (status, body) = call(
        app,
        "GET",
        &format!("/api/v1/inventory/{product}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn reserve(app: &Runner, id: &str, product: &str, quantity: i64) -> (u16, Value) {
    call(
        app,
        "POST",
        "/internal/reservations",
        Some(json!({ "reservation_id": id, "items": [{ "product_id": product, "quantity": quantity }] })),
        None,
    )
    .await
}

/// 200 concurrent single-unit reservations against 50 units in two warehouses.
async fn no_oversell(app: &Runner) {
    migrate(app).await;
    set_stock(app, "hot", "wh-a", 30, 1).await;
    set_stock(app, "hot", "wh-b", 20, 2).await;
    let attempts = (0..200).map(|i| {
        let id = format!("r-{i}");
        async move { reserve(app, &id, "hot", 1).await }
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|(s, _)| *s == 201).count();
    let out_of_stock = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["title"] == "Out of stock")
        .count();
    let others: Vec<_> = results
        .iter()
        .filter(|(s, b)| *s != 201 && !(*s == 409 && b["title"] == "Out of stock"))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!(won, 50, "exactly the stock can be reserved");
    assert_eq!(out_of_stock, 150);
    let view = stock(app, "hot").await;
    assert_eq!(view["available"], 0, "{view}");
    assert_eq!(view["reserved"], 50, "{view}");
    for w in view["warehouses"].as_array().unwrap() {
        assert_eq!(w["reserved"], w["on_hand"], "{view}");
    }

    // Release ten winners and commit five others: stock follows exactly.
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == 201)
        .map(|(i, _)| i)
        .collect();
    for i in &winners[..10] {
        let (status, body) = call(
            app,
            "POST",
            &format!("/internal/reservations/r-{i}/release"),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("released")),
            "{body}"
        );
    }
    for i in &winners[10..15] {
        let (status, body) = call(
            app,
            "POST",
            &format!("/internal/reservations/r-{i}/commit"),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("committed")),
            "{body}"
        );
    }
    let view = stock(app, "hot").await;
    assert_eq!(view["available"], 10, "{view}");
    assert_eq!(view["reserved"], 35, "{view}");
    assert_eq!(view["on_hand"], 45, "{view}");
    // A released reservation cannot be committed, a committed one cannot be released.
    let (status, _) = call(
        app,
        "POST",
        &format!("/internal/reservations/r-{}/commit", winners[0]),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        app,
        "POST",
        &format!("/internal/reservations/r-{}/release", winners[10]),
        None,
        None,
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn concurrent_reservations_never_oversell_on_sqlite() {
    let app = shop_only(&["inventory"], PROBE).start();
    no_oversell(&app).await;
}

#[tokio::test]
async fn concurrent_reservations_never_oversell_on_postgres() {
    let admin_url = std::env::var("BAZAAR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must be reachable");
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("bazaar_inventory_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = format!(
        "{}/{db}",
        admin_url.rsplit_once('/').map(|(base, _)| base).unwrap()
    );
    let app = shop_only(&["inventory"], PROBE)
        .arg("--variable")
        .arg(&format!("inventory_database={url}"))
        .start();
    no_oversell(&app).await;
    drop(app);
    let _ = client
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
}

#[tokio::test]
async fn reservations_are_idempotent_all_or_nothing_and_expire() {
    let app = shop_only(&["inventory"], PROBE).start();
    migrate(&app).await;
    set_stock(&app, "p1", "main", 5, 1).await;
    set_stock(&app, "p2", "main", 1, 1).await;

    // The same id twice reserves once.
    let (s1, first) = reserve(&app, "same", "p1", 2).await;
    let (s2, again) = reserve(&app, "same", "p1", 2).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["lines"], again["lines"]);
    assert_eq!(stock(&app, "p1").await["available"], 3);

    // All or nothing: p2 lacks a unit, so p1 is not touched either.
    let (status, body) = call(
        &app,
        "POST",
        "/internal/reservations",
        Some(json!({ "reservation_id": "both", "items": [
            { "product_id": "p1", "quantity": 1 }, { "product_id": "p2", "quantity": 2 }] })),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["product_id"], "p2");
    assert_eq!(body["available"], 1);
    assert_eq!(stock(&app, "p1").await["available"], 3);

    // A one-second hold is gone at read time, before any sweep, and cannot be committed once
    // released by expiry.
    let (status, _) = call(
        &app,
        "POST",
        "/internal/reservations",
        Some(json!({ "reservation_id": "short", "ttl_secs": 1,
                     "items": [{ "product_id": "p1", "quantity": 3 }] })),
        None,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(stock(&app, "p1").await["available"], 0);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        stock(&app, "p1").await["available"],
        3,
        "expired hold still counted"
    );
    let (status, body) = call(&app, "POST", "/internal/jobs/expire", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = call(&app, "GET", "/internal/reservations/short", None, None).await;
    assert_eq!(view["state"], "expired", "{view}");
    let (status, _) = call(
        &app,
        "POST",
        "/internal/reservations/short/commit",
        None,
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &app,
        "POST",
        "/internal/reservations/short/release",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "releasing an expired hold is a no-op");
    assert_eq!(stock(&app, "p1").await["reserved"], 2);
}

#[tokio::test]
async fn warehouse_rule_alerts_and_validation() {
    let app = shop_only(&["inventory"], PROBE).start();
    migrate(&app).await;
    set_stock(&app, "w", "near", 3, 1).await;
    set_stock(&app, "w", "far", 10, 2).await;
    let (_, small) = reserve(&app, "small", "w", 2).await;
    assert_eq!(
        small["lines"],
        json!([{ "product_id": "w", "warehouse_id": "near", "quantity": 2 }])
    );
    let (_, big) = reserve(&app, "big", "w", 5).await;
    assert_eq!(
        big["lines"],
        json!([{ "product_id": "w", "warehouse_id": "far", "quantity": 5 }])
    );
    let (_, split) = reserve(&app, "split", "w", 6).await;
    assert_eq!(
        split["lines"],
        // Nobody holds 6 alone: the best priority gives what it has left, the next the rest.
        json!([{ "product_id": "w", "warehouse_id": "near", "quantity": 1 },
               { "product_id": "w", "warehouse_id": "far", "quantity": 5 }])
    );

    // Restock alerts: below the threshold, then back.
    let (status, _) = call(
        &app,
        "PUT",
        "/api/v1/inventory/a/threshold",
        Some(json!({"threshold": 5})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 200);
    set_stock(&app, "a", "main", 6, 1).await;
    let (status, _) = reserve(&app, "drain", "a", 2).await;
    assert_eq!(status, 201);
    set_stock(&app, "a", "main", 20, 1).await;
    let (_, events) = call(
        &app,
        "GET",
        "/internal/events?after=0&limit=100",
        None,
        None,
    )
    .await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["aggregate_id"] == "a")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"inventory.stock_low"), "{types:?}");
    assert!(types.contains(&"inventory.restocked"), "{types:?}");
    let positions: Vec<i64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "events in outbox order"
    );

    // Bad input: clear errors, nothing changed.
    let (status, _) = call(
        &app,
        "PUT",
        "/api/v1/inventory/w/warehouses/near",
        Some(json!({"on_hand": 1})),
        Some(("u1", "customer")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &app,
        "PUT",
        "/api/v1/inventory/w/warehouses/near",
        Some(json!({"on_hand": 1})),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = call(
        &app,
        "PUT",
        "/api/v1/inventory/w/warehouses/near",
        Some(json!({"on_hand": -1})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = call(
        &app,
        "PUT",
        "/api/v1/inventory/w/warehouses/near",
        Some(json!({"on_hand": 0})),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, 409, "units reserved there: {body}");
    let (status, _) = reserve(&app, "zero", "w", 0).await;
    assert_eq!(status, 422);
    let (status, _) = reserve(&app, "bad id!", "w", 1).await;
    assert_eq!(status, 422);
    assert_eq!(stock(&app, "w").await["reserved"], 13);
}
