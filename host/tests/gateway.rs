//! The repository's real `spin.toml` and `gateway` component, run by `bazaar up` over HTTP.

mod common;

use common::{build_wasm, client, runner, workspace_root};
use serde_json::Value;

/// The repository manifest with the gateway's `source` pointed at the test build, plus extra
/// TOML (e.g. stand-in upstream services) appended.
fn shop_manifest(extra: &str) -> String {
    let manifest = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    let gateway = build_wasm("gateway");
    let manifest = manifest.replace(
        "target/wasm32-wasip2/release/gateway.wasm",
        &gateway.display().to_string(),
    );
    assert!(
        manifest.contains(&gateway.display().to_string()),
        "spin.toml no longer sources the gateway from its build output"
    );
    format!("{manifest}\n{extra}")
}

/// A stand-in `catalog` service: the probe fixture on a private route.
const CATALOG_STAND_IN: &str = r#"
[[trigger.http]]
route = { private = true }
component = "catalog"
[component.catalog]
source = "{probe}"
"#;

#[tokio::test]
async fn health_endpoints_answer() {
    let app = runner(&shop_manifest("")).start();
    let response = client().get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let response = client().get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
}

#[tokio::test]
async fn request_ids_are_kept_when_valid_and_replaced_when_not() {
    let app = runner(&shop_manifest("")).start();
    let response = client()
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123.X_y")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123.X_y");
    for bad in ["has space", &"x".repeat(300), "semi;colon"] {
        let response = client()
            .get(app.url("/health/live"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            !id.is_empty() && id != bad,
            "{bad:?} should be replaced, got {id:?}"
        );
    }
    let generated_id = || async {
        client()
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap()
            .headers()["x-request-id"]
            .clone()
    };
    assert_ne!(
        generated_id().await,
        generated_id().await,
        "generated request ids must be unique"
    );
}

#[tokio::test]
async fn unknown_routes_and_unconfigured_services_are_problem_json_404() {
    let app = runner(&shop_manifest("")).start();
    for path in ["/nope", "/api/v1/products", "/api/v1/unknown-service/x"] {
        let response = client().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 404, "{problem}");
        assert!(problem["title"].is_string(), "{problem}");
    }
    let response = client().post(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
}

#[tokio::test]
async fn api_requests_are_proxied_through_service_chaining() {
    let app = runner(&shop_manifest(CATALOG_STAND_IN))
        .arg("--variable")
        .arg("gateway_upstreams=catalog")
        .start();
    let response = client()
        .post(app.url("/api/v1/products?q=lamp&limit=2"))
        .header("x-request-id", "req-42")
        .header("x-bazaar-user-id", "forged-admin")
        .header("content-type", "application/json")
        .body(r#"{"name":"lamp"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(
        seen["path_with_query"], "/api/v1/products?q=lamp&limit=2",
        "{seen}"
    );
    assert_eq!(seen["authority"], "catalog.spin.internal", "{seen}");
    assert_eq!(seen["body_len"], 15, "{seen}");
    assert_eq!(seen["headers"]["x-request-id"], "req-42", "{seen}");
    assert!(
        seen["headers"].get("x-bazaar-user-id").is_none(),
        "identity headers from outside must be dropped: {seen}"
    );
    // Readiness now depends on the catalog answering its liveness route.
    let ready: Value = client()
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
}
