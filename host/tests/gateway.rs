//! The gateway inside the real shop (the repository's `spin.toml` and `runtime-config.toml`, every
//! component freshly built), run by `bazaar up` over HTTP: health, request ids, routing errors
//! and proxying through service chaining.

mod common;

use common::{client, shop};
use serde_json::Value;

/// A stand-in `recommendations` service (a later wave; the gateway's table already routes
/// `/api/v1/recommendations*` to that id): the probe fixture on a private route, echoing what it
/// received. If that service lands in spin.toml, pick another unbuilt id from the table.
const STAND_IN: &str = r#"
[[trigger.http]]
route = { private = true }
component = "recommendations"
[component.recommendations]
source = "{probe}"
"#;

/// The default upstreams plus the stand-in.
fn with_stand_in() -> String {
    "gateway_upstreams=users,catalog,oidc,carts,inventory,recommendations".to_owned()
}

/// The default `gateway_upstreams` of the repository's spin.toml.
fn default_upstreams() -> Vec<String> {
    let text = std::fs::read_to_string(common::workspace_root().join("spin.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest["variables"]["gateway_upstreams"]["default"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect()
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {body}"))
}

#[tokio::test]
async fn health_endpoints_answer_and_readiness_covers_the_real_upstreams() {
    let app = shop("").start();
    let response = client().get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));

    // Every configured upstream is probed; the answer is 200 exactly when every check passes.
    // (Whether each service answers its liveness route is that service's business; this test
    // checks the gateway's side.)
    let response = client().get(app.url("/health/ready")).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    for id in default_upstreams() {
        check(&body, &format!("upstream:{id}"));
    }
    for name in ["config", "store", "upstream:users", "upstream:catalog"] {
        assert_eq!(check(&body, name)["status"], "ok", "{name}: {body}");
    }
    let all_ok = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "ok");
    assert_eq!(status == 200, all_ok, "{status}: {body}");

    // Narrowed to services that answer, the shop is ready.
    let app = shop("")
        .arg("--variable")
        .arg("gateway_upstreams=users,catalog,oidc")
        .start();
    let response = client().get(app.url("/health/ready")).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
}

#[tokio::test]
async fn readiness_fails_when_an_upstream_is_missing() {
    // `analytics` is listed but no such component exists: its probe fails, so the shop is not ready.
    let app = shop("")
        .arg("--variable")
        .arg("gateway_upstreams=users,analytics")
        .start();
    let response = client().get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    let analytics = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "upstream:analytics")
        .cloned()
        .unwrap_or_default();
    assert_eq!(analytics["status"], "fail", "{body}");
    let users = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "upstream:users")
        .cloned()
        .unwrap_or_default();
    assert_eq!(users["status"], "ok", "{body}");
}

#[tokio::test]
async fn request_ids_are_kept_when_valid_and_replaced_when_not() {
    let app = shop("").start();
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
async fn unknown_routes_internal_paths_and_unconfigured_services_are_problem_json_404() {
    let app = shop("").start();
    for path in [
        "/nope",
        "/api/v1/notifications/x",
        "/api/v1/unknown-service/x",
        "/internal/jwks",
        "/internal/admin/migrate",
    ] {
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
    // (`%2e%2e` itself would be normalised away by the client's URL parser.)
    let response = client()
        .get(app.url("/api/v1/users/..%2Forders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn api_requests_are_proxied_through_service_chaining() {
    let app = shop(STAND_IN)
        .arg("--variable")
        .arg(&with_stand_in())
        .start();
    let response = client()
        .post(app.url("/api/v1/recommendations?q=lamp&limit=2"))
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
        seen["path_with_query"], "/api/v1/recommendations?q=lamp&limit=2",
        "{seen}"
    );
    assert_eq!(seen["authority"], "recommendations.spin.internal", "{seen}");
    assert_eq!(seen["body_len"], 15, "{seen}");
    assert_eq!(seen["headers"]["x-request-id"], "req-42", "{seen}");
    assert!(
        seen["headers"].get("x-bazaar-user-id").is_none(),
        "identity headers from outside must be dropped: {seen}"
    );
    // Readiness now also depends on the stand-in answering its liveness route.
    let ready: Value = client()
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "upstream:recommendations" && c["status"] == "ok"),
        "{ready}"
    );
}
